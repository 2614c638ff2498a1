/**
 * The owner's Google access token while booking (issue 4, item 4): refresh when expired or close to
 * it (in the background while the token still has more than a minute left), persisted encrypted with the refresh token kept; one refresh per owner under concurrency (in
 * the process and across processes through the database lease); 401 -> one forced refresh and one
 * retry; invalid_grant -> revoked, MEETING_ERROR_MESSAGE, no loop.
 * Everything runs through HTTP, the worker, and the real google-auth-library / googleapis clients.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { GoogleTokenProvider, type TokenProviderOptions } from '../../src/google/token-provider.js';
import type { CalendarConnection } from '../../src/store/calendar-connections.js';
import { bookingAction } from '../helpers/actions.js';
import {
  GOOGLE_CLIENT_ID,
  GOOGLE_CLIENT_SECRET,
  metricsSnapshot,
  retryScheduled,
  type Stack,
  startStack,
} from '../helpers/stack.js';

let s: Stack;
beforeAll(async () => {
  // A short Google timeout so that a hung token endpoint is noticed quickly.
  s = await startStack({ GOOGLE_TIMEOUT_MS: '2000' });
});
afterAll(async () => {
  await s?.close();
});
beforeEach(() => {
  s.openai.reset();
  s.google.reset();
});

/** Another process's token provider on the same database. */
function otherProvider(options: Partial<TokenProviderOptions> = {}): GoogleTokenProvider {
  return new GoogleTokenProvider(
    s.app.connections,
    {
      clientId: GOOGLE_CLIENT_ID,
      clientSecret: GOOGLE_CLIENT_SECRET,
      tokenUrl: s.google.tokenUrl,
      timeoutMs: 5000,
      ...options,
    },
    s.app.logger,
  );
}

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;
const ownerEmail = (userId: string) => `${userId}@owner.test`;

function action(days = 1): Record<string, unknown> {
  const at = new Date(Date.now() + days * 86_400_000);
  at.setUTCMinutes(0, 0, 0);
  return bookingAction(at, { friendly_time: 'tomorrow' });
}

interface Owner {
  userId: string;
  email: string;
  agentId: string;
  grant: { refresh_token: string; access_token: string };
}

async function newOwner(accessTokenExpiresInSeconds?: number): Promise<Owner> {
  const userId = uid('tk');
  const grant = await s.connectOwner(
    userId,
    accessTokenExpiresInSeconds === undefined ? {} : { accessTokenExpiresInSeconds },
  );
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  return { userId, email: ownerEmail(userId), agentId: agent.agent_id, grant };
}

/** Opens a conversation, sends one message the model answers with a booking; returns the reply. */
async function book(o: Owner, days = 1): Promise<string> {
  s.openai.responder = () => ({ content: JSON.stringify([action(days)]) });
  const c = await s.openConversation(o.agentId);
  await s.send(c.conversation_id, c.customer_token, 'book me');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
  return list.filter((m) => m.role === 'assistant').at(-1)!.content;
}

/** Ten conversations of `o`'s agent each ask for a booking at once (a different hour each); all are confirmed. */
async function bookTenAtOnce(o: Owner): Promise<void> {
  let n = 0;
  // A different hour each: one slot of one owner cannot be booked twice.
  s.openai.responder = () => ({ content: JSON.stringify([action(1 + n++ / 24)]) });
  const chats = await Promise.all(Array.from({ length: 10 }, () => s.openConversation(o.agentId)));
  await Promise.all(chats.map((c) => s.send(c.conversation_id, c.customer_token, 'book me')));
  const lists = await Promise.all(
    chats.map((c) => s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000)),
  );
  for (const list of lists) expect(isConfirmation(list.at(-1)!.content)).toBe(true);
}

async function tokenInfo(userId: string): Promise<Record<string, unknown>> {
  const res = await s.app.http.inject({ url: `/api/google-tokens/${userId}`, headers: s.admin });
  expect(res.statusCode).toBe(200);
  return res.json().token_info;
}

