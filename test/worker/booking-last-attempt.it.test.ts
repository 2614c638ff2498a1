/**
 * The job's last attempt, when Google may already hold the booking's event: an insert whose answer
 * was lost (in this run or an earlier one) created the event and sent the invitations, yet the run
 * ends in a failure. Before answering MEETING_ERROR_MESSAGE the worker looks the booking's derived
 * event id up; an event that exists (and is not cancelled) is recorded and confirmed exactly like a
 * normal booking. Driven through HTTP, the worker, the real clients and the Google emulator's faults.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calendar } from '@googleapis/calendar';
import { OAuth2Client } from 'google-auth-library';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BookingLeaseStore, WHOLE_OWNER } from '../../src/store/booking-leases.js';
import type { RequestLogEntry } from '../emulators/google.js';
import type { Responder } from '../emulators/openai.js';
import { bookingAction } from '../helpers/actions.js';
import { retryScheduled, type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
let hooks: Server;
let hookUrl: string;
beforeAll(async () => {
  // Two runs per job (JOB_RETRY_LIMIT=1): the second is the last attempt.
  s = await startStack({ JOB_RETRY_LIMIT: '1', GOOGLE_TIMEOUT_MS: '2000' });
  hooks = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hook`;
});
afterAll(async () => {
  await s?.close();
  await new Promise((r) => hooks?.close(r));
});
beforeEach(() => {
  s.openai.reset();
  s.google.reset();
  s.holdRetries(false);
});

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

function action(): Record<string, unknown> {
  const at = new Date(Date.now() + 3 * 86_400_000);
  at.setUTCHours(10, 0, 0, 0);
  return bookingAction(at, { friendly_time: 'in three days at 10 AM UTC' });
}

const confirmation = (link: string) =>
  `✅ Meeting confirmed!\n\n📅 Meeting scheduled for in three days at 10 AM UTC\n🔗 Join here: ${link}\n\nYou'll receive a calendar invite via email.`;

interface Booking {
  userId: string;
  email: string;
  conversationId: string;
  token: string;
  messageId: string;
}

/** A new owner with a connected calendar, an agent and one conversation, on stack `st`. */
async function ownerChat(st: Stack, prefix: string) {
  const userId = uid(prefix);
  await st.connectOwner(userId);
  const agent = await st.createAgent({ user_id: userId, name: 'Acme Assistant' });
  return { userId, c: await st.openConversation(agent.agent_id) };
}

/** The Booking of `userId`'s conversation `c` and its customer message `messageId`. */
const bookingOf = (
  userId: string,
  c: { conversation_id: string; customer_token: string },
  messageId: string,
): Booking => ({
  userId,
  email: `${userId}@owner.test`,
  conversationId: c.conversation_id,
  token: c.customer_token,
  messageId,
});

/** An owner with a webhook, and one customer message whose answer is a booking (not awaited). */
async function startBooking(): Promise<Booking> {
  const userId = uid('la');
  await s.connectOwner(userId);
  const hook = await s.app.http.inject({
    method: 'PUT',
    url: `/api/users/${userId}/webhook`,
    headers: s.admin,
    payload: { url: hookUrl },
  });
  expect(hook.statusCode).toBe(200);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  const c = await s.openConversation(agent.agent_id);
  s.openai.responder = () => ({ content: JSON.stringify([action()]) });
  const messageId = await s.send(c.conversation_id, c.customer_token, 'book me');
  return bookingOf(userId, c, messageId);
}

/**
 * A new owner's customer message whose answer books twice, at action()'s time and a day later
 * (`next`), sent once `faults` (given `next`) are set; not awaited.
 */
async function bookTwice(prefix: string, faults: (next: Date) => void): Promise<Booking> {
  const { userId, c } = await ownerChat(s, prefix);
  const first = action();
  const next = new Date(Date.parse(String(first.meeting_time)) + 86_400_000);
  const second = bookingAction(next, { friendly_time: 'in four days at 10 AM UTC' });
  s.openai.responder = () => ({ content: JSON.stringify([first, second]) });
  faults(next);
  const messageId = await s.send(c.conversation_id, c.customer_token, 'book me twice');
  return bookingOf(userId, c, messageId);
}

async function replies(b: Booking): Promise<string[]> {
  const list = await s.waitForReplies(b.conversationId, b.token, 1, 30_000);
  return list.filter((m) => m.role === 'assistant').map((m) => m.content);
}

const requestsFor = (op: string) => s.google.requests.filter((r) => r.op === op);

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function meetings(userId: string): Promise<Array<Record<string, unknown>>> {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: s.admin });
  expect(res.statusCode).toBe(200);
  return res.json().meetings;
}

async function message(messageId: string) {
  return s.app.database.db
    .selectFrom('messages')
    .select(['status', 'attempts', 'last_error'])
    .where('message_id', '=', messageId)
    .executeTakeFirstOrThrow();
}

/** Owner webhook deliveries recorded for the user (committed with the reply), by type name. */
async function deliveryTypes(userId: string): Promise<string[]> {
  const r = await sql<{ event_type: string }>`
    SELECT event_type FROM webhook_deliveries WHERE user_id = ${userId}`.execute(s.app.database.db);
  return r.rows.map((row) => row.event_type).sort();
}

/** `b`'s owner has exactly one meeting: the booking's, recorded from Google's event. */
async function expectOneMeetingFor(b: Booking, eventId: string, meetLink: string): Promise<void> {
  const rows = await meetings(b.userId);
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({
    google_event_id: eventId,
    meet_link: meetLink,
    customer_email: 'siddhant@gmail.com',
    status: 'scheduled',
  });
}

/**
 * The first run's 4 inserts all lose their answers (the first creates the event); returns its id.
 * The test holds retries (holdRetries), so the retry waits for it (retryNow or giveUpOnTheRetry).
 */
