/**
 * The message queue's SQL (src/store/message-queue.ts), with no worker running: what a claim takes
 * (conversation heads, oldest first, one claimed message per conversation), what gives a message
 * back (lapse, release with backoff) and the claim fence (a stale claim changes nothing).
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentStore } from '../../src/store/agents.js';
import { ConversationStore, hashToken } from '../../src/store/conversations.js';
import type { Database } from '../../src/store/database.js';
import { isClaimConflict, MessageQueueStore } from '../../src/store/message-queue.js';
import { MessageStore } from '../../src/store/messages.js';
import { openTestDatabase, waitForOrderWaiter } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let messages: MessageStore;
let queue: MessageQueueStore;
let conversations: ConversationStore;
let agentId: string;
const server = process.env.TEST_DB === 'server';

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  messages = new MessageStore(database.db);
  queue = new MessageQueueStore(database.db);
  conversations = new ConversationStore(database.db);
  agentId = (await new AgentStore(database.db).create({ userId: 'owner-queue', name: 'A' })).agentId;
});
afterAll(async () => {
  await close?.();
});

async function conversationWith(...texts: string[]) {
  const { conversation } = await conversations.create({ agentId });
  const ids: string[] = [];
  for (const t of texts)
    ids.push((await messages.insertCustomerMessage(conversation.conversationId, t, 'admin'))!.messageId);
  return { conversationId: conversation.conversationId, ids };
}

const answer = (conversationId: string, replyTo: string) =>
  messages.storeReply(database.db, {
    conversationId,
    replyTo,
    content: `re ${replyTo}`,
    outcome: 'answered',
  });

/** Claims everything claimable now (the test's conversations only exist in this database). */
const claimAll = () => queue.claim(100, 15, 10);

const row = (id: string) =>
  database.db
    .selectFrom('messages')
    .select(['status', 'attempts', 'claimed_until', 'run_after', 'last_error'])
    .where('message_id', '=', id)
    .executeTakeFirstOrThrow();

