import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BookingLimits,
  type BookingRequest,
  bookingKey,
  eventTimeZone,
  googleEventIdFor,
  namesAnotherClockTime,
  offsetOfAnotherSeason,
  toOffsetIso,
  validateBookingAction,
} from '../../src/domain/booking-request.js';

const LIMITS: BookingLimits = { maxParticipants: 3, minNoticeMinutes: 5, horizonDays: 90 };

/** The seed's example action. */
const SEED = {
  action: 'Time_to_121meet',
  name: 'Siddhant',
  email: 'siddhant@gmail.com',
  title: 'Demo',
  participants: ['siddhant@gmail.com'],
  meeting_time: '2025-10-06T19:00:00+05:30',
  friendly_time: 'today at 7 PM IST',
};
/** 2025-10-06T19:00:00+05:30 is 13:30Z; "now" is three hours before. */
const SEED_START = new Date('2025-10-06T13:30:00Z');
const NOW = new Date('2025-10-06T10:30:00Z');

function valid(raw: unknown, limits = LIMITS, now = NOW): BookingRequest {
  const r = validateBookingAction(raw, limits, now);
  if (!r.ok) throw new Error(`expected valid, got ${r.problems.join('; ')}`);
  return r.request;
}
function problems(raw: unknown, limits = LIMITS, now = NOW): string[] {
  const r = validateBookingAction(raw, limits, now);
  if (r.ok) throw new Error(`expected problems, got ${JSON.stringify(r.request)}`);
  return r.problems;
}