const tokenCalls = () => s.google.requests.filter((r) => r.op === 'token');
const inserts = () => s.google.requests.filter((r) => r.op === 'events.insert');
// Every booking reads the owner's availability (freeBusy) before it inserts: the first Calendar call.
const freeBusyCalls = () => s.google.requests.filter((r) => r.op === 'freebusy.query');
const isConfirmation = (text: string) => text.startsWith('✅ Meeting confirmed!');

describe('token refresh', () => {
  it('refreshes an expired token, books, and persists the new token (encrypted, refresh token kept)', async () => {
    const o = await newOwner(-120);
    const before = await tokenInfo(o.userId);
    expect(before).toMatchObject({ is_expired: true, last_refreshed_at: null, status: 'connected' });

    const reply = await book(o);
    expect(isConfirmation(reply)).toBe(true);
    expect(s.google.events(o.email)).toHaveLength(1);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    const form = tokenCalls()[0]!.body as Record<string, string>;
    expect(form).toMatchObject({
      grant_type: 'refresh_token',
      refresh_token: o.grant.refresh_token,
      client_id: GOOGLE_CLIENT_ID,
    });
    expect(inserts().map((r) => r.status)).toEqual([200]);

    const after = await tokenInfo(o.userId);
    expect(new Date(String(after.token_expiry)).getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
    expect(after.is_expired).toBe(false);
    expect(after.last_refreshed_at).toEqual(expect.any(String));
    expect(after.refresh_token).toBe(before.refresh_token);
    expect(after.access_token).not.toBe(before.access_token);

    const stored = await s.app.connections.get(o.userId);
    expect(stored?.refreshToken).toBe(o.grant.refresh_token);
    expect(stored?.accessToken).not.toBe(o.grant.access_token);
    expect(stored?.accessToken).toMatch(/^ya29\.emu-/);
    // Stored encrypted: neither token appears in the row as plain text.
    const raw = await sql<
      Record<string, unknown>
    >`SELECT * FROM google_calendar_tokens WHERE user_id = ${o.userId}`.execute(s.app.database.db);
    const rowText = JSON.stringify(raw.rows[0]);
    expect(rowText).not.toContain(stored!.accessToken);
    expect(rowText).not.toContain(o.grant.refresh_token);

    // The next booking uses the stored token: no second refresh.
    s.google.reset();
    expect(isConfirmation(await book(o, 2))).toBe(true);
    expect(tokenCalls()).toHaveLength(0);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
  });

  it('a refresh answered without expires_in (RFC 6749 makes it optional) is kept for 55 minutes, not refreshed again', async () => {
    s.google.omitExpiresIn = true;
    try {
      const o = await newOwner(-120);
      const started = Date.now();
      expect(isConfirmation(await book(o))).toBe(true);
      expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
      expect(tokenCalls()[0]!.status).toBe(200);
      const expiry = new Date(String((await tokenInfo(o.userId)).token_expiry)).getTime();
      expect(expiry).toBeGreaterThanOrEqual(started + 55 * 60_000 - 1000);
      expect(expiry).toBeLessThanOrEqual(Date.now() + 55 * 60_000 + 1000);
      // The stored token is used as it is by the next booking.
      s.google.reset();
      expect(isConfirmation(await book(o, 2))).toBe(true);
      expect(tokenCalls()).toHaveLength(0);
    } finally {
      s.google.omitExpiresIn = false;
    }
  });

  it('refreshes a token that expires within 5 minutes in the background: the booking does not wait for it', async () => {
    const soon = await newOwner(120);
    // The token endpoint answers only after the booking is done: a booking that waited for it would
    // come after it, and would call Calendar with the new token.
    s.google.fail('token', { kind: 'stall', ms: 1500 }, 1);
    expect(isConfirmation(await book(soon))).toBe(true);
    const calendarTokens = () =>
      s.google.requests.filter((r) => r.account === soon.email).map((r) => r.accessToken);
    expect(new Set(calendarTokens())).toEqual(new Set([soon.grant.access_token]));
    expect(tokenCalls()[0]?.doneAt).toBeUndefined();
    // The refresh ran once and stored its token, which the next booking uses without refreshing.
    await vi.waitFor(async () => {
      expect((await s.app.connections.get(soon.userId))?.accessToken).toBe(tokenCalls()[0]?.accessToken);
    }, 5000);
    const issued = tokenCalls()[0]!.accessToken!;
    expect(isConfirmation(await book(soon, 2))).toBe(true);
    expect(calendarTokens().at(-1)).toBe(issued);
    expect(s.google.refreshCount(soon.grant.refresh_token)).toBe(1);
    expect(tokenCalls()).toHaveLength(1);

    const fresh = await newOwner(3600);
    expect(isConfirmation(await book(fresh))).toBe(true);
    expect(s.google.refreshCount(fresh.grant.refresh_token)).toBe(0);
  });

  it('a token with less than a minute left is refreshed before the booking calls Calendar with it', async () => {
    const o = await newOwner(30);
    expect(isConfirmation(await book(o))).toBe(true);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    const issued = tokenCalls()[0]!.accessToken;
    const used = s.google.requests.filter((r) => r.account === o.email).map((r) => r.accessToken);
    expect(used.length).toBeGreaterThan(0);
    expect(new Set(used)).toEqual(new Set([issued]));
  });

  it('10 concurrent bookings inside the refresh margin share one background refresh, and none waits for it', async () => {
    // The token answer is held until released below, however long the bookings take on a loaded
    // machine; on a stack of its own whose token requests wait that long (this file's 2 s timeout
    // would end the held request and the library would send it again). The helpers use `s`.
    const shared = s;
    s = await startStack({ GOOGLE_TIMEOUT_MS: '60000' });
    try {
      const o = await newOwner(120);
      s.google.fail('token', { kind: 'stall', ms: 60_000 }, 1);
      await bookTenAtOnce(o);
      // Every booking was answered while the one refresh was still held.
      expect(tokenCalls()).toHaveLength(1);
      expect(tokenCalls()[0]!.doneAt).toBeUndefined();
      expect(s.google.events(o.email)).toHaveLength(10);
      s.google.releaseStalls();
      await vi.waitFor(() => expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1), 5000);
      expect(tokenCalls()).toHaveLength(1);
    } finally {
      await s.close();
      s = shared;
    }
  });

  it('a background refresh that fails leaves the booking booked; bookings right after it do not retry it at once', async () => {
    const o = await newOwner(120);
    const failedRefreshes = async () =>
      (await metricsSnapshot(s))('google_token_refreshes_total{outcome="failed"}');
    const failedBefore = await failedRefreshes();
    // Every try of the refresh fails (the library retries a 5xx by itself).
    s.google.fail('token', { kind: 'status', status: 500 }, 20);
    expect(isConfirmation(await book(o))).toBe(true);
    // The refresh has ended (its retries too) once it is counted.
    await vi.waitFor(async () => expect(await failedRefreshes()).toBe(failedBefore + 1), 10_000);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(0);
    expect((await s.app.connections.get(o.userId))?.accessToken).toBe(o.grant.access_token);
    // The token endpoint works again, but the token still has time and the failure is recent: the
    // next booking uses it without a refresh (the cooldown's expiry is checked below, on a clock of
    // its own).
    s.google.reset();
    expect(isConfirmation(await book(o, 2))).toBe(true);
    expect(tokenCalls()).toHaveLength(0);
    expect(s.google.requests.filter((r) => r.account === o.email).map((r) => r.accessToken)).toContain(
      o.grant.access_token,
    );
  });

  it('after a failed background refresh, tries again once the cooldown passed, and at once when it must wait', async () => {
    const o = await newOwner(180);
    let clock = Date.now();
    const provider = otherProvider({ now: () => new Date(clock), refreshCooldownMs: 15_000 });
    s.google.fail('token', { kind: 'status', status: 400 }, 1); // no retry: a configuration-like error
    expect(await provider.accessToken(o.userId)).toBe(o.grant.access_token);
    await provider.drain();
    expect(tokenCalls()).toHaveLength(1);
    // Within the cooldown: the token, no new try.
    clock += 10_000;
    expect(await provider.accessToken(o.userId)).toBe(o.grant.access_token);
    await provider.drain();
    expect(tokenCalls()).toHaveLength(1);
    // Past it: a new background refresh, which succeeds.
    clock += 10_000;
    expect(await provider.accessToken(o.userId)).toBe(o.grant.access_token);
    await provider.drain();
    expect(tokenCalls()).toHaveLength(2);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);

    // Another owner, whose token has under a minute left: a recent failure does not hold its
    // callers back (they wait for a new try).
    const late = await newOwner(45);
    const other = otherProvider({ refreshCooldownMs: 60_000 });
    s.google.fail('token', { kind: 'status', status: 400 }, 1);
    await expect(other.accessToken(late.userId)).rejects.toThrow(/token refresh failed/);
    const token = await other.accessToken(late.userId);
    expect(token).not.toBe(late.grant.access_token);
    expect(s.google.refreshCount(late.grant.refresh_token)).toBe(1);
  });

  it('never hands out again a token Google refused, even read from a cache that has not caught up', async () => {
    const o = await newOwner(180);
    const stored = (await s.app.connections.get(o.userId))!;
    // A cache that keeps returning the refused token (its eviction not arrived yet).
    const provider = otherProvider({ cached: async () => stored });
    s.google.fail('token', { kind: 'stall', ms: 300 }, 1);
    const refusedOne = o.grant.access_token;
    const [afterRefusal, meanwhile] = await Promise.all([
      provider.accessToken(o.userId, refusedOne),
      // A caller arriving while that refresh runs waits for it rather than take the refused token.
      provider.accessToken(o.userId),
    ]);
    expect(afterRefusal).not.toBe(refusedOne);
    expect(meanwhile).toBe(afterRefusal);
    // Later, the cache still has the refused one: the database's (refreshed) token, no new refresh.
    expect(await provider.accessToken(o.userId)).toBe(afterRefusal);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
  });

  it('drain() waits for a refresh running in the background', async () => {
    const o = await newOwner(120);
    const provider = otherProvider();
    s.google.fail('token', { kind: 'stall', ms: 300 }, 1);
    // Handed out at once, the refresh still running.
    expect(await provider.accessToken(o.userId)).toBe(o.grant.access_token);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(0);
    await provider.drain();
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    const stored = (await s.app.connections.get(o.userId))!;
    expect(stored.accessToken).not.toBe(o.grant.access_token);
    expect(stored.tokenExpiry.getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
    // Now fresh: handed out as stored, no second refresh.
    expect(await provider.accessToken(o.userId)).toBe(stored.accessToken);
    await provider.drain();
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
  });

  it('once stopped (shutdown), refreshes no longer run in the background: callers wait for theirs', async () => {
    const o = await newOwner(120);
    const provider = otherProvider();
    await provider.stop();
    const token = await provider.accessToken(o.userId);
    expect(token).not.toBe(o.grant.access_token);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect((await s.app.connections.get(o.userId))?.accessToken).toBe(token);
  });

  it('refreshes once for 10 concurrent bookings of one owner', async () => {
    const o = await newOwner(-60);
    let n = 0;
    s.openai.responder = async () => {
      await new Promise((r) => setTimeout(r, 20));
      // A different hour each: one slot of one owner cannot be booked twice.
      return { content: JSON.stringify([action(1 + n++ / 24)]) };
    };
    const chats = await Promise.all(Array.from({ length: 10 }, () => s.openConversation(o.agentId)));
    await Promise.all(chats.map((c) => s.send(c.conversation_id, c.customer_token, 'book me')));
    const lists = await Promise.all(
      chats.map((c) => s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000)),
    );
    for (const list of lists) expect(isConfirmation(list.at(-1)!.content)).toBe(true);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(tokenCalls()).toHaveLength(1);
    expect(s.google.events(o.email)).toHaveLength(10);
    const res = await s.app.http.inject({ url: `/api/users/${o.userId}/meetings`, headers: s.admin });
    expect(res.json().meetings).toHaveLength(10);
  });

  it('refreshes once across processes: token providers sharing the database take turns through the lease', async () => {
    const o = await newOwner(-60);
    const providers = Array.from({ length: 5 }, () => otherProvider());
    s.google.latencyMs = 150; // the refresh takes a while: the others must wait for it
    try {
      const tokens = await Promise.all(
        providers.flatMap((p) => [p.accessToken(o.userId), p.accessToken(o.userId)]),
      );
      expect(new Set(tokens).size).toBe(1);
      expect(tokens[0]).not.toBe(o.grant.access_token);
    } finally {
      s.google.latencyMs = 0;
    }
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect((await s.app.connections.get(o.userId))?.refreshToken).toBe(o.grant.refresh_token);
  });

  it('recovers from a token endpoint failure (refresh retried) and books once', async () => {
    const o = await newOwner(-60);
    s.google.fail('token', { kind: 'status', status: 503 }, 1);
    expect(isConfirmation(await book(o))).toBe(true);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(s.google.events(o.email)).toHaveLength(1);
  });

  it('a token endpoint that asks to be left alone (429, Retry-After 120 s) is not asked again sooner', async () => {
    const o = await newOwner(-60);
    s.google.fail('token', { kind: 'status', status: 429, retryAfter: '120' }, 10);
    s.openai.responder = () => ({ content: JSON.stringify([action()]) });
    const c = await s.openConversation(o.agentId);
    const messageId = await s.send(c.conversation_id, c.customer_token, 'book me');
    const row = await retryScheduled(s, messageId);
    expect(row.attempts).toBe(1);
    expect(row.wait).toBeGreaterThan(100);
    expect(tokenCalls().every((r) => r.status === 429)).toBe(true);
    expect(s.google.events(o.email)).toEqual([]);
    // Its retry would book two minutes on, in the middle of later tests: put off for the file.
    await sql`UPDATE messages SET run_after = now() + interval '1 day' WHERE message_id = ${messageId}`.execute(
      s.app.database.db,
    );
  });

  it('ends a refresh that would outlast its lease (so no other process refreshes beside it), then refreshes again', async () => {
    const o = await newOwner(-60);
    // Each request's own timeout (10 s) is far off; the lease (1.5 s) is not: the refresh is ended
    // before the lease lapses instead of answering once another process may have leased.
    s.google.fail('token', { kind: 'stall', ms: 2500 }, 1);
    const p = otherProvider({ leaseMs: 1500, timeoutMs: 10_000 });
    await expect(p.accessToken(o.userId)).rejects.toThrow(/token refresh failed/);
    expect(tokenCalls().map((r) => [r.fault ?? null, r.status])).toEqual([['stall', 0]]);
    // The lease was given back: the next caller refreshes at once.
    const token = await p.accessToken(o.userId);
    expect(token).not.toBe(o.grant.access_token);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
  });

  it('gives up on a stalled token endpoint after GOOGLE_TIMEOUT_MS and refreshes again', async () => {
    const o = await newOwner(-60);
    s.google.fail('token', { kind: 'stall', ms: 10_000 }, 1);
    expect(isConfirmation(await book(o))).toBe(true);
    // The stalled request was abandoned (no answer yet) and a second one got the token.
    const calls = tokenCalls();
    expect(calls.map((r) => [r.fault ?? null, r.status])).toEqual([
      ['stall', 0],
      [null, 200],
    ]);
    expect(s.google.events(o.email)).toHaveLength(1);
  });
});

