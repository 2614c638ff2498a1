/**
 * Meeting booking through the whole service (issue 4): a customer message goes in over HTTP, the
 * OpenAI emulator answers with the seed's action (JSON in the text, or a tool call), the worker books
 * it on the Google emulator through the real clients, stores the meeting and confirms it.
 * Google's auth and error branches have their own files in test/google/.
 */
import { randomBytes } from 'node:crypto';
import type { calendar_v3 } from '@googleapis/calendar';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { BookingLeaseStore } from '../../src/store/booking-leases.js';
import type { ScriptedReply } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { useStack } from '../helpers/stack.js';
import { stallFirstRun } from '../helpers/stall.js';
import { friendlyIn, wallTime } from '../helpers/time.js';

const s = useStack();
beforeEach(() => {
  s.google.conferenceMode = 'success';
  s.google.pendingPolls = 2;
});

type Event = calendar_v3.Schema$Event;

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;
const ownerEmail = (userId: string) => `${userId}@owner.test`;

/** The seed's action (step 3), with overrides. */
function seedAction(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    action: 'Time_to_121meet',
    name: 'Siddhant',
    email: 'siddhant@gmail.com',
    title: 'Demo',
    participants: ['siddhant@gmail.com'],
    meeting_time: wallTime(1, 19, 0, 330).iso,
    friendly_time: 'tomorrow at 7 PM IST',
    ...over,
  };
}

/** The seed's confirmation (step 5), word for word. */
const confirmation = (friendly: string, link: string) =>
  `✅ Meeting confirmed!\n\n📅 Meeting scheduled for ${friendly}\n🔗 Join here: ${link}\n\nYou'll receive a calendar invite via email.`;
const confirmationWithoutLink = (friendly: string) =>
  `✅ Meeting confirmed!\n\n📅 Meeting scheduled for ${friendly}\n🔗 The meeting link is in your calendar invite.\n\nYou'll receive a calendar invite via email.`;
const confirmationWithNoLink = (friendly: string) =>
  `✅ Meeting confirmed!\n\n📅 Meeting scheduled for ${friendly}\n🔗 No video call link could be created for this meeting.\n\nYou'll receive a calendar invite via email.`;
const tooMany = (max: number) =>
  `This conversation already has ${max} upcoming meetings booked, which is the most I can book here. ` +
  'If you need a change, please contact the business directly.';
const invalid = (problem: string) =>
  `I couldn't book that meeting yet: ${problem}. Could you check and tell me again?`;

interface Chat {
  userId: string;
  email: string;
  agentId: string;
  conversation_id: string;
  customer_token: string;
}

async function newChat(
  opts: { agent?: Record<string, unknown>; connect?: boolean; userId?: string; agentId?: string } = {},
): Promise<Chat> {
  const userId = opts.userId ?? uid('bk');
  if (opts.connect !== false && !opts.userId) await s.connectOwner(userId);
  const agentId =
    opts.agentId ??
    (await s.createAgent({ user_id: userId, name: 'Acme Assistant', ...opts.agent })).agent_id;
  const c = await s.openConversation(agentId, { customer_name: 'Sid from chat' });
  return { userId, email: ownerEmail(userId), agentId, ...c };
}

/** Sends a customer message answered by `reply`; returns the newest assistant reply. */
async function ask(c: Chat, text: string, reply: ScriptedReply, replies = 1): Promise<string> {
  s.openai.responder = () => reply;
  await s.send(c.conversation_id, c.customer_token, text);
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, replies);
  return list.filter((m) => m.role === 'assistant').at(-1)?.content ?? '';
}

const requestsFor = (op: string) => s.google.requests.filter((r) => r.op === op);

async function meetingsOf(userId: string): Promise<Array<Record<string, unknown>>> {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: s.admin });
  expect(res.statusCode).toBe(200);
  return res.json().meetings;
}

async function assistantReplies(c: Chat): Promise<string[]> {
  return (await s.messages(c.conversation_id, c.customer_token))
    .filter((m) => m.role === 'assistant')
    .map((m) => m.content);
}