async function firstRunCreatesTheEventUnseen(b: Booking): Promise<string> {
  await until('the first run to give up', async () => (await message(b.messageId)).last_error !== null);
  expect(requestsFor('events.insert').map((r) => r.fault)).toEqual(Array(4).fill('lost-response'));
  const events = s.google.events(b.email);
  expect(events).toHaveLength(1);
  return events[0]!.id!;
}

describe('last attempt: the booking’s event exists although every insert answer was lost', () => {
  it('is looked up, recorded and confirmed like a normal booking (meeting row, webhook, once)', async () => {
    s.holdRetries(true);
    s.google.fail('events.insert', { kind: 'lost-response' }, 8);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    await s.retryNow(b.messageId);
    const texts = await replies(b);

    // Both runs lost every answer. The second saw the slot busy with its own event (one get), tried
    // to insert again, and before giving up read the derived id once more and found the event.
    expect(requestsFor('events.insert').map((r) => r.fault)).toEqual(Array(8).fill('lost-response'));
    const gets = requestsFor('events.get');
    expect(gets.map((r) => r.status)).toEqual([200, 200]);
    expect(gets.at(-1)!.at).toBeGreaterThanOrEqual(requestsFor('events.insert').at(-1)!.at);
    for (const g of gets) expect(g.path).toContain(eventId);
    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([confirmation(events[0]!.hangoutLink!)]);
    await expectOneMeetingFor(b, eventId, events[0]!.hangoutLink!);
    expect((await message(b.messageId)).status).toBe('answered');
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);

    // The conversation goes on: the next message books nothing more.
    s.google.reset();
    s.openai.responder = () => ({ content: 'Anything else?' });
    await s.send(b.conversationId, b.token, 'thanks');
    await s.waitForReplies(b.conversationId, b.token, 2, 30_000);
    expect(s.google.requests.filter((r) => r.op.startsWith('events.'))).toEqual([]);
    expect(s.google.events(b.email)).toHaveLength(1);
    expect(await meetings(b.userId)).toHaveLength(1);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
  });

  it.each([
    [45, 45],
    [9 * 60, 30], // longer than a meeting may be: its start, the agent's length
  ])(
    'an event the owner moved (made %d minutes long) before the retry recorded it is recorded where it is now, and confirmed so',
    async (length, recorded) => {
      s.holdRetries(true);
      s.google.fail('events.insert', { kind: 'lost-response' }, 4);
      const b = await startBooking();
      const eventId = await firstRunCreatesTheEventUnseen(b);
      // The invitation went out with the first run's event: the owner moves it an hour on, and changes
      // its length, before any reply commits.
      const asked = Date.parse(String(action().meeting_time));
      const later = new Date(asked + 3_600_000);
      const auth = new OAuth2Client();
      auth.setCredentials({ access_token: s.google.grant({ email: b.email }).access_token });
      await calendar({ version: 'v3', auth, rootUrl: s.google.rootUrl }).events.patch({
        calendarId: 'primary',
        eventId,
        requestBody: {
          start: { dateTime: later.toISOString() },
          end: { dateTime: new Date(later.getTime() + length * 60_000).toISOString() },
        },
      });
      await s.retryNow(b.messageId);
      const texts = await replies(b);
      // The retry's insert answers 409 and reads the event: the row and the confirmation take its times
      // (the calendar sync may have passed that change while no row existed to compare it with).
      expect(requestsFor('events.insert').map((r) => r.fault ?? r.status)).toEqual([
        ...Array(4).fill('lost-response'),
        409,
      ]);
      const [row] = await meetings(b.userId);
      expect(row).toMatchObject({
        google_event_id: eventId,
        meeting_time: later.toISOString(),
        duration_minutes: recorded,
      });
      expect(texts).toHaveLength(1);
      expect(texts[0]!.startsWith('✅ Meeting confirmed!\n\n📅 Meeting scheduled for ')).toBe(true);
      expect(texts[0]).not.toContain('in three days at 10 AM UTC');
      expect(texts[0]).toContain('11:00');
      expect(s.google.events(b.email)).toHaveLength(1);
    },
  );

  it('an event made by an earlier run is found when the last run fails before inserting (freeBusy outage)', async () => {
    s.holdRetries(true);
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    // The retry's availability read fails on every attempt: it never reaches the insert.
    s.google.fail('freebusy.query', { kind: 'status', status: 503 }, 4);
    await s.retryNow(b.messageId);
    const texts = await replies(b);

    expect(requestsFor('events.insert')).toHaveLength(4);
    expect(requestsFor('freebusy.query').map((r) => r.status)).toEqual([200, 503, 503, 503, 503]);
    expect(requestsFor('events.get').map((r) => r.path)).toEqual([expect.stringContaining(eventId)]);
    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([confirmation(events[0]!.hangoutLink!)]);
    expect((await meetings(b.userId)).map((m) => m.google_event_id)).toEqual([eventId]);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
  });
});

