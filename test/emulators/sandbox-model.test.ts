import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { extractBookingActions } from '../../src/domain/booking-action.js';
import { validateBookingAction } from '../../src/domain/booking-request.js';
import { buildSystemPrompt } from '../../src/domain/prompt.js';
import { toZonedIso } from '../../src/domain/time.js';
import {
  friendlyMeetingTime,
  parseDay,
  parseEmail,
  parseName,
  parsePromptNow,
  parseTimeOfDay,
  resolveMeetingTime,
  sandboxReply,
  sandboxTurn,
} from './sandbox-model.js';

// Monday 6 October 2025, 11:20 in Berlin (CEST, +02:00).
const NOW = new Date('2025-10-06T09:20:00Z');
const ZONE = 'Europe/Berlin';
const system = (at = NOW, zone = ZONE) => buildSystemPrompt('You help customers of Acme.', zone, at);

/** Runs a conversation of customer lines through the model, feeding its replies back like the service does. */
function converse(lines: string[], at = NOW, zone = ZONE): string[] {
  const messages: Array<{ role: string; content: string }> = [{ role: 'system', content: system(at, zone) }];
  const replies: string[] = [];
  for (const line of lines) {
    messages.push({ role: 'user', content: line });
    const reply = sandboxReply({ messages }, at);
    replies.push(reply);
    messages.push({ role: 'assistant', content: reply });
  }
  return replies;
}

const LIMITS = { maxParticipants: 10, minNoticeMinutes: 5, horizonDays: 90 };

describe('sandbox model: reading phrases', () => {
  it.each([
    ['tomorrow at 3pm', { hour: 15, minute: 0 }],
    ['Friday 10am', { hour: 10, minute: 0 }],
    ['at 3:30 p.m. please', { hour: 15, minute: 30 }],
    ['how about 14:45', { hour: 14, minute: 45 }],
    ['12am', { hour: 0, minute: 0 }],
    ['12pm', { hour: 12, minute: 0 }],
    ['noon works', { hour: 12, minute: 0 }],
    ['at 4', { hour: 16, minute: 0 }],
    ['at 9 o’clock', { hour: 9, minute: 0 }],
    ['I am amazed', undefined],
    ['on the 3rd of November', undefined],
    ['a demo please', undefined],
  ])('time of %j', (text, expected) => {
    expect(parseTimeOfDay(text)).toEqual(expected);
  });

  it.each([
    ['tomorrow at 3pm', { kind: 'offset', days: 1, word: 'tomorrow' }],
    ['the day after tomorrow', { kind: 'offset', days: 2, word: 'the day after tomorrow' }],
    ['today at 5', { kind: 'offset', days: 0, word: 'today' }],
    ['Friday 10am', { kind: 'weekday', weekday: 5, next: false }],
    ['next mon at 9', { kind: 'weekday', weekday: 1, next: true }],
    ['Oct 20 at noon', { kind: 'date', month: 10, day: 20 }],
    ['the 3rd of November', { kind: 'date', month: 11, day: 3 }],
    ['2025-12-01 09:00', { kind: 'date', year: 2025, month: 12, day: 1 }],
    ['may I book something', undefined],
    ['I want a demo', undefined],
  ])('day of %j', (text, expected) => {
    expect(parseDay(text)).toEqual(expected);
  });

  it.each([
    ['Ada Lovelace', true, 'Ada Lovelace'],
    ['ada', true, 'Ada'],
    ['It’s Grace Hopper.', true, 'Grace Hopper'],
    ['Ada Lovelace, ada@example.com', true, 'Ada Lovelace'],
    ['my name is alan turing and I want a demo', false, 'Alan Turing'],
    ['Hi, I’m Ada and I’d like a call', false, 'Ada'],
    ['I’m interested in a demo', false, undefined],
    ['Friday', true, undefined],
    ['hello', true, undefined],
    ['tomorrow at 3pm', true, undefined],
    ['Ada Lovelace', false, undefined],
  ])('name in %j (asked: %s)', (text, asked, expected) => {
    expect(parseName(text, asked)).toBe(expected);
  });

  it('finds the email', () => {
    expect(parseEmail('sure: ada@example.com.')).toBe('ada@example.com');
    expect(parseEmail('no email here')).toBeUndefined();
  });

  it('reads "now" and the zone from the system prompt', () => {
    const now = parsePromptNow(system());
    expect(now).toMatchObject({ zone: ZONE, year: 2025, month: 10, day: 6, hour: 11, minute: 20 });
    expect(now.instant.toISOString()).toBe('2025-10-06T09:20:00.000Z');
  });
});