describe('message queue', () => {
  it("claims each conversation's oldest message only, oldest first, with what answering it needs", async () => {
    const a = await conversationWith('a1', 'a2', 'a3');
    const b = await conversationWith('b1');
    const claimed = await claimAll();
    expect(claimed.map((c) => c.claim.messageId)).toEqual(expect.arrayContaining([a.ids[0], b.ids[0]]));
    expect(claimed).toHaveLength(2);
    const first = claimed.find((c) => c.claim.messageId === a.ids[0])!;
    expect(first.claim.attempts).toBe(1);
    expect(first.work!.message).toMatchObject({ content: 'a1', status: 'pending', attempts: 1 });
    expect(first.work!.agent.agentId).toBe(agentId);
    expect(first.work!.history.map((m) => m.content)).toEqual(['a1']);
    // A claimed conversation gives nothing more until its message is answered.
    expect(await claimAll()).toEqual([]);
    const next = await answer(a.conversationId, a.ids[0]!);
    expect(next.nextWaiting).toBe(true);
    const again = await claimAll();
    expect(again.map((c) => c.claim.messageId)).toEqual([a.ids[1]]);
    // History runs up to the message in storage order: a2 was stored before a1's reply.
    expect(again[0]!.work!.history.map((m) => m.content)).toEqual(['a1', 'a2']);
    await answer(a.conversationId, a.ids[1]!);
    await answer(b.conversationId, b.ids[0]!);
    expect((await claimAll()).map((c) => c.claim.messageId)).toEqual([a.ids[2]]);
    await answer(a.conversationId, a.ids[2]!);
  });

  it('respects the limit, oldest conversation head first', async () => {
    const a = await conversationWith('x');
    const b = await conversationWith('y');
    const one = await queue.claim(1, 15, 10);
    expect(one.map((c) => c.claim.messageId)).toEqual([a.ids[0]]);
    const two = await queue.claim(1, 15, 10);
    expect(two.map((c) => c.claim.messageId)).toEqual([b.ids[0]]);
    await answer(a.conversationId, a.ids[0]!);
    await answer(b.conversationId, b.ids[0]!);
  });

  it('a lapsed claim is claimed again (a new attempt); the old claim can neither extend nor release it', async () => {
    const a = await conversationWith('lapse', 'after');
    const [first] = await claimAll();
    expect(first!.claim.messageId).toBe(a.ids[0]);
    // Extending a live claim pushes it forward.
    expect(await queue.extend([first!.claim], 15)).toEqual([first!.claim]);
    await sql`UPDATE messages SET claimed_until = now() - interval '1 second'
               WHERE message_id = ${a.ids[0]}`.execute(database.db);
    const [second] = await claimAll();
    expect(second!.claim).toEqual({ messageId: a.ids[0], attempts: 2 });
    expect(await queue.extend([first!.claim], 15)).toEqual([]);
    expect(await queue.release(first!.claim, 0, 'stale')).toBe(false);
    expect((await row(a.ids[0]!)).last_error).toBeNull();
    // The conversation is still held by the second claim.
    expect(await claimAll()).toEqual([]);
    // A released claim is not brought back by a heartbeat of that claim arriving late.
    expect(await queue.release(second!.claim, 0, 'given back')).toBe(true);
    expect(await queue.extend([second!.claim], 15)).toEqual([]);
    expect((await row(a.ids[0]!)).claimed_until).toBeNull();
    const [third] = await claimAll();
    expect(third!.claim).toEqual({ messageId: a.ids[0], attempts: 3 });
    await answer(a.conversationId, a.ids[0]!);
    // A closed message's claim is gone with it: extend and release do nothing.
    expect(await queue.extend([third!.claim], 15)).toEqual([]);
    expect(await queue.release(third!.claim, 0)).toBe(false);
    expect((await claimAll()).map((c) => c.claim.messageId)).toEqual([a.ids[1]]);
    await answer(a.conversationId, a.ids[1]!);
  });

  it('a claim answers with the model output its lock found, not the one of its statement’s snapshot', async () => {
    // A run whose claim lapsed may store its output (and act on it) after a new claim's statement took
    // its snapshot and before that claim locked the row: no test can time that window, so a trigger
    // stores the output inside the claim's own update instead. The claimed work must carry it (the
    // row as the claim locked it), or the new run would ask the model again and answer from another.
    const a = await conversationWith('stored while claiming');
    const output = { text: 'the lapsed run’s output', toolCalls: [] };
    await sql`
      CREATE FUNCTION store_output_meanwhile() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.model_output := ${sql.lit(JSON.stringify(output))}::jsonb; RETURN NEW; END $$;
      CREATE TRIGGER store_output_meanwhile BEFORE UPDATE OF attempts ON messages FOR EACH ROW
        WHEN (NEW.message_id = ${sql.lit(a.ids[0]!)}) EXECUTE FUNCTION store_output_meanwhile();`.execute(
      database.db,
    );
    try {
      const [claimed] = await claimAll();
      expect(claimed!.claim).toEqual({ messageId: a.ids[0], attempts: 1 });
      expect(claimed!.work!.message.modelOutput).toEqual(output);
    } finally {
      await sql`DROP TRIGGER store_output_meanwhile ON messages; DROP FUNCTION store_output_meanwhile();`.execute(
        database.db,
      );
    }
    await answer(a.conversationId, a.ids[0]!);
  });

  it('a claim commits durably (synchronous_commit stays on): a PostgreSQL crash cannot hand its claim number out twice', async () => {
    // A claim whose commit a crash lost would leave `attempts` one lower, and the next claim would
    // get the same number as the run still holding it: every check by claim number would then pass
    // for both runs, and one could book while the other answers. A deferred trigger reads the
    // setting the claim's transaction commits with.
    const a = await conversationWith('claimed durably');
    await sql`
      CREATE TABLE claim_commit_settings (setting text);
      CREATE FUNCTION record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO claim_commit_settings VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$;
      CREATE CONSTRAINT TRIGGER record_commit_setting AFTER UPDATE OF attempts ON messages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (NEW.message_id = ${sql.lit(a.ids[0]!)}) EXECUTE FUNCTION record_commit_setting();`.execute(
      database.db,
    );
    try {
      const [claimed] = await claimAll();
      expect(claimed!.claim).toEqual({ messageId: a.ids[0], attempts: 1 });
      const recorded = await sql<{ setting: string }>`SELECT setting FROM claim_commit_settings`.execute(
        database.db,
      );
      expect(recorded.rows).toEqual([{ setting: 'on' }]);
    } finally {
      await sql`DROP TRIGGER record_commit_setting ON messages; DROP FUNCTION record_commit_setting();
        DROP TABLE claim_commit_settings;`.execute(database.db);
    }
    await answer(a.conversationId, a.ids[0]!);
  });

  it('a released claim waits out its backoff, and its conversation waits with it', async () => {
    const a = await conversationWith('fails', 'waits');
    const [first] = await claimAll();
    expect(await queue.release(first!.claim, 60, 'model down')).toBe(true);
    expect(await row(a.ids[0]!)).toMatchObject({ claimed_until: null, last_error: 'model down' });
    expect((await row(a.ids[0]!)).run_after).not.toBeNull();
    expect(await claimAll()).toEqual([]);
    // Released with no delay (a stopping process): claimable at once, as the next attempt.
    await sql`UPDATE messages SET run_after = NULL WHERE message_id = ${a.ids[0]}`.execute(database.db);
    const [again] = await claimAll();
    expect(again!.claim).toEqual({ messageId: a.ids[0], attempts: 2 });
    expect(await queue.release(again!.claim, 0, 'process stopped')).toBe(true);
    const [third] = await claimAll();
    expect(third!.claim).toEqual({ messageId: a.ids[0], attempts: 3 });
    await answer(a.conversationId, a.ids[0]!);
    expect((await claimAll()).map((c) => c.claim.messageId)).toEqual([a.ids[1]]);
    await answer(a.conversationId, a.ids[1]!);
  });

  it('a second claimed message in one conversation is refused by the database (claim conflict)', async () => {
    const a = await conversationWith('one', 'two');
    await claimAll();
    const err = await sql`UPDATE messages SET claimed_until = now() + interval '15 seconds'
                           WHERE message_id = ${a.ids[1]}`
      .execute(database.db)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isClaimConflict(err)).toBe(true);
    expect((await row(a.ids[1]!)).claimed_until).toBeNull();
    await answer(a.conversationId, a.ids[0]!);
    await claimAll();
    await answer(a.conversationId, a.ids[1]!);
  });
});

