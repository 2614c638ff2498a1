import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { headerOf, retryAfterMs } from '../../src/domain/retry-after.js';

const now = Date.parse('2026-11-29T12:00:00Z');

describe('retryAfterMs', () => {
  it.each([
    ['120', 120_000],
    ['0', 0],
    [' 7 ', 7_000],
    ['1.5', 1_500],
    ['Sun, 29 Nov 2026 12:00:30 GMT', 30_000],
    ['Sunday, 29-Nov-26 12:01:00 GMT', 60_000],
    ['Sun, 29 Nov 2026 11:00:00 GMT', 0],
  ])('%j -> %d ms', (value, ms) => {
    expect(retryAfterMs(value, now)).toBe(ms);
  });

  it.each([
    [undefined],
    [null],
    [''],
    ['-5'],
    ['soon'],
    ['Nov 2026'],
    ['1e3'],
    ['Sun, 99 Nov 2026 99:00:00 GMT'],
  ])('%j -> undefined', (value) => {
    expect(retryAfterMs(value, now)).toBeUndefined();
  });

  it('reads any delay-seconds back exactly, and an HTTP-date to the second', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 ** 7 }), (seconds) => {
        expect(retryAfterMs(String(seconds), now)).toBe(seconds * 1000);
        expect(retryAfterMs(new Date(now + seconds * 1000).toUTCString(), now)).toBe(seconds * 1000);
      }),
    );
  });
});

describe('headerOf', () => {
  it('reads fetch Headers (any case) and plain lower-case records', () => {
    expect(headerOf(new Headers({ 'Retry-After': '3' }), 'retry-after')).toBe('3');
    expect(headerOf({ 'retry-after': '4' }, 'Retry-After')).toBe('4');
    expect(headerOf(new Headers(), 'retry-after')).toBeUndefined();
    expect(headerOf(undefined, 'retry-after')).toBeUndefined();
    expect(headerOf({ 'retry-after': 5 }, 'retry-after')).toBeUndefined();
  });
});
