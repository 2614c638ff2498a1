import { describe, expect, it } from 'vitest';
import { newId } from '../../src/store/ids.js';

describe('newId', () => {
  it('is the prefix and 20 base32 characters', () => {
    for (const prefix of ['agt', 'cnv', 'msg', 'mtg'] as const) {
      expect(newId(prefix)).toMatch(new RegExp(`^${prefix}_[0-9a-hjkmnp-tv-z]{20}$`));
    }
  });

  it('never repeats, across many refills of its random pool', () => {
    const ids = Array.from({ length: 5000 }, () => newId('msg'));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('uses every character of the alphabet about equally (random, not a counter)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      for (const c of newId('mtg').slice(4)) counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    expect(counts.size).toBe(32);
    // 40,000 characters: 1,250 expected per character; a fair source stays well within ±25 %.
    for (const n of counts.values()) expect(Math.abs(n - 1250)).toBeLessThan(312);
  });
});