describe('a message claimed by its own insert', () => {
  /** The conversation's messages as stored, in order. */
  const stored = (conversationId: string) =>
    database.db
      .selectFrom('messages')
      .select(['content', 'status', 'attempts', 'claimed_until'])
      .where('conversation_id', '=', conversationId)
      .orderBy('seq')
      .execute();

  it('in an idle conversation: stored claimed (attempt 1), with what answering it needs', async () => {
    const { conversation, customerToken } = await conversations.create({ agentId });
    const id = conversation.conversationId;
    // Earlier exchanges: the history is the last `historyLimit` messages, ending with this one.
    const earlier: string[] = [];
    for (const t of ['h1', 'h2']) {
      const m = (await messages.insertCustomerMessage(id, t, 'admin'))!;
      await claimAll();
      await answer(id, m.messageId);
      earlier.push(m.messageId);
    }
    const got = await queue.insertClaimed(id, 'now', hashToken(customerToken), 15, 3);
    const message = got!.message!;
    expect(message).toMatchObject({ conversationId: id, role: 'customer', content: 'now' });
    expect(got!.work!.claim).toEqual({ messageId: message.messageId, attempts: 1 });
    const work = got!.work!.work!;
    expect(work.message).toMatchObject({ messageId: message.messageId, status: 'pending', attempts: 1 });
    expect(work.agent.agentId).toBe(agentId);
    expect(work.conversation.conversationId).toBe(id);
    expect(work.history.map((m) => m.content)).toEqual(['h2', `re ${earlier[1]}`, 'now']);
    expect(work.history.at(-1)!.createdAt.getTime()).toBe(message.createdAt.getTime());
    const last = (await stored(id)).at(-1)!;
    expect(last).toMatchObject({ content: 'now', status: 'pending', attempts: 1 });
    expect(last.claimed_until).not.toBeNull();
    // Held by its claim: the queue's claim does not take it, nor a message sent after it.
    const next = await messages.insertCustomerMessage(id, 'after', 'admin');
    expect(await claimAll()).toEqual([]);
    await answer(id, message.messageId);
    expect((await claimAll()).map((c) => c.claim.messageId)).toEqual([next!.messageId]);
    await answer(id, next!.messageId);
  });

  it('with a message of the conversation pending: stored unclaimed in the same statement, for the queue', async () => {
    const { conversation, customerToken } = await conversations.create({ agentId });
    const id = conversation.conversationId;
    const first = (await queue.insertClaimed(id, 'first', null, 15, 10))!;
    expect(first.work).toBeDefined();
    // The first is pending (claimed): the second is stored, not claimed.
    const second = (await queue.insertClaimed(id, 'second', hashToken(customerToken), 15, 10))!;
    expect(second.work).toBeUndefined();
    expect(second.message).toMatchObject({ conversationId: id, role: 'customer', content: 'second' });
    expect(await claimAll()).toEqual([]);
    await answer(id, first.message!.messageId);
    // So is one sent while a message waits unclaimed (here: the second, until the queue claims it).
    const third = (await queue.insertClaimed(id, 'third', null, 15, 10))!;
    expect(third.work).toBeUndefined();
    expect(await stored(id)).toMatchObject([
      { content: 'first', status: 'answered' },
      { content: 'second', status: 'pending', attempts: 0, claimed_until: null },
      { content: `re ${first.message!.messageId}` },
      { content: 'third', status: 'pending', attempts: 0, claimed_until: null },
    ]);
    // In order, through the queue's claim.
    for (const m of [second.message!, third.message!]) {
      expect((await claimAll()).map((c) => c.claim.messageId)).toEqual([m.messageId]);
      await answer(id, m.messageId);
    }
  });

  it('stores nothing for a caller that is not the token holder, or no conversation', async () => {
    const { conversation } = await conversations.create({ agentId });
    const id = conversation.conversationId;
    expect(await queue.insertClaimed(id, 'wrong', 'f'.repeat(64), 15, 10)).toBeUndefined();
    expect(await queue.insertClaimed('cnv_missing', 'none', null, 15, 10)).toBeUndefined();
    expect(await stored(id)).toEqual([]);
  });

  it('stores nothing when a concurrent insert of the conversation claimed first (server)', async () => {
    if (!server) return; // needs two connections at once
    const { conversation } = await conversations.create({ agentId });
    const id = conversation.conversationId;
    let racing: ReturnType<MessageQueueStore['insertClaimed']> | undefined;
    let winner: string | undefined;
    // Another POST's insert has claimed a message of the conversation and not committed yet; this
    // statement's snapshot sees an idle conversation, so it tries to claim too, once that transaction
    // commits (it waits for the conversation's message order, then meets the claimed row in the
    // unique index).
    await database.db.transaction().execute(async (trx) => {
      winner = (await new MessageQueueStore(trx).insertClaimed(id, 'winner', null, 15, 10))!.message!
        .messageId;
      racing = queue.insertClaimed(id, 'loser', null, 15, 10);
      await waitForOrderWaiter(database.db, id);
    });
    // Neither stored nor claimed: the caller stores it unclaimed (JobQueue.accept).
    expect(await racing).toEqual({});
    expect((await stored(id)).map((m) => m.content)).toEqual(['winner']);
    await answer(id, winner!);
  });
});
