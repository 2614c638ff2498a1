/**
 * A message claimed by its own insert (JobQueue.accept): a process that takes the POST and has a free
 * worker slot claims the message in the insert's statement and runs it at once; with no free slot, or
 * its conversation busy, the message is stored unclaimed and the queue's claim takes it in turn. The
 * backstop poll is off: what is answered here was run by its insert, or woken by a notification.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { MessageStore } from '../../src/store/messages.js';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { type Stack, startStack } from '../helpers/stack.js';

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

/** queue_pickups_total by path, as /metrics reports it. */
async function pickups(): Promise<{ insert: number; claim: number }> {
  const res = await s.app.http.inject({ method: 'GET', url: '/metrics', headers: s.admin });
  const count = (path: string) =>
    Number(res.body.match(new RegExp(`^queue_pickups_total\\{path="${path}"\\} (\\d+)`, 'm'))?.[1] ?? 0);
  return { insert: count('insert'), claim: count('claim') };
}

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
  const c = await conversation();
  const before = await pickups();
  for (let i = 1; i <= 3; i++) await s.send(c.conversation_id, c.customer_token, `m${i}`);
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 3);
  expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
    're: m1',
    're: m2',
    're: m3',
  ]);
  // m1 by its insert; m2 and m3 by the claim its job's reply (then m2's) made the queue fetch.
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

it('a message stored by an API-only process wakes an idle worker here (its insert notifies)', async () => {
  const c = await conversation();
  const before = await pickups();
  // The statement an API-only process runs (role api: no worker of its own to claim for).
  await new MessageStore(s.app.database.db).insertCustomerMessage(c.conversation_id, 'from api', 'admin');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  expect(list.at(-1)?.content).toBe('re: from api');
  expect(await pickups()).toEqual({ insert: before.insert, claim: before.claim + 1 });
});
