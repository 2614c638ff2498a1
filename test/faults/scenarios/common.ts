import type { Chat, Harness, ScenarioContext } from '../harness.js';
import { echoOf } from '../model.js';
import { mapLimit } from '../util.js';

/** How many HTTP calls the suite keeps in flight against the API. */
export const CLIENT_CONCURRENCY = 16;

export interface Scenario {
  /** Short name shown in the table. */
  name: string;
  run(h: Harness, ctx: ScenarioContext): Promise<void>;
}

/**
 * Opens `owners x perOwner` conversations (one agent per owner); the owners' calendars are connected
 * when `connect` is set. Every conversation is recorded in the context.
 */
export async function openChats(
  h: Harness,
  ctx: ScenarioContext,
  opts: { prefix: string; owners: number; perOwner: number; connect?: boolean },
): Promise<Chat[]> {
  const owners = Array.from({ length: opts.owners }, (_, i) => `${opts.prefix}-owner-${i + 1}`);
  const agents = await mapLimit(owners, CLIENT_CONCURRENCY, async (userId) => {
    if (opts.connect) await h.connectOwner(userId);
    return { userId, agentId: await h.createAgent(userId, `${opts.prefix} agent`) };
  });
  const slots = agents.flatMap((a) => Array.from({ length: opts.perOwner }, (_, i) => ({ ...a, i })));
  const chats = await mapLimit(slots, CLIENT_CONCURRENCY, (s) =>
    h.openConversation(s.agentId, s.userId, `${opts.prefix} customer ${s.i + 1}`),
  );
  ctx.conversations.push(...chats.map((c) => c.conversationId));
  return chats;
}

/** The text of message `m` of conversation `c` (unique, so a reply can be matched to it). */
export const chatText = (prefix: string, c: number, m: number) =>
  `${prefix} conversation ${c + 1} message ${m + 1}: hello, can you help me?`;

/** Replies must be the emulated model's answer to exactly their own message. */
export const expectEcho = (customer: string, reply: string) => reply === echoOf(customer);

/**
 * Sends messages `from..to-1` of every conversation: within a conversation one after the other
 * (each accepted before the next is sent, so the order is defined), conversations in parallel.
 */
export async function sendMessages(
  h: Harness,
  ctx: ScenarioContext,
  chats: Chat[],
  opts: { prefix: string; from?: number; to: number; retryForMs?: number },
): Promise<void> {
  await mapLimit(chats, CLIENT_CONCURRENCY, async (chat, c) => {
    for (let m = opts.from ?? 0; m < opts.to; m++) {
      await h.send(ctx, chat, chatText(opts.prefix, c, m), opts.retryForMs);
    }
  });
}
