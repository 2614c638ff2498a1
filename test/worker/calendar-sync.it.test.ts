/**
 * Keeping meetings in step with the owner's calendar (src/worker/calendar-sync.ts): the owner deletes
 * or moves one of our events in Google Calendar (here through the official client, as the owner's
 * own calendar app would, against the emulator), and the meeting is cancelled or moved with us, its
 * owner event delivered. Meetings are booked through the real path (customer message -> model ->
 * Google); passes run every fifth of a second.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calendar } from '@googleapis/calendar';
import { OAuth2Client } from 'google-auth-library';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bookingAction } from '../helpers/actions.js';
import { metricsSnapshot, type Stack, useStack } from '../helpers/stack.js';

const SYNC = { MAX_BOOKINGS_PER_CONVERSATION: '1' };
/** A pass over each owner every fifth of a second (the setting's own unit is whole seconds). */
const OPTIONS = { calendarSyncSeconds: 0.2, webhooks: { retryDelaySeconds: 1, relayIntervalMs: 200 } };

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

/** 10:00 UTC `days` after the day this file started (fixed once: a run crossing midnight keeps its days). */
const today = new Date();
today.setUTCHours(10, 0, 0, 0);
const dayAt = (days: number) => new Date(today.getTime() + days * 86_400_000);

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Received {
  type: string;
  data: { meeting: Record<string, unknown>; source?: string };
}

/** An owner webhook receiver: what it was sent, per path. */
let receiver: Server;
let receiverBase: string;
const received = new Map<string, Received[]>();
beforeAll(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const list = received.get(req.url ?? '/') ?? [];
      list.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      received.set(req.url ?? '/', list);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  receiverBase = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => receiver?.close(r));
});

interface Owner {
  userId: string;
  agentId: string;
  /** The owner's own Calendar client (their calendar app). */
  own: ReturnType<typeof calendar>;
  /** The access token the owner's own client sends (its requests are told apart from ours by it). */
  ownToken: string;
  hookPath: string;
}

async function newOwner(s: Stack): Promise<Owner> {
  const userId = uid('sync');
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  const hookPath = `/${userId}`;
  const hook = await s.app.http.inject({
    method: 'PUT',
    url: `/api/users/${userId}/webhook`,
    headers: s.admin,
    payload: { url: `${receiverBase}${hookPath}` },
  });
  expect(hook.statusCode, hook.body).toBe(200);
  // The owner's own app has a grant of its own: its requests are told apart from ours by the token.
  const mine = s.google.grant({ email: `${userId}@owner.test` });
  const auth = new OAuth2Client();
  auth.setCredentials({ access_token: mine.access_token });
  const own = calendar({ version: 'v3', auth, rootUrl: s.google.rootUrl });
  return { userId, agentId: agent.agent_id, own, ownToken: mine.access_token, hookPath };
}

/** Sends one customer message whose model answer books at `at`; the reply text. */
async function ask(s: Stack, conv: { conversation_id: string; customer_token: string }, at: Date) {
  s.openai.responder = () => ({ content: JSON.stringify([bookingAction(at)]) });
  const before = (await s.messages(conv.conversation_id, conv.customer_token)).filter(
    (m) => m.role === 'assistant',
  ).length;
  await s.send(conv.conversation_id, conv.customer_token, 'book it');
  const list = await s.waitForReplies(conv.conversation_id, conv.customer_token, before + 1);
  return list.filter((m) => m.role === 'assistant').at(-1)!.content;
}

async function meetingsOf(s: Stack, userId: string) {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: s.admin });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().meetings as Array<{
    meeting_id: string;
    google_event_id: string;
    meeting_time: string;
    duration_minutes: number;
    status: string;
    updated_at: string;
  }>;
}

async function meeting(s: Stack, meetingId: string) {
  const res = await s.app.http.inject({ url: `/api/meetings/${meetingId}`, headers: s.admin });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().meeting as {
    status: string;
    meeting_time: string;
    duration_minutes: number;
    cancelled_at: string | null;
    updated_at: string;
  };
}