describe('booking: the seed flow', () => {
  it('confirms the booked hour, not the model’s words, when its offset is the zone’s other season’s', async () => {
    const zone = 'America/New_York';
    const c = await newChat({ agent: { timezone: zone } });
    // A week ahead at 15:00 UTC, written with the offset New York keeps half a year away: the model's
    // wall clock (and its friendly_time) is an hour off the instant booked.
    const at = new Date(Date.now() + 7 * 86_400_000);
    at.setUTCHours(15, 0, 0, 0);
    const zoneName = new Intl.DateTimeFormat('en-US', { timeZone: zone, timeZoneName: 'short' })
      .formatToParts(at)
      .find((p) => p.type === 'timeZoneName')?.value;
    const other = zoneName === 'EST' ? -4 : -5; // hours
    const iso = `${new Date(at.getTime() + other * 3_600_000).toISOString().slice(0, 19)}-0${-other}:00`;
    const reply = await ask(c, 'book it', {
      content: JSON.stringify([seedAction({ meeting_time: iso, friendly_time: 'the model’s own words' })]),
    });
    const [event] = s.google.events(c.email);
    expect(Date.parse(event!.start!.dateTime!)).toBe(at.getTime());
    expect(reply).toBe(confirmation(friendlyIn(zone, at), event!.hangoutLink!));
    // A move an hour later, written the same way: the confirmation names the hour it moved to.
    const later = new Date(at.getTime() + 3_600_000);
    const laterIso = `${new Date(later.getTime() + other * 3_600_000).toISOString().slice(0, 19)}-0${-other}:00`;
    const moved = await ask(
      c,
      'an hour later?',
      {
        toolCalls: [
          {
            name: 'reschedule_meeting',
            arguments: { meeting_id: null, new_time: laterIso, friendly_time: 'the model’s words again' },
          },
        ],
      },
      2,
    );
    expect(moved).toBe(
      `✅ Meeting rescheduled!\n\n📅 Meeting now scheduled for ${friendlyIn(zone, later)}\n🔗 Join here: ${event!.hangoutLink}\n\nYou'll receive an updated calendar invite via email.`,
    );
  });

  it('confirms the booked hour, not the model’s words, when they name another clock time (a Z meant as local)', async () => {
    const zone = 'America/New_York';
    const c = await newChat({ agent: { timezone: zone } });
    // The customer asked for 3 PM in New York; the model wrote 15:00 as UTC, and "3 PM" in its words.
    const at = new Date(Date.now() + 7 * 86_400_000);
    at.setUTCHours(15, 0, 0, 0);
    const reply = await ask(c, 'next week at 3 PM', {
      content: JSON.stringify([
        seedAction({
          meeting_time: at.toISOString().replace('.000Z', 'Z'),
          friendly_time: 'next week at 3 PM Eastern',
        }),
      ]),
    });
    const [event] = s.google.events(c.email);
    expect(Date.parse(event!.start!.dateTime!)).toBe(at.getTime());
    // 10 or 11 AM in New York: the hour the invitations carry, for the customer to see and correct.
    expect(reply).toBe(confirmation(friendlyIn(zone, at), event!.hangoutLink!));
    expect(reply).not.toContain('3 PM');
  });

  it('books the seed’s action end to end: event, meeting row, confirmation', async () => {
    const c = await newChat({ agent: { timezone: 'Asia/Kolkata', meeting_duration_minutes: 45 } });
    const start = wallTime(1, 19, 0, 330);
    const end = wallTime(1, 19, 45, 330);
    const action = seedAction({
      meeting_time: start.iso,
      participants: ['siddhant@gmail.com', 'Priya@Example.com', 'priya@example.com', 'SIDDHANT@gmail.com'],
    });
    const text = `Great, I'll set that up for you.\n${JSON.stringify([action], null, 2)}\nTalk soon!`;
    s.openai.responder = () => ({ content: text });
    const messageId = await s.send(c.conversation_id, c.customer_token, 'I want to schedule a demo meeting');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(s.openai.requests.length).toBe(1);
    const userTurns = s.openai.requests[0]!.messages.filter((m) => m.role === 'user');
    expect(messageText(userTurns.at(-1)?.content)).toBe('I want to schedule a demo meeting');

    // On the owner's calendar
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    const ev = events[0]!;
    expect(ev.id).toMatch(/^[a-v0-9]{5,1024}$/);
    expect(ev.summary).toBe('Demo');
    expect(ev.description).toContain('Siddhant');
    expect(ev.description).toContain('siddhant@gmail.com');
    expect(ev.attendees?.map((a) => a.email)).toEqual(['siddhant@gmail.com', 'Priya@Example.com']);
    expect(ev.reminders).toEqual({
      useDefault: false,
      overrides: [
        { method: 'email', minutes: 1440 },
        { method: 'popup', minutes: 30 },
      ],
    });
    expect(Date.parse(ev.start?.dateTime ?? '')).toBe(start.at.getTime());
    expect(Date.parse(ev.end?.dateTime ?? '')).toBe(start.at.getTime() + 45 * 60_000);
    expect(ev.hangoutLink).toMatch(/^https:\/\/meet\.google\.com\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
    expect(ev.conferenceData?.createRequest?.status?.statusCode).toBe('success');

    // What was sent to Google
    const inserts = requestsFor('events.insert');
    expect(inserts).toHaveLength(1);
    expect(inserts[0]!.status).toBe(200);
    expect(inserts[0]!.query).toMatchObject({ conferenceDataVersion: '1', sendUpdates: 'all' });
    expect(inserts[0]!.path).toBe('/calendar/v3/calendars/primary/events');
    const body = inserts[0]!.body as Event;
    expect(body.id).toBe(ev.id);
    expect(body.start).toEqual({ dateTime: start.iso, timeZone: 'Asia/Kolkata' });
    expect(body.end).toEqual({ dateTime: end.iso, timeZone: 'Asia/Kolkata' });
    expect(body.conferenceData?.createRequest).toEqual({
      requestId: expect.stringMatching(/^\S{8,}$/),
      conferenceSolutionKey: { type: 'hangoutsMeet' },
    });
    expect(s.google.sentUpdates(c.email)).toEqual([{ eventId: ev.id, op: 'insert', sendUpdates: 'all' }]);

    // Stored, as the owner API shows it
    const meetings = await meetingsOf(c.userId);
    expect(meetings).toHaveLength(1);
    const expected = {
      meeting_id: expect.stringMatching(/^mtg_[a-z0-9]+$/),
      user_id: c.userId,
      agent_id: c.agentId,
      conversation_id: c.conversation_id,
      message_id: messageId,
      google_event_id: ev.id,
      title: 'Demo',
      customer_name: 'Siddhant',
      customer_email: 'siddhant@gmail.com',
      participants: ['Priya@Example.com'],
      meeting_time: start.at.toISOString(),
      duration_minutes: 45,
      timezone: 'Asia/Kolkata',
      meet_link: ev.hangoutLink,
      html_link: ev.htmlLink,
      status: 'scheduled',
      cancelled_at: null,
      created_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
      updated_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
    };
    expect(meetings[0]).toEqual(expected);
    const one = await s.app.http.inject({
      url: `/api/meetings/${meetings[0]!.meeting_id}`,
      headers: s.admin,
    });
    expect(one.statusCode).toBe(200);
    expect(one.json()).toEqual({ success: true, meeting: meetings[0] });

    // The customer's confirmation: prose first, the seed's text, the real link; no JSON
    const reply = list.filter((m) => m.role === 'assistant').at(-1)!.content;
    expect(reply).toBe(
      `Great, I'll set that up for you.\n\nTalk soon!\n\n${confirmation('tomorrow at 7 PM IST', ev.hangoutLink!)}`,
    );
    expect(reply).not.toContain('Time_to_121meet');
  });

  it('leaves timeZone out when the agent’s zone does not have the action’s offset', async () => {
    const c = await newChat({ agent: { timezone: 'Europe/Berlin' } });
    const start = wallTime(2, 10, 30, 330);
    const reply = await ask(c, 'book', {
      content: JSON.stringify([seedAction({ meeting_time: start.iso, friendly_time: 'in two days' })]),
    });
    const body = requestsFor('events.insert')[0]!.body as Event;
    expect(body.start).toEqual({ dateTime: start.iso });
    expect(body.end).toEqual({ dateTime: wallTime(2, 11, 0, 330).iso }); // default 30 minutes
    const ev = s.google.events(c.email)[0]!;
    expect(reply).toBe(confirmation('in two days', ev.hangoutLink!));
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({ meeting_time: start.at.toISOString(), duration_minutes: 30 });
  });

  it('sends the zone spelled as IANA spells it, whatever case the owner typed or an older row holds', async () => {
    // Intl takes "asia/kolkata"; Google refuses it (400 "Invalid time zone definition"), which made
    // every booking of such an agent fail.
    const c = await newChat({ agent: { timezone: 'asia/KOLKATA' } });
    const shown = await s.app.http.inject({ url: `/api/agents/${c.agentId}`, headers: s.admin });
    expect(shown.json().timezone).toBe('Asia/Kolkata');
    // A row saved before names were spelled out (any case was stored as typed).
    await s.app.database.db
      .updateTable('agents')
      .set({ timezone: 'asia/kolkata' })
      .where('agent_id', '=', c.agentId)
      .execute();
    const start = wallTime(1, 19, 0, 330);
    const reply = await ask(c, 'book', {
      content: JSON.stringify([seedAction({ meeting_time: start.iso })]),
    });
    const body = requestsFor('events.insert')[0]!.body as Event;
    expect(body.start).toEqual({ dateTime: start.iso, timeZone: 'Asia/Kolkata' });
    const ev = s.google.events(c.email)[0]!;
    expect(reply).toBe(confirmation('tomorrow at 7 PM IST', ev.hangoutLink!));
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({ timezone: 'Asia/Kolkata', meeting_time: start.at.toISOString() });
  });

  it('puts the IANA zone on the event for a Z time when the agent’s zone is UTC', async () => {
    const c = await newChat({ agent: { timezone: 'UTC' } });
    const start = wallTime(3, 9, 0, 0);
    const iso = start.iso.replace('+00:00', 'Z');
    await ask(c, 'book', { content: JSON.stringify(seedAction({ meeting_time: iso })) });
    const body = requestsFor('events.insert')[0]!.body as Event;
    expect(body.start?.timeZone).toBe('UTC');
    expect(Date.parse(body.start?.dateTime ?? '')).toBe(start.at.getTime());
  });

  it('books from the tool-call form, formatting the time in the agent’s zone when friendly_time is null', async () => {
    const c = await newChat({ agent: { timezone: 'America/New_York' } });
    const start = wallTime(4, 15, 0, 0);
    const reply = await ask(c, 'book a call', {
      toolCalls: [
        {
          name: 'Time_to_121meet',
          arguments: {
            name: 'Ana',
            email: 'ana@example.com',
            title: 'Onboarding call',
            participants: ['bob@example.com'],
            meeting_time: start.iso.replace('+00:00', 'Z'),
            friendly_time: null,
          },
        },
      ],
    });
    const ev = s.google.events(c.email)[0]!;
    expect(ev.summary).toBe('Onboarding call');
    expect(ev.attendees?.map((a) => a.email)).toEqual(['ana@example.com', 'bob@example.com']);
    const when = friendlyIn('America/New_York', start.at);
    expect(reply).toBe(confirmation(when, ev.hangoutLink!));
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({
      customer_name: 'Ana',
      customer_email: 'ana@example.com',
      title: 'Onboarding call',
    });
  });

  it('reads invitees the model wrote as one string, and names the booked time when its words run past 200 characters', async () => {
    const c = await newChat({ agent: { timezone: 'America/New_York' } });
    const start = wallTime(4, 15, 0, 0);
    const reply = await ask(c, 'book a call with Bob and Cy', {
      content: JSON.stringify([
        seedAction({
          meeting_time: start.iso,
          participants: 'bob@example.com, cy@example.com',
          friendly_time: `Thursday at 3 PM ${'(as agreed) '.repeat(20)}`,
        }),
      ]),
    });
    const ev = s.google.events(c.email)[0]!;
    expect(ev.attendees?.map((a) => a.email)).toEqual([
      'siddhant@gmail.com',
      'bob@example.com',
      'cy@example.com',
    ]);
    expect(reply).toBe(confirmation(friendlyIn('America/New_York', start.at), ev.hangoutLink!));
    const [m] = await meetingsOf(c.userId);
    expect(m!.participants).toEqual(['bob@example.com', 'cy@example.com']);
  });

  it('uses the conversation’s customer name and "Meeting" when the action has neither name nor title', async () => {
    const c = await newChat();
    await ask(c, 'book', {
      content: `\`\`\`json\n${JSON.stringify(seedAction({ name: null, title: null }))}\n\`\`\``,
    });
    const ev = s.google.events(c.email)[0]!;
    expect(ev.summary).toBe('Meeting');
    expect(ev.description).toContain('Sid from chat');
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({ title: 'Meeting', customer_name: 'Sid from chat' });
  });
});

/** The seed's action for a meeting titled `title` at 10:00 (+05:30) in `n` days, "day n" in words. */
const dayAction = (n: number, title: string) =>
  seedAction({ title, meeting_time: wallTime(n, 10, 0, 330).iso, friendly_time: `day ${n}` });

/** The same booking as the tool call the model makes. */
function bookingCall(n: number, title: string) {
  const { action: _action, ...args } = dayAction(n, title);
  return { name: 'Time_to_121meet', arguments: args };
}

/** A new chat whose first answer books T1–T3 (the conversation's limit, 3); that reply, and T1's row. */
async function chatAtTheLimit() {
  const c = await newChat();
  const three = await ask(c, 'three please', {
    content: JSON.stringify([dayAction(1, 'T1'), dayAction(2, 'T2'), dayAction(3, 'T3')]),
  });
  const first = (await meetingsOf(c.userId)).find((m) => m.title === 'T1')!;
  return { c, three, first };
}

describe('booking: several actions in one answer', () => {
  it('books the same meeting once when the model both calls the tool and writes the JSON', async () => {
    const c = await newChat();
    const a = seedAction();
    const { action: _action, ...args } = a;
    const reply = await ask(c, 'book', {
      content: `Booking it now.\n${JSON.stringify([a])}`,
      toolCalls: [{ name: 'Time_to_121meet', arguments: args }],
    });
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(await meetingsOf(c.userId)).toHaveLength(1);
    expect(reply).toBe(`Booking it now.\n\n${confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!)}`);
  });

  it('books a repeated array item once', async () => {
    const c = await newChat();
    const a = seedAction();
    const reply = await ask(c, 'book', { content: JSON.stringify([a, a]) });
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(reply).toBe(confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!));
  });

  it('books two different meetings from one answer', async () => {
    const c = await newChat();
    const reply = await ask(c, 'book both', {
      content: JSON.stringify([
        seedAction({ title: 'First', friendly_time: 'first' }),
        seedAction({ title: 'Second', meeting_time: wallTime(2, 19, 0, 330).iso, friendly_time: 'second' }),
      ]),
    });
    const link = (t: string) => s.google.events(c.email).find((e) => e.summary === t)!.hangoutLink!;
    expect(reply).toBe(
      `${confirmation('first', link('First'))}\n\n${confirmation('second', link('Second'))}`,
    );
    expect(await meetingsOf(c.userId)).toHaveLength(2);
  });

  it('a cancel, then a booking: the booking checks and inserts holding all of the owner’s time', async () => {
    // The answer's one lease is taken by its first action and reused by the next: a cancel's own
    // hold is on the cancelled meeting's time, so the answer's lease must cover all of it.
    const c = await newChat();
    expect(await ask(c, 'book', { content: JSON.stringify([seedAction()]) })).toMatch(
      /^✅ Meeting confirmed!/,
    );
    s.google.reset();
    const next = wallTime(3, 19, 0, 330);
    const { action: _action, ...args } = seedAction({
      meeting_time: next.iso,
      friendly_time: 'in three days',
    });
    s.google.fail('events.insert', { kind: 'stall', ms: 1_500 });
    s.openai.responder = () => ({
      toolCalls: [
        { name: 'cancel_meeting', arguments: { meeting_id: null } },
        { name: 'Time_to_121meet', arguments: args },
      ],
    });
    await s.send(c.conversation_id, c.customer_token, 'cancel that one and book in three days instead');
    await vi.waitFor(() => expect(requestsFor('events.insert')).toHaveLength(1), { timeout: 10_000 });
    // While that insert is held at Google, another booking of the new time cannot take its hold.
    const leases = new BookingLeaseStore(s.app.database.db);
    const from = next.at.getTime();
    const other = await leases.tryAcquire(c.userId, 'other', { from, to: from + 3_600_000 }, 30_000);
    if (other.acquired) await leases.release(c.userId, 'other');
    expect(other.acquired).toBe(false);
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 2);
    const reply = list.filter((m) => m.role === 'assistant').at(-1)!.content;
    expect(reply).toMatch(/^✅ Meeting cancelled\./);
    expect(reply).toContain('✅ Meeting confirmed!');
    expect((await meetingsOf(c.userId)).map((m) => m.status).sort()).toEqual(['cancelled', 'scheduled']);
  });

  it('a cancel, then a booking at its time, at the conversation’s limit: the cancelled meeting frees both', async () => {
    // Until the reply commits, the cancelled meeting's row is still scheduled: the booking after it
    // in the same answer must neither count it against MAX_BOOKINGS_PER_CONVERSATION (3) nor see its
    // time as busy (its event is gone from Google already).
    const { c, three, first } = await chatAtTheLimit();
    expect(three.match(/✅ Meeting confirmed!/g)).toHaveLength(3);
    const reply = await ask(
      c,
      'cancel the first and book the same time for my colleague',
      {
        toolCalls: [
          { name: 'cancel_meeting', arguments: { meeting_id: first.meeting_id } },
          bookingCall(1, 'T4'),
        ],
      },
      2,
    );
    const t4 = s.google.events(c.email).find((e) => e.summary === 'T4');
    expect(reply).toMatch(/^✅ Meeting cancelled\./);
    expect(reply).toContain(confirmation('day 1', t4?.hangoutLink ?? 'missing'));
    const rows = await meetingsOf(c.userId);
    expect(rows.map((m) => [m.title, m.status]).sort()).toEqual([
      ['T1', 'cancelled'],
      ['T2', 'scheduled'],
      ['T3', 'scheduled'],
      ['T4', 'scheduled'],
    ]);
    expect(rows.find((m) => m.title === 'T4')!.meeting_time).toBe(first.meeting_time);
  });

  it('a meeting cancelled twice in one answer is cancelled once and frees one place under the limit', async () => {
    const { c, first } = await chatAtTheLimit();
    const cancel = { name: 'cancel_meeting', arguments: { meeting_id: first.meeting_id } };
    const reply = await ask(
      c,
      'cancel the first, and book two more',
      { toolCalls: [cancel, cancel, bookingCall(4, 'T4'), bookingCall(5, 'T5')] },
      2,
    );
    const t4 = s.google.events(c.email).find((e) => e.summary === 'T4');
    expect(reply.match(/✅ Meeting cancelled\./g)).toHaveLength(1);
    expect(reply).toContain(confirmation('day 4', t4?.hangoutLink ?? 'missing'));
    expect(reply.endsWith(tooMany(3))).toBe(true);
    const scheduled = (await meetingsOf(c.userId)).filter((m) => m.status === 'scheduled');
    expect(scheduled.map((m) => m.title).sort()).toEqual(['T2', 'T3', 'T4']);
    expect(requestsFor('events.delete')).toHaveLength(1);
  });

  it('a booking refused at the limit ends the answer: a cancel after it (half of a swap) is not made alone', async () => {
    const { c, first } = await chatAtTheLimit();
    // "Replace the first with day 4", in the model's order: the booking, then the cancel.
    const reply = await ask(
      c,
      'replace the first with day 4',
      {
        toolCalls: [
          bookingCall(4, 'T4'),
          { name: 'cancel_meeting', arguments: { meeting_id: first.meeting_id } },
        ],
      },
      2,
    );
    expect(reply).toBe(tooMany(3));
    const scheduled = (await meetingsOf(c.userId)).filter((m) => m.status === 'scheduled');
    expect(scheduled.map((m) => m.title).sort()).toEqual(['T1', 'T2', 'T3']);
    expect(requestsFor('events.delete')).toEqual([]);
  });

  it('never acts on a malformed tool call: the model is asked again, and its next answer is the reply', async () => {
    const c = await newChat();
    const calls = s.openai.requests.length;
    let answers = 0;
    s.openai.responder = () =>
      answers++ === 0
        ? { toolCalls: [{ name: 'Time_to_121meet', arguments: '{"name": "Sid", "email": ' }] }
        : { content: 'Which email address should the invitation go to?' };
    await s.send(c.conversation_id, c.customer_token, 'book');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    // Not "the email is missing": the customer may well have given it; the model garbled it.
    expect(list.filter((m) => m.role === 'assistant').at(-1)?.content).toBe(
      'Which email address should the invitation go to?',
    );
    expect(s.openai.requests.length).toBe(calls + 2);
    expect(s.google.requests).toHaveLength(0);
  });
});

