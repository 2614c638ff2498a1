import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatOffset,
  friendlyTime,
  ianaZoneName,
  isIanaTimeZone,
  localDateTime,
  offsetChanges,
  toZonedIso,
  weekdayIn,
  zonedInstant,
  zoneOffsetMinutes,
} from '../../src/domain/time.js';
import { IANA_ZONE_NAMES } from '../../src/domain/tz-names.js';

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

describe('ianaZoneName', () => {
  it.each([
    ['asia/kolkata', 'Asia/Kolkata'],
    ['ASIA/KOLKATA', 'Asia/Kolkata'],
    // The owner's name is kept, not swapped for Intl's canonical one (Asia/Calcutta, America/New_York).
    ['Asia/Kolkata', 'Asia/Kolkata'],
    ['us/eastern', 'US/Eastern'],
    ['america/argentina/buenos_aires', 'America/Argentina/Buenos_Aires'],
    ['europe/kyiv', 'Europe/Kyiv'],
    ['utc', 'UTC'],
    ['etc/gmt+5', 'Etc/GMT+5'],
    ['est5edt', 'EST5EDT'],
    ['america/port-au-prince', 'America/Port-au-Prince'],
  ])('%s -> %s', (typed, spelled) => {
    expect(ianaZoneName(typed)).toBe(spelled);
  });

  // SystemV/EST5: Intl (ICU) takes it, it is no IANA name, and Google refuses it; ICU's BST is
  // Asia/Dhaka, not British Summer Time.
  it.each([
    'UTC+05:30',
    'Mars/Olympus',
    '',
    'Europe/Berlin ',
    'SystemV/EST5',
    'systemv/est5',
    'BST',
    'IST',
    'AST',
  ])('not a zone: %j', (zone) => {
    expect(ianaZoneName(zone)).toBeUndefined();
  });

  it('every zone the runtime knows is in the list, and every listed name the runtime knows maps to itself', () => {
    const listed = new Set(IANA_ZONE_NAMES);
    expect(Intl.supportedValuesOf('timeZone').filter((z) => !listed.has(z))).toEqual([]);
    for (const name of IANA_ZONE_NAMES) {
      if (isIanaTimeZone(name)) expect(ianaZoneName(name)).toBe(name);
      expect(ianaZoneName(name.toLowerCase()) ?? name).toBe(name);
    }
  });
});

