/**
 * The message queue (src/worker/queue.ts). Its wake-ups, with the backstop poll turned off: what is
 * answered here was started by a notification or by the queue itself, never found by polling. A
 * conversation's next message becomes claimable only once the reply before it committed, and
 * nothing else announces it then. The reply's statement closes the message (the job's completion);
 * a failed attempt's backoff keeps the conversation's order; a message whose last attempt keeps not
 * finishing is answered with the fallback.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MessageStore } from '../../src/store/messages.js';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { testDatabaseKind } from '../helpers/database.js';
import { queuePickups, type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
const echo = async (req: ChatRequest) => {
  // Slow enough that the later messages are stored (and their NOTIFY spent) while the first runs.
  await new Promise((r) => setTimeout(r, 100));
  const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
  return { content: `re: ${messageText(lastUser?.content)}` };
};
beforeAll(async () => {
  s = await startStack({}, { queue: { pollIntervalMs: 3_600_000 } });
});
beforeEach(() => {
  s.openai.reset();
  s.openai.responder = echo;
});
afterAll(async () => {
  await s?.close();
});

it("answers a conversation's waiting messages one after another without polling", async () => {
  const a = await s.createAgent({ user_id: 'owner-queue', name: 'Acme Assistant' });
  const c = await s.openConversation(a.agent_id);
  for (let i = 1; i <= 3; i++) await s.send(c.conversation_id, c.customer_token, `m${i}`);
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 3);
  expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
    're: m1',
    're: m2',
    're: m3',
  ]);
});

it('a new message wakes an idle worker (its insert notifies)', async () => {
  const a = await s.createAgent({ user_id: 'owner-queue', name: 'Acme Assistant' });
  const c = await s.openConversation(a.agent_id);
  // Stored as an API-only process stores it (a POST to this process, which works messages, would be
  // claimed by its own insert instead: test/worker/claim-at-insert.it.test.ts).
  const claimedBefore = (await queuePickups(s)).claim;
  await new MessageStore(s.app.database.db).insertCustomerMessage(c.conversation_id, 'hello', 'admin');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  expect(list.at(-1)?.content).toBe('re: hello');
  // Taken by the claim statement its announcement woke.
  expect((await queuePickups(s)).claim).toBe(claimedBefore + 1);
});

it('a message sent the moment the reply before it is visible is answered without polling', async () => {
  // A client answering the reply at once sends while the booking's handler still runs: after the
  // reply's commit it gives the owner's lease back and enqueues the webhook delivery
  // (WebhookDispatcher.relayOne); a trigger makes that take 0.5 s. The reply's statement closed the
  // message, so the next one is claimable at once and its announcement must get it answered.
  // (On the embedded database the sleep holds the only connection, so the message can only be
  // stored after it: the test then passes without exercising the overlap; the server project does.)
  const userId = 'owner-queue-gap';
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  const hook = await s.app.http.inject({
    method: 'PUT',
    url: `/api/users/${userId}/webhook`,
    headers: s.admin,
    payload: { url: 'http://127.0.0.1:9/hook' },
  });
  expect(hook.statusCode).toBe(200);
  const when = new Date(Date.now() + 3 * 86_400_000);
  when.setUTCHours(10, 0, 0, 0);
  s.openai.responder = (req) => {
    const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
    if (messageText(lastUser?.content) !== 'book')
      return { content: `re: ${messageText(lastUser?.content)}` };
    const action = {
      action: 'Time_to_121meet',
      name: 'Sid',
      email: 'sid@example.com',
      title: 'Demo',
      participants: [],
      meeting_time: when.toISOString().replace('.000Z', 'Z'),
      friendly_time: null,
    };
    return { content: JSON.stringify([action]) };
  };
  const db = s.app.database.db;
  await sql`
    CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
    CREATE TRIGGER slow_claim BEFORE UPDATE ON webhook_deliveries
      FOR EACH ROW EXECUTE FUNCTION slow_claim();`.execute(db);
  try {
    const c = await s.openConversation(agent.agent_id);
    await s.send(c.conversation_id, c.customer_token, 'book');
    // Polled often: the gap lasts 0.5 s.
    await vi.waitFor(
      async () => {
        const list = await s.messages(c.conversation_id, c.customer_token);
        expect(list.some((m) => m.role === 'assistant')).toBe(true);
      },
      { timeout: 20_000, interval: 10 },
    );
    // On the server the booking's handler still runs: its relayOne sleeps in the trigger.
    const relayed = await sql<{ enqueued: boolean }>`
      SELECT enqueued FROM webhook_deliveries WHERE user_id = ${userId}`.execute(db);
    if (process.env.TEST_DB === 'server') expect(relayed.rows.map((r) => r.enqueued)).toEqual([false]);
    await s.send(c.conversation_id, c.customer_token, 'thanks');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 2);
    const replies = list.filter((m) => m.role === 'assistant').map((m) => m.content);
    expect(replies[0]?.startsWith('✅ Meeting confirmed!')).toBe(true);
    expect(replies[1]).toBe('re: thanks');
  } finally {
    await sql`DROP TRIGGER slow_claim ON webhook_deliveries; DROP FUNCTION slow_claim();`.execute(db);
  }
});

it("a message is closed by its reply's statement (the job's completion commits with the reply)", async () => {
  // Triggers record the transaction of the reply's insert and of the message's close.
  const db = s.app.database.db;
  await sql`
    CREATE TABLE write_txids (what text, txid bigint);
    CREATE FUNCTION log_reply_txid() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO write_txids VALUES (CASE WHEN TG_OP = 'INSERT' THEN 'reply' ELSE 'closed' END, txid_current());
      RETURN NEW;
    END $$;
    CREATE TRIGGER log_reply_txid AFTER INSERT ON messages
      FOR EACH ROW WHEN (NEW.role = 'assistant') EXECUTE FUNCTION log_reply_txid();
    CREATE TRIGGER log_close_txid AFTER UPDATE ON messages
      FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending') EXECUTE FUNCTION log_reply_txid();`.execute(
    db,
  );
  try {
    const a = await s.createAgent({ user_id: 'owner-queue', name: 'Acme Assistant' });
    const c = await s.openConversation(a.agent_id);
    await s.send(c.conversation_id, c.customer_token, 'hi');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const rows = (await sql<{ what: string; txid: string }>`SELECT what, txid FROM write_txids`.execute(db))
      .rows;
    expect(rows.map((r) => r.what).sort()).toEqual(['closed', 'reply']);
    expect(rows[0]!.txid).toBe(rows[1]!.txid);
  } finally {
    await sql`
      DROP TRIGGER log_close_txid ON messages;
      DROP TRIGGER log_reply_txid ON messages;
      DROP FUNCTION log_reply_txid();
      DROP TABLE write_txids;`.execute(db);
  }
});

describe('retries and attempts that do not finish', () => {
  // The poll on: a retry after its backoff is found by it.
  let r: Stack;
  beforeAll(async () => {
    r = await startStack({ JOB_RETRY_LIMIT: '1' });
  });
  afterAll(async () => {
    await r?.close();
  });

  it("a failed attempt's backoff holds its conversation: the next message is answered after it", async () => {
    r.openai.responder = echo;
    // The SDK retries twice by itself: 3 faults fail the first attempt of 'first'.
    r.openai.fail({ kind: 'status', status: 503 }, 3);
    const a = await r.createAgent({ user_id: 'owner-queue-retry', name: 'Acme Assistant' });
    const c = await r.openConversation(a.agent_id);
    const first = await r.send(c.conversation_id, c.customer_token, 'first');
    await r.send(c.conversation_id, c.customer_token, 'second');
    const list = await r.waitForReplies(c.conversation_id, c.customer_token, 2, 30_000);
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      're: first',
      're: second',
    ]);
    const row = await r.app.database.db
      .selectFrom('messages')
      .select(['attempts', 'last_error', 'status'])
      .where('message_id', '=', first)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('answered');
    expect(row.attempts).toBe(2);
    expect(row.last_error).toMatch(/503/);
  });

  /**
   * A first run of 'stuck' stalls; meanwhile its message is made to look as if it had already been
   * claimed `earlier` times in all (JOB_RETRY_LIMIT 1: the second run on are last attempts), its
   * claim lapses and an announcement wakes the dispatcher, which claims it again.
   */
  async function stallThenReclaim(earlier: number) {
    const db = r.app.database.db;
    let release!: () => void;
    const held = new Promise<void>((res) => {
      release = res;
    });
    let calls = 0;
    const a = await r.createAgent({ user_id: 'owner-queue-stuck', name: 'Acme Assistant' });
    const c = await r.openConversation(a.agent_id);
    r.openai.responder = async (req) => {
      const text = messageText([...req.messages].reverse().find((m) => m.role === 'user')?.content);
      if (text === 'stuck' && ++calls === 1) {
        await sql`UPDATE messages SET attempts = ${earlier}, claimed_until = now() - interval '1 second'
                   WHERE conversation_id = ${c.conversation_id} AND content = 'stuck'`.execute(db);
        await sql`SELECT pg_notify(agent_meetings_channel('agent_meetings_customer_messages'), ${c.conversation_id})`.execute(
          db,
        );
        await held;
      }
      return { content: `re: ${text}` };
    };
    const stuck = await r.send(c.conversation_id, c.customer_token, 'stuck');
    await r.send(c.conversation_id, c.customer_token, 'next');
    const list = await r.waitForReplies(c.conversation_id, c.customer_token, 2, 30_000);
    release();
    const row = await db
      .selectFrom('messages')
      .select(['attempts', 'last_error', 'status', 'model_output'])
      .where('message_id', '=', stuck)
      .executeTakeFirstOrThrow();
    return { replies: list.filter((m) => m.role === 'assistant').map((m) => m.content), row, calls };
  }

  it('a message whose last attempt keeps not finishing is answered with the fallback, and its conversation moves on', async () => {
    // Five runs so far: the last attempt ran four times (attempts 2 to 5) without finishing.
    const { replies, row } = await stallThenReclaim(5);
    expect(replies).toEqual([r.app.config.llmErrorMessage, 're: next']);
    // The run that gave up answered without asking the model (the stalled run saved no output).
    expect(row).toMatchObject({ status: 'failed', attempts: 6, model_output: null });
    expect(row.last_error).toMatch(/gave up after 5 attempts/);
  });

  it('one run fewer: the last attempt runs once more, normally', async () => {
    const { replies, row, calls } = await stallThenReclaim(4);
    expect(replies).toEqual(['re: stuck', 're: next']);
    expect(calls).toBe(2);
    expect(row).toMatchObject({ status: 'answered', attempts: 5 });
  });
});