describe('booking: refusals', () => {
  it('answers MEETING_ERROR_MESSAGE and books nothing when the owner has no calendar connected', async () => {
    const c = await newChat({ connect: false });
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    expect(reply).toBe(s.app.config.meetingErrorMessage);
    expect(s.google.requests).toHaveLength(0);
    expect(await meetingsOf(c.userId)).toEqual([]);
  });

  it('keeps the model’s prose before MEETING_ERROR_MESSAGE', async () => {
    const c = await newChat({ connect: false });
    const reply = await ask(c, 'book', { content: `One moment!\n${JSON.stringify([seedAction()])}` });
    expect(reply).toBe(`One moment!\n\n${s.app.config.meetingErrorMessage}`);
  });

  const cases: Array<[string, Record<string, unknown>, string]> = [
    [
      'a time in the past',
      { meeting_time: wallTime(-1, 10, 0, 330).iso },
      'that time is in the past, please pick another time',
    ],
    [
      'a time without an offset',
      { meeting_time: wallTime(1, 10, 0, 0).iso.slice(0, 19) },
      'the meeting time must be a full date and time with its time zone, e.g. 2025-10-06T19:00:00+05:30',
    ],
    [
      'a time too soon',
      { meeting_time: new Date(Date.now() + 60_000).toISOString() },
      "meetings need at least 5 minutes' notice, please pick a later time",
    ],
    [
      'a time beyond the horizon',
      { meeting_time: wallTime(120, 10, 0, 0).iso },
      'meetings can be booked at most 90 days ahead, please pick an earlier date',
    ],
    ['a bad email', { email: 'siddhant(at)gmail' }, 'the email is not a valid email address'],
    [
      'a bad invitee',
      { participants: ['ok@example.com', 'nope'] },
      'an invitee is not a valid email address',
    ],
    [
      'too many participants',
      { participants: Array.from({ length: 11 }, (_, i) => `p${i}@example.com`) },
      'at most 10 participants can be invited',
    ],
    ['a title over 200 characters', { title: 'x'.repeat(201) }, 'the title must be at most 200 characters'],
  ];
  it.each(cases)('refuses %s with a clear message and books nothing', async (_label, over, problem) => {
    const c = await newChat();
    const reply = await ask(c, 'book', { content: `Sure.\n${JSON.stringify([seedAction(over)])}` });
    expect(reply).toBe(`Sure.\n\n${invalid(problem)}`);
    expect(reply).not.toContain('{');
    expect(s.google.requests).toHaveLength(0);
    expect(s.google.events(c.email)).toEqual([]);
    expect(await meetingsOf(c.userId)).toEqual([]);
  });

  it('books at most MAX_BOOKINGS_PER_CONVERSATION upcoming meetings per conversation', async () => {
    const c = await newChat();
    const act = (n: number) =>
      seedAction({
        title: `T${n}`,
        meeting_time: wallTime(n, 10, 0, 330).iso,
        friendly_time: `day ${n}`,
      });
    const linkOf = (title: string) =>
      s.google.events(c.email).find((e) => e.summary === title)?.hangoutLink ?? 'missing';

    const r1 = await ask(c, 'two please', { content: JSON.stringify([act(1), act(2)]) }, 1);
    expect(r1).toBe(`${confirmation('day 1', linkOf('T1'))}\n\n${confirmation('day 2', linkOf('T2'))}`);
    // One more fits; the second action of the same reply is over the limit.
    const r2 = await ask(c, 'two more', { content: JSON.stringify([act(3), act(4)]) }, 2);
    expect(r2).toBe(`${confirmation('day 3', linkOf('T3'))}\n\n${tooMany(3)}`);
    const r3 = await ask(c, 'and one more', { content: JSON.stringify([act(5)]) }, 3);
    expect(r3).toBe(tooMany(3));
    expect(s.google.events(c.email).map((e) => e.summary)).toEqual(['T1', 'T2', 'T3']);
    expect((await meetingsOf(c.userId)).map((m) => m.title)).toEqual(['T1', 'T2', 'T3']);

    // A cancelled meeting no longer counts.
    const first = (await meetingsOf(c.userId))[0]!;
    const cancel = await s.app.http.inject({
      method: 'POST',
      url: `/api/meetings/${first.meeting_id}/cancel`,
      headers: s.admin,
    });
    expect(cancel.statusCode).toBe(200);
    const r4 = await ask(c, 'ok, now this one', { content: JSON.stringify([act(6)]) }, 4);
    expect(r4).toBe(confirmation('day 6', linkOf('T6')));

    // The limit is per conversation: another conversation of the same agent can book.
    const other = await newChat({ userId: c.userId, agentId: c.agentId });
    const r5 = await ask(other, 'book', { content: JSON.stringify([act(7)]) });
    expect(r5).toBe(confirmation('day 7', linkOf('T7')));
  });
});