describe('last attempt: no usable event', () => {
  it('a lookup that fails too is no answer: the message runs again, no sooner than Google asked, and records the event', async () => {
    s.holdRetries(true);
    s.google.fail('events.insert', { kind: 'lost-response' }, 8);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    // The last attempt's lookup, after its 8th insert, is refused for two minutes (one try: the wait
    // is longer than a call waits out).
    s.holdRetries(false);
    s.google.fail('events.get', { kind: 'status', status: 429, retryAfter: '120' }, 1, () => {
      return requestsFor('events.insert').length >= 8;
    });
    await s.retryNow(b.messageId);
    await until('the last attempt to end without an answer', async () => {
      const m = await message(b.messageId);
      return m.attempts === 2 && m.status === 'pending' && /could not be looked up/.test(m.last_error ?? '');
    });
    expect(await s.messages(b.conversationId, b.token)).toHaveLength(1); // no reply
    expect(await meetings(b.userId)).toEqual([]);
    expect((await retryScheduled(s, b.messageId)).wait).toBeGreaterThan(100);
    // Run again (as a last attempt): its insert answers 409, the event is fetched and recorded.
    await s.retryNow(b.messageId);
    const texts = await replies(b);
    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([confirmation(events[0]!.hangoutLink!)]);
    await expectOneMeetingFor(b, eventId, events[0]!.hangoutLink!);
    expect(await message(b.messageId)).toMatchObject({ status: 'answered', attempts: 3 });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
  });

  it('a lookup Google refuses for good (403) is no reason to run again: the error, as before', async () => {
    s.google.fail('events.insert', { kind: 'status', status: 503 }, 8);
    s.google.fail('events.get', { kind: 'status', status: 403, reason: 'forbidden' }, 1);
    const b = await startBooking();
    expect(await replies(b)).toEqual([s.app.config.meetingErrorMessage]);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([403]);
    expect(await message(b.messageId)).toMatchObject({ status: 'failed', attempts: 2 });
  });

  it('an event that does not exist: MEETING_ERROR_MESSAGE after one lookup, no meeting', async () => {
    s.google.fail('events.insert', { kind: 'status', status: 503 }, 8);
    const b = await startBooking();
    const texts = await replies(b);
    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(requestsFor('events.insert')).toHaveLength(8);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([404]);
    expect(s.google.events(b.email)).toEqual([]);
    expect(await meetings(b.userId)).toEqual([]);
    expect(await message(b.messageId)).toMatchObject({
      status: 'failed',
      last_error: expect.stringMatching(/503/),
    });
    expect(await deliveryTypes(b.userId)).toEqual([]);
  });

  it('an event the owner deleted meanwhile is not confirmed (lookup finds it cancelled)', async () => {
    s.holdRetries(true);
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    await s.app.calendar.deleteEvent(b.userId, eventId);
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    await s.retryNow(b.messageId);
    const texts = await replies(b);
    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([200]);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['cancelled']);
    expect(await meetings(b.userId)).toEqual([]);
    expect((await message(b.messageId)).status).toBe('failed');
  });

  it('an insert answering 409 for an event the owner deleted meanwhile is not confirmed either', async () => {
    s.holdRetries(true);
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    await s.app.calendar.deleteEvent(b.userId, eventId);
    await s.retryNow(b.messageId);
    const texts = await replies(b);
    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(requestsFor('events.insert').at(-1)!.status).toBe(409);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['cancelled']);
    expect(await meetings(b.userId)).toEqual([]);
  });
});

/**
 * The run that gives up (JobContext.giveUp): `b`'s first run failed and is waiting for its retry
 * (held: see the describes' holdRetries); its message is made to look as if its last attempt had
 * then run 4 times without finishing (JOB_RETRY_LIMIT 1: attempts 2 to 5), and is announced, so the
 * next claim gives up.
 */
async function giveUpOnTheRetry(b: Booking): Promise<void> {
  const db = s.app.database.db;
  const moved = await sql`
    UPDATE messages SET attempts = 5, run_after = NULL
     WHERE message_id = ${b.messageId} AND attempts = 1 AND claimed_until IS NULL AND status = 'pending'`.execute(
    db,
  );
  expect(Number(moved.numAffectedRows)).toBe(1);
  await sql`SELECT pg_notify(agent_meetings_channel('agent_meetings_customer_messages'), ${b.conversationId})`.execute(
    db,
  );
}

