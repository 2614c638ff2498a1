/**
 * A stale attempt: a run of a message whose claim lapsed while it still ran (its process stalled), so
 * another claim took the message over. Only the current claim may store the model output and act on
 * it, and only it may store the reply: the stale run acts on nothing and writes nothing, not its
 * answer, not even a fallback on its last attempt, whether it finishes before the current claim or after.
 * JOB_RETRY_LIMIT=0: every run is a last attempt.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import type { Fault } from '../emulators/google.js';
import type { ScriptedReply } from '../emulators/openai.js';
import { bookingAction } from '../helpers/actions.js';
import { useStack } from '../helpers/stack.js';
import { stallFirstRun } from '../helpers/stall.js';
import { wallTime } from '../helpers/time.js';

// Claims of 3 s: the heartbeat beats every second (the tests below wait on Google across beats).
const s = useStack({ JOB_RETRY_LIMIT: '0' }, { queue: { claimSeconds: 3 } });

async function newChat() {
  const userId = `stale-${randomBytes(5).toString('hex')}`;
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme', timezone: 'Asia/Kolkata' });
  const c = await s.openConversation(agent.agent_id, { customer_name: 'Sid' });
  return { userId, email: `${userId}@owner.test`, ...c };
}

const inserts = () => s.google.requests.filter((r) => r.op === 'events.insert');
const replies = async (c: { conversation_id: string; customer_token: string }) =>
  (await s.messages(c.conversation_id, c.customer_token)).filter((m) => m.role === 'assistant');
const meetings = async (userId: string) =>
  (await s.app.http.inject({ url: `/api/users/${userId}/meetings`, headers: s.admin })).json().meetings;

/**
 * A message's first run stalls, its claim is taken over, and the second run books (its insert slow);
 * the first run then gets `staleAnswer`, 300 ms into the second. One reply only: the booking's.
 */
async function expectOnlyTheCurrentClaimsBooking(staleAnswer: { content: string }): Promise<void> {
  const c = await newChat();
  const before = { answered: await jobs('answered'), skipped: await jobs('skipped') };
  s.google.fail('events.insert', { kind: 'stall', ms: 1500 });
  const run = stallFirstRun(
    s,
    c.conversation_id,
    () => staleAnswer,
    () => {
      setTimeout(() => run.release(), 300);
      return { content: JSON.stringify([bookingAction(wallTime(2, 11, 0, 330).iso)]) };
    },
  );
  await s.send(c.conversation_id, c.customer_token, 'book me in');
  await s.waitForReplies(c.conversation_id, c.customer_token, 1, 20_000);
  await new Promise((r) => setTimeout(r, 500));
  const texts = (await replies(c)).map((m) => m.content);
  expect(texts).toHaveLength(1);
  expect(texts[0]).toMatch(/^✅ Meeting confirmed!/);
  expect(inserts()).toHaveLength(1);
  expect(s.google.events(c.email)).toHaveLength(1);
  expect(await meetings(c.userId)).toHaveLength(1);
  // One answer and one stale run stopped, whichever way the stale run was found out (its heartbeat,
  // its lease statement, or its reply's statement storing nothing).
  await vi.waitFor(async () => expect(await jobs('skipped')).toBe(before.skipped + 1), { timeout: 5_000 });
  expect(await jobs('answered')).toBe(before.answered + 1);
}

/** message_jobs_total{outcome} from /metrics. */
async function jobs(outcome: 'answered' | 'skipped'): Promise<number> {
  const res = await s.app.http.inject({ url: '/metrics', headers: s.admin });
  return Number(new RegExp(`message_jobs_total\\{outcome="${outcome}"\\} (\\d+)`).exec(res.body)?.[1] ?? 0);
}

