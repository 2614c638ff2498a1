import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { duplicateKey } from '../../src/http/json-keys.js';

describe('duplicateKey', () => {
  it.each([
    ['at the top', '{"a":1,"b":2,"a":3}', 'a'],
    ['in a nested object', '{"working_hours":{"monday":[],"tuesday":[],"monday":[]}}', 'monday'],
    ['in an object inside an array', '{"list":[{"x":1},{"y":1,"y":2}]}', 'y'],
    ['written two ways', '{"a":1,"\\u0061":2}', 'a'],
    ['with escapes in both', '{"a\\"b":1,"a\\u0022b":2}', 'a"b'],
    ['after a nested value', '{"a":{"b":{"c":1}},"d":[1,{"e":2}],"a":0}', 'a'],
  ])('finds a name given twice %s', (_where, text, name) => {
    expect(() => JSON.parse(text)).not.toThrow();
    expect(duplicateKey(text)).toBe(name);
  });

  it.each([
    ['distinct names', '{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}'],
    ['names in values', '{"a":"a","b":["a","a"],"c":"\\"a\\":"}'],
    ['a value that looks like an object', '{"a":"{\\"x\\":1,\\"x\\":2}"}'],
    ['not an object', '[1,"a","a",{"a":1}]'],
    ['a scalar', '"a"'],
    ['whitespace everywhere', ' { "a" : 1 , "b" : [ { "a" : 2 } , { "a" : 3 } ] } '],
  ])('finds nothing in %s', (_what, text) => {
    expect(() => JSON.parse(text)).not.toThrow();
    expect(duplicateKey(text)).toBeUndefined();
  });

  it('finds nothing in any text JSON.stringify writes (its objects cannot repeat a name)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(duplicateKey(JSON.stringify(value, null, 1))).toBeUndefined();
      }),
    );
  });

  it('finds the name when a written object gets one of its names again', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue(), { minKeys: 1 }), fc.nat(), (object, pick) => {
        const names = Object.keys(object);
        const name = names[pick % names.length]!;
        const text = `${JSON.stringify(object).slice(0, -1)},${JSON.stringify(name)}:null}`;
        expect(duplicateKey(text)).toBe(name);
      }),
    );
  });
});