describe('last attempt: an action that fails after earlier ones of its answer were made', () => {
  /** `b`'s conversation's last assistant reply once it has `count` replies. */
  const lastReply = async (b: Booking, count: number) =>
    (await s.waitForReplies(b.conversationId, b.token, count, 30_000))
      .filter((m) => m.role === 'assistant')
      .map((m) => m.content)
      .at(-1);
  const startsAt = (at: Date) => (r: RequestLogEntry) =>
    Date.parse(String((r.body as { start?: { dateTime?: unknown } } | null)?.start?.dateTime)) ===
    at.getTime();

  /**
   * `b`'s answer: the first booking confirmed and recorded, the second answered with the error, after
   * `runs` runs that each inserted the first (200, then 409) and had the second's 4 inserts refused.
   */
  async function expectFirstBookedSecondRefused(b: Booking, runs: number): Promise<void> {
    const texts = await replies(b);
    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([
      `${confirmation(events[0]!.hangoutLink!)}\n\n${s.app.config.meetingErrorMessage}`,
    ]);
    expect(requestsFor('events.insert').map((r) => r.fault ?? r.status)).toEqual(
      Array.from({ length: runs }, (_, run) => [run === 0 ? 200 : 409, ...Array(4).fill('status')]).flat(),
    );
    expect((await meetings(b.userId)).map((m) => m.google_event_id)).toEqual([events[0]!.id]);
    expect(await message(b.messageId)).toMatchObject({ status: 'answered', attempts: runs });
  }

  it('of two bookings, the first is recorded and confirmed, the second answered with the error', async () => {
    // Every insert of the second booking answers 503, in both runs; the first booking's go through.
    const b = await bookTwice('pf', (next) =>
      s.google.fail('events.insert', { kind: 'status', status: 503 }, 100, startsAt(next)),
    );
    // Run 1: the first inserted, the second's 4 tries refused; run 2 (the last): the first found (409),
    // the second refused again and looked up before giving up.
    await expectFirstBookedSecondRefused(b, 2);
  });

  it('of two bookings, when the second’s outcome cannot be read, neither is answered yet: the next run answers both', async () => {
    const b = await bookTwice('pu', (next) => {
      s.google.fail('events.insert', { kind: 'status', status: 503 }, 100, startsAt(next));
      // The last attempt's lookup of the second booking (after its 10th insert) is refused 4 times.
      s.google.fail(
        'events.get',
        { kind: 'status', status: 503 },
        4,
        () => requestsFor('events.insert').length >= 10,
      );
    });
    // Not the partial answer on the run that could not tell (the second's lookup refused): the run
    // after it, a third, gives it.
    await expectFirstBookedSecondRefused(b, 3);
  });

  it('a cancel made before a booking that fails is recorded and confirmed, the booking answered with the error', async () => {
    const b = await startBooking();
    expect((await replies(b))[0]).toMatch(/^✅ Meeting confirmed!/);
    const [meeting] = await meetings(b.userId);
    s.google.reset();
    const next = new Date(Date.parse(String(action().meeting_time)) + 86_400_000);
    s.openai.responder = () => ({
      toolCalls: [{ name: 'cancel_meeting', arguments: { meeting_id: null } }],
      content: JSON.stringify([bookingAction(next, { friendly_time: 'in four days at 10 AM UTC' })]),
    });
    s.google.fail('events.insert', { kind: 'status', status: 503 }, 8);
    await s.send(b.conversationId, b.token, 'cancel that one and book the next day');

    const last = await lastReply(b, 2);
    expect(last).toMatch(/^✅ Meeting cancelled\./);
    expect(last?.endsWith(`\n\n${s.app.config.meetingErrorMessage}`)).toBe(true);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['cancelled']);
    expect((await meetings(b.userId)).map((m) => [m.meeting_id, m.status])).toEqual([
      [meeting!.meeting_id, 'cancelled'],
    ]);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.cancelled']);
  });

  it('a reply that cannot be written on the last attempt: what Google shows made is recorded with it', async () => {
    const db = s.app.database.db;
    // The first two meeting-row inserts of this test's owners fail (each run's reply transaction),
    // later ones go through: a database that came back.
    await sql`
      CREATE SEQUENCE refuse_twice_seq;
      CREATE FUNCTION refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('refuse_twice_seq') <= 2 THEN RAISE EXCEPTION 'meeting row refused for this test'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_twice BEFORE INSERT ON meetings
        FOR EACH ROW WHEN (NEW.user_id LIKE 'la-%') EXECUTE FUNCTION refuse_twice();`.execute(db);
    try {
      const b = await startBooking();
      const texts = await replies(b);
      const events = s.google.events(b.email);
      expect(events).toHaveLength(1);
      expect(texts).toEqual([confirmation(events[0]!.hangoutLink!)]);
      await expectOneMeetingFor(b, events[0]!.id!, events[0]!.hangoutLink!);
      // Inserted by the first run, found by the last one's insert (409) and by its lookup.
      expect(requestsFor('events.insert').map((r) => r.status)).toEqual([200, 409]);
      expect(requestsFor('events.get').map((r) => r.status)).toContain(200);
      expect(await message(b.messageId)).toMatchObject({ status: 'answered', attempts: 2 });
      expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
    } finally {
      await sql`DROP TRIGGER refuse_twice ON meetings; DROP FUNCTION refuse_twice(); DROP SEQUENCE refuse_twice_seq;`.execute(
        db,
      );
    }
  });
});

describe('giving up on a message whose attempts kept not finishing', () => {
  // The first run's retry waits until giveUpOnTheRetry moves the message on.
  beforeEach(() => s.holdRetries(true));

  it('an event an earlier attempt made is recorded and confirmed, with no new change at Google', async () => {
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const b = await startBooking();
    const eventId = await firstRunCreatesTheEventUnseen(b);
    await giveUpOnTheRetry(b);
    const texts = await replies(b);

    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([confirmation(events[0]!.hangoutLink!)]);
    // The run that gave up looked the derived id up once, and neither read availability nor inserted.
    expect(requestsFor('events.get').map((r) => [r.status, r.path.includes(eventId)])).toEqual([[200, true]]);
    expect(requestsFor('events.insert')).toHaveLength(4);
    expect(requestsFor('freebusy.query')).toHaveLength(1);
    await expectOneMeetingFor(b, eventId, events[0]!.hangoutLink!);
    expect(await message(b.messageId)).toMatchObject({ status: 'answered', attempts: 6 });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
  });

  it('when what it found cannot be recorded, the fallback still answers the message', async () => {
    const db = s.app.database.db;
    s.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const b = await startBooking();
    await firstRunCreatesTheEventUnseen(b);
    // The meeting row's insert fails for this owner (as a broken write would, every time).
    await sql`
      CREATE FUNCTION refuse_meeting() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'meeting rows refused for this test'; END $$;
      CREATE TRIGGER refuse_meeting BEFORE INSERT ON meetings
        FOR EACH ROW WHEN (NEW.user_id = ${sql.lit(b.userId)}) EXECUTE FUNCTION refuse_meeting();`.execute(
      db,
    );
    try {
      await giveUpOnTheRetry(b);
      expect(await replies(b)).toEqual([s.app.config.meetingErrorMessage]);
      expect(await meetings(b.userId)).toEqual([]);
      expect(await message(b.messageId)).toMatchObject({ status: 'failed', attempts: 6 });
    } finally {
      await sql`DROP TRIGGER refuse_meeting ON meetings; DROP FUNCTION refuse_meeting();`.execute(db);
    }
    // The owner's time it held was given back: the next booking does not wait for it.
    expect(
      await sql`SELECT 1 FROM owner_booking_leases WHERE user_id = ${b.userId} AND holds <> '[]'::jsonb`.execute(
        db,
      ),
    ).toMatchObject({ rows: [] });
  });

  it('with no event made, the fallback after one lookup, and nothing booked', async () => {
    // The first run's availability read fails (the SDK retries it 3 times): it never inserts.
    s.google.fail('freebusy.query', { kind: 'status', status: 503 }, 4);
    const b = await startBooking();
    await until('the first run to fail', async () => (await message(b.messageId)).last_error !== null);
    await giveUpOnTheRetry(b);
    const texts = await replies(b);

    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([404]);
    expect(requestsFor('events.insert')).toEqual([]);
    expect(s.google.events(b.email)).toEqual([]);
    expect(await meetings(b.userId)).toEqual([]);
    expect(await message(b.messageId)).toMatchObject({
      status: 'failed',
      attempts: 6,
      last_error: expect.stringMatching(/gave up after 5 attempts/),
    });
    expect(await deliveryTypes(b.userId)).toEqual([]);
  });

  it('of two bookings, the one whose event exists is confirmed and the other answered with the error', async () => {
    // The first booking's event is made but every answer is lost: the run fails before the second.
    const b = await bookTwice('gu', () => s.google.fail('events.insert', { kind: 'lost-response' }, 4));
    const eventId = await firstRunCreatesTheEventUnseen(b);
    await giveUpOnTheRetry(b);
    const texts = await replies(b);

    const events = s.google.events(b.email);
    expect(events).toHaveLength(1);
    expect(texts).toEqual([
      `${confirmation(events[0]!.hangoutLink!)}\n\n${s.app.config.meetingErrorMessage}`,
    ]);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([200, 404]);
    expect(requestsFor('events.insert')).toHaveLength(4);
    expect((await meetings(b.userId)).map((m) => m.google_event_id)).toEqual([eventId]);
    expect(await message(b.messageId)).toMatchObject({ status: 'answered', attempts: 6 });
  });
});