describe('a stale attempt', () => {
  it('after the current claim answered in plain text: books nothing', async () => {
    const c = await newChat();
    const run = stallFirstRun(
      s,
      c.conversation_id,
      () => ({ content: JSON.stringify([bookingAction(wallTime(2, 11, 0, 330).iso)]) }),
      () => ({ content: 'Which day suits you?' }),
    );
    await s.send(c.conversation_id, c.customer_token, 'book me in');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(run.calls()).toBe(2);
    run.release();
    // The stale run now has a booking action; its lease statement finds it is not the message's
    // claim any more and it stops there (or its heartbeat found that out first and ended its model
    // call: stopped all the same, counted once).
    await vi.waitFor(
      async () => {
        const m = await s.app.http.inject({ url: '/metrics', headers: s.admin });
        expect(m.body).toMatch(/message_jobs_total\{outcome="skipped"\} 1/);
      },
      { timeout: 10_000 },
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(inserts()).toHaveLength(0);
    // At most the freeBusy read sent alongside that lease statement went out (a read, never acted on).
    expect(s.google.requests.filter((r) => r.op === 'freebusy.query').length).toBeLessThanOrEqual(1);
    expect((await replies(c)).map((m) => m.content)).toEqual(['Which day suits you?']);
  });

  it('on its last attempt, while the current claim is booking: no fallback, the booking is confirmed', async () => {
    // It reaches its lease statement while the current claim's insert is slow.
    await expectOnlyTheCurrentClaimsBooking({
      content: JSON.stringify([bookingAction(wallTime(3, 15, 0, 330).iso)]),
    });
  });

  it('answering in plain text while the current claim books: the stale answer is not stored, the booking is', async () => {
    // Its answer is ready first, while the current claim's insert is slow.
    await expectOnlyTheCurrentClaimsBooking({ content: 'Which day suits you?' });
  });

  type Chat = Awaited<ReturnType<typeof newChat>>;
  const bookIn = () => ({ content: JSON.stringify([bookingAction(wallTime(2, 11, 0, 330).iso)]) });

  /**
   * A message whose first run is held up at Google (`fault` on `op`), then taken over, while it
   * waits, by a run that gives up (its attempts made to look spent: JOB_RETRY_LIMIT 0, so attempts 1
   * to 4 were last attempts and the 5th claim gives up). The model answers `answer` (a booking by
   * default), in `chat` (a new one by default). Returns the message's replies once the stale run is
   * over.
   */
  async function takenOverWhileAtGoogle(
    op: 'freebusy.query' | 'events.insert' | 'events.delete',
    fault: Fault,
    chat?: Chat,
    answer: () => ScriptedReply = bookIn,
  ) {
    const c = chat ?? (await newChat());
    const db = s.app.database.db;
    const before = (await replies(c)).length;
    s.google.fail(op, fault);
    s.openai.responder = answer;
    const messageId = await s.send(c.conversation_id, c.customer_token, 'book me in');
    const held = () => s.google.requests.filter((r) => r.op === op);
    await vi.waitFor(
      async () => {
        expect(held()).toHaveLength(1);
        const row = await db
          .selectFrom('messages')
          .select('model_output')
          .where('message_id', '=', messageId)
          .executeTakeFirstOrThrow();
        expect(row.model_output).not.toBeNull();
      },
      { timeout: 10_000 },
    );
    await sql`UPDATE messages SET attempts = 4, claimed_until = now() - interval '1 second'
               WHERE message_id = ${messageId}`.execute(db);
    await sql`SELECT pg_notify(agent_meetings_channel('agent_meetings_customer_messages'), ${c.conversation_id})`.execute(
      db,
    );
    await s.waitForReplies(c.conversation_id, c.customer_token, before + 1, 30_000);
    // The stale run's request has answered; anything it would do next follows at once.
    await vi.waitFor(() => expect(held()[0]!.doneAt).toBeDefined(), { timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 1_000));
    return { c, messageId, texts: (await replies(c)).slice(before).map((m) => m.content) };
  }

  /** The message was answered by the run that gave up (the 5th claim), not by the stale run. */
  async function expectAnsweredByTheRunThatGaveUp(messageId: string): Promise<void> {
    const row = await s.app.database.db
      .selectFrom('messages')
      .select(['attempts', 'status'])
      .where('message_id', '=', messageId)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ attempts: 5, status: 'answered' });
  }

  it('whose claim was taken over while it waited on a read makes no change at Google afterwards', async () => {
    // Longer than two heartbeats (every second here): the stale run learns it lost its claim while it
    // waits.
    const { c, texts } = await takenOverWhileAtGoogle('freebusy.query', { kind: 'stall', ms: 2_500 });
    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(inserts()).toEqual([]);
    expect(s.google.events(c.email)).toEqual([]);
    expect(await meetings(c.userId)).toEqual([]);
  });

  // Its read's or insert's failure comes after a heartbeat found the claim gone: the stale run stops
  // there instead of sending it again (a read under the owner's lease, which the run that gives up
  // waits for; an insert).
  it.each([
    ['read', 'freebusy.query'],
    ['insert', 'events.insert'],
  ] as const)('whose %s failed after it was taken over sends no retry of it', async (_what, op) => {
    const { c, texts } = await takenOverWhileAtGoogle(op, { kind: 'status', status: 503, delayMs: 2_500 });
    expect(texts).toEqual([s.app.config.meetingErrorMessage]);
    expect(s.google.requests.filter((r) => r.op === op)).toHaveLength(1);
    expect(inserts()).toHaveLength(op === 'events.insert' ? 1 : 0);
    expect(s.google.events(c.email)).toEqual([]);
    expect(await meetings(c.userId)).toEqual([]);
  });

  it('whose insert was answered after it was taken over: the run that gave up waited for it and records it', async () => {
    // The run that gives up takes the owner's lease first, which the stale run holds around its
    // insert: it looks only once that insert is over, so it finds the event and confirms it.
    const { c, texts, messageId } = await takenOverWhileAtGoogle('events.insert', {
      kind: 'stall',
      ms: 3_000,
    });
    await expectAnsweredByTheRunThatGaveUp(messageId);
    const events = s.google.events(c.email);
    expect(events).toHaveLength(1);
    expect(texts).toHaveLength(1);
    expect(texts[0]).toMatch(/^✅ Meeting confirmed!/);
    expect(texts[0]).toContain(events[0]!.hangoutLink!);
    expect(inserts()).toHaveLength(1);
    expect((await meetings(c.userId)).map((m: { google_event_id: string }) => m.google_event_id)).toEqual([
      events[0]!.id,
    ]);
  });

  it('whose cancel was answered after it was taken over: the run that gave up waited for it and records it', async () => {
    // A cancel holds the owner's lease on its meeting's time around its delete, as a booking around
    // its insert: the run that gives up looks only once that delete is over, so it finds the event
    // gone and records the cancel (without that hold it would look first, answer with the error and
    // leave the meeting booked while the stale delete removes its event).
    const c = await newChat();
    s.openai.responder = bookIn;
    await s.send(c.conversation_id, c.customer_token, 'book me in');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const [booked] = s.google.events(c.email);
    expect(booked).toBeDefined();
    s.google.reset();
    const { texts, messageId } = await takenOverWhileAtGoogle(
      'events.delete',
      { kind: 'stall', ms: 3_000 },
      c,
      () => ({ toolCalls: [{ name: 'cancel_meeting', arguments: { meeting_id: null } }] }),
    );
    await expectAnsweredByTheRunThatGaveUp(messageId);
    expect(texts).toHaveLength(1);
    expect(texts[0]).toMatch(/cancel/i);
    expect(texts[0]).not.toContain(s.app.config.meetingErrorMessage);
    expect(s.google.events(c.email).map((e) => e.id)).toEqual([booked!.id]);
    expect(s.google.events(c.email)[0]!.status).toBe('cancelled');
    expect(s.google.requests.filter((r) => r.op === 'events.delete')).toHaveLength(1);
    expect((await meetings(c.userId)).map((m: { status: string }) => m.status)).toEqual(['cancelled']);
  });
});
