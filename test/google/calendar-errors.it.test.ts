/**
 * How booking treats Google Calendar's errors (issue 4, item 8), through the whole service:
 * 429, 403 rateLimitExceeded / userRateLimitExceeded, 5xx and network errors are retried with bounded
 * backoff and book exactly once; 400, 403 quotaExceeded / forbidden and 404 are not retried, are
 * logged with their cause, and the customer gets MEETING_ERROR_MESSAGE.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import type { Fault } from '../emulators/google.js';
import { retryScheduled, useStack } from '../helpers/stack.js';

// One job retry (so that exhausting every attempt stays quick) and a short Google timeout.
const s = useStack({ JOB_RETRY_LIMIT: '1', GOOGLE_TIMEOUT_MS: '2000' });

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;
const ownerEmail = (userId: string) => `${userId}@owner.test`;

function action(): Record<string, unknown> {
  const at = new Date(Date.now() + 2 * 86_400_000);
  at.setUTCMinutes(30, 0, 0);
  return {
    action: 'Time_to_121meet',
    name: 'Siddhant',
    email: 'siddhant@gmail.com',
    title: 'Demo',
    participants: ['colleague@example.com'],
    meeting_time: at.toISOString().replace('.000Z', '+00:00'),
    friendly_time: 'the day after tomorrow',
  };
}

interface Booking {
  userId: string;
  email: string;
  reply: string;
  replies: string[];
  messageId: string;
}

async function book(prepare: () => void): Promise<Booking> {
  const userId = uid('ge');
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  const c = await s.openConversation(agent.agent_id);
  s.openai.responder = () => ({ content: JSON.stringify([action()]) });
  prepare();
  const messageId = await s.send(c.conversation_id, c.customer_token, 'book me');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
  const replies = list.filter((m) => m.role === 'assistant').map((m) => m.content);
  return { userId, email: ownerEmail(userId), reply: replies.at(-1)!, replies, messageId };
}

const inserts = () => s.google.requests.filter((r) => r.op === 'events.insert');

/** How the message's job ended (its row). */
function messageRow(messageId: string) {
  return s.app.database.db
    .selectFrom('messages')
    .select(['status', 'attempts', 'last_error'])
    .where('message_id', '=', messageId)
    .executeTakeFirstOrThrow();
}

async function meetingCount(userId: string): Promise<number> {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: s.admin });
  return res.json().meetings.length;
}

const retryable: Array<[string, Fault]> = [
  ['429', { kind: 'status', status: 429 }],
  ['403 rateLimitExceeded', { kind: 'status', status: 403, reason: 'rateLimitExceeded' }],
  ['403 userRateLimitExceeded', { kind: 'status', status: 403, reason: 'userRateLimitExceeded' }],
  ['500', { kind: 'status', status: 500 }],
  ['503', { kind: 'status', status: 503 }],
];

const fatal: Array<[string, Fault, number, string]> = [
  ['400', { kind: 'status', status: 400 }, 400, 'badRequest'],
  ['403 quotaExceeded', { kind: 'status', status: 403, reason: 'quotaExceeded' }, 403, 'quotaExceeded'],
  ['403 forbidden', { kind: 'status', status: 403, reason: 'forbidden' }, 403, 'forbidden'],
  ['404', { kind: 'status', status: 404 }, 404, 'notFound'],
];