describe('giving up on a move or a cancel an earlier attempt made', () => {
  // The first run's retry waits until giveUpOnTheRetry moves the message on.
  beforeEach(() => s.holdRetries(true));

  /** `b`'s meeting booked, then `next` asked for in a new message whose first run fails. */
  async function changeThenGiveUp(
    next: Responder,
    failFirstRun: (b: Booking, meeting: Record<string, unknown>) => void | Promise<void>,
  ) {
    const b = await startBooking();
    expect((await replies(b))[0]).toMatch(/^✅ Meeting confirmed!/);
    const [meeting] = await meetings(b.userId);
    s.google.reset();
    s.openai.responder = next;
    await failFirstRun(b, meeting!);
    const messageId = await s.send(b.conversationId, b.token, 'change it');
    const change = { ...b, messageId };
    await until('the first run to fail', async () => (await message(messageId)).last_error !== null);
    const gets = requestsFor('events.get').length;
    await giveUpOnTheRetry(change);
    const list = await s.waitForReplies(b.conversationId, b.token, 2, 30_000);
    const last = list.filter((m) => m.role === 'assistant').at(-1)!.content;
    return { b, meeting: meeting!, last, messageId, lookups: requestsFor('events.get').slice(gets) };
  }

  it('a cancel whose delete went through is recorded and confirmed', async () => {
    const { b, meeting, last, messageId, lookups } = await changeThenGiveUp(
      () => ({ toolCalls: [{ name: 'cancel_meeting', arguments: { meeting_id: null } }] }),
      () => {
        s.google.fail('events.delete', { kind: 'lost-response' }, 1);
        s.google.fail('events.delete', { kind: 'status', status: 503 }, 3);
      },
    );
    expect(last).toMatch(/^✅ Meeting cancelled\./);
    expect(lookups).toHaveLength(1);
    expect(requestsFor('events.delete')).toHaveLength(4);
    expect((await meetings(b.userId)).map((m) => [m.meeting_id, m.status])).toEqual([
      [meeting.meeting_id, 'cancelled'],
    ]);
    expect(await message(messageId)).toMatchObject({ status: 'answered', attempts: 6 });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.cancelled']);
  });

  it('a cancel named twice in the answer is recorded and confirmed once', async () => {
    const cancel = { name: 'cancel_meeting', arguments: { meeting_id: null } };
    const { b, last, lookups } = await changeThenGiveUp(
      () => ({ toolCalls: [cancel, cancel] }),
      () => {
        s.google.fail('events.delete', { kind: 'lost-response' }, 1);
        s.google.fail('events.delete', { kind: 'status', status: 503 }, 3);
      },
    );
    expect(last.match(/✅ Meeting cancelled\./g)).toHaveLength(1);
    expect(lookups).toHaveLength(1);
    expect((await meetings(b.userId)).map((m) => m.status)).toEqual(['cancelled']);
  });

  it('a move whose patch went through is recorded and confirmed; one that did not is the error', async () => {
    const later = new Date(Date.parse(String(action().meeting_time)) + 3_600_000);
    const move = () => ({
      toolCalls: [
        {
          name: 'reschedule_meeting',
          arguments: { meeting_id: null, new_time: later.toISOString(), friendly_time: 'an hour later' },
        },
      ],
    });
    const made = await changeThenGiveUp(move, () => {
      s.google.fail('events.patch', { kind: 'lost-response' }, 1);
      s.google.fail('events.patch', { kind: 'status', status: 503 }, 3);
    });
    expect(made.last).toMatch(/^✅ Meeting rescheduled!\n\n📅 Meeting now scheduled for an hour later\n/);
    expect(made.lookups).toHaveLength(1);
    expect((await meetings(made.b.userId))[0]).toMatchObject({ meeting_time: later.toISOString() });
    expect(await deliveryTypes(made.b.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);

    const never = await changeThenGiveUp(move, () => {
      s.google.fail('events.patch', { kind: 'status', status: 503 }, 4);
    });
    expect(never.last).toBe(s.app.config.meetingErrorMessage);
    expect(never.lookups).toHaveLength(1);
    expect((await meetings(never.b.userId))[0]).toMatchObject({
      meeting_time: new Date(Date.parse(String(action().meeting_time))).toISOString(),
    });
    expect(await message(never.messageId)).toMatchObject({ status: 'failed', attempts: 6 });
    expect(await deliveryTypes(never.b.userId)).toEqual(['meeting.booked']);
  });

  it('a move an earlier attempt made is recorded with the length the event has in Google', async () => {
    const later = new Date(Date.parse(String(action().meeting_time)) + 3_600_000);
    const hour = 3_600_000;
    const made = await changeThenGiveUp(
      () => ({
        toolCalls: [
          {
            name: 'reschedule_meeting',
            arguments: { meeting_id: null, new_time: later.toISOString(), friendly_time: 'an hour later' },
          },
        ],
      }),
      async (b, meeting) => {
        // The owner made the meeting an hour long in Google Calendar (no sync pass has run since).
        const grant = s.google.grant({ email: b.email });
        const auth = new OAuth2Client();
        auth.setCredentials({ access_token: grant.access_token });
        const own = calendar({ version: 'v3', auth, rootUrl: s.google.rootUrl });
        const start = Date.parse(String(meeting.meeting_time));
        await own.events.patch({
          calendarId: 'primary',
          eventId: String(meeting.google_event_id),
          requestBody: { end: { dateTime: new Date(start + hour).toISOString() } },
        });
        s.google.fail('events.patch', { kind: 'lost-response' }, 1);
        s.google.fail('events.patch', { kind: 'status', status: 503 }, 3);
      },
    );
    expect(made.last).toMatch(/^✅ Meeting rescheduled!/);
    const [event] = s.google.events(made.b.email);
    expect([Date.parse(event!.start!.dateTime!), Date.parse(event!.end!.dateTime!)]).toEqual([
      later.getTime(),
      later.getTime() + hour,
    ]);
    expect((await meetings(made.b.userId))[0]).toMatchObject({
      meeting_time: later.toISOString(),
      duration_minutes: 60,
    });
  });
});

describe('the meeting a move or cancel refers to', () => {
  /**
   * A booked meeting whose row is made to start 1.5 s from now, then a cancel whose first run ends
   * after that start (its deletes fail, one of them slowly: `faults`), so its retry runs after it.
   */
  async function cancelRetriedAfterTheStart(faults: () => void) {
    const b = await startBooking();
    expect((await replies(b))[0]).toMatch(/^✅ Meeting confirmed!/);
    const [meeting] = await meetings(b.userId);
    s.google.reset();
    await sql`UPDATE meetings SET meeting_time = now() + interval '1.5 seconds'
               WHERE meeting_id = ${meeting!.meeting_id}`.execute(s.app.database.db);
    faults();
    s.openai.responder = () => ({ toolCalls: [{ name: 'cancel_meeting', arguments: { meeting_id: null } }] });
    const messageId = await s.send(b.conversationId, b.token, 'cancel it');
    const list = await s.waitForReplies(b.conversationId, b.token, 2, 30_000);
    return { b, messageId, last: list.filter((m) => m.role === 'assistant').at(-1)!.content };
  }

  it('is picked as of when the customer spoke: a retry after its start records the cancel made before it', async () => {
    const { b, messageId, last } = await cancelRetriedAfterTheStart(() => {
      s.google.fail('events.delete', { kind: 'lost-response' }, 1);
      s.google.fail('events.delete', { kind: 'status', status: 503, delayMs: 1_500 }, 1);
      s.google.fail('events.delete', { kind: 'status', status: 503 }, 2);
    });
    expect(last).toMatch(/^✅ Meeting cancelled\./);
    expect(await message(messageId)).toMatchObject({ status: 'answered', attempts: 2 });
    // The retry only looked: a meeting that has started is not changed any more.
    expect(requestsFor('events.delete')).toHaveLength(4);
    expect(requestsFor('events.get')).toHaveLength(1);
    expect((await meetings(b.userId)).map((m) => m.status)).toEqual(['cancelled']);
  });

  it('a retry after its start does not cancel it when no earlier attempt did', async () => {
    const { b, last } = await cancelRetriedAfterTheStart(() => {
      s.google.fail('events.delete', { kind: 'status', status: 503, delayMs: 1_500 }, 1);
      s.google.fail('events.delete', { kind: 'status', status: 503 }, 3);
    });
    expect(last).toContain("couldn't find an upcoming meeting");
    expect(requestsFor('events.delete')).toHaveLength(4);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['confirmed']);
    expect((await meetings(b.userId)).map((m) => m.status)).toEqual(['scheduled']);
  });
});