describe('sandbox model: resolving times in the agent zone', () => {
  const now = parsePromptNow(system());
  const at = (text: string) => {
    const time = parseTimeOfDay(text);
    if (!time) throw new Error(`no time in ${text}`);
    return toZonedIso(resolveMeetingTime(now, parseDay(text), time), ZONE);
  };

  it.each([
    ['tomorrow at 3pm', '2025-10-07T15:00:00+02:00'],
    ['Friday 10am', '2025-10-10T10:00:00+02:00'],
    // Today is Monday: a time still ahead is today, a time gone is next week's Monday.
    ['Monday at 4pm', '2025-10-06T16:00:00+02:00'],
    ['Monday at 9am', '2025-10-13T09:00:00+02:00'],
    ['next Monday at 4pm', '2025-10-13T16:00:00+02:00'],
    ['at 5pm', '2025-10-06T17:00:00+02:00'],
    ['at 10am', '2025-10-07T10:00:00+02:00'],
    // Across the end of summer time (26 October): the offset follows the date.
    ['Oct 27 at 9am', '2025-10-27T09:00:00+01:00'],
    ['Jan 5 at noon', '2026-01-05T12:00:00+01:00'],
  ])('%j -> %s', (text, expected) => {
    expect(at(text)).toBe(expected);
  });

  it('says the time the way a person would', () => {
    const start = resolveMeetingTime(now, parseDay('tomorrow'), { hour: 15, minute: 0 });
    expect(friendlyMeetingTime(now, start)).toBe('tomorrow at 3 PM GMT+2');
    const later = resolveMeetingTime(now, parseDay('Oct 20'), { hour: 9, minute: 30 });
    expect(friendlyMeetingTime(now, later)).toBe('Monday, October 20 at 9:30 AM GMT+2');
  });

  it('property: "tomorrow at H" is the next local day at H, with the zone offset of that moment', () => {
    const zones = [
      'UTC',
      'Asia/Kolkata',
      'America/New_York',
      'Europe/Berlin',
      'Australia/Sydney',
      'Asia/Tokyo',
    ];
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('2024-01-01T00:00:00Z'),
          max: new Date('2030-12-31T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.constantFrom(...zones),
        fc.integer({ min: 8, max: 19 }),
        (instant, zone, hour) => {
          const promptNow = parsePromptNow(buildSystemPrompt('', zone, instant));
          const start = resolveMeetingTime(promptNow, parseDay('tomorrow'), { hour, minute: 0 });
          const iso = toZonedIso(start, zone);
          const expectedDate = new Date(Date.UTC(promptNow.year, promptNow.month - 1, promptNow.day + 1))
            .toISOString()
            .slice(0, 10);
          expect(iso.slice(0, 16)).toBe(`${expectedDate}T${String(hour).padStart(2, '0')}:00`);
          expect(start.getTime()).toBeGreaterThan(instant.getTime());
        },
      ),
    );
  });
});

describe('sandbox model: the conversation', () => {
  it('greets a hello', () => {
    const [reply] = converse(['Hi!']);
    expect(reply).toMatch(/^Hello! 👋/);
    expect(reply).toContain('tomorrow at 3pm');
  });

  it('books "a demo tomorrow at 3pm" after asking the name and the email', () => {
    const replies = converse(["I'd like a demo tomorrow at 3pm", 'Ada Lovelace', 'ada@example.com']);
    expect(replies[0]).toBe('Tomorrow at 3 PM GMT+2 works. May I have your name?');
    expect(replies[1]).toBe('Thanks, Ada! What email address should I send the invitation to?');
    const { actions, prose } = extractBookingActions(replies[2] ?? '');
    expect(prose).toBe('Perfect, Ada — booking your demo for tomorrow at 3 PM GMT+2.');
    expect(actions).toEqual([
      {
        action: 'Time_to_121meet',
        name: 'Ada Lovelace',
        email: 'ada@example.com',
        title: 'Demo with Ada Lovelace',
        participants: ['ada@example.com'],
        meeting_time: '2025-10-07T15:00:00+02:00',
        friendly_time: 'tomorrow at 3 PM GMT+2',
      },
    ]);
    // The action passes the service's own validation.
    expect(validateBookingAction(actions[0], LIMITS, NOW).ok).toBe(true);
  });

  it('asks for what is missing, in any order given', () => {
    const replies = converse([
      'hello',
      'I want to talk to someone',
      'my name is grace hopper',
      'grace@example.com',
      'Friday',
      '10am',
    ]);
    expect(replies[1]).toBe('May I have your name?');
    expect(replies[2]).toBe('Thanks, Grace! What email address should I send the invitation to?');
    expect(replies[3]).toMatch(/When would suit you\?/);
    expect(replies[4]).toBe('What time on Friday works for you?');
    const { actions } = extractBookingActions(replies[5] ?? '');
    expect(actions[0]).toMatchObject({
      name: 'Grace Hopper',
      title: 'Call with Grace Hopper',
      meeting_time: '2025-10-10T10:00:00+02:00',
    });
  });

  it('takes everything in one message, in another zone', () => {
    const [reply] = converse(
      ['Hi, I’m Ada Lovelace (ada@example.com), can we do a demo Friday 10am?'],
      NOW,
      'Asia/Kolkata',
    );
    const { actions } = extractBookingActions(reply ?? '');
    expect(actions[0]).toMatchObject({
      email: 'ada@example.com',
      meeting_time: '2025-10-10T10:00:00+05:30',
      friendly_time: 'Friday at 10 AM GMT+5:30',
    });
  });

  it('refuses a time that has passed instead of booking it', () => {
    const [reply] = converse(['Ada Lovelace ada@example.com, demo today at 9am']);
    expect(reply).toBe('That time has already passed here (Europe/Berlin). Which later time works for you?');
  });

  it('does not book twice once confirmed, and books again for a new time', () => {
    const messages: Array<{ role: string; content: string }> = [
      { role: 'system', content: system() },
      { role: 'user', content: 'demo tomorrow at 3pm, I am Ada Lovelace, ada@example.com' },
      {
        role: 'assistant',
        content:
          '✅ Meeting confirmed!\n\n📅 Meeting scheduled for tomorrow at 3 PM\n🔗 Join here: https://meet.google.com/abc-defg-hij',
      },
      { role: 'user', content: 'thanks!' },
    ];
    expect(sandboxReply({ messages }, NOW)).toBe('You’re welcome! See you in the meeting. 👋');
    messages.push(
      { role: 'assistant', content: 'You’re welcome!' },
      { role: 'user', content: 'and Friday 10am too' },
    );
    const { actions } = extractBookingActions(sandboxReply({ messages }, NOW));
    expect(actions[0]).toMatchObject({ name: 'Ada Lovelace', meeting_time: '2025-10-10T10:00:00+02:00' });
  });

  it('after a refusal, waits for a new time instead of repeating the refused one', () => {
    const messages: Array<{ role: string; content: string }> = [
      { role: 'system', content: system() },
      { role: 'user', content: 'Ada Lovelace ada@example.com demo tomorrow 3pm' },
      { role: 'assistant', content: "I couldn't book that meeting yet: the email is not valid." },
      { role: 'user', content: 'ok' },
    ];
    expect(sandboxReply({ messages }, NOW)).toMatch(/When would suit you\?/);
  });

  it('without a "Current date and time" line, works in UTC from the clock', () => {
    const reply = sandboxReply(
      { messages: [{ role: 'user', content: 'Ada Lovelace ada@example.com tomorrow at 3pm' }] },
      NOW,
    );
    expect(extractBookingActions(reply).actions[0]).toMatchObject({
      meeting_time: '2025-10-07T15:00:00+00:00',
    });
  });
});

