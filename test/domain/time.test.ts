import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatOffset,
  friendlyTime,
  isIanaTimeZone,
  toZonedIso,
  weekdayIn,
  zoneOffsetMinutes,
} from '../../src/domain/time.js';

describe('isIanaTimeZone', () => {
  it.each([
    'Asia/Kolkata',
    'Europe/Berlin',
    'America/New_York',
    'America/Argentina/Buenos_Aires',
    'Australia/Lord_Howe',
    'Pacific/Chatham',
    'UTC',
    'Etc/UTC',
    'Etc/GMT+5',
  ])('accepts %s', (zone) => {
    expect(isIanaTimeZone(zone)).toBe(true);
  });

  it.each([
    'UTC+05:30',
    'UTC+5',
    'GMT-04:00',
    'GMT+5',
    '+05:30',
    '-04:00',
    'Z',
    'IST5:30',
    'Mars/Olympus',
    'Asia/Atlantis',
    'Europe/Berlin ',
    ' Europe/Berlin',
    '',
    '/',
    'Asia/../Kolkata',
  ])('rejects %j', (zone) => {
    expect(isIanaTimeZone(zone)).toBe(false);
  });

  it('gives the same answer the second time (cache)', () => {
    expect(isIanaTimeZone('Mars/Olympus')).toBe(false);
    expect(isIanaTimeZone('Mars/Olympus')).toBe(false);
    expect(isIanaTimeZone('Asia/Tokyo')).toBe(true);
    expect(isIanaTimeZone('Asia/Tokyo')).toBe(true);
  });

  it('never throws', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        expect(typeof isIanaTimeZone(s)).toBe('boolean');
      }),
    );
  });
});

describe('zoneOffsetMinutes', () => {
  it.each([
    ['2025-10-06T13:30:00Z', 'Asia/Kolkata', 330],
    ['2025-10-06T13:30:00Z', 'UTC', 0],
    ['2025-07-15T12:00:00Z', 'America/New_York', -240],
    ['2026-01-15T12:00:00Z', 'America/New_York', -300],
    ['2025-07-15T12:00:00Z', 'Europe/Berlin', 120],
    ['2026-01-15T12:00:00Z', 'Europe/Berlin', 60],
    ['2025-07-15T12:00:00Z', 'Australia/Sydney', 600],
    ['2026-01-15T12:00:00Z', 'Australia/Sydney', 660],
    ['2025-10-06T13:30:00Z', 'Asia/Kathmandu', 345],
    ['2025-10-06T13:30:00Z', 'Pacific/Kiritimati', 840],
    ['2025-10-06T13:30:00Z', 'Etc/GMT+12', -720],
    ['2025-10-06T13:30:00.999Z', 'Asia/Kolkata', 330],
    // US spring forward: 2025-03-09 02:00 EST -> 03:00 EDT (07:00Z).
    ['2025-03-09T06:59:59Z', 'America/New_York', -300],
    ['2025-03-09T07:00:00Z', 'America/New_York', -240],
    // EU fall back: 2025-10-26 03:00 CEST -> 02:00 CET (01:00Z).
    ['2025-10-26T00:59:59Z', 'Europe/Berlin', 120],
    ['2025-10-26T01:00:00Z', 'Europe/Berlin', 60],
  ])('%s in %s -> %d', (instant, zone, offset) => {
    expect(zoneOffsetMinutes(new Date(instant), zone)).toBe(offset);
  });
});

describe('formatOffset', () => {
  it.each([
    [330, '+05:30'],
    [0, '+00:00'],
    [-240, '-04:00'],
    [-570, '-09:30'],
    [840, '+14:00'],
    [-720, '-12:00'],
    [345, '+05:45'],
  ])('%d -> %s', (minutes, text) => {
    expect(formatOffset(minutes)).toBe(text);
  });
});

describe('toZonedIso', () => {
  it.each([
    ['2025-10-06T13:30:00Z', 'Asia/Kolkata', '2025-10-06T19:00:00+05:30'],
    ['2025-10-06T13:30:00Z', 'UTC', '2025-10-06T13:30:00+00:00'],
    ['2025-07-15T12:00:05Z', 'America/New_York', '2025-07-15T08:00:05-04:00'],
    ['2026-01-15T12:00:00Z', 'America/New_York', '2026-01-15T07:00:00-05:00'],
    ['2025-12-31T23:30:00Z', 'Asia/Tokyo', '2026-01-01T08:30:00+09:00'],
    ['2025-10-06T04:00:00Z', 'America/Los_Angeles', '2025-10-05T21:00:00-07:00'],
    ['2025-10-06T00:00:00Z', 'UTC', '2025-10-06T00:00:00+00:00'],
  ])('%s in %s -> %s', (instant, zone, expected) => {
    expect(toZonedIso(new Date(instant), zone)).toBe(expected);
  });

  it('property: the zoned text denotes the same instant (to the second)', () => {
    const zones = [
      'Asia/Kolkata',
      'America/New_York',
      'Europe/Berlin',
      'Australia/Lord_Howe',
      'Pacific/Chatham',
      'UTC',
    ];
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('1990-01-01T00:00:00Z'),
          max: new Date('2090-01-01T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.constantFrom(...zones),
        (d, zone) => {
          const s = toZonedIso(d, zone);
          expect(s).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$/);
          expect(new Date(s).getTime()).toBe(Math.floor(d.getTime() / 1000) * 1000);
          expect(s.endsWith(formatOffset(zoneOffsetMinutes(d, zone)))).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('weekdayIn', () => {
  it.each([
    ['2025-10-06T13:30:00Z', 'Asia/Kolkata', 'Monday'],
    ['2025-10-06T20:00:00Z', 'Asia/Kolkata', 'Tuesday'],
    ['2025-10-06T02:00:00Z', 'America/New_York', 'Sunday'],
    ['2025-10-06T02:00:00Z', 'UTC', 'Monday'],
  ])('%s in %s is a %s', (instant, zone, weekday) => {
    expect(weekdayIn(new Date(instant), zone)).toBe(weekday);
  });
});

describe('friendlyTime', () => {
  it('names the date, time and zone', () => {
    const text = friendlyTime(new Date('2025-10-06T13:30:00Z'), 'Asia/Kolkata');
    expect(text).toContain('Monday');
    expect(text).toContain('October 6, 2025');
    expect(text).toContain('7:00');
    expect(text).toContain('PM');
    expect(text).toMatch(/GMT\+5:30|IST/);
  });

  it('uses the zone it is given', () => {
    const at = new Date('2025-07-15T14:00:00Z');
    expect(friendlyTime(at, 'America/New_York')).toMatch(/July 15, 2025.*10:00.*AM.*(EDT|GMT-4)/);
    expect(friendlyTime(at, 'UTC')).toMatch(/July 15, 2025.*2:00.*PM.*UTC/);
    expect(friendlyTime(new Date('2025-10-06T20:00:00Z'), 'Asia/Kolkata')).toContain('October 7, 2025');
  });
});
