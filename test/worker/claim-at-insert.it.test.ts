/**
 * A message claimed by its own insert (JobQueue.accept): a process that takes the POST and has a free
 * worker slot claims the message in the insert's statement and runs it at once; with no free slot, or
 * its conversation busy, the message is stored unclaimed and the queue's claim takes it in turn (a
 * message an API-only process stored wakes the worker: test/worker/queue.it.test.ts). The backstop
 * poll is off: what is answered here was run by its insert, or woken by a notification.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { MessageStore } from '../../src/store/messages.js';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { queuePickups, type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
/** Model answers wait for this gate when it is set (a slot kept busy on purpose). */
let gate: Promise<void> | undefined;
const echo = async (req: ChatRequest) => {
  const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
  const text = messageText(lastUser?.content);
  if (text.startsWith('hold') && gate) await gate;
  else await new Promise((r) => setTimeout(r, 200));
  return { content: `re: ${text}` };
};

beforeAll(async () => {
  s = await startStack({ WORKER_CONCURRENCY: '2' }, { queue: { pollIntervalMs: 3_600_000 } });
});
beforeEach(() => {
  s.openai.reset();
  s.openai.responder = echo;
  gate = undefined;
});
afterAll(async () => {
  await s?.close();
});

const pickups = () => queuePickups(s);

const conversation = async () => {
  const a = await s.createAgent({ user_id: 'owner-claim-insert', name: 'Acme Assistant' });
  return s.openConversation(a.agent_id);
};

it('a message to an idle conversation is claimed by its own insert and run here, with its history', async () => {
  const c = await conversation();
  const before = await pickups();
  await s.send(c.conversation_id, c.customer_token, 'first');
  await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  await s.send(c.conversation_id, c.customer_token, 'second');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 2);
  expect(list.map((m) => m.content)).toEqual(['first', 're: first', 'second', 're: second']);
  // Both taken by their inserts; no claim statement took either.
  expect(await pickups()).toEqual({ insert: before.insert + 2, claim: before.claim });
  // The second request's history has the first exchange, ending with its own message.
  const second = s.openai.requests.at(-1)!;
  expect(second.messages.slice(1).map((m) => messageText(m.content))).toEqual([
    'first',
    're: first',
    'second',
  ]);
});

it('messages sent while one of their conversation is pending are stored unclaimed and answered in order', async () => {
  let open!: () => void;
  gate = new Promise<void>((r) => {
    open = r;
  });
  const c = await conversation();
  const before = await pickups();
  // The first is held at the model until the others are stored.
  await s.send(c.conversation_id, c.customer_token, 'hold m1');
  await expect.poll(() => s.openai.requests.length, { timeout: 10_000 }).toBe(1);
  for (let i = 2; i <= 3; i++) await s.send(c.conversation_id, c.customer_token, `m${i}`);
  open();
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 3);
  expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
    're: hold m1',
    're: m2',
    're: m3',
  ]);
  // m1 by its insert; m2 and m3 by the claims its job's reply (then m2's) made the queue fetch.
  expect(await pickups()).toEqual({ insert: before.insert + 1, claim: before.claim + 2 });
});

it('with every slot busy, a message is stored unclaimed and claimed once a slot frees', async () => {
  let open!: () => void;
  gate = new Promise<void>((r) => {
    open = r;
  });
  const busy = [await conversation(), await conversation()];
  const waiting = await conversation();
  const before = await pickups();
  for (const c of busy) await s.send(c.conversation_id, c.customer_token, 'hold');
  // Both slots run (their model calls wait at the gate): the third message finds no free slot.
  await expect.poll(() => s.openai.requests.length, { timeout: 10_000 }).toBe(2);
  await s.send(waiting.conversation_id, waiting.customer_token, 'later');
  expect(await pickups()).toEqual({ insert: before.insert + 2, claim: before.claim });
  open();
  const list = await s.waitForReplies(waiting.conversation_id, waiting.customer_token, 1);
  expect(list.at(-1)?.content).toBe('re: later');
  for (const c of busy) await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  expect(await pickups()).toEqual({ insert: before.insert + 2, claim: before.claim + 1 });
});

it('a POST arriving while a claim statement is in flight does not run more than WORKER_CONCURRENCY (server)', async () => {
  // Needs the POST's statement to run while the claim's is in flight: two connections.
  if (process.env.TEST_DB !== 'server') return;
  let open!: () => void;
  gate = new Promise<void>((r) => {
    open = r;
  });
  const db = s.app.database.db;
  // The queue's claim sets claimed_until on a row that had none: make that take 0.5 s per row, so the
  // claim statement below is in flight for a second.
  await sql`
    CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.claimed_until IS NULL AND NEW.claimed_until IS NOT NULL THEN PERFORM pg_sleep(0.5); END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER slow_claim BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION slow_claim();`.execute(
    db,
  );
  try {
    const stored = [await conversation(), await conversation()];
    const posted = await conversation();
    // Two messages stored as an API-only process stores them, committed together: their
    // announcement makes this process claim both (its two slots) in one statement.
    await db.transaction().execute(async (trx) => {
      const store = new MessageStore(trx);
      for (const c of stored) await store.insertCustomerMessage(c.conversation_id, 'hold stored', 'admin');
    });
    await expect
      .poll(
        async () =>
          (
            await sql<{ n: number }>`
              SELECT count(*)::int AS n FROM pg_stat_activity
               WHERE state = 'active' AND wait_event = 'PgSleep' AND query LIKE '%SKIP LOCKED%'`.execute(db)
          ).rows[0]!.n,
        { timeout: 10_000, interval: 10 },
      )
      .toBe(1);
    // Its slots are spoken for by that claim: this message is stored for the queue, not run at once.
    await s.send(posted.conversation_id, posted.customer_token, 'hold posted');
    await expect.poll(() => s.openai.requests.length, { timeout: 10_000 }).toBe(2);
    await new Promise((r) => setTimeout(r, 300));
    expect(s.openai.requests.length).toBe(2);
    open();
    for (const c of [...stored, posted]) await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  } finally {
    open();
    await sql`DROP TRIGGER slow_claim ON messages; DROP FUNCTION slow_claim();`.execute(db);
  }
});