describe('retryable Google errors', () => {
  it.each(retryable)('%s then success books exactly one event', async (_label, fault) => {
    const b = await book(() => s.google.fail('events.insert', fault, 1));
    expect(
      b.reply.startsWith(
        '✅ Meeting confirmed!\n\n📅 Meeting scheduled for the day after tomorrow\n🔗 Join here: https://meet.google.com/',
      ),
    ).toBe(true);
    const statuses = inserts().map((r) => r.status);
    expect(statuses).toEqual([fault.kind === 'status' ? fault.status : 0, 200]);
    expect(s.google.events(b.email)).toHaveLength(1);
    expect(await meetingCount(b.userId)).toBe(1);
  });

  it('three failures in a row still book within one run (bounded backoff: 4 attempts)', async () => {
    const b = await book(() => s.google.fail('events.insert', { kind: 'status', status: 503 }, 3));
    expect(b.reply.startsWith('✅ Meeting confirmed!')).toBe(true);
    expect(inserts().map((r) => r.status)).toEqual([503, 503, 503, 200]);
    expect(s.google.events(b.email)).toHaveLength(1);
  });

  it('a short Retry-After (2 s) is waited out in the call, then the booking goes through', async () => {
    const b = await book(() =>
      s.google.fail('events.insert', { kind: 'status', status: 503, retryAfter: '2' }, 1),
    );
    expect(b.reply.startsWith('✅ Meeting confirmed!')).toBe(true);
    const [refused, accepted] = inserts();
    expect([refused?.status, accepted?.status]).toEqual([503, 200]);
    // The in-call backoff alone would be at most half a second.
    expect(accepted!.at - refused!.doneAt!).toBeGreaterThanOrEqual(1900);
    expect(s.google.events(b.email)).toHaveLength(1);
  });

  it('a long Retry-After (an HTTP-date 2 minutes ahead) ends the call: the job retries no sooner', async () => {
    const userId = uid('ge');
    await s.connectOwner(userId);
    const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
    const c = await s.openConversation(agent.agent_id);
    s.openai.responder = () => ({ content: JSON.stringify([action()]) });
    const until = new Date(Date.now() + 120_000).toUTCString();
    s.google.fail('events.insert', { kind: 'status', status: 429, retryAfter: until }, 1);
    const messageId = await s.send(c.conversation_id, c.customer_token, 'book me');
    const row = await retryScheduled(s, messageId);
    expect(row.attempts).toBe(1);
    // The job's own first backoff is a second or two; Google asked for 119–120 s.
    expect(row.wait).toBeGreaterThan(100);
    expect(row.wait).toBeLessThanOrEqual(121);
    // One try only: retrying inside the call would be refused again.
    expect(inserts().map((r) => r.status)).toEqual([429]);
    expect(s.google.events(ownerEmail(userId))).toHaveLength(0);
    // Its retry would book two minutes on, in the middle of later tests' counts: put off for the file.
    await sql`UPDATE messages SET run_after = now() + interval '1 day' WHERE message_id = ${messageId}`.execute(
      s.app.database.db,
    );
  });

  it('a timed-out insert whose work was done is retried and still gives one event', async () => {
    const b = await book(() => s.google.fail('events.insert', { kind: 'stall', ms: 4000 }, 1));
    expect(b.reply.startsWith('✅ Meeting confirmed!')).toBe(true);
    expect(s.google.events(b.email)).toHaveLength(1);
    expect(await meetingCount(b.userId)).toBe(1);
  });

  it('a Google outage outlasting every attempt ends with MEETING_ERROR_MESSAGE after a bounded number of tries', async () => {
    const b = await book(() => s.google.fail('events.insert', { kind: 'status', status: 503 }, 1000));
    expect(b.replies).toEqual([s.app.config.meetingErrorMessage]);
    // 4 attempts per run, 2 runs (JOB_RETRY_LIMIT=1).
    expect(inserts()).toHaveLength(8);
    expect(s.google.events(b.email)).toHaveLength(0);
    expect(await meetingCount(b.userId)).toBe(0);
    const row = await messageRow(b.messageId);
    expect(row.status).toBe('failed');
    expect(row.last_error).toMatch(/503/);
  });
});

describe('non-retryable Google errors', () => {
  it.each(fatal)(
    '%s: MEETING_ERROR_MESSAGE, one insert attempt, no event, cause logged',
    async (_label, fault, status, reason) => {
      const logStart = s.logs.lines.length;
      const b = await book(() => s.google.fail('events.insert', fault, 1));
      expect(b.replies).toEqual([s.app.config.meetingErrorMessage]);
      expect(inserts().map((r) => r.status)).toEqual([status]);
      expect(s.google.events(b.email)).toHaveLength(0);
      expect(await meetingCount(b.userId)).toBe(0);
      const logged = s.logs.lines
        .slice(logStart)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'Google refused the request');
      expect(logged).toContainEqual(expect.objectContaining({ op: 'events.insert', status, reason }));
      // The job finished in its first run (one claim): no failed attempt, so no second run.
      expect(await messageRow(b.messageId)).toMatchObject({ status: 'answered', attempts: 1 });
    },
  );
});

describe('freeBusy’s per-calendar errors (a 200 whose calendar could not be read)', () => {
  const freeBusyFaults = () =>
    s.google.requests.filter((r) => r.op === 'freebusy.query' && r.fault === 'calendar-error');

  it.each(['internalError', 'backendError', 'missing'])(
    '%s is passing: retried, and the booking is made once',
    async (reason) => {
      const b = await book(() => s.google.fail('freebusy.query', { kind: 'calendar-error', reason }, 1));
      expect(b.replies).toHaveLength(1);
      expect(b.reply.startsWith('✅ Meeting confirmed!')).toBe(true);
      expect(freeBusyFaults()).toHaveLength(1);
      // It acted on a read that answered (the faulted one was never taken as free).
      const read = s.google.requests.filter((r) => r.op === 'freebusy.query' && r.fault === undefined);
      expect(read.length).toBeGreaterThanOrEqual(1);
      expect(s.google.events(b.email)).toHaveLength(1);
      expect(await meetingCount(b.userId)).toBe(1);
    },
  );

  it.each(['notFound', 'groupTooBig'])(
    '%s is final: MEETING_ERROR_MESSAGE in the first run, nothing inserted (never read as free)',
    async (reason) => {
      const b = await book(() => s.google.fail('freebusy.query', { kind: 'calendar-error', reason }, 1000));
      expect(b.replies).toEqual([s.app.config.meetingErrorMessage]);
      expect(inserts()).toHaveLength(0);
      expect(await meetingCount(b.userId)).toBe(0);
      expect(await messageRow(b.messageId)).toMatchObject({ status: 'answered', attempts: 1 });
    },
  );
});