describe('validateBookingAction', () => {
  it('accepts the seed example', () => {
    expect(valid(SEED)).toEqual({
      name: 'Siddhant',
      email: 'siddhant@gmail.com',
      title: 'Demo',
      participants: [],
      start: SEED_START,
      offsetMinutes: 330,
      friendlyTime: 'today at 7 PM IST',
    });
  });

  it.each([
    ['+05:30', '2025-10-06T19:00:00+05:30', 330, '2025-10-06T13:30:00Z'],
    ['Z', '2025-10-06T13:30:00Z', 0, '2025-10-06T13:30:00Z'],
    ['lower-case z and t', '2025-10-06t13:30:00z', 0, '2025-10-06T13:30:00Z'],
    ['-04:00', '2025-10-06T09:30:00-04:00', -240, '2025-10-06T13:30:00Z'],
    ['+14:00', '2025-10-07T03:30:00+14:00', 840, '2025-10-06T13:30:00Z'],
    ['-12:00', '2025-10-06T01:30:00-12:00', -720, '2025-10-06T13:30:00Z'],
    ['+00:00', '2025-10-06T13:30:00+00:00', 0, '2025-10-06T13:30:00Z'],
    ['fractional seconds', '2025-10-06T19:00:00.123+05:30', 330, '2025-10-06T13:30:00Z'],
    ['no seconds', '2025-10-06T19:00+05:30', 330, '2025-10-06T13:30:00Z'],
    ['surrounding spaces', '  2025-10-06T19:00:00+05:30 ', 330, '2025-10-06T13:30:00Z'],
    ['Feb 29 of a leap year', '2028-02-29T10:00:00Z', 0, '2028-02-29T10:00:00Z'],
  ])('parses the offset: %s', (_name, meetingTime, offset, instant) => {
    const r = valid({ ...SEED, meeting_time: meetingTime }, { ...LIMITS, horizonDays: 3650 });
    expect(r.offsetMinutes).toBe(offset);
    expect(r.start.toISOString()).toBe(new Date(instant).toISOString());
  });

  it.each([
    ['no offset', '2025-10-06T19:00:00'],
    ['date only', '2025-10-06'],
    ['impossible day (Feb 30)', '2025-02-30T10:00:00Z'],
    ['Feb 29 of a common year', '2026-02-29T10:00:00Z'],
    ['April 31', '2026-04-31T10:00:00Z'],
    ['month 13', '2025-13-01T10:00:00Z'],
    ['day 0', '2025-10-00T10:00:00Z'],
    ['hour 24', '2025-10-06T24:00:00Z'],
    ['minute 60', '2025-10-06T19:60:00Z'],
    ['second 60', '2025-10-06T19:00:60Z'],
    ['offset minutes 75', '2025-10-06T19:00:00+05:75'],
    ['offset hours 24', '2025-10-06T19:00:00+24:00'],
    ['offset without colon', '2025-10-06T19:00:00+0530'],
    ['zone name instead of offset', '2025-10-06T19:00:00 IST'],
    ['UTC+05:30 style', '2025-10-06T19:00:00UTC+05:30'],
    ['space instead of T', '2025-10-06 19:00:00+05:30'],
    ['natural language', 'tomorrow at 7pm'],
    ['empty', ''],
  ])('rejects a meeting time with %s', (_name, meetingTime) => {
    expect(problems({ ...SEED, meeting_time: meetingTime })).toEqual([
      'the meeting time must be a full date and time with its time zone, e.g. 2025-10-06T19:00:00+05:30',
    ]);
  });

  it.each([
    ['missing', { ...SEED, email: undefined }, 'the email is missing'],
    ['not an email', { ...SEED, email: 'siddhant at gmail' }, 'the email is not a valid email address'],
    ['empty', { ...SEED, email: '' }, 'the email is not a valid email address'],
    ['a number', { ...SEED, email: 42 }, 'the email is missing'],
  ])('rejects an email that is %s', (_name, raw, problem) => {
    expect(problems(raw)).toEqual([problem]);
  });

  it('rejects an invalid invitee', () => {
    expect(problems({ ...SEED, participants: ['ok@example.com', 'not-an-email'] })).toEqual([
      'an invitee is not a valid email address',
    ]);
    expect(problems({ ...SEED, participants: [42] })).toEqual(['an invitee is not valid']);
    expect(problems({ ...SEED, participants: 'a@b.co, not-an-email' })).toEqual([
      'an invitee is not a valid email address',
    ]);
  });

  it('reads invitees written as one string (commas, semicolons or spaces) as the list', () => {
    const r = valid({ ...SEED, participants: 'a@b.co, c@d.co;e@f.co ' });
    expect(r.participants).toEqual(['a@b.co', 'c@d.co', 'e@f.co']);
    expect(valid({ ...SEED, participants: 'a@b.co c@d.co' }).participants).toEqual(['a@b.co', 'c@d.co']);
    expect(valid({ ...SEED, participants: '' }).participants).toEqual([]);
  });

  it('drops a friendly_time over 200 characters (the confirmation names the booked time) instead of refusing', () => {
    expect(valid({ ...SEED, friendly_time: 'x'.repeat(201) }).friendlyTime).toBeNull();
    expect(valid({ ...SEED, friendly_time: 'x'.repeat(200) }).friendlyTime).toBe('x'.repeat(200));
  });

  it('phrases problems for the customer, not in validator jargon', () => {
    for (const raw of [
      null,
      'text',
      [SEED],
      { ...SEED, participants: 42 },
      { ...SEED, name: 'x'.repeat(256) },
      { ...SEED, title: 7 },
    ]) {
      for (const p of problems(raw)) {
        expect(p).not.toMatch(/Invalid input|expected|received|Too big|Too small/);
        expect(p).toMatch(/^(the|an) /);
      }
    }
    expect(problems(null)).toEqual(['the action is not valid']);
    expect(problems({ ...SEED, name: 'x'.repeat(256) })).toEqual(['the name must be at most 255 characters']);
  });

  it('reports every problem at once, without repeats', () => {
    expect(problems({ ...SEED, email: 'bad', participants: ['x', 'y'], meeting_time: undefined })).toEqual([
      'the email is not a valid email address',
      'an invitee is not a valid email address',
      'the meeting time is missing',
    ]);
  });

  it('rejects more distinct invitees than maxParticipants', () => {
    const four = ['a@x.com', 'b@x.com', 'c@x.com', 'd@x.com'];
    expect(problems({ ...SEED, participants: four })).toEqual(['at most 3 participants can be invited']);
    expect(valid({ ...SEED, participants: four.slice(0, 3) }).participants).toEqual(four.slice(0, 3));
  });

  it("does not count repeats or the customer's own email against maxParticipants", () => {
    const r = valid({
      ...SEED,
      participants: ['siddhant@gmail.com', 'a@x.com', 'A@X.com', 'b@x.com', 'c@x.com', 'SIDDHANT@gmail.com'],
    });
    expect(r.participants).toEqual(['a@x.com', 'b@x.com', 'c@x.com']);
  });

  it("de-duplicates invitees case-insensitively and removes the customer's own email", () => {
    const r = valid({
      ...SEED,
      email: 'Siddhant@Gmail.com',
      participants: [' siddhant@gmail.com', 'Bo@Example.com', 'bo@example.COM', 'al@example.com'],
    });
    expect(r.email).toBe('Siddhant@Gmail.com');
    expect(r.participants).toEqual(['Bo@Example.com', 'al@example.com']);
  });

  it('accepts missing or null optional fields', () => {
    const r = valid({
      email: 'a@b.co',
      meeting_time: SEED.meeting_time,
      name: null,
      title: null,
      participants: null,
      friendly_time: null,
    });
    expect(r).toEqual({
      name: null,
      email: 'a@b.co',
      title: 'Meeting',
      participants: [],
      start: SEED_START,
      offsetMinutes: 330,
      friendlyTime: null,
    });
    expect(valid({ email: 'a@b.co', meeting_time: SEED.meeting_time }).title).toBe('Meeting');
  });

  it('defaults an empty or blank title to "Meeting" and trims titles', () => {
    expect(valid({ ...SEED, title: '' }).title).toBe('Meeting');
    expect(valid({ ...SEED, title: '   ' }).title).toBe('Meeting');
    expect(valid({ ...SEED, title: '  Demo call ' }).title).toBe('Demo call');
  });

  it('accepts a 200-character title and rejects a longer one', () => {
    expect(valid({ ...SEED, title: 't'.repeat(200) }).title).toHaveLength(200);
    expect(problems({ ...SEED, title: 't'.repeat(201) })).toEqual([
      'the title must be at most 200 characters',
    ]);
  });

  it('rejects a time in the past and asks for another', () => {
    const ps = problems(SEED, LIMITS, new Date('2025-10-06T14:00:00Z'));
    expect(ps).toHaveLength(1);
    expect(ps[0]).toMatch(/past/);
    expect(ps[0]).toMatch(/pick another/);
    // Exactly now counts as the past too.
    expect(problems(SEED, { ...LIMITS, minNoticeMinutes: 0 }, SEED_START)[0]).toMatch(/past/);
  });

  it('requires minNoticeMinutes of notice', () => {
    const fourMinutesBefore = new Date(SEED_START.getTime() - 4 * 60_000);
    const ps = problems(SEED, LIMITS, fourMinutesBefore);
    expect(ps).toEqual(["meetings need at least 5 minutes' notice, please pick a later time"]);
    expect(valid(SEED, LIMITS, new Date(SEED_START.getTime() - 5 * 60_000)).start).toEqual(SEED_START);
  });

  it('with no clock (null) skips only the timing rules', () => {
    const past = new Date('2025-10-06T14:00:00Z');
    expect(validateBookingAction(SEED, LIMITS, past).ok).toBe(false);
    const untimed = validateBookingAction(SEED, LIMITS, null);
    expect(untimed.ok && untimed.request.start).toEqual(SEED_START);
    expect(validateBookingAction({ ...SEED, email: 'nope' }, LIMITS, null).ok).toBe(false);
    expect(
      validateBookingAction({ ...SEED, participants: ['a@x.io', 'b@x.io', 'c@x.io', 'd@x.io'] }, LIMITS, null)
        .ok,
    ).toBe(false);
  });

  it('refuses times beyond horizonDays', () => {
    const limit = new Date(SEED_START.getTime() - 90 * 86_400_000);
    expect(valid(SEED, LIMITS, limit).start).toEqual(SEED_START);
    expect(problems(SEED, LIMITS, new Date(limit.getTime() - 1000))).toEqual([
      'meetings can be booked at most 90 days ahead, please pick an earlier date',
    ]);
  });

  it('keeps the name and friendly time, trimmed', () => {
    const r = valid({ ...SEED, name: ' Siddhant K ', friendly_time: ' today at 7 PM IST ' });
    expect(r.name).toBe('Siddhant K');
    expect(r.friendlyTime).toBe('today at 7 PM IST');
  });

  it('property: any valid time with any offset is parsed to the right instant', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 10, max: 80 * 24 * 60 }),
        fc.integer({ min: -720, max: 840 }),
        (minutesAhead, offset) => {
          const start = new Date(NOW.getTime() + minutesAhead * 60_000);
          const r = valid({ ...SEED, meeting_time: toOffsetIso(start, offset) });
          expect(r.start).toEqual(start);
          expect(r.offsetMinutes).toBe(offset);
        },
      ),
    );
  });
});

