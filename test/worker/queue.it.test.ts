/**
 * The message queue (src/worker/queue.ts). Its wake-ups, with the backstop poll turned off: what is
 * answered here was started by a notification or by the queue itself, never found by polling.
 * Under key_strict_fifo a conversation's next message becomes fetchable only once the job before it
 * completed (after its reply committed), and nothing else announces it then. And the last attempt's
 * completion, which must commit with its reply.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { bossSchemaFor } from '../../src/store/database.js';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { type Stack, startStack } from '../helpers/stack.js';

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
  await s.send(c.conversation_id, c.customer_token, 'hello');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  expect(list.at(-1)?.content).toBe('re: hello');
});

it('a message sent the moment the reply before it is visible is answered without polling', async () => {
  // Between a reply's commit and its job's completion the conversation is still held; a client
  // answering the reply at once lands there. A booking's webhook delivery is enqueued in that gap
  // (WebhookDispatcher.relayOne); a trigger makes that take 0.5 s so the gap is wide enough to hit.
  // (On the embedded database the sleep holds the only connection, so the message can only be
  // stored after the gap: the test then passes without exercising it; the server project does.)
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
  const boss = sql.id(bossSchemaFor(s.app.database.schema), 'job');
  await sql`
    CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
    CREATE TRIGGER slow_claim BEFORE UPDATE ON webhook_deliveries
      FOR EACH ROW EXECUTE FUNCTION slow_claim();`.execute(db);
  try {
    const c = await s.openConversation(agent.agent_id);
    const booked = await s.send(c.conversation_id, c.customer_token, 'book');
    // Polled often: the gap lasts 0.5 s.
    await vi.waitFor(
      async () => {
        const list = await s.messages(c.conversation_id, c.customer_token);
        expect(list.some((m) => m.role === 'assistant')).toBe(true);
      },
      { timeout: 20_000, interval: 10 },
    );
    // On the server the booking's job still runs (relayOne in the trigger's sleep): the gap is real.
    const state = await sql<{ state: string }>`
      SELECT state FROM ${boss} WHERE data->>'messageId' = ${booked}`.execute(db);
    if (process.env.TEST_DB === 'server') expect(state.rows[0]?.state).toBe('active');
    await s.send(c.conversation_id, c.customer_token, 'thanks');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 2);
    const replies = list.filter((m) => m.role === 'assistant').map((m) => m.content);
    expect(replies[0]?.startsWith('✅ Meeting confirmed!')).toBe(true);
    expect(replies[1]).toBe('re: thanks');
  } finally {
    await sql`DROP TRIGGER slow_claim ON webhook_deliveries; DROP FUNCTION slow_claim();`.execute(db);
  }
});

describe('the last attempt', () => {
  // JOB_RETRY_LIMIT 0: every attempt is the last one (and the poll is on: nothing here is about it).
  let last: Stack;
  beforeAll(async () => {
    last = await startStack({ JOB_RETRY_LIMIT: '0' });
    last.openai.responder = echo;
  });
  afterAll(async () => {
    await last?.close();
  });

  it("the last attempt's job completes in its reply's transaction", async () => {
    // Triggers record the transaction of the reply's insert and of the job's completion.
    const db = last.app.database.db;
    const boss = sql.id(bossSchemaFor(last.app.database.schema), 'job');
    await sql`
      CREATE TABLE write_txids (what text, txid bigint);
      CREATE FUNCTION log_reply_txid() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO write_txids VALUES ('reply', txid_current()); RETURN NEW; END $$;
      CREATE TRIGGER log_reply_txid AFTER INSERT ON messages
        FOR EACH ROW WHEN (NEW.role = 'assistant') EXECUTE FUNCTION log_reply_txid();`.execute(db);
    await sql`
      CREATE FUNCTION log_complete_txid() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO ${sql.id(last.app.database.schema, 'write_txids')} VALUES ('completed', txid_current()); RETURN NEW; END $$;
      CREATE TRIGGER log_complete_txid AFTER UPDATE ON ${boss}
        FOR EACH ROW WHEN (NEW.state = 'completed' AND OLD.state <> 'completed')
        EXECUTE FUNCTION log_complete_txid();`.execute(db);
    try {
      const a = await last.createAgent({ user_id: 'owner-queue', name: 'Acme Assistant' });
      const c = await last.openConversation(a.agent_id);
      await last.send(c.conversation_id, c.customer_token, 'hi');
      await last.waitForReplies(c.conversation_id, c.customer_token, 1);
      const rows = await vi.waitFor(
        async () => {
          const r = (
            await sql<{ what: string; txid: string }>`SELECT what, txid FROM write_txids`.execute(db)
          ).rows;
          expect(r.length).toBeGreaterThanOrEqual(2);
          return r;
        },
        { timeout: 20_000, interval: 20 },
      );
      const reply = rows.filter((r) => r.what === 'reply');
      const completed = rows.filter((r) => r.what === 'completed');
      expect(reply).toHaveLength(1);
      expect(completed).toHaveLength(1);
      expect(completed[0]!.txid).toBe(reply[0]!.txid);
    } finally {
      await sql`
        DROP TRIGGER log_complete_txid ON ${boss};
        DROP FUNCTION log_complete_txid();
        DROP TRIGGER log_reply_txid ON messages;
        DROP FUNCTION log_reply_txid();
        DROP TABLE write_txids;`.execute(db);
    }
  });
});

describe('failed jobs', () => {
  // A job that ended failed (its last attempt's process died, say) holds its conversation's later
  // messages under key_strict_fifo; the queue's sweep runs it again. Swept every 200 ms here.
  let f: Stack;
  beforeAll(async () => {
    f = await startStack({}, { queue: { sweepIntervalMs: 200 } });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('a failed job no longer holds its conversation: it runs again, and the next message is answered', async () => {
    const db = f.app.database.db;
    const boss = sql.id(bossSchemaFor(f.app.database.schema), 'job');
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    f.openai.responder = async (req) => {
      const text = messageText([...req.messages].reverse().find((m) => m.role === 'user')?.content);
      if (text === 'first') await held;
      return { content: `re: ${text}` };
    };
    const a = await f.createAgent({ user_id: 'owner-queue-failed', name: 'Acme Assistant' });
    const c = await f.openConversation(a.agent_id);
    const first = await f.send(c.conversation_id, c.customer_token, 'first');
    await f.send(c.conversation_id, c.customer_token, 'second');
    // While 'first' runs, its job ends failed, as pg-boss's monitor leaves a last attempt whose
    // heartbeat lapsed; then the attempt answers anyway (its completion finds no active job).
    await vi.waitFor(() => expect(f.openai.requests.length).toBeGreaterThan(0), {
      timeout: 20_000,
      interval: 20,
    });
    const marked = await sql`
      UPDATE ${boss} SET state = 'failed', completed_on = now()
       WHERE data->>'messageId' = ${first} AND state = 'active'`.execute(db);
    expect(Number(marked.numAffectedRows)).toBe(1);
    release();
    const list = await f.waitForReplies(c.conversation_id, c.customer_token, 2);
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      're: first',
      're: second',
    ]);
    const jobs = await sql<{ state: string }>`
      SELECT state FROM ${boss} WHERE data->>'conversationId' = ${c.conversation_id}`.execute(db);
    expect(jobs.rows.map((j) => j.state)).toEqual(['completed', 'completed']);
  });

  it('a job that keeps failing is swept a bounded number of times, then left failed', async () => {
    const db = f.app.database.db;
    const boss = sql.id(bossSchemaFor(f.app.database.schema), 'job');
    f.openai.responder = () => ({ content: 'hello' });
    const a = await f.createAgent({ user_id: 'owner-queue-failed', name: 'Acme Assistant' });
    const c = await f.openConversation(a.agent_id);
    const id = await f.send(c.conversation_id, c.customer_token, 'hi');
    await f.waitForReplies(c.conversation_id, c.customer_token, 1);
    // As if swept three times already (each sweep adds one to the retry limit) and failed again.
    await sql`
      UPDATE ${boss} SET state = 'failed', retry_limit = retry_limit + 3
       WHERE data->>'messageId' = ${id}`.execute(db);
    expect(await f.app.queue.sweepFailed()).toBe(0);
    const job = await sql<{
      state: string;
    }>`SELECT state FROM ${boss} WHERE data->>'messageId' = ${id}`.execute(db);
    expect(job.rows[0]?.state).toBe('failed');
    // One sweep fewer, and it runs again.
    await sql`UPDATE ${boss} SET retry_limit = retry_limit - 1 WHERE data->>'messageId' = ${id}`.execute(db);
    await expect
      .poll(
        async () => {
          const r = await sql<{
            state: string;
          }>`SELECT state FROM ${boss} WHERE data->>'messageId' = ${id}`.execute(db);
          return r.rows[0]?.state;
        },
        { timeout: 20_000 },
      )
      .toBe('completed');
  });
});