describe('booking: never twice', () => {
  it('a response lost after the insert gives exactly one event and one meeting (retry -> 409 -> get)', async () => {
    const c = await newChat();
    s.google.fail('events.insert', { kind: 'lost-response' }, 1);
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(requestsFor('events.insert').map((r) => r.status)).toEqual([0, 409]);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([200]);
    expect(requestsFor('events.get')[0]!.path).toContain(events[0]!.id!);
    expect(reply).toBe(confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!));
    const meetings = await meetingsOf(c.userId);
    expect(meetings).toHaveLength(1);
    expect(meetings[0]!.google_event_id).toBe(events[0]!.id);
  });

  it('a 409 whose events.get does not find the event yet (404): still one event, one meeting, confirmed', async () => {
    const c = await newChat();
    s.google.fail('events.insert', { kind: 'lost-response' }, 1);
    s.google.fail('events.get', { kind: 'status', status: 404, reason: 'notFound' }, 1);
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(reply).toBe(confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!));
    // The 404, then the reads that found it (the look for an event an earlier attempt made).
    const gets = requestsFor('events.get').map((r) => r.status);
    expect(gets[0]).toBe(404);
    expect(gets.slice(1)).toEqual(Array(gets.length - 1).fill(200));
    expect(gets.length).toBeGreaterThan(1);
    expect(await meetingsOf(c.userId)).toHaveLength(1);
  });

  it('a job that fails after creating the event runs again and still books once, with one confirmation', async () => {
    const c = await newChat();
    // Every attempt of the first run loses its answer (the first one creates the event): the run
    // gives up with a retryable error and the queue runs the job again, which finds the event.
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    s.openai.responder = () => ({ content: JSON.stringify([seedAction()]) });
    const messageId = await s.send(c.conversation_id, c.customer_token, 'book');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    const inserts = requestsFor('events.insert');
    expect(inserts.length).toBe(5);
    expect(inserts.at(-1)!.status).toBe(409);
    expect(s.openai.requests).toHaveLength(1); // the stored model output was reused
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!),
    ]);
    expect(await meetingsOf(c.userId)).toHaveLength(1);
    const row = await s.app.database.db
      .selectFrom('messages')
      .select(['status', 'attempts'])
      .where('message_id', '=', messageId)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('answered');
    expect(row.attempts).toBeGreaterThanOrEqual(1);
  });

  // 17:00-23:00 in the agent's zone (UTC): "tomorrow at 7 PM IST" (13:30Z) falls outside.
  const evenings = Object.fromEntries(
    ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'].map((d) => [
      d,
      [{ start: '17:00', end: '23:00' }],
    ]),
  );
  it.each([
    // As a check against a later clock fails a time that was just far enough ahead.
    ['the notice rule', { min_notice_minutes: 2 * 24 * 60 }],
    ['the working hours', { working_hours: evenings }],
  ])(
    'a retry that fails %s now still records the event an earlier attempt made',
    async (_label, settings) => {
      const c = await newChat();
      // The first run makes the event but never learns it (every answer lost), so the job runs again.
      s.google.fail('events.insert', { kind: 'lost-response' }, 4);
      s.openai.responder = () => ({ content: JSON.stringify([seedAction()]) });
      s.holdRetries(true);
      const messageId = await s.send(c.conversation_id, c.customer_token, 'book');
      // Meanwhile the owner changes the agent's settings so that "tomorrow at 7 PM" fails them.
      await s.firstAttemptFailed(messageId);
      expect(requestsFor('events.insert')).toHaveLength(4);
      const patched = await s.app.http.inject({
        method: 'PATCH',
        url: `/api/agents/${c.agentId}`,
        headers: s.admin,
        payload: settings,
      });
      expect(patched.statusCode).toBe(200);
      await s.retryNow(messageId);
      const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
      const events = s.google.events(c.email);
      expect(events).toHaveLength(1);
      expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
        confirmation('tomorrow at 7 PM IST', events[0]!.hangoutLink!),
      ]);
      expect(await meetingsOf(c.userId)).toHaveLength(1);
    },
  );

  it('acts on the model output another attempt stored first, never on its own', async () => {
    const c = await newChat();
    const stored = seedAction({
      meeting_time: wallTime(2, 11, 0, 330).iso,
      friendly_time: 'the stored time',
    });
    // While this attempt waits for the model, a concurrent attempt of the same job stores its output.
    s.openai.responder = async () => {
      await s.app.database.db
        .updateTable('messages')
        .set({ model_output: JSON.stringify({ text: JSON.stringify([stored]), toolCalls: [] }) })
        .where('conversation_id', '=', c.conversation_id)
        .where('role', '=', 'customer')
        .execute();
      return { content: JSON.stringify([seedAction()]) };
    };
    await s.send(c.conversation_id, c.customer_token, 'book');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(new Date(events[0]!.start!.dateTime!).toISOString()).toBe(
      new Date(String(stored.meeting_time)).toISOString(),
    );
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      confirmation('the stored time', events[0]!.hangoutLink!),
    ]);
    expect(await meetingsOf(c.userId)).toHaveLength(1);
  });

  it('a second run of the message while the first still runs (its claim lapsed) books once, one reply', async () => {
    const c = await newChat();
    const booking = () => ({ content: JSON.stringify([seedAction()]) });
    const run = stallFirstRun(s, c.conversation_id, booking, booking);
    const stopsBefore = await staleStopsCounted();
    const messageId = await s.send(c.conversation_id, c.customer_token, 'book');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(run.calls()).toBe(2);
    run.release();
    // The first run stops as a stale attempt, once: either its heartbeat found the claim taken over
    // while it waited for the model (the abort ends that request), or, released first, it went on to
    // the owner's lease, whose statement finds the message no longer its claim's. Its claim's
    // release is a no-op.
    await vi.waitFor(
      async () => {
        const row = await s.app.database.db
          .selectFrom('messages')
          .select(['attempts', 'status', 'claimed_until'])
          .where('message_id', '=', messageId)
          .executeTakeFirstOrThrow();
        expect(row).toMatchObject({ attempts: 2, status: 'answered' });
      },
      { timeout: 10_000 },
    );
    // It ended as a stale attempt (counted), not as a second booking.
    await vi.waitFor(async () => expect(await staleStopsCounted()).toBe(stopsBefore + 1), { timeout: 5_000 });
    await new Promise((r) => setTimeout(r, 300));
    expect(requestsFor('events.insert').map((r) => r.status)).toEqual([200]);
    const replies = await assistantReplies(c);
    expect(replies).toHaveLength(1);
    expect(replies[0]).toMatch(/^✅ Meeting confirmed!/);
    expect(s.google.events(c.email)).toHaveLength(1);
    expect(await meetingsOf(c.userId)).toHaveLength(1);
  });
});