describe('last attempt: a move or cancel Google made although its answers were lost', () => {
  /** An owner's booked meeting (as in startBooking), and the next answer set to `next`. */
  async function booked(next: Responder) {
    const b = await startBooking();
    expect((await replies(b))[0]).toMatch(/^✅ Meeting confirmed!/);
    const [meeting] = await meetings(b.userId);
    s.google.reset();
    s.openai.responder = next;
    return { b, meeting: meeting! };
  }
  const lastReply = async (b: Booking) =>
    (await s.waitForReplies(b.conversationId, b.token, 2, 30_000))
      .filter((m) => m.role === 'assistant')
      .map((m) => m.content)
      .at(-1);
  const cancel = () => ({ toolCalls: [{ name: 'cancel_meeting', arguments: { meeting_id: null } }] });
  const moveTo = (at: Date) => () => ({
    toolCalls: [
      {
        name: 'reschedule_meeting',
        arguments: { meeting_id: null, new_time: at.toISOString(), friendly_time: 'an hour later' },
      },
    ],
  });
  const statuses = (op: string) => requestsFor(op).map((r) => r.fault ?? r.status);

  it('a cancel whose delete went through is recorded and confirmed when every answer failed', async () => {
    const { b, meeting } = await booked(cancel);
    // The first run's delete removes the event and loses its answer, its retries and the last
    // attempt's deletes answer 503: before giving up, the last attempt finds the event gone.
    s.google.fail('events.delete', { kind: 'lost-response' }, 1);
    s.google.fail('events.delete', { kind: 'status', status: 503 }, 7);
    await s.send(b.conversationId, b.token, 'cancel it');
    expect(await lastReply(b)).toMatch(/^✅ Meeting cancelled\./);
    expect(statuses('events.delete')).toEqual(['lost-response', ...Array(7).fill('status')]);
    expect(requestsFor('events.get')).toHaveLength(1);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['cancelled']);
    expect((await meetings(b.userId)).map((m) => [m.meeting_id, m.status])).toEqual([
      [meeting.meeting_id, 'cancelled'],
    ]);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.cancelled']);
  });

  it('a cancel whose delete went through, and whose lookup fails too on the last attempt, is recorded by the run after it', async () => {
    const { b, meeting } = await booked(cancel);
    s.google.fail('events.delete', { kind: 'lost-response' }, 1);
    s.google.fail('events.delete', { kind: 'status', status: 503 }, 7);
    s.google.fail(
      'events.get',
      { kind: 'status', status: 503 },
      4,
      () => requestsFor('events.delete').length >= 8,
    );
    await s.send(b.conversationId, b.token, 'cancel it');
    expect(await lastReply(b)).toMatch(/^✅ Meeting cancelled\./);
    expect(statuses('events.get').slice(0, 4)).toEqual(Array(4).fill('status'));
    expect((await meetings(b.userId)).map((m) => [m.meeting_id, m.status])).toEqual([
      [meeting.meeting_id, 'cancelled'],
    ]);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.cancelled']);
  });

  it('a cancel Google never made: the error, and the meeting stays booked', async () => {
    const { b, meeting } = await booked(cancel);
    s.google.fail('events.delete', { kind: 'status', status: 503 }, 8);
    await s.send(b.conversationId, b.token, 'cancel it');
    expect(await lastReply(b)).toBe(s.app.config.meetingErrorMessage);
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([200]);
    expect(s.google.events(b.email).map((e) => e.status)).toEqual(['confirmed']);
    expect((await meetings(b.userId)).map((m) => [m.meeting_id, m.status])).toEqual([
      [meeting.meeting_id, 'scheduled'],
    ]);
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked']);
  });

  it('a move an earlier attempt made is recorded when the last attempt’s own patch keeps failing', async () => {
    const later = new Date(Date.parse(String(action().meeting_time)) + 3_600_000);
    const { b, meeting } = await booked(moveTo(later));
    s.google.fail('events.patch', { kind: 'lost-response' }, 1);
    s.google.fail('events.patch', { kind: 'status', status: 503 }, 7);
    await s.send(b.conversationId, b.token, 'an hour later?');
    expect(await lastReply(b)).toMatch(
      /^✅ Meeting rescheduled!\n\n📅 Meeting now scheduled for an hour later\n/,
    );
    expect(statuses('events.patch')).toEqual(['lost-response', ...Array(7).fill('status')]);
    const [event] = s.google.events(b.email);
    expect(new Date(event!.start!.dateTime!).getTime()).toBe(later.getTime());
    const [row] = await meetings(b.userId);
    expect(row).toMatchObject({ meeting_id: meeting.meeting_id, meeting_time: later.toISOString() });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);
  });

  it('a move an earlier attempt made, whose event the last attempt cannot read, is answered by the run after it', async () => {
    const later = new Date(Date.parse(String(action().meeting_time)) + 3_600_000);
    const { b, meeting } = await booked(moveTo(later));
    // The first run moves the event and loses every answer; the last attempt cannot read the event
    // (503 four times in its call): not knowing whether it moved, it does not answer.
    s.google.fail('events.patch', { kind: 'lost-response' }, 1);
    s.google.fail('events.patch', { kind: 'status', status: 503 }, 3);
    s.google.fail(
      'events.get',
      { kind: 'status', status: 503 },
      4,
      () => requestsFor('events.patch').length >= 4,
    );
    await s.send(b.conversationId, b.token, 'an hour later?');
    expect(await lastReply(b)).toMatch(
      /^✅ Meeting rescheduled!\n\n📅 Meeting now scheduled for an hour later\n/,
    );
    expect(statuses('events.get').slice(1, 5)).toEqual(Array(4).fill('status'));
    const [row] = await meetings(b.userId);
    expect(row).toMatchObject({ meeting_id: meeting.meeting_id, meeting_time: later.toISOString() });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);
    const m = await s.app.database.db
      .selectFrom('messages')
      .select(['attempts', 'status'])
      .where('conversation_id', '=', b.conversationId)
      .where('role', '=', 'customer')
      .orderBy('seq', 'desc')
      .executeTakeFirstOrThrow();
    expect(m).toEqual({ attempts: 3, status: 'answered' });
  });

  it('a move whose only patch answer was lost on the last attempt is found by one lookup and recorded', async () => {
    const later = new Date(Date.parse(String(action().meeting_time)) + 3_600_000);
    const { b, meeting } = await booked(moveTo(later));
    // The first run never reaches its patch (its availability read fails); the last attempt's patch
    // moves the event and every answer to it is lost.
    s.google.fail('freebusy.query', { kind: 'status', status: 503 }, 4);
    s.google.fail('events.patch', { kind: 'lost-response' }, 4);
    await s.send(b.conversationId, b.token, 'an hour later?');
    expect(await lastReply(b)).toMatch(/^✅ Meeting rescheduled!/);
    expect(statuses('events.patch')).toEqual(Array(4).fill('lost-response'));
    // Each attempt reads the event before it moves it (the first to take its length, the last also to
    // see whether the first moved it: not yet), and the last reads it once more before giving up (moved).
    expect(requestsFor('events.get').map((r) => r.status)).toEqual([200, 200, 200]);
    const [row] = await meetings(b.userId);
    expect(row).toMatchObject({ meeting_id: meeting.meeting_id, meeting_time: later.toISOString() });
    expect(await deliveryTypes(b.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);
  });
});

