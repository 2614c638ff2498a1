/**
 * The reply statement (MessageStore.storeReply): stores the reply once, closes the customer message,
 * announces the conversation to live feeds (each NOTIFY checked as a listener receives it), tells
 * whether a next message waits, and carries a booking's rows — all in one statement.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentStore } from '../../src/store/agents.js';
import { BookingLeaseStore, WHOLE_OWNER } from '../../src/store/booking-leases.js';
import { ConversationStore } from '../../src/store/conversations.js';
import { type Database, notifyChannel } from '../../src/store/database.js';
import { bookedRows } from '../../src/store/meetings.js';
import { MESSAGE_CHANNEL, MessageStore, modelOutputCte } from '../../src/store/messages.js';
import { openTestDatabase, testDatabaseKind, waitForOrderWaiter } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let messages: MessageStore;
let conversations: ConversationStore;
let agentId: string;
const heard: Array<[string, string]> = [];
const unlisten: Array<() => Promise<void>> = [];

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  messages = new MessageStore(database.db);
  conversations = new ConversationStore(database.db);
  agentId = (await new AgentStore(database.db).create({ userId: 'owner-msg', name: 'A' })).agentId;
  unlisten.push(await database.listen(MESSAGE_CHANNEL, (payload) => heard.push([MESSAGE_CHANNEL, payload])));
});
afterAll(async () => {
  for (const u of unlisten) await u();
  await close?.();
});

async function conversationWith(n: number) {
  const { conversation } = await conversations.create({ agentId });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const m = (await messages.insertCustomerMessage(conversation.conversationId, `m${i}`, 'admin'))!;
    ids.push(m.messageId);
  }
  return { conversationId: conversation.conversationId, ids };
}

const input = (conversationId: string, replyTo: string) => ({
  conversationId,
  replyTo,
  content: `re ${replyTo}`,
  outcome: 'answered' as const,
});
const reply = (conversationId: string, replyTo: string) =>
  messages.storeReply(database.db, input(conversationId, replyTo));

const heardOn = (channel: string, payload: string) =>
  heard.filter(([c, p]) => c === channel && p === payload).length;

describe('MessageStore.storeReply', () => {
  it('stores a customer message only into an existing conversation, with its token hash unless admin', async () => {
    const { conversation } = await conversations.create({ agentId });
    const id = conversation.conversationId;
    const right = { customerTokenHash: conversation.customerTokenHash };
    expect(
      await messages.insertCustomerMessage(id, 'wrong', { customerTokenHash: 'f'.repeat(64) }),
    ).toBeUndefined();
    expect(await messages.insertCustomerMessage('cnv_missing', 'none', right)).toBeUndefined();
    expect(await messages.insertCustomerMessage('cnv_missing', 'none', 'admin')).toBeUndefined();
    const ok = await messages.insertCustomerMessage(id, 'mine', right);
    const admin = await messages.insertCustomerMessage(id, 'owner', 'admin');
    expect([ok?.content, admin?.content]).toEqual(['mine', 'owner']);
    const stored = await messages.list(id, { limit: 10 });
    expect(stored?.map((m) => m.content)).toEqual(['mine', 'owner']);
  });

  it('tells whether the conversation has a next message, and announces every reply', async () => {
    const { conversationId, ids } = await conversationWith(2);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(2)); // the inserts

    const first = await reply(conversationId, ids[0]!);
    expect(first.message?.content).toBe(`re ${ids[0]}`);
    expect(first.nextWaiting).toBe(true);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(3));

    // The last message: nothing waits after it.
    const last = await reply(conversationId, ids[1]!);
    expect(last.nextWaiting).toBe(false);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(4));

    const stored = await messages.list(conversationId, { limit: 10 });
    expect(stored?.map((m) => m.role)).toEqual(['customer', 'customer', 'assistant', 'assistant']);
  });

  it('stores a second reply to the same message nowhere, and announces nothing for it', async () => {
    const { conversationId, ids } = await conversationWith(1);
    await reply(conversationId, ids[0]!);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(2));
    expect((await reply(conversationId, ids[0]!)).message).toBeUndefined();
    const stored = await messages.list(conversationId, { limit: 10 });
    expect(stored?.map((m) => m.role)).toEqual(['customer', 'assistant']);
  });

  it("writes a booking's rows with the reply, only when this attempt's reply is the one stored", async () => {
    const { conversationId, ids } = await conversationWith(1);
    const leases = new BookingLeaseStore(database.db);
    const meeting = (key: string) => ({
      userId: 'owner-msg',
      agentId,
      conversationId,
      messageId: ids[0]!,
      idempotencyKey: key,
      googleEventId: `ev${key}`,
      title: 'Intro',
      customerName: null,
      customerEmail: 'c@example.com',
      participants: [],
      meetingTime: new Date('2030-01-01T10:00:00Z'),
      durationMinutes: 30,
      timezone: null,
      meetLink: null,
      htmlLink: null,
    });
    // The owner has a webhook: the booking's delivery is written too, its job left to the caller.
    await sql`INSERT INTO owner_webhooks (user_id, url, secret_enc) VALUES ('owner-msg', 'http://127.0.0.1:9/', 'x')
              ON CONFLICT DO NOTHING`.execute(database.db);
    const event = { type: 'meeting.booked' as const, key: (id: string) => `meeting.booked:${id}` };
    const attempt = async (key: string) => {
      const lease = { userId: 'owner-msg', holder: `h-${key}` };
      expect((await leases.tryAcquire(lease.userId, lease.holder, WHOLE_OWNER, 30_000)).acquired).toBe(true);
      const stored = await messages.storeReply(
        database.db,
        input(conversationId, ids[0]!),
        bookedRows(meeting(key), { event, lease, onlyIfRowIn: 'reply', enqueued: false }),
      );
      const held = await sql<{ n: number }>`
        SELECT jsonb_array_length(holds) AS n FROM owner_booking_leases WHERE user_id = 'owner-msg'`.execute(
        database.db,
      );
      return { stored, leaseHeld: held.rows[0]!.n > 0 };
    };
    const meetingKeys = async () =>
      (
        await sql<{ idempotency_key: string }>`
          SELECT idempotency_key FROM meetings WHERE conversation_id = ${conversationId}`.execute(database.db)
      ).rows.map((r) => r.idempotency_key);

    const deliveries = async () =>
      (
        await sql<{ delivery_id: string; enqueued: boolean }>`
          SELECT d.delivery_id, d.enqueued FROM webhook_deliveries d
            JOIN meetings m ON d.event_key = 'meeting.booked:' || m.meeting_id
           WHERE m.conversation_id = ${conversationId}`.execute(database.db)
      ).rows;

    const first = await attempt('k1');
    expect(first.stored.message?.content).toBe(`re ${ids[0]}`);
    expect(first.leaseHeld).toBe(false);
    expect(await meetingKeys()).toEqual(['k1']);
    // The delivery, not yet enqueued (the caller's relayOne or the relay does that); its id returned.
    expect(await deliveries()).toEqual([{ delivery_id: first.stored.result, enqueued: false }]);
    // The customer message is closed by the same statement.
    const asked = await sql<{ status: string }>`
      SELECT status FROM messages WHERE message_id = ${ids[0]!}`.execute(database.db);
    expect(asked.rows[0]?.status).toBe('answered');

    // A second attempt's reply is not stored: its meeting row is not written; its lease is given back.
    const second = await attempt('k2');
    expect(second.stored.message).toBeUndefined();
    expect(second.stored.result).toBeUndefined();
    expect(second.leaseHeld).toBe(false);
    expect(await meetingKeys()).toEqual(['k1']);
    expect(await deliveries()).toHaveLength(1);
  });
});

describe('modelOutputCte', () => {
  it('stores the output for the current claim only; the same claim may send the same output again', async () => {
    const { ids } = await conversationWith(1);
    const id = ids[0]!;
    await sql`UPDATE messages SET attempts = 2 WHERE message_id = ${id}`.execute(database.db);
    const output = {
      text: '[{"action":"Time_to_121meet"}]',
      toolCalls: [{ id: 'c1', name: 'x', arguments: '{"a":1}' }],
    };
    const other = { ...output, text: 'something else' };
    const store = async (claim: number, o: typeof output) =>
      (
        await sql<{
          n: number;
        }>`WITH ${modelOutputCte(id, claim, o)} SELECT count(*)::int AS n FROM saved_output`.execute(
          database.db,
        )
      ).rows[0]!.n;
    const stored = async () =>
      (
        await sql<{
          model_output: unknown;
        }>`SELECT model_output FROM messages WHERE message_id = ${id}`.execute(database.db)
      ).rows[0]!.model_output;
    expect(await store(1, output)).toBe(0); // an earlier claim: stale
    expect(await stored()).toBeNull();
    expect(await store(2, output)).toBe(1);
    expect(await store(2, output)).toBe(1); // sent again by the same claim (a lease statement's retry)
    expect(await store(2, other)).toBe(0); // never replaced
    expect(await store(1, output)).toBe(0);
    expect(await store(3, output)).toBe(0); // a later claim acts on what is stored instead
    expect(await stored()).toEqual(output);
  });
});

describe('announcement channels', () => {
  it("are the plain names in the 'public' schema and their own names in any other", () => {
    expect(notifyChannel('public', MESSAGE_CHANNEL)).toBe(MESSAGE_CHANNEL);
    const a = notifyChannel('tenant_a', MESSAGE_CHANNEL);
    expect(a).toMatch(/^agent_meetings_messages_[0-9a-f]{16}$/);
    expect(notifyChannel('tenant_b', MESSAGE_CHANNEL)).not.toBe(a);
  });

  it.runIf(testDatabaseKind() === 'server')(
    'stay in their schema: another schema of the same database hears nothing (server)',
    async () => {
      const other = await openTestDatabase();
      const elsewhere: string[] = [];
      const stop = await other.database.listen(MESSAGE_CHANNEL, (payload) => elsewhere.push(payload));
      try {
        expect(other.database.schema).not.toBe(database.schema);
        const { conversationId } = await conversationWith(1);
        await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(1));
        await new Promise((r) => setTimeout(r, 200));
        expect(elsewhere).not.toContain(conversationId);
      } finally {
        await stop();
        await other.close();
      }
    },
  );
});

describe.runIf(testDatabaseKind() === 'server')('message order (server)', () => {
  it('a message stored while a reply’s transaction is open comes after the reply: no cursor passes it', async () => {
    const { conversationId, ids } = await conversationWith(1);
    let commit!: () => void;
    const held = new Promise<void>((resolve) => {
      commit = resolve;
    });
    let replied!: () => void;
    const replyWritten = new Promise<void>((resolve) => {
      replied = resolve;
    });
    // A reply whose transaction stays open after its statement (a booking's persist steps, a wait).
    const replying = database.db.transaction().execute(async (trx) => {
      await messages.storeReply(trx, input(conversationId, ids[0]!));
      replied();
      await held;
    });
    await replyWritten;
    // The customer writes again meanwhile: the insert waits for the reply's commit.
    let stored = false;
    const next = messages.insertCustomerMessage(conversationId, 'one more thing', 'admin').then((m) => {
      stored = true;
      return m!;
    });
    await Promise.race([waitForOrderWaiter(database.db, conversationId), next]);
    // What a reader sees after the answered message while the reply is uncommitted: nothing yet.
    expect(stored).toBe(false);
    expect(await messages.list(conversationId, { afterMessageId: ids[0]!, limit: 10 })).toEqual([]);
    commit();
    await replying;
    const later = await next;
    const after = await messages.list(conversationId, { afterMessageId: ids[0]!, limit: 10 });
    expect(after?.map((m) => [m.role, m.content])).toEqual([
      ['assistant', `re ${ids[0]}`],
      ['customer', 'one more thing'],
    ]);
    expect(after?.at(-1)?.messageId).toBe(later.messageId);
  });
});
