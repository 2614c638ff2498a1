/**
 * The reply statement (MessageStore.storeReply): stores the reply once, closes the customer message,
 * announces the conversation to live feeds, and wakes the queue when a next message waits — all in
 * one statement, so each NOTIFY is checked here as it is received by a listener.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentStore } from '../../src/store/agents.js';
import { ConversationStore } from '../../src/store/conversations.js';
import type { Database } from '../../src/store/database.js';
import { MESSAGE_CHANNEL, MessageStore } from '../../src/store/messages.js';
import { openTestDatabase } from '../helpers/database.js';

const WAKE = 'test_wake_next';
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
  for (const channel of [WAKE, MESSAGE_CHANNEL]) {
    unlisten.push(await database.listen(channel, (payload) => heard.push([channel, payload])));
  }
});
afterAll(async () => {
  for (const u of unlisten) await u();
  await close?.();
});

async function conversationWith(n: number) {
  const { conversation } = await conversations.create({ agentId });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const m = await database.db
      .transaction()
      .execute((trx) => messages.insertCustomerMessage(trx, conversation.conversationId, `m${i}`));
    ids.push(m.messageId);
  }
  return { conversationId: conversation.conversationId, ids };
}

const reply = (conversationId: string, replyTo: string) =>
  database.db.transaction().execute((trx) =>
    messages.storeReply(trx, {
      conversationId,
      replyTo,
      content: `re ${replyTo}`,
      outcome: 'answered',
      wakeNext: { channel: WAKE, payload: 'the-queue' },
    }),
  );

const heardOn = (channel: string, payload: string) =>
  heard.filter(([c, p]) => c === channel && p === payload).length;

describe('MessageStore.storeReply', () => {
  it('wakes the queue while the conversation has a next message, and announces every reply', async () => {
    const { conversationId, ids } = await conversationWith(2);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(2)); // the inserts
    const wakes = heardOn(WAKE, 'the-queue');

    expect((await reply(conversationId, ids[0]!))?.content).toBe(`re ${ids[0]}`);
    await vi.waitFor(() => expect(heardOn(WAKE, 'the-queue')).toBe(wakes + 1));
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(3));

    // The last message: nothing waits after it, so no wake-up (checked after its announcement).
    await reply(conversationId, ids[1]!);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(4));
    expect(heardOn(WAKE, 'the-queue')).toBe(wakes + 1);

    const stored = await messages.list(conversationId, { limit: 10 });
    expect(stored?.map((m) => m.role)).toEqual(['customer', 'customer', 'assistant', 'assistant']);
  });

  it('stores a second reply to the same message nowhere, and announces nothing for it', async () => {
    const { conversationId, ids } = await conversationWith(1);
    await reply(conversationId, ids[0]!);
    await vi.waitFor(() => expect(heardOn(MESSAGE_CHANNEL, conversationId)).toBe(2));
    expect(await reply(conversationId, ids[0]!)).toBeUndefined();
    const stored = await messages.list(conversationId, { limit: 10 });
    expect(stored?.map((m) => m.role)).toEqual(['customer', 'assistant']);
  });
});