/** message_jobs_total{outcome="skipped"} from /metrics: stale attempts stopped. */
async function staleStopsCounted(): Promise<number> {
  const res = await s.app.http.inject({ url: '/metrics', headers: s.admin });
  return Number(/message_jobs_total\{outcome="skipped"\} (\d+)/.exec(res.body)?.[1] ?? 0);
}

describe('booking: the Meet link', () => {
  it('polls a pending conference until it has a link', async () => {
    const c = await newChat();
    s.google.conferenceMode = 'pending';
    s.google.pendingPolls = 2;
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    const insert = requestsFor('events.insert');
    expect(insert).toHaveLength(1);
    expect(requestsFor('events.get').length).toBe(2);
    const ev = s.google.events(c.email)[0]!;
    expect(ev.conferenceData?.createRequest?.status?.statusCode).toBe('success');
    expect(reply).toBe(confirmation('tomorrow at 7 PM IST', ev.hangoutLink!));
    const [m] = await meetingsOf(c.userId);
    expect(m!.meet_link).toBe(ev.hangoutLink);
  });

  it('a failed conference still books; the confirmation does not promise a link the invite will not have', async () => {
    const c = await newChat();
    s.google.conferenceMode = 'failure';
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    expect(reply).toBe(confirmationWithNoLink('tomorrow at 7 PM IST'));
    expect(s.google.events(c.email)).toHaveLength(1);
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({ status: 'scheduled', meet_link: null });
  });

  it('a conference still pending after the wait books without a link (bounded polling)', async () => {
    const c = await newChat();
    s.google.conferenceMode = 'pending';
    s.google.pendingPolls = 1000;
    const reply = await ask(c, 'book', { content: JSON.stringify([seedAction()]) });
    expect(reply).toBe(confirmationWithoutLink('tomorrow at 7 PM IST'));
    const gets = requestsFor('events.get').length;
    expect(gets).toBeGreaterThanOrEqual(1);
    expect(gets).toBeLessThanOrEqual(6);
    const [m] = await meetingsOf(c.userId);
    expect(m).toMatchObject({ status: 'scheduled', meet_link: null });
  });
});