describe('sandbox model: availability, reschedule and cancel (issue 8)', () => {
  const booked = (): Array<{ role: string; content: string }> => [
    { role: 'system', content: system() },
    { role: 'user', content: 'Ada Lovelace ada@example.com, a demo tomorrow at 3pm' },
    {
      role: 'assistant',
      content:
        '✅ Meeting confirmed!\n\n📅 Meeting scheduled for tomorrow at 3 PM GMT+2\n🔗 Join here: https://meet.google.com/x',
    },
  ];
  const TOOLS = [{ type: 'function', function: { name: 'check_availability' } }];

  it('asks the check_availability tool for the day the customer names, then lists the free times', () => {
    const messages = [
      { role: 'system', content: system() },
      { role: 'user', content: 'What times are free on Friday?' },
    ];
    expect(sandboxTurn({ messages, tools: TOOLS }, NOW)).toEqual({
      toolCalls: [{ name: 'check_availability', arguments: { start_date: '2025-10-10', end_date: null } }],
    });
    // Without the tool offered (the round cap), it answers in words.
    expect('content' in sandboxTurn({ messages, tools: [] }, NOW)).toBe(true);
    const result = JSON.stringify({
      free_slots: [{ friendly: 'A' }, { friendly: 'B' }, { friendly: 'C' }, { friendly: 'D' }],
    });
    expect(
      sandboxTurn({ messages: [...messages, { role: 'tool', content: result }], tools: TOOLS }, NOW),
    ).toEqual({
      content: 'Here are some free times: A; B; C. Which one suits you?',
    });
  });

  it('moves the booked meeting to a new time with reschedule_meeting', () => {
    const messages = [...booked(), { role: 'user', content: 'Can we move it to Wednesday at 10am instead?' }];
    const { actions, prose } = extractBookingActions(sandboxReply({ messages }, NOW));
    expect(prose).toBe('Moving your meeting to Wednesday at 10 AM GMT+2.');
    expect(actions).toEqual([
      {
        action: 'reschedule_meeting',
        meeting_id: null,
        new_time: '2025-10-08T10:00:00+02:00',
        friendly_time: 'Wednesday at 10 AM GMT+2',
      },
    ]);
  });

  it('cancels the booked meeting with cancel_meeting; with nothing booked it does not', () => {
    const { actions } = extractBookingActions(
      sandboxReply({ messages: [...booked(), { role: 'user', content: 'Please cancel it' }] }, NOW),
    );
    expect(actions).toEqual([{ action: 'cancel_meeting', meeting_id: null }]);
    const none = extractBookingActions(
      sandboxReply(
        {
          messages: [
            { role: 'system', content: system() },
            { role: 'user', content: 'cancel' },
          ],
        },
        NOW,
      ),
    );
    expect(none.actions).toEqual([]);
  });
});