/** A confirmed booking at `at` in a new conversation of the owner, and its meeting as the API lists it. */
async function bookOne(s: Stack, o: Owner, at: Date) {
  const conv = await s.openConversation(o.agentId);
  expect(await ask(s, conv, at)).toContain('✅ Meeting confirmed!');
  const [booked] = await meetingsOf(s, o.userId);
  return { conv, booked: booked! };
}

/** The owner's Calendar requests the service sent (not the owner's own), by op. */
function serviceCalls(s: Stack, owner: Owner, op: string) {
  return s.google.requests.filter(
    (r) => r.op === op && r.account === `${owner.userId}@owner.test` && r.accessToken !== owner.ownToken,
  );
}

/** Resolves once `count` more passes have read this owner's calendar (its events.list answered). */
async function morePasses(s: Stack, owner: Owner, count: number): Promise<void> {
  const answered = () => serviceCalls(s, owner, 'events.list').filter((r) => r.doneAt !== undefined).length;
  const seen = answered();
  await waitFor(`${count} more passes`, async () => (answered() >= seen + count ? true : undefined));
}

/** The owner's webhook deliveries as the API lists them (recorded with the change, delivered or not). */
async function deliveryTypes(s: Stack, userId: string): Promise<string[]> {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/webhook/deliveries`, headers: s.admin });
  expect(res.statusCode, res.body).toBe(200);
  return (res.json().deliveries as Array<{ event_type: string }>).map((d) => d.event_type).sort();
}

/**
 * No pass over this owner until the returned function is called: what the owner's first pass (a read
 * of the window) will find is staged meanwhile. Call it before the owner has a meeting, so that no
 * pass is under way.
 */
async function firstPassHeld(s: Stack, o: Owner): Promise<() => Promise<void>> {
  const db = s.app.database.db;
  await sql`INSERT INTO calendar_sync (user_id, due_at) VALUES (${o.userId}, now() + interval '1 hour')`.execute(
    db,
  );
  return async () => {
    await sql`UPDATE calendar_sync SET due_at = now() - interval '1 second' WHERE user_id = ${o.userId}`.execute(
      db,
    );
  };
}

/** A half-hour event the owner makes in their own calendar, starting at `start`. */
async function ownEvent(o: Owner, start: Date): Promise<void> {
  await o.own.events.insert({
    calendarId: 'primary',
    requestBody: {
      summary: 'Own',
      start: { dateTime: start.toISOString() },
      end: { dateTime: new Date(start.getTime() + 30 * 60_000).toISOString() },
    },
  });
}

describe('owner changes in Google Calendar', () => {
  const s = useStack(SYNC, OPTIONS);

  it('an event the owner deletes cancels its meeting, frees the conversation for a new booking and tells the owner', async () => {
    const o = await newOwner(s);
    const conv = await s.openConversation(o.agentId);
    expect(await ask(s, conv, dayAt(2))).toContain('✅ Meeting confirmed!');
    // MAX_BOOKINGS_PER_CONVERSATION is 1 here: a second booking is refused while the first stands.
    expect(await ask(s, conv, dayAt(3))).not.toContain('✅ Meeting confirmed!');
    const booked = (await meetingsOf(s, o.userId))[0]!;
    expect(booked.status).toBe('scheduled');

    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });

    const cancelled = await waitFor('the meeting cancelled', async () => {
      const m = await meeting(s, booked.meeting_id);
      return m.status === 'cancelled' ? m : undefined;
    });
    expect(cancelled.cancelled_at).not.toBeNull();
    const event = await waitFor('the owner event', async () =>
      received.get(o.hookPath)?.find((e) => e.type === 'meeting.cancelled'),
    );
    expect(event.data.source).toBe('calendar');
    expect(event.data.meeting).toMatchObject({ meeting_id: booked.meeting_id, status: 'cancelled' });
    // The conversation's one meeting is gone, so the customer can book again.
    expect(await ask(s, conv, dayAt(3))).toContain('✅ Meeting confirmed!');
    const value = await metricsSnapshot(s);
    expect(value('calendar_sync_changes_total{change="cancelled"}')).toBeGreaterThanOrEqual(1);
  });

  it('an event the owner moves and lengthens moves its meeting, and tells the owner', async () => {
    const o = await newOwner(s);
    const { booked } = await bookOne(s, o, dayAt(4));
    expect(booked.duration_minutes).toBe(30);
    const start = new Date(dayAt(4).getTime() + 2 * 3_600_000);
    const end = new Date(start.getTime() + 45 * 60_000);

    await o.own.events.patch({
      calendarId: 'primary',
      eventId: booked.google_event_id,
      requestBody: { start: { dateTime: start.toISOString() }, end: { dateTime: end.toISOString() } },
    });

    const moved = await waitFor('the meeting moved', async () => {
      const m = await meeting(s, booked.meeting_id);
      return m.meeting_time === start.toISOString() ? m : undefined;
    });
    expect(moved).toMatchObject({ status: 'scheduled', duration_minutes: 45 });
    const event = await waitFor('the owner event', async () =>
      received.get(o.hookPath)?.find((e) => e.type === 'meeting.rescheduled'),
    );
    expect(event.data.source).toBe('calendar');
    expect(event.data.meeting).toMatchObject({
      meeting_time: start.toISOString(),
      end_time: end.toISOString(),
      duration_minutes: 45,
      previous_meeting_time: dayAt(4).toISOString(),
    });
    // The next passes over this owner find the meeting in step: nothing more changes.
    await morePasses(s, o, 2);
    expect((await meeting(s, booked.meeting_id)).updated_at).toBe(moved.updated_at);
    expect(await deliveryTypes(s, o.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);
  });

  it('a change gone again by the time the pass holds the owner’s time changes nothing', async () => {
    const o = await newOwner(s);
    const { booked } = await bookOne(s, o, dayAt(5));
    await morePasses(s, o, 1); // the first (window) pass is behind: the next ones read changes
    // The pass's own read of the event (under the owner's lock) waits 1.5 s before Google answers it;
    // meanwhile the owner puts the event back where it was.
    s.google.fail('events.get', { kind: 'stall', ms: 1_500 });
    const at = new Date(dayAt(5).getTime() + 3_600_000);
    const put = (from: Date) =>
      o.own.events.patch({
        calendarId: 'primary',
        eventId: booked.google_event_id,
        requestBody: {
          start: { dateTime: from.toISOString() },
          end: { dateTime: new Date(from.getTime() + 30 * 60_000).toISOString() },
        },
      });
    await put(at);
    // (A request is logged with its account once it is answered; the stalled one is the only get.)
    const stalled = await waitFor('the pass reading the event again', async () =>
      s.google.requests.find((r) => r.op === 'events.get' && r.fault === 'stall'),
    );
    await put(dayAt(5));
    await waitFor('that read answered', async () => (stalled.doneAt !== undefined ? true : undefined));
    expect(stalled.account).toBe(`${o.userId}@owner.test`);
    await morePasses(s, o, 2);
    const m = await meeting(s, booked.meeting_id);
    expect(m).toMatchObject({
      status: 'scheduled',
      meeting_time: dayAt(5).toISOString(),
      duration_minutes: 30,
    });
    expect(await deliveryTypes(s, o.userId)).toEqual(['meeting.booked']);
  });

  it('a move at Google whose reply did not commit is left to the message’s retry, which records it once', async () => {
    const o = await newOwner(s);
    const { conv, booked } = await bookOne(s, o, dayAt(8));
    await morePasses(s, o, 1);
    // The customer moves it; the patch reaches Google but its answer is lost and the retries fail,
    // so the attempt fails with the event moved and the meeting not. Its retry is held meanwhile.
    const later = new Date(dayAt(8).getTime() + 3_600_000);
    s.openai.responder = () => ({
      toolCalls: [
        {
          name: 'reschedule_meeting',
          arguments: { meeting_id: null, new_time: later.toISOString(), friendly_time: 'an hour later' },
        },
      ],
    });
    s.google.fail('events.patch', { kind: 'lost-response' }, 1);
    s.google.fail('events.patch', { kind: 'status', status: 503 }, 3);
    s.holdRetries(true);
    const deferredBefore = (await metricsSnapshot(s))('calendar_sync_passes_total{result="deferred"}');
    const messageId = await s.send(conv.conversation_id, conv.customer_token, 'an hour later please');
    await s.firstAttemptFailed(messageId);

    // Passes see the event moved, and leave it: the message is still pending with its model output.
    await waitFor('two deferred passes', async () => {
      const now = (await metricsSnapshot(s))('calendar_sync_passes_total{result="deferred"}');
      return now >= deferredBefore + 2 ? true : undefined;
    });
    expect((await meeting(s, booked.meeting_id)).meeting_time).toBe(dayAt(8).toISOString());

    // The retry finds the event moved already and records the move: one rescheduled event, the chat's.
    await s.retryNow(messageId);
    const replies = await s.waitForReplies(conv.conversation_id, conv.customer_token, 2);
    expect(replies.at(-1)?.content).toMatch(/^✅ Meeting rescheduled!/);
    expect((await meeting(s, booked.meeting_id)).meeting_time).toBe(later.toISOString());
    await morePasses(s, o, 2);
    expect(await deliveryTypes(s, o.userId)).toEqual(['meeting.booked', 'meeting.rescheduled']);
    const told = await waitFor('the owner event', async () =>
      received.get(o.hookPath)?.find((e) => e.type === 'meeting.rescheduled'),
    );
    expect(told.data.source).toBeUndefined();
  });

  it('a message in flight whose model has not answered holds nothing back', async () => {
    const o = await newOwner(s);
    const { conv, booked } = await bookOne(s, o, dayAt(10));
    // Its model call failed: no output stored, so it cannot have acted at Google.
    s.holdRetries(true);
    s.openai.fail({ kind: 'status', status: 500 }, 3); // the SDK's own two retries included
    const messageId = await s.send(conv.conversation_id, conv.customer_token, 'one more thing');
    await s.firstAttemptFailed(messageId);
    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });
    await waitFor('the meeting cancelled', async () =>
      (await meeting(s, booked.meeting_id)).status === 'cancelled' ? true : undefined,
    );
  });
});

describe('what a pass reads', () => {
  // Its own stack: the fault below is for the next events.list of whichever owner, so this file's
  // other owners must not be passed over meanwhile.
  const s = useStack(SYNC, OPTIONS);

  it('the meetings’ window first, then only what changed since, and the window again when Google no longer keeps that', async () => {
    const o = await newOwner(s);
    const conv = await s.openConversation(o.agentId);
    expect(await ask(s, conv, dayAt(6))).toContain('✅ Meeting confirmed!');
    const lists = () => serviceCalls(s, o, 'events.list');
    await waitFor('two passes', async () => (lists().length >= 2 ? true : undefined));
    const [first, second] = lists();
    // First: every event of the meetings' window, deleted ones included.
    expect(first?.query).toMatchObject({ showDeleted: 'true' });
    expect(first?.query.timeMin).toBeDefined();
    expect(new Date(first!.query.timeMax!).getTime()).toBeGreaterThan(dayAt(6).getTime() + 30 * 60_000);
    expect(first?.query.updatedMin).toBeUndefined();
    // Then: what changed since the first pass began (less a margin for the clocks).
    expect(second?.query.updatedMin).toBeDefined();
    expect(second?.query.timeMin).toBeUndefined();
    // (claimed just before the first read was sent; five minutes of margin for Google's clock)
    const since = new Date(second!.query.updatedMin!).getTime();
    expect(since).toBeLessThanOrEqual(first!.at - 5 * 60_000);
    expect(since).toBeGreaterThan(first!.at - 5 * 60_000 - 5_000);

    const booked = (await meetingsOf(s, o.userId))[0]!;
    // The fault first: the next read of changes, whenever it comes, is refused.
    s.google.fail('events.list', {
      kind: 'status',
      status: 410,
      reason: 'updatedMinTooLongAgo',
      message: 'The requested minimum modification time lies too far in the past.',
    });
    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });
    await waitFor('the meeting cancelled', async () =>
      (await meeting(s, booked.meeting_id)).status === 'cancelled' ? true : undefined,
    );
    // This stack's only owner, and only the service lists events: the refused request carries no
    // account (a fault answers before the token is looked at).
    const all = s.google.requests.filter((r) => r.op === 'events.list');
    const refused = all.findIndex((r) => r.fault === 'status');
    expect(refused).toBeGreaterThan(0);
    expect(all[refused]?.query.updatedMin).toBeDefined();
    // At once the window, which holds the deleted event.
    expect(all[refused + 1]?.query).toMatchObject({ showDeleted: 'true' });
    expect(all[refused + 1]?.query.timeMin).toBeDefined();
  });

  it('in a read of the window, a meeting whose event is no longer in it is read by itself', async () => {
    const o = await newOwner(s);
    // No pass over this owner until it is made due below: the owner's first pass, a read of the
    // window, comes after the owner moved the event three weeks on, out of the window.
    const release = await firstPassHeld(s, o);
    const { booked } = await bookOne(s, o, dayAt(9));
    const to = new Date(dayAt(30).getTime() + 3_600_000);
    await o.own.events.patch({
      calendarId: 'primary',
      eventId: booked.google_event_id,
      requestBody: {
        start: { dateTime: to.toISOString() },
        end: { dateTime: new Date(to.getTime() + 30 * 60_000).toISOString() },
      },
    });
    const from = s.google.requests.length;
    await release();

    await waitFor('the meeting moved', async () =>
      (await meeting(s, booked.meeting_id)).meeting_time === to.toISOString() ? true : undefined,
    );
    // Found by that first pass itself: its window read, then the event read by itself, before any
    // later read of changes (which would have found the move too, and is not what is tested here).
    const after = s.google.requests
      .slice(from)
      .filter(
        (r) =>
          r.account === `${o.userId}@owner.test` &&
          (r.op === 'events.list' || (r.op === 'events.get' && r.path.endsWith(booked.google_event_id))),
      );
    expect(after[0]?.op).toBe('events.list');
    expect(after[0]?.query.timeMin).toBeDefined();
    expect(after[1]?.op).toBe('events.get');
  });

  it('reads every page Google answers', async () => {
    const o = await newOwner(s);
    const release = await firstPassHeld(s, o);
    // Two events of the owner's own come before ours in the calendar's listing.
    for (const hoursBefore of [4, 3])
      await ownEvent(o, new Date(dayAt(12).getTime() - hoursBefore * 3_600_000));
    const { booked } = await bookOne(s, o, dayAt(12));
    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });
    s.google.listPageSize = 1; // one event per page: ours on the third
    const from = s.google.requests.length;
    await release();

    await waitFor('the meeting cancelled', async () =>
      (await meeting(s, booked.meeting_id)).status === 'cancelled' ? true : undefined,
    );
    const mine = s.google.requests.slice(from).filter((r) => r.account === `${o.userId}@owner.test`);
    const pages = mine.filter((r) => r.op === 'events.list');
    expect(pages.slice(0, 3).map((r) => r.query.pageToken !== undefined)).toEqual([false, true, true]);
    // Found on the third page: read again only under the lease, never by itself as one not listed.
    expect(mine.filter((r) => r.op === 'events.get' && r.path.endsWith(booked.google_event_id))).toHaveLength(
      1,
    );
  });

  it('a window with more events than one read goes through: each meeting’s event is read by itself', async () => {
    const o = await newOwner(s);
    const release = await firstPassHeld(s, o);
    // Eleven events of the owner's own in the window, listed before ours, one per page: more than
    // the ten pages a read goes through.
    for (let i = 1; i <= 11; i++) await ownEvent(o, new Date(dayAt(13).getTime() - i * 3_600_000));
    const { booked } = await bookOne(s, o, dayAt(13));
    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });
    s.google.listPageSize = 1;
    const from = s.google.requests.length;
    await release();

    await waitFor('the meeting cancelled', async () =>
      (await meeting(s, booked.meeting_id)).status === 'cancelled' ? true : undefined,
    );
    const mine = s.google.requests.slice(from).filter((r) => r.account === `${o.userId}@owner.test`);
    // That pass: ten pages of the window, then gave that read up.
    const firstPass = mine.slice(
      0,
      mine.findIndex((r) => r.op === 'events.get'),
    );
    expect(firstPass.filter((r) => r.op === 'events.list')).toHaveLength(10);
    // Read by itself, then again under the lease.
    expect(mine.filter((r) => r.op === 'events.get' && r.path.endsWith(booked.google_event_id))).toHaveLength(
      2,
    );
  });

  it('an event the calendar does not know (the owner reconnected another account) leaves its meeting alone', async () => {
    const o = await newOwner(s);
    const { booked } = await bookOne(s, o, dayAt(11));
    await morePasses(s, o, 1);
    const other = `${o.userId}-second@owner.test`;
    const grant = s.google.grant({ email: other });
    const res = await s.app.http.inject({
      method: 'POST',
      url: `/api/users/${o.userId}/google-calendar/connect`,
      headers: s.admin,
      payload: {
        access_token: grant.access_token,
        refresh_token: grant.refresh_token,
        token_expiry: grant.expiry.toISOString(),
        scope: `https://www.googleapis.com/auth/calendar ${grant.scope}`,
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    // A first pass again (as after a 410): the new account's window has none of our events, and
    // reading ours by itself answers 404.
    await sql`UPDATE calendar_sync SET synced_through = NULL WHERE user_id = ${o.userId}`.execute(
      s.app.database.db,
    );
    await waitFor('a read of our event in the other account', async () =>
      s.google.requests.find(
        (r) =>
          r.op === 'events.get' &&
          r.account === other &&
          r.status === 404 &&
          r.path.endsWith(booked.google_event_id),
      ),
    );
    await waitFor('a pass after it', async () =>
      s.google.requests.filter((r) => r.op === 'events.list' && r.account === other && r.query.updatedMin)
        .length > 0
        ? true
        : undefined,
    );
    expect((await meeting(s, booked.meeting_id)).status).toBe('scheduled');
  });

  it('an owner whose calendar is not connected any more is left alone, and their meetings too', async () => {
    const o = await newOwner(s);
    const { booked } = await bookOne(s, o, dayAt(7));
    await morePasses(s, o, 1);
    const removed = await s.app.http.inject({
      method: 'DELETE',
      url: `/api/google-tokens/${o.userId}`,
      headers: s.admin,
    });
    expect(removed.statusCode, removed.body).toBe(200);
    await o.own.events.delete({ calendarId: 'primary', eventId: booked.google_event_id });
    await new Promise((r) => setTimeout(r, 300)); // a pass claimed before the disconnect ends
    // Not claimed any more: its next pass stays where it was.
    const due = async () =>
      (
        await sql<{ due_at: Date }>`SELECT due_at FROM calendar_sync WHERE user_id = ${o.userId}`.execute(
          s.app.database.db,
        )
      ).rows[0]?.due_at.getTime();
    const before = await due();
    expect(before).toBeDefined();
    await new Promise((r) => setTimeout(r, 1_000)); // five passes' time
    expect(await due()).toBe(before);
    expect((await meeting(s, booked.meeting_id)).status).toBe('scheduled');
  });
});