describe('toOffsetIso', () => {
  it.each([
    ['2025-10-06T13:30:00Z', 330, '2025-10-06T19:00:00+05:30'],
    ['2025-10-06T13:30:00Z', 0, '2025-10-06T13:30:00+00:00'],
    ['2025-10-06T13:30:00Z', -240, '2025-10-06T09:30:00-04:00'],
    ['2025-10-06T13:30:45.999Z', -570, '2025-10-06T04:00:45-09:30'],
    ['2025-12-31T23:00:00Z', 120, '2026-01-01T01:00:00+02:00'],
  ])('%s at %d minutes -> %s', (instant, offset, expected) => {
    expect(toOffsetIso(new Date(instant), offset)).toBe(expected);
  });

  it('property: round-trips to the instant (to the second) and ends with the offset', () => {
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('1971-01-01T00:00:00Z'),
          max: new Date('9990-01-01T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.integer({ min: -720, max: 840 }),
        (d, o) => {
          const s = toOffsetIso(d, o);
          expect(new Date(s).getTime()).toBe(Math.floor(d.getTime() / 1000) * 1000);
          const sign = o < 0 ? '-' : '+';
          const abs = Math.abs(o);
          const suffix = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
          expect(s.endsWith(suffix)).toBe(true);
          expect(s).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$/);
        },
      ),
      { numRuns: 500 },
    );
  });
});