describe('giving up while the owner’s time stays taken', () => {
  // A short owner lease (1 s) and wait (0.3 s): the run that gives up waits 1.3 s for the owner's time.
  let t: Stack;
  beforeAll(async () => {
    t = await startStack(
      { JOB_RETRY_LIMIT: '1', GOOGLE_TIMEOUT_MS: '2000' },
      { ownerLock: { leaseMs: 1_000, waitMs: 300 } },
    );
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => {
    t.openai.reset();
    t.google.reset();
    t.holdRetries(false);
  });

  it('still looks, without the lease, and records the event an earlier attempt made', async () => {
    t.holdRetries(true); // the first run's retry waits until the message is moved on below
    const db = t.app.database.db;
    const { userId, c } = await ownerChat(t, 'gt');
    t.openai.responder = () => ({ content: JSON.stringify([action()]) });
    t.google.fail('events.insert', { kind: 'lost-response' }, 4);
    const messageId = await t.send(c.conversation_id, c.customer_token, 'book me');
    const failed = async () =>
      (
        await db
          .selectFrom('messages')
          .select('last_error')
          .where('message_id', '=', messageId)
          .executeTakeFirstOrThrow()
      ).last_error !== null;
    await until('the first run to fail', failed);
    // Another holder keeps the owner's time for a minute (renewed elsewhere, say).
    const leases = new BookingLeaseStore(db);
    expect((await leases.tryAcquire(userId, 'elsewhere', WHOLE_OWNER, 60_000)).acquired).toBe(true);
    try {
      const moved = await sql`
        UPDATE messages SET attempts = 5, run_after = NULL
         WHERE message_id = ${messageId} AND attempts = 1 AND claimed_until IS NULL AND status = 'pending'`.execute(
        db,
      );
      expect(Number(moved.numAffectedRows)).toBe(1);
      await sql`SELECT pg_notify(agent_meetings_channel('agent_meetings_customer_messages'), ${c.conversation_id})`.execute(
        db,
      );
      const list = await t.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
      const events = t.google.events(`${userId}@owner.test`);
      expect(events).toHaveLength(1);
      expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
        confirmation(events[0]!.hangoutLink!),
      ]);
      const rows = await t.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: t.admin });
      expect(rows.json().meetings.map((m: { google_event_id: string }) => m.google_event_id)).toEqual([
        events[0]!.id,
      ]);
    } finally {
      await leases.release(userId, 'elsewhere');
    }
  });

  it('a last attempt’s second cancel, after the first timed out waiting for the time, still acts and records both', async () => {
    // The answer's first lease statement stores its model output, then times out waiting; its second
    // action's statement sends the same output again (the same claim), which must not count as a
    // stale attempt once the time is free.
    const { userId, c } = await ownerChat(t, 'cc');
    const first = action();
    const second = bookingAction(new Date(Date.parse(String(first.meeting_time)) + 86_400_000));
    for (const [i, booking] of [first, second].entries()) {
      t.openai.responder = () => ({ content: JSON.stringify([booking]) });
      await t.send(c.conversation_id, c.customer_token, 'book me');
      await t.waitForReplies(c.conversation_id, c.customer_token, i + 1);
    }
    const rows = await t.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: t.admin });
    const booked: Array<{ meeting_id: string; google_event_id: string }> = rows.json().meetings;
    expect(booked).toHaveLength(2);
    // The owner deleted both events at Google meanwhile.
    for (const m of booked) await t.app.calendar.deleteEvent(userId, m.google_event_id);
    t.google.reset();
    const leases = new BookingLeaseStore(t.app.database.db);
    expect((await leases.tryAcquire(userId, 'elsewhere', WHOLE_OWNER, 60_000)).acquired).toBe(true);
    // The first run fails at the model (JOB_RETRY_LIMIT 1: the retry is the last attempt); the first
    // cancel's lookup is held at Google while the other holder gives the time back.
    t.openai.fail({ kind: 'status', status: 500 }, 3);
    t.openai.responder = () => ({
      toolCalls: booked.map((m) => ({ name: 'cancel_meeting', arguments: { meeting_id: m.meeting_id } })),
    });
    t.google.fail('events.get', { kind: 'stall', ms: 1_000 });
    const messageId = await t.send(c.conversation_id, c.customer_token, 'cancel both');
    try {
      await until(
        'the first cancel’s lookup',
        () => t.google.requests.some((r) => r.op === 'events.get'),
        30_000,
      );
    } finally {
      await leases.release(userId, 'elsewhere');
    }
    const list = await t.waitForReplies(c.conversation_id, c.customer_token, 3, 30_000);
    const reply = list.filter((m) => m.role === 'assistant').at(-1)!.content;
    expect(reply.match(/✅ Meeting cancelled\./g)).toHaveLength(2);
    const row = await t.app.database.db
      .selectFrom('messages')
      .select(['status', 'attempts'])
      .where('message_id', '=', messageId)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ status: 'answered', attempts: 2 });
    const after = await t.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: t.admin });
    expect(after.json().meetings.map((m: { status: string }) => m.status)).toEqual([
      'cancelled',
      'cancelled',
    ]);
  });
});
