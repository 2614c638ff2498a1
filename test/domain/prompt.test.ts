import { describe, expect, it } from 'vitest';
import {
  BOOKING_ACTION,
  bookingInstructions,
  bookingToolParameters,
  buildSystemPrompt,
  currentTimeLine,
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

  it('ends with the current time: ISO with offset, weekday and IANA zone', () => {
    expect(
      prompt.endsWith('Current date and time: 2025-10-06T19:00:00+05:30 (Monday), time zone Asia/Kolkata.'),
    ).toBe(true);
  });

  it('uses the zone it is given for the time line', () => {
    expect(currentTimeLine(new Date('2025-10-06T02:00:00Z'), 'America/New_York')).toBe(
      'Current date and time: 2025-10-05T22:00:00-04:00 (Sunday), time zone America/New_York.',
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