describe('stopping', () => {
  // JOB_RETRY_LIMIT 0: every run is a last attempt, which a failure would answer with the fallback.
  let st: Stack;
  beforeAll(async () => {
    st = await startStack({ JOB_RETRY_LIMIT: '0' });
  });
  afterAll(async () => {
    await st?.close();
  });

  it('a stop gives a running last attempt back unanswered (no fallback), to run again elsewhere', async () => {
    let release!: () => void;
    const held = new Promise<void>((res) => {
      release = res;
    });
    st.openai.responder = async () => {
      await held;
      return { content: 'late' };
    };
    const a = await st.createAgent({ user_id: 'owner-queue-stop', name: 'Acme Assistant' });
    const c = await st.openConversation(a.agent_id);
    const id = await st.send(c.conversation_id, c.customer_token, 'hello');
    await vi.waitFor(() => expect(st.openai.requests.length).toBe(1), { timeout: 20_000, interval: 20 });
    await st.app.queue.stop(100);
    release();
    await new Promise((r) => setTimeout(r, 300));
    const row = await st.app.database.db
      .selectFrom('messages')
      .select(['status', 'attempts', 'claimed_until', 'run_after', 'last_error'])
      .where('message_id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'pending', attempts: 1, claimed_until: null, run_after: null });
    expect(row.last_error).toBe('process stopped');
    const list = await st.messages(c.conversation_id, c.customer_token);
    expect(list.filter((m) => m.role === 'assistant')).toEqual([]);
  });
});

// On the server only: embedded PostgreSQL (PGlite) reads its clock from this process's Date, so there
// the step also makes the claim look lapsed to the database, and the poll claims the message again.
it.skipIf(testDatabaseKind() === 'embedded')(
  'a run is timed on the monotonic clock: a wall clock stepped 20 minutes ahead does not abort it',
  async () => {
    // The run limit (15 minutes) aborts a run at a heartbeat; the heartbeat here comes every 0.5 s.
    const t = await startStack({}, { queue: { claimSeconds: 1.5 } });
    try {
      const a = await t.createAgent({ user_id: 'owner-queue', name: 'Acme Assistant' });
      const c = await t.openConversation(a.agent_id);
      let answered!: () => void;
      const stepped = new Promise<void>((r) => {
        answered = r;
      });
      t.openai.responder = async () => {
        // As NTP stepping the clock: Date jumps, timers and performance.now() do not. Three heartbeats
        // pass while it is ahead.
        vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 20 * 60_000 });
        await new Promise((r) => setTimeout(r, 1_500));
        vi.useRealTimers();
        answered();
        return { content: 'still here' };
      };
      await t.send(c.conversation_id, c.customer_token, 'hello');
      await stepped;
      const list = await t.waitForReplies(c.conversation_id, c.customer_token, 1, 20_000);
      expect(list.at(-1)?.content).toBe('still here');
      expect(t.openai.requests).toHaveLength(1);
    } finally {
      vi.useRealTimers();
      await t.close();
    }
  },
);