function request(overrides: Partial<BookingRequest> = {}): BookingRequest {
  return {
    name: 'Siddhant',
    email: 'siddhant@gmail.com',
    title: 'Demo',
    participants: ['bo@example.com', 'al@example.com'],
    start: SEED_START,
    offsetMinutes: 330,
    friendlyTime: 'today at 7 PM IST',
    ...overrides,
  };
}

describe('eventTimeZone', () => {
  it.each([
    ['Asia/Kolkata with +05:30', request(), 'Asia/Kolkata', 'Asia/Kolkata'],
    ['Europe/Berlin with +05:30', request(), 'Europe/Berlin', undefined],
    [
      'America/New_York -04:00 in July (EDT)',
      request({ start: new Date('2025-07-15T14:00:00Z'), offsetMinutes: -240 }),
      'America/New_York',
      'America/New_York',
    ],
    [
      'America/New_York -05:00 in July (wrong for EDT)',
      request({ start: new Date('2025-07-15T14:00:00Z'), offsetMinutes: -300 }),
      'America/New_York',
      undefined,
    ],
    [
      'America/New_York -05:00 in January (EST)',
      request({ start: new Date('2026-01-15T14:00:00Z'), offsetMinutes: -300 }),
      'America/New_York',
      'America/New_York',
    ],
    [
      'America/New_York -04:00 in January (wrong for EST)',
      request({ start: new Date('2026-01-15T14:00:00Z'), offsetMinutes: -240 }),
      'America/New_York',
      undefined,
    ],
    ['UTC with Z', request({ offsetMinutes: 0 }), 'UTC', 'UTC'],
    [
      'Europe/Berlin on the DST change day, after the change (+01:00)',
      request({ start: new Date('2025-10-26T02:30:00Z'), offsetMinutes: 60 }),
      'Europe/Berlin',
      'Europe/Berlin',
    ],
    [
      'Europe/Berlin on the DST change day, before the change (+02:00)',
      request({ start: new Date('2025-10-26T00:30:00Z'), offsetMinutes: 120 }),
      'Europe/Berlin',
      'Europe/Berlin',
    ],
  ])('%s', (_name, req, zone, expected) => {
    expect(eventTimeZone(req, zone)).toBe(expected);
  });
});