describe('offsetChanges', () => {
  it('finds each change to the minute, with the offsets on both sides', () => {
    expect(offsetChanges('America/New_York', new Date('2025-10-30T15:00:00Z'), 200)).toEqual([
      { at: new Date('2025-11-02T06:00:00Z'), fromMinutes: -240, toMinutes: -300 },
      { at: new Date('2026-03-08T07:00:00Z'), fromMinutes: -300, toMinutes: -240 },
    ]);
    // A half-hour change (Lord Howe Island) and none at all.
    expect(offsetChanges('Australia/Lord_Howe', new Date('2025-09-01T00:00:00Z'), 60)).toEqual([
      { at: new Date('2025-10-04T15:30:00Z'), fromMinutes: 630, toMinutes: 660 },
    ]);
    expect(offsetChanges('Asia/Kolkata', new Date('2025-09-01T00:00:00Z'), 400)).toEqual([]);
  });

  it('agrees with the zone clock on both sides of every change it finds', () => {
    for (const zone of ['Europe/Berlin', 'America/Santiago', 'Pacific/Chatham', 'Africa/Casablanca']) {
      for (const c of offsetChanges(zone, new Date('2025-01-01T00:00:00Z'), 366)) {
        expect(zoneOffsetMinutes(new Date(c.at.getTime() - 60_000), zone)).toBe(c.fromMinutes);
        expect(zoneOffsetMinutes(c.at, zone)).toBe(c.toMinutes);
      }
    }
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

/**
 * The wall clock as Intl reads it, with no cache: what toZonedIso, weekdayIn, localDateTime and
 * zoneOffsetMinutes must agree with (src/domain/time.ts keeps offsets per zone and quarter hour).
 */
const intlFormatters = new Map<string, Intl.DateTimeFormat>();
function intlClock(at: Date, zone: string) {
  let f = intlFormatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      weekday: 'long',
    });
    intlFormatters.set(zone, f);
  }
  const parts = Object.fromEntries(f.formatToParts(at).map((p) => [p.type, p.value]));
  const [y, mo, d, h, mi, s] = [
    parts.year,
    parts.month,
    parts.day,
    parts.hour,
    parts.minute,
    parts.second,
  ].map(Number) as [number, number, number, number, number, number];
  const offset = Math.round(
    (Date.UTC(y, mo - 1, d, h, mi, s) - Math.floor(at.getTime() / 1000) * 1000) / 60_000,
  );
  const two = (n: number) => String(n).padStart(2, '0');
  return {
    iso: `${y}-${two(mo)}-${two(d)}T${two(h)}:${two(mi)}:${two(s)}${formatOffset(offset)}`,
    offset,
    weekday: String(parts.weekday),
    local: {
      year: y,
      month: mo,
      day: d,
      hour: h,
      minute: mi,
      weekday: new Date(Date.UTC(y, mo - 1, d)).getUTCDay(),
    },
  };
}

function expectIntlClock(at: Date, zone: string) {
  const want = intlClock(at, zone);
  expect({
    iso: toZonedIso(at, zone),
    offset: zoneOffsetMinutes(at, zone),
    weekday: weekdayIn(at, zone),
    local: localDateTime(at, zone),
  }).toEqual(want);
}

describe('the zone clock agrees with Intl, cached or not', () => {
  const zones = Intl.supportedValuesOf('timeZone');

  it('property: any zone of the database, any instant 1900-2200', () => {
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('1900-01-01T00:00:00Z'),
          max: new Date('2200-01-01T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.constantFrom(...zones),
        (at, zone) => {
          expectIntlClock(at, zone);
          // Again, now from the cache, and at the quarter hour's first and last second.
          expectIntlClock(at, zone);
          const quarter = Math.floor(at.getTime() / 900_000) * 900_000;
          expectIntlClock(new Date(quarter), zone);
          expectIntlClock(new Date(quarter + 899_999), zone);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('every minute around each offset change of 2026, in zones whose changes are odd', () => {
    // Lord Howe moves by 30 minutes, Chatham at 02:45 local, Santiago and Sydney south of the
    // equator, Casey and Troll rarely; New York and Berlin for the common cases.
    const odd = [
      'Australia/Lord_Howe',
      'Pacific/Chatham',
      'America/Santiago',
      'Australia/Sydney',
      'America/New_York',
      'Europe/Berlin',
      'Antarctica/Troll',
    ];
    let changes = 0;
    for (const zone of odd) {
      const start = Date.UTC(2026, 0, 1);
      let before = intlClock(new Date(start), zone).offset;
      for (let t = start; t < Date.UTC(2027, 0, 1); t += 3_600_000) {
        const now = intlClock(new Date(t), zone).offset;
        if (now !== before) {
          changes++;
          for (let m = t - 2 * 3_600_000; m <= t + 3_600_000; m += 60_000) {
            expectIntlClock(new Date(m), zone);
            expectIntlClock(new Date(m + 59_999), zone);
          }
        }
        before = now;
      }
    }
    expect(changes).toBeGreaterThanOrEqual(2 * odd.length);
  });

  it.each([
    // Offset changes inside a quarter hour (found by scanning the database): St. John's and Goose Bay
    // changed at 00:01 local until 2011, Gaza at 00:01, Casey at 00:01 (2020-2022); Abidjan left local
    // mean time (-0:16:08) in 1912, an offset with seconds.
    ['America/St_Johns', '2011-03-13T03:31:00Z'],
    ['America/Goose_Bay', '2010-11-07T03:01:00Z'],
    ['Asia/Gaza', '2011-03-31T22:01:00Z'],
    ['Antarctica/Casey', '2022-10-01T16:01:00Z'],
    ['Africa/Abidjan', '1912-01-01T00:16:08Z'],
  ])('every second around the change in %s at %s', (zone, change) => {
    const t = Date.parse(change);
    expect(intlClock(new Date(t - 1000), zone).offset).not.toBe(intlClock(new Date(t), zone).offset);
    for (let s = t - 16 * 60_000; s <= t + 16 * 60_000; s += 1000) expectIntlClock(new Date(s), zone);
  });
});

describe('zonedInstant', () => {
  it.each([
    ['an ordinary time', [2025, 10, 6, 19, 0], 'Asia/Kolkata', '2025-10-06T13:30:00.000Z'],
    // Clocks set back: 01:30 happens twice in New York on 2025-11-02; the first (EDT) is meant.
    ['the first of a repeated time', [2025, 11, 2, 1, 30], 'America/New_York', '2025-11-02T05:30:00.000Z'],
    ['a time after the repeat', [2025, 11, 2, 2, 0], 'America/New_York', '2025-11-02T07:00:00.000Z'],
    // Clocks set forward: 02:30 never happens in New York on 2025-03-09; forward by the gap (03:30 EDT).
    ['a time in a gap', [2025, 3, 9, 2, 30], 'America/New_York', '2025-03-09T07:30:00.000Z'],
    // Santiago sets its clocks forward at midnight: the day starts at 01:00 -03, the previous one
    // ends there too (so "24:00" of Saturday and "00:00" of Sunday are the same instant).
    ['midnight in a midnight gap', [2025, 9, 7, 0, 0], 'America/Santiago', '2025-09-07T04:00:00.000Z'],
    ['24:00 before a midnight gap', [2025, 9, 6, 24, 0], 'America/Santiago', '2025-09-07T04:00:00.000Z'],
    ['the hour before a midnight gap', [2025, 9, 6, 23, 0], 'America/Santiago', '2025-09-07T03:00:00.000Z'],
    [
      'a half-hour change (Lord Howe)',
      [2026, 10, 4, 2, 15],
      'Australia/Lord_Howe',
      '2026-10-03T15:45:00.000Z',
    ],
  ])('%s', (_label, [y, mo, d, h, mi], zone, iso) => {
    expect(zonedInstant(y!, mo!, d!, h!, mi!, zone).toISOString()).toBe(iso);
  });

  it('property: a wall time that occurs maps back to itself, and one in a gap moves forward by the gap', () => {
    const zones = [
      'America/Santiago',
      'America/New_York',
      'Europe/Berlin',
      'Australia/Lord_Howe',
      'Asia/Gaza',
    ];
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('2020-01-01T00:00:00Z'),
          max: new Date('2030-01-01T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.constantFrom(...zones),
        (d, zone) => {
          const wall = new Date(Math.floor(d.getTime() / 60_000) * 60_000);
          const [y, mo, dd, h, mi] = [
            wall.getUTCFullYear(),
            wall.getUTCMonth() + 1,
            wall.getUTCDate(),
            wall.getUTCHours(),
            wall.getUTCMinutes(),
          ];
          const at = zonedInstant(y, mo, dd, h, mi, zone);
          const back = localDateTime(at, zone);
          const shown = Date.UTC(back.year, back.month - 1, back.day, back.hour, back.minute);
          // Either the same wall time, or (a gap) later by at most the gap, never earlier.
          expect(shown).toBeGreaterThanOrEqual(wall.getTime());
          expect(shown - wall.getTime()).toBeLessThanOrEqual(60 * 60_000);
          // And nothing earlier shows that wall time: the first occurrence.
          const earlier = localDateTime(new Date(at.getTime() - 60 * 60_000), zone);
          const earlierShown = Date.UTC(
            earlier.year,
            earlier.month - 1,
            earlier.day,
            earlier.hour,
            earlier.minute,
          );
          if (shown === wall.getTime()) expect(earlierShown).not.toBe(wall.getTime());
        },
      ),
      { numRuns: 3000 },
    );
  });
});
