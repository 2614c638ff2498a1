import { describe, expect, it } from 'vitest';
import {
  BOOKING_ACTION,
  bookingInstructions,
  bookingToolParameters,
  buildSystemPrompt,
  currentTimeLine,
  datesAheadLine,
} from '../../src/domain/prompt.js';

const AGENT_PROMPT = 'You are Ava, the assistant of Acme Dental. Be brief.';
const RECEIVED = new Date('2025-10-06T13:30:00Z');

describe('buildSystemPrompt', () => {
  const prompt = buildSystemPrompt(`  ${AGENT_PROMPT}\n`, 'Asia/Kolkata', RECEIVED);

  it("starts with the agent's own prompt", () => {
    expect(prompt.startsWith(`${AGENT_PROMPT}\n\n`)).toBe(true);
  });

  it('holds the booking instructions for the zone', () => {
    expect(prompt).toContain(bookingInstructions('Asia/Kolkata'));
    expect(prompt).toContain('business time zone (Asia/Kolkata)');
  });

  it.each([
    '"action": "Time_to_121meet"',
    '"name":',
    '"email":',
    '"title":',
    '"participants": [',
    '"meeting_time":',
    '"friendly_time":',
  ])('shows the seed action key %s', (key) => {
    expect(prompt).toContain(key);
  });

  it('shows the action JSON as one array of one object', () => {
    const start = prompt.indexOf('[{');
    const end = prompt.indexOf('}]', start);
    expect(start).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(start);
    const keys = [...prompt.slice(start, end + 2).matchAll(/^\s*"([a-z_]+)":/gm)].map((m) => m[1]);
    expect(keys).toEqual([
      'action',
      'name',
      'email',
      'title',
      'participants',
      'meeting_time',
      'friendly_time',
    ]);
  });

  it('lists the next 14 dates with their weekdays, just before the current time', () => {
    const line = datesAheadLine(RECEIVED, 'Asia/Kolkata');
    expect(line).toBe(
      'The next 14 dates in Asia/Kolkata: Monday 2025-10-06 (today), Tuesday 2025-10-07 (tomorrow), ' +
        'Wednesday 2025-10-08, Thursday 2025-10-09, Friday 2025-10-10, Saturday 2025-10-11, Sunday 2025-10-12, ' +
        'Monday 2025-10-13, Tuesday 2025-10-14, Wednesday 2025-10-15, Thursday 2025-10-16, Friday 2025-10-17, ' +
        'Saturday 2025-10-18, Sunday 2025-10-19.',
    );
    expect(prompt).toContain(`${line}\n\nCurrent date and time:`);
  });

  it('counts the dates in the agent’s zone, on the calendar: a 25-hour day repeats none', () => {
    // 00:30 on the day New York falls back (25 hours long); in UTC it is already 04:30.
    const line = datesAheadLine(new Date('2025-11-02T04:30:00Z'), 'America/New_York');
    expect(line).toContain(': Sunday 2025-11-02 (today), Monday 2025-11-03 (tomorrow), Tuesday 2025-11-04,');
    // 23:30 in Los Angeles is the next day in UTC: today is still the 5th there.
    expect(datesAheadLine(new Date('2025-10-06T06:30:00Z'), 'America/Los_Angeles')).toContain(
      ': Sunday 2025-10-05 (today),',
    );
    const dates = [...line.matchAll(/\d{4}-\d{2}-\d{2}/g)].map((m) => m[0]);
    expect(new Set(dates).size).toBe(14);
    expect(dates.at(-1)).toBe('2025-11-15');
  });

  it('ends with the current time: ISO with offset, weekday and IANA zone', () => {
    expect(
      prompt.endsWith('Current date and time: 2025-10-06T19:00:00+05:30 (Monday), time zone Asia/Kolkata.'),
    ).toBe(true);
  });

  it('uses the zone it is given for the time line, and says when its offset changes ahead', () => {
    expect(currentTimeLine(new Date('2025-10-06T02:00:00Z'), 'America/New_York')).toBe(
      'Current date and time: 2025-10-05T22:00:00-04:00 (Sunday), time zone America/New_York. ' +
        'Its UTC offset changes at 2025-11-02T02:00:00-04:00 from -04:00 to -05:00: give each meeting_time the offset in effect at that meeting.',
    );
  });

  it('names every change in the window, in order (Casablanca around Ramadan)', () => {
    expect(currentTimeLine(new Date('2026-01-10T12:00:00Z'), 'Africa/Casablanca')).toBe(
      'Current date and time: 2026-01-10T13:00:00+01:00 (Saturday), time zone Africa/Casablanca. ' +
        'Its UTC offset changes at 2026-02-15T03:00:00+01:00 from +01:00 to +00:00, then at 2026-03-22T02:00:00+00:00 from +00:00 to +01:00: ' +
        'give each meeting_time the offset in effect at that meeting.',
    );
  });

  it('gives the instant of a change at local midnight, not the date it falls back into (Cairo)', () => {
    // Cairo falls back at 24:00 on Thursday 2025-10-30: all of Thursday is still +03:00.
    expect(currentTimeLine(new Date('2025-10-01T00:00:00Z'), 'Africa/Cairo')).toContain(
      'Its UTC offset changes at 2025-10-31T00:00:00+03:00 from +03:00 to +02:00:',
    );
  });

  it('looks as far ahead as the horizon it is given, and never behind now', () => {
    expect(currentTimeLine(new Date('2025-10-06T02:00:00Z'), 'UTC')).toBe(
      'Current date and time: 2025-10-06T02:00:00+00:00 (Monday), time zone UTC.',
    );
    // Europe/Berlin in early June: the next change (late October) is past a 90-day horizon...
    expect(currentTimeLine(new Date('2025-06-01T10:00:00Z'), 'Europe/Berlin')).toBe(
      'Current date and time: 2025-06-01T12:00:00+02:00 (Sunday), time zone Europe/Berlin.',
    );
    // ...and inside a year's.
    expect(currentTimeLine(new Date('2025-06-01T10:00:00Z'), 'Europe/Berlin', 365)).toContain(
      'Its UTC offset changes at 2025-10-26T03:00:00+02:00 from +02:00 to +01:00, then at 2026-03-29T02:00:00+01:00 from +01:00 to +02:00:',
    );
    // A change earlier the same day is past: not announced.
    expect(currentTimeLine(new Date('2025-11-02T12:00:00Z'), 'America/New_York')).toBe(
      'Current date and time: 2025-11-02T07:00:00-05:00 (Sunday), time zone America/New_York.',
    );
  });

  it('leaves out an empty agent prompt', () => {
    const p = buildSystemPrompt('   ', 'UTC', RECEIVED);
    expect(p.startsWith('You can book a video meeting')).toBe(true);
    expect(p).toContain('time zone UTC.');
  });
});

describe('bookingToolParameters', () => {
  it('is OpenAI strict: no extra properties, every property required', () => {
    expect(bookingToolParameters.type).toBe('object');
    expect(bookingToolParameters.additionalProperties).toBe(false);
    expect([...bookingToolParameters.required].sort()).toEqual(
      Object.keys(bookingToolParameters.properties).sort(),
    );
    expect(new Set(bookingToolParameters.required).size).toBe(bookingToolParameters.required.length);
  });

  it('has the seed fields (without "action", which is the tool name)', () => {
    expect(Object.keys(bookingToolParameters.properties).sort()).toEqual(
      ['email', 'friendly_time', 'meeting_time', 'name', 'participants', 'title'].sort(),
    );
    expect(BOOKING_ACTION).toBe('Time_to_121meet');
  });

  it('types every property, nested items included', () => {
    for (const [key, schema] of Object.entries(bookingToolParameters.properties)) {
      expect(schema, key).toHaveProperty('type');
    }
    expect(bookingToolParameters.properties.participants.items).toEqual({ type: 'string' });
  });
});