describe('offsetOfAnotherSeason', () => {
  it.each([
    [
      'New York -04:00 the Monday after clocks went back (EST)',
      '2025-11-03T14:00:00Z',
      -240,
      'America/New_York',
      true,
    ],
    ['New York -05:00 in July (EDT)', '2025-07-15T14:00:00Z', -300, 'America/New_York', true],
    ['New York with its offset of the day', '2025-11-03T14:00:00Z', -300, 'America/New_York', false],
    ['New York with the customer’s +05:30', '2025-11-03T14:00:00Z', 330, 'America/New_York', false],
    ['Kolkata (no daylight saving) with +04:30', '2025-11-03T14:00:00Z', 270, 'Asia/Kolkata', false],
    ['UTC with Z', '2025-11-03T14:00:00Z', 0, 'UTC', false],
    ['Berlin +02:00 in January (CET)', '2026-01-15T09:00:00Z', 120, 'Europe/Berlin', true],
    ['Sydney +10:00 in January (AEDT)', '2026-01-15T09:00:00Z', 600, 'Australia/Sydney', true],
    [
      'New York -05:00 just after clocks went forward (EDT)',
      '2026-03-10T14:00:00Z',
      -300,
      'America/New_York',
      true,
    ],
    ['New York -05:00 in April (EDT)', '2026-04-20T14:00:00Z', -300, 'America/New_York', true],
    [
      'Berlin +01:00 just after clocks went forward (CEST)',
      '2026-03-30T09:00:00Z',
      60,
      'Europe/Berlin',
      true,
    ],
    ['Berlin +01:00 in winter (its own offset)', '2026-02-02T09:00:00Z', 60, 'Europe/Berlin', false],
  ])('%s', (_name, start, offset, zone, expected) => {
    expect(offsetOfAnotherSeason(new Date(start), offset, zone)).toBe(expected);
  });
});

describe('bookingKey and googleEventIdFor', () => {
  const base = bookingKey('msg-1', 0, request());

  it('is deterministic', () => {
    expect(bookingKey('msg-1', 0, request())).toBe(base);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each([
    ['message id', bookingKey('msg-2', 0, request())],
    ['index', bookingKey('msg-1', 1, request())],
    ['time', bookingKey('msg-1', 0, request({ start: new Date(SEED_START.getTime() + 60_000) }))],
    ['email', bookingKey('msg-1', 0, request({ email: 'other@gmail.com' }))],
    [
      'participants (one more)',
      bookingKey('msg-1', 0, request({ participants: ['bo@example.com', 'al@example.com', 'c@x.io'] })),
    ],
    ['participants (one fewer)', bookingKey('msg-1', 0, request({ participants: ['bo@example.com'] }))],
    [
      'participants (other)',
      bookingKey('msg-1', 0, request({ participants: ['bo@example.com', 'zed@example.com'] })),
    ],
    ['title', bookingKey('msg-1', 0, request({ title: 'Demo 2' }))],
  ])('differs when the %s changes', (_name, key) => {
    expect(key).not.toBe(base);
  });

  it('is the same when participants are reordered or change case, or the email changes case', () => {
    expect(bookingKey('msg-1', 0, request({ participants: ['al@example.com', 'bo@example.com'] }))).toBe(
      base,
    );
    expect(bookingKey('msg-1', 0, request({ participants: ['AL@Example.com', 'Bo@EXAMPLE.com'] }))).toBe(
      base,
    );
    expect(bookingKey('msg-1', 0, request({ email: 'Siddhant@Gmail.COM' }))).toBe(base);
  });

  it('does not depend on the offset the same instant was written with, nor on the friendly text', () => {
    expect(bookingKey('msg-1', 0, request({ offsetMinutes: 0, friendlyTime: 'at 13:30 UTC' }))).toBe(base);
  });

  it('does not let field boundaries collide', () => {
    expect(bookingKey('msg-1', 10, request())).not.toBe(bookingKey('msg-11', 0, request()));
  });

  it('gives a valid, stable Google event id', () => {
    const id = googleEventIdFor(base);
    expect(id).toMatch(/^[a-v0-9]{5,1024}$/);
    expect(googleEventIdFor(base)).toBe(id);
    expect(googleEventIdFor(bookingKey('msg-2', 0, request()))).not.toBe(id);
  });

  const requestArb: fc.Arbitrary<BookingRequest> = fc.record({
    name: fc.option(fc.string()),
    email: fc.emailAddress(),
    title: fc.string({ maxLength: 200 }),
    participants: fc.array(fc.emailAddress(), { maxLength: 5 }),
    start: fc.date({
      min: new Date('2000-01-01T00:00:00Z'),
      max: new Date('2100-01-01T00:00:00Z'),
      noInvalidDate: true,
    }),
    offsetMinutes: fc.integer({ min: -720, max: 840 }),
    friendlyTime: fc.option(fc.string()),
  });

  it('property: event ids from any booking key are valid Google event ids', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.nat(), requestArb, (messageId, index, req) => {
        expect(googleEventIdFor(bookingKey(messageId, index, req))).toMatch(/^[a-v0-9]{5,1024}$/);
      }),
    );
  });

  it('property: any hex digest key gives a valid event id', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9a-f]{64}$/), (key) => {
        expect(googleEventIdFor(key)).toMatch(/^[a-v0-9]{5,1024}$/);
      }),
    );
  });

  it('property: reordering participants never changes the key', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.nat(),
        requestArb,
        fc.infiniteStream(fc.boolean()),
        (messageId, index, req, flips) => {
          const shuffled = [...req.participants]
            .reverse()
            .map((p) => (flips.next().value ? p.toUpperCase() : p));
          expect(bookingKey(messageId, index, { ...req, participants: shuffled })).toBe(
            bookingKey(messageId, index, req),
          );
        },
      ),
    );
  });
});