describe('401 from Calendar', () => {
  it('a token Google rejects although it looks fresh gets one forced refresh and one retry', async () => {
    const o = await newOwner(3600);
    s.google.expireAccessToken(o.grant.access_token);
    const before = await tokenInfo(o.userId);
    expect(before.is_expired).toBe(false);

    expect(isConfirmation(await book(o))).toBe(true);
    expect(freeBusyCalls().map((r) => r.status)).toEqual([401, 200]);
    expect(inserts().map((r) => r.status)).toEqual([200]);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(s.google.events(o.email)).toHaveLength(1);
    const after = await tokenInfo(o.userId);
    expect(after.last_refreshed_at).toEqual(expect.any(String));
    expect(after.access_token).not.toBe(before.access_token);
    expect(after.refresh_token).toBe(before.refresh_token);
  });

  it('10 concurrent bookings whose token Google rejects share one forced refresh', async () => {
    const o = await newOwner(3600);
    s.google.expireAccessToken(o.grant.access_token);
    // A booking whose read went out before another's hold of the owner ended reads again after its
    // lease (counted): how many do depends on how the ten interleave.
    const readAgain = async () => (await metricsSnapshot(s))('booking_busy_reads_total{result="read_again"}');
    const readAgainBefore = await readAgain();
    await bookTenAtOnce(o);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(inserts().map((r) => r.status)).toEqual(Array(10).fill(200));
    const statuses = freeBusyCalls().map((r) => r.status);
    expect(statuses.filter((x) => x === 200)).toHaveLength(10 + (await readAgain()) - readAgainBefore);
    expect(statuses.filter((x) => x === 401).length).toBeGreaterThanOrEqual(1);
    expect(statuses.filter((x) => x !== 200 && x !== 401)).toEqual([]);
    expect(s.google.events(o.email)).toHaveLength(10);
  });

  it('a second 401 after the forced refresh is not retried again: MEETING_ERROR_MESSAGE, no event', async () => {
    const o = await newOwner(3600);
    s.google.fail('events.insert', { kind: 'status', status: 401 }, 2);
    const reply = await book(o);
    expect(reply).toBe(s.app.config.meetingErrorMessage);
    expect(inserts().map((r) => r.status)).toEqual([401, 401]);
    expect(tokenCalls()).toHaveLength(1);
    expect(s.google.events(o.email)).toHaveLength(0);
  });
});

