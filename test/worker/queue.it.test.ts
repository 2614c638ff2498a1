/**
 * The message queue's wake-ups (src/worker/queue.ts), with its backstop poll turned off: what is
 * answered here was started by a notification or by the queue itself, never found by polling.
 * Under key_strict_fifo a conversation's next message becomes fetchable only once the job before it
 * completed (after its reply committed), and nothing else announces it then.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
beforeAll(async () => {
  s = await startStack({}, { queue: { pollIntervalMs: 3_600_000 } });
  s.openai.responder = async (req: ChatRequest) => {
    // Slow enough that the later messages are stored (and their NOTIFY spent) while the first runs.
    await new Promise((r) => setTimeout(r, 100));
    const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
    return { content: `re: ${messageText(lastUser?.content)}` };
  };
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