describe('namesAnotherClockTime', () => {
  // 2025-10-07T15:00:00Z: 11:00 AM in New York (EDT), 3:00 PM at offset 0.
  const start = new Date('2025-10-07T15:00:00Z');
  const ny = 'America/New_York';
  it.each([
    ['tomorrow', 0, false],
    ['tomorrow at 11 AM', 0, false], // the agent's zone
    ['Tuesday at 11:00 a.m. EDT', -240, false],
    ['tomorrow at 4 PM', 60, false], // the action's own offset (a customer in London)
    ['Tuesday at 15:00 UTC', 0, false], // UTC, said so
    ['at 3 PM GMT', 0, false],
    ['tomorrow at 3 PM EDT', 0, true], // the model wrote 15:00Z for 3 PM in New York
    ['tomorrow at 3 PM', 0, true], // likewise, unsaid: the booked time in the agent's zone is written
    ['Tuesday at 3 PM EDT', -240, true],
    ['at 3:30 PM', -240, true],
    ['at 10am', -240, true],
    ['at 11.00am', -240, false],
    ['11-12 AM', -240, true], // the end named too: the booked time is written instead
    ['at noon', -240, true],
    ['at midnight', -240, true],
    ['at 23:00', -240, true],
    ['at 11:00', -240, false],
    ['13 pm', -240, false], // no 12-hour time, no minutes: not read
    ['at 13:00 pm', -240, true], // read as 24-hour
    ['at 11:00 am (GMT-4)', -240, false],
    ['11h00', -240, false],
    ['à 11h30', -240, true],
  ])('%j (action offset %d): %s', (words, offset, expected) => {
    expect(namesAnotherClockTime(words, start, offset, ny)).toBe(expected);
  });

  it('GMT+9 (as friendlyTime writes Tokyo) is no UTC: a Z meant as Tokyo’s 3 PM is caught', () => {
    const at = new Date('2025-10-07T15:00:00Z'); // midnight in Tokyo
    expect(namesAnotherClockTime('Tuesday at 3:00 PM GMT+9', at, 0, 'Asia/Tokyo')).toBe(true);
    expect(namesAnotherClockTime('Tuesday at 3:00 PM UTC − 4', at, 0, 'Asia/Tokyo')).toBe(true);
    expect(namesAnotherClockTime('Tuesday at 3:00 PM GMT', at, 0, 'Asia/Tokyo')).toBe(false);
    expect(namesAnotherClockTime('Wednesday at 12:00 AM GMT+9', at, 0, 'Asia/Tokyo')).toBe(false);
  });

  it('twelve at noon and midnight read as 12:00 and 0:00', () => {
    const noon = new Date('2025-10-07T12:00:00Z');
    expect(namesAnotherClockTime('at 12 PM', noon, 0, 'UTC')).toBe(false);
    expect(namesAnotherClockTime('at noon', noon, 0, 'UTC')).toBe(false);
    expect(namesAnotherClockTime('at 12 AM', noon, 0, 'UTC')).toBe(true);
    const midnight = new Date('2025-10-07T00:00:00Z');
    expect(namesAnotherClockTime('at 12 AM', midnight, 0, 'UTC')).toBe(false);
    expect(namesAnotherClockTime('at midnight', midnight, 0, 'UTC')).toBe(false);
  });
});