describe('invalid_grant', () => {
  it('marks the connection revoked, answers MEETING_ERROR_MESSAGE and stops (no retry loop)', async () => {
    const o = await newOwner(-60);
    s.google.revokeRefreshToken(o.grant.refresh_token);
    const reply = await book(o);
    expect(reply).toBe(s.app.config.meetingErrorMessage);
    // google-auth-library does not retry a 400; we do not either.
    expect(tokenCalls().map((r) => r.status)).toEqual([400]);
    expect(inserts()).toHaveLength(0);
    expect(s.google.events(o.email)).toHaveLength(0);
    const info = await tokenInfo(o.userId);
    expect(info.status).toBe('revoked');
    expect(info.revoked_at).toEqual(expect.any(String));
    expect(info.refresh_token).not.toBeNull();

    // Later bookings fail fast without calling Google at all.
    s.google.reset();
    expect(await book(o, 2)).toBe(s.app.config.meetingErrorMessage);
    expect(s.google.requests).toHaveLength(0);
    const res = await s.app.http.inject({ url: `/api/users/${o.userId}/meetings`, headers: s.admin });
    expect(res.json().meetings).toEqual([]);

    // Reconnecting clears the revoked state and booking works again.
    const again = await s.connectOwner(o.userId);
    expect((await tokenInfo(o.userId)).status).toBe('connected');
    expect(isConfirmation(await book({ ...o, grant: again }, 3))).toBe(true);
  });

  it('a 401 whose forced refresh answers invalid_grant also ends revoked, with one refresh attempt', async () => {
    const o = await newOwner(3600);
    s.google.revokeRefreshToken(o.grant.refresh_token, { alsoAccessTokens: true });
    const reply = await book(o);
    expect(reply).toBe(s.app.config.meetingErrorMessage);
    expect(freeBusyCalls().map((r) => r.status)).toEqual([401]);
    expect(inserts()).toHaveLength(0);
    expect(tokenCalls().map((r) => r.status)).toEqual([400]);
    expect((await tokenInfo(o.userId)).status).toBe('revoked');
  });
});

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('a reconnect landing while a refresh is in flight', () => {
  it('keeps the reconnected tokens: the refresh of the old grant stores nothing and the new token is used', async () => {
    const o = await newOwner(-60);
    // The refresh answers only after the owner has reconnected.
    s.google.fail('token', { kind: 'stall', ms: 1000 }, 1);
    const pending = otherProvider().accessToken(o.userId);
    await until('the refresh to reach Google', () => tokenCalls().length === 1);
    const again = await s.connectOwner(o.userId);

    expect(await pending).toBe(again.access_token);
    // The stalled refresh did complete at Google; its token (from the old grant) was dropped.
    expect(tokenCalls().map((r) => [r.fault ?? null, r.status])).toEqual([['stall', 200]]);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(s.google.refreshCount(again.refresh_token)).toBe(0);
    const stored = await s.app.connections.get(o.userId);
    expect(stored).toMatchObject({
      accessToken: again.access_token,
      refreshToken: again.refresh_token,
      status: 'connected',
    });
    expect(stored?.lastRefreshedAt).toBeNull();
  });

  it('an invalid_grant for the OLD refresh token does not revoke the reconnected calendar: the booking succeeds', async () => {
    const o = await newOwner(-60);
    s.google.revokeRefreshToken(o.grant.refresh_token);
    s.google.fail('token', { kind: 'stall', ms: 1000 }, 1);
    s.openai.responder = () => ({ content: JSON.stringify([action(4)]) });
    const c = await s.openConversation(o.agentId);
    await s.send(c.conversation_id, c.customer_token, 'book me');
    await until('the refresh to reach Google', () => tokenCalls().length === 1);
    const again = await s.connectOwner(o.userId);

    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(isConfirmation(list.filter((m) => m.role === 'assistant').at(-1)!.content)).toBe(true);
    expect(tokenCalls().map((r) => r.status)).toEqual([400]);
    expect(s.google.events(o.email)).toHaveLength(1);
    const info = await tokenInfo(o.userId);
    expect(info).toMatchObject({ status: 'connected', revoked_at: null });
    const stored = await s.app.connections.get(o.userId);
    expect(stored?.accessToken).toBe(again.access_token);
    expect(stored?.refreshToken).toBe(again.refresh_token);
    const revokedHooks = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM webhook_deliveries
      WHERE user_id = ${o.userId} AND event_type = 'calendar.revoked'`.execute(s.app.database.db);
    expect(revokedHooks.rows[0]?.n).toBe(0);
  });

  it('an invalid_grant with no reconnect still revokes (the guard changes nothing then)', async () => {
    const o = await newOwner(-60);
    s.google.revokeRefreshToken(o.grant.refresh_token);
    await expect(otherProvider().accessToken(o.userId)).rejects.toMatchObject({
      name: 'CalendarNotConnected',
      reason: 'revoked',
    });
    expect((await tokenInfo(o.userId)).status).toBe('revoked');
  });
});

describe('refresh token rotation', () => {
  it('stores the refresh token Google rotated (encrypted) and refreshes with it next time', async () => {
    s.google.rotateRefreshTokens = true;
    try {
      const o = await newOwner(-60);
      expect(isConfirmation(await book(o))).toBe(true);
      const rotated = s.google.rotatedRefreshToken(o.grant.refresh_token);
      expect(rotated).toMatch(/^1\/\/emu-/);
      const stored = await s.app.connections.get(o.userId);
      expect(stored?.refreshToken).toBe(rotated);
      const raw = await sql<
        Record<string, unknown>
      >`SELECT * FROM google_calendar_tokens WHERE user_id = ${o.userId}`.execute(s.app.database.db);
      expect(JSON.stringify(raw.rows[0])).not.toContain(rotated);

      // Google now rejects the access token: the forced refresh must use the rotated refresh token
      // (the old one answers invalid_grant since the rotation).
      s.google.reset();
      s.google.expireAccessToken(stored!.accessToken);
      expect(isConfirmation(await book(o, 2))).toBe(true);
      expect(tokenCalls().map((r) => [(r.body as Record<string, string>).refresh_token, r.status])).toEqual([
        [rotated, 200],
      ]);
      const next = s.google.rotatedRefreshToken(rotated!);
      expect((await s.app.connections.get(o.userId))?.refreshToken).toBe(next);
      expect((await tokenInfo(o.userId)).status).toBe('connected');
    } finally {
      s.google.rotateRefreshTokens = false;
    }
  });
});

describe('the cached read of a fresh token', () => {
  const withCache = (cached: (userId: string) => Promise<CalendarConnection | undefined>) =>
    otherProvider({ cached });

  it('serves a fresh token from the cache; a rejected or stale cached token goes to the database', async () => {
    const o = await newOwner();
    const stored = (await s.app.connections.get(o.userId))!;
    const inCache = { ...stored, accessToken: 'ya29.from-the-cache' };
    const provider = withCache(async () => inCache);
    // Fresh in the cache: used as is (no database read decides it).
    expect(await provider.accessToken(o.userId)).toBe('ya29.from-the-cache');
    // Google refused the cached one: the stored (different, fresh) token is used, no refresh.
    expect(await provider.accessToken(o.userId, 'ya29.from-the-cache')).toBe(o.grant.access_token);
    // Expired in the cache but fresh in the database (refreshed elsewhere): the stored one, no refresh.
    const stale = withCache(async () => ({ ...inCache, tokenExpiry: new Date(Date.now() - 60_000) }));
    expect(await stale.accessToken(o.userId)).toBe(o.grant.access_token);
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(0);
  });

  it('counts its lookups: an owner’s first booking reads the connection from the database, the next ones from memory', async () => {
    const lookups = async () => {
      const value = await metricsSnapshot(s);
      return {
        hit: value('connection_cache_lookups_total{result="hit"}'),
        miss: value('connection_cache_lookups_total{result="miss"}'),
      };
    };
    const o = await newOwner(3600);
    const before = await lookups();
    expect(isConfirmation(await book(o, 3))).toBe(true);
    const first = await lookups();
    // One read for its freeBusy; its insert's lookup found it in memory.
    expect(first.miss).toBe(before.miss + 1);
    expect(first.hit).toBeGreaterThanOrEqual(before.hit + 1);
    expect(isConfirmation(await book(o, 4))).toBe(true);
    const second = await lookups();
    expect(second.miss).toBe(first.miss);
    expect(second.hit).toBeGreaterThanOrEqual(first.hit + 2);
  });

  it('the service’s worker reads a refreshed token through the cache once the change is announced', async () => {
    const o = await newOwner(-60);
    s.openai.responder = () => ({ content: JSON.stringify([action(5)]) });
    for (const days of [0, 1]) {
      const c = await s.openConversation(o.agentId);
      s.openai.responder = () => ({ content: JSON.stringify([action(5 + days)]) });
      await s.send(c.conversation_id, c.customer_token, 'book me');
      const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
      expect(isConfirmation(list.filter((m) => m.role === 'assistant').at(-1)!.content)).toBe(true);
    }
    // The first booking refreshed; the second used the refreshed token (from memory or the row).
    expect(s.google.refreshCount(o.grant.refresh_token)).toBe(1);
    expect(s.google.events(o.email)).toHaveLength(2);
  });
});
