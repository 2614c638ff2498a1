import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ChatRequest } from '../emulators/openai.js';
import { messageText } from '../emulators/openai.js';
import { retryScheduled, type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
beforeAll(async () => {
  s = await startStack({ JOB_RETRY_LIMIT: '2', HISTORY_LIMIT: '3' });
});
afterAll(async () => {
  await s?.close();
});
beforeEach(() => {
  s.openai.reset();
});

/** A customer message's queue state. */
function messageState(id: string) {
  return s.app.database.db
    .selectFrom('messages')
    .select(['status', 'attempts'])
    .where('message_id', '=', id)
    .executeTakeFirstOrThrow();
}

async function newChat(agent: Record<string, unknown> = {}) {
  const a = await s.createAgent({ user_id: 'owner-chat', name: 'Acme Assistant', ...agent });
  const c = await s.openConversation(a.agent_id, { customer_name: 'Sid' });
  return { agentId: a.agent_id, ...c };
}

describe('chat pipeline', () => {
  it('answers a customer message through the OpenAI API and stores the reply', async () => {
    s.openai.responder = () => ({ content: 'Hello Sid! How can I help?' });
    const c = await newChat({ system_prompt: 'You are the Acme assistant.' });
    const id = await s.send(c.conversation_id, c.customer_token, 'Hi there');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(list.map((m) => [m.role, m.content])).toEqual([
      ['customer', 'Hi there'],
      ['assistant', 'Hello Sid! How can I help?'],
    ]);
    expect(list[0]!.message_id).toBe(id);
    const req = s.openai.requests.at(-1)!;
    expect(req.model).toBe('gpt-test');
    expect(req.messages[0]!.role).toBe('system');
    expect(messageText(req.messages[0]!.content)).toContain('You are the Acme assistant.');
    expect(messageText(req.messages[0]!.content)).toContain('"action": "Time_to_121meet"');
    const tools = req.tools as Array<{ function: { name: string; strict: boolean } }>;
    expect(tools.map((t) => t.function.name)).toEqual([
      'Time_to_121meet',
      'reschedule_meeting',
      'cancel_meeting',
      'check_availability',
    ]);
    expect(tools[0]!.function.strict).toBe(true);
    expect(req.parallel_tool_calls).toBe(false);
  });

  it('uses the agent’s model when set', async () => {
    const c = await newChat({ model: 'gpt-agent-special' });
    await s.send(c.conversation_id, c.customer_token, 'hello');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(s.openai.requests.at(-1)!.model).toBe('gpt-agent-special');
  });

  it('tells the model the time the message was received, in the agent’s zone', async () => {
    const c = await newChat({ timezone: 'Asia/Kolkata' });
    const before = Date.now();
    await s.send(c.conversation_id, c.customer_token, 'what time is it?');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const system = messageText(s.openai.requests.at(-1)!.messages[0]!.content);
    const m = /Current date and time: (\S+) \((\w+)\), time zone Asia\/Kolkata\./.exec(system);
    expect(m).not.toBeNull();
    expect(m![1]).toMatch(/\+05:30$/);
    const stated = new Date(m![1]!).getTime();
    expect(Math.abs(stated - before)).toBeLessThan(5_000);
    expect(m![2]).toBe(
      new Intl.DateTimeFormat('en-US', { weekday: 'long', timeZone: 'Asia/Kolkata' }).format(
        new Date(stated),
      ),
    );
  });

  it('names the zone’s offset changes within the agent’s booking horizon', async () => {
    // New York changes its offset twice a year: a year's horizon always holds both.
    const c = await newChat({ timezone: 'America/New_York', horizon_days: 365 });
    await s.send(c.conversation_id, c.customer_token, 'book me next autumn');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const system = messageText(s.openai.requests.at(-1)!.messages[0]!.content);
    expect(system).toMatch(
      /time zone America\/New_York\. Its UTC offset changes at \S+ from -0[45]:00 to -0[45]:00, then at \S+ from -0[45]:00 to -0[45]:00: give each meeting_time the offset in effect at that meeting\./,
    );
    // Asia/Kolkata has none.
    const k = await newChat({ timezone: 'Asia/Kolkata', horizon_days: 365 });
    await s.send(k.conversation_id, k.customer_token, 'hello');
    await s.waitForReplies(k.conversation_id, k.customer_token, 1);
    expect(messageText(s.openai.requests.at(-1)!.messages[0]!.content)).not.toContain('UTC offset changes');
  });

  it('sends the conversation history, capped by HISTORY_LIMIT', async () => {
    let n = 0;
    s.openai.responder = () => ({ content: `reply ${++n}` });
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'first');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    await s.send(c.conversation_id, c.customer_token, 'second');
    await s.waitForReplies(c.conversation_id, c.customer_token, 2);
    const last = s.openai.requests.at(-1)!;
    expect(last.messages.slice(1).map((m) => [m.role, messageText(m.content)])).toEqual([
      ['user', 'first'],
      ['assistant', 'reply 1'],
      ['user', 'second'],
    ]);
  });

  it('sends only the last HISTORY_LIMIT messages, oldest first, ending with the one answered', async () => {
    let n = 0;
    s.openai.responder = () => ({ content: `reply ${++n}` });
    const c = await newChat();
    for (const [i, text] of ['one', 'two', 'three'].entries()) {
      await s.send(c.conversation_id, c.customer_token, text);
      await s.waitForReplies(c.conversation_id, c.customer_token, i + 1);
    }
    const last = s.openai.requests.at(-1)!;
    expect(last.messages.slice(1).map((m) => [m.role, messageText(m.content)])).toEqual([
      ['user', 'two'],
      ['assistant', 'reply 2'],
      ['user', 'three'],
    ]);
  });

  it('answers 5 quick messages one at a time, in order', async () => {
    let active = 0;
    let maxActive = 0;
    s.openai.responder = async (req: ChatRequest) => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 30));
      active--;
      const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
      return { content: `re: ${messageText(lastUser?.content)}` };
    };
    const c = await newChat();
    for (let i = 1; i <= 5; i++) await s.send(c.conversation_id, c.customer_token, `m${i}`);
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 5);
    expect(list.map((m) => m.content)).toEqual(
      ['m1', 'm2', 'm3', 'm4', 'm5', 're: m1', 're: m2', 're: m3', 're: m4', 're: m5'].sort((a, b) => {
        // customers were all stored first; replies follow in order
        return list.findIndex((m) => m.content === a) - list.findIndex((m) => m.content === b);
      }),
    );
    const replies = list.filter((m) => m.role === 'assistant').map((m) => m.content);
    expect(replies).toEqual(['re: m1', 're: m2', 're: m3', 're: m4', 're: m5']);
    expect(maxActive).toBe(1);
    // Each request saw the history up to its own message, the last HISTORY_LIMIT = 3 of it (how
    // many of them are replies depends on how fast the replies came): it ends with its own message,
    // and the customer messages in it are the ones just before, in order.
    for (const [i, r] of s.openai.requests.entries()) {
      const history = r.messages.slice(1);
      // At least its own and the customer messages before it (up to 3); never more than 3.
      expect(history.length).toBeGreaterThanOrEqual(Math.min(3, i + 1));
      expect(history.length).toBeLessThanOrEqual(3);
      expect(history.at(-1)).toMatchObject({ role: 'user' });
      expect(messageText(history.at(-1)!.content)).toBe(`m${i + 1}`);
      const users = history.filter((m) => m.role === 'user').map((m) => messageText(m.content));
      const own = i + 1;
      expect(users).toEqual(Array.from({ length: users.length }, (_, k) => `m${own - users.length + 1 + k}`));
    }
  });

  it('runs different conversations in parallel', async () => {
    let active = 0;
    let maxActive = 0;
    s.openai.responder = async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 200));
      active--;
      return { content: 'ok' };
    };
    const chats = await Promise.all(Array.from({ length: 10 }, () => newChat()));
    await Promise.all(chats.map((c) => s.send(c.conversation_id, c.customer_token, 'hello')));
    await Promise.all(chats.map((c) => s.waitForReplies(c.conversation_id, c.customer_token, 1)));
    expect(maxActive).toBeGreaterThan(1);
  });

  it('retries model failures, then answers', async () => {
    s.openai.responder = () => ({ content: 'made it' });
    // The SDK retries twice by itself; 4 faults outlast one job attempt, so the job is retried too.
    s.openai.fail({ kind: 'status', status: 503 }, 4);
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'hello?');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe('made it');
    expect(s.openai.requests.length).toBe(5);
  });

  it('sends LLM_ERROR_MESSAGE when retries are exhausted and records the failure', async () => {
    s.openai.failFor({ kind: 'status', status: 500 }, 60_000);
    const c = await newChat();
    const id = await s.send(c.conversation_id, c.customer_token, 'anyone?');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 45_000);
    expect(list.at(-1)!.content).toBe(s.app.config.llmErrorMessage);
    const row = await s.app.database.db
      .selectFrom('messages')
      .select(['status', 'attempts', 'last_error'])
      .where('message_id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('failed');
    expect(row.attempts).toBe(3);
    expect(row.last_error).toMatch(/500/);
    s.openai.reset();
  }, 60_000);

  it.each([
    ['retry-after-ms and retry-after', false],
    ['retry-after only', true],
  ])(
    'a model that asks to be left alone (429, Retry-After 120 s, %s) is not asked again sooner',
    async (_, retryAfterOnly) => {
      // The SDK's own tries ignore a Retry-After over a minute; every one of them is refused.
      s.openai.fail({ kind: 'status', status: 429, retryAfterSeconds: 120, retryAfterOnly }, 3);
      const c = await newChat();
      const id = await s.send(c.conversation_id, c.customer_token, 'hello?');
      const row = await retryScheduled(s, id);
      expect(row.attempts).toBe(1);
      // The job's own backoff here is a second or two.
      expect(Number(row.wait)).toBeGreaterThan(100);
      expect(Number(row.wait)).toBeLessThanOrEqual(120);
      expect(s.openai.requests).toHaveLength(3);
    },
  );

  it('does not retry a request the model service rejects (401), and answers with the fallback', async () => {
    s.openai.fail({ kind: 'status', status: 401 }, 1);
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'hi');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(list.at(-1)!.content).toBe(s.app.config.llmErrorMessage);
    expect(s.openai.requests.length).toBe(1);
  });

  it('does not retry a model account out of credit (429 insufficient_quota) beyond the SDK, and answers with the fallback', async () => {
    s.openai.fail({ kind: 'quota' }, 10);
    const c = await newChat();
    const id = await s.send(c.conversation_id, c.customer_token, 'hi');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe(s.app.config.llmErrorMessage);
    // The SDK's own tries (it retries every 429), then no job retry.
    expect(s.openai.requests.length).toBe(3);
    const row = await s.app.database.db
      .selectFrom('messages')
      .select(['status', 'attempts', 'last_error'])
      .where('message_id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'failed', attempts: 1, last_error: expect.stringMatching(/429/) });
  });

  it('never shows an answer cut off at its length limit: asks again (max_completion_tokens is sent)', async () => {
    let calls = 0;
    // 4096 tokens ≈ 16384 characters: the first answer runs on past it.
    s.openai.responder = () =>
      ++calls === 1 ? { content: 'la '.repeat(8000) } : { content: 'Short and whole.' };
    const c = await newChat();
    const id = await s.send(c.conversation_id, c.customer_token, 'sing');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe('Short and whole.');
    expect(calls).toBe(2);
    expect(s.openai.requests[0]?.max_completion_tokens).toBe(4096);
    expect(await messageState(id)).toEqual({ status: 'answered', attempts: 2 });
  });

  it('an answer withheld by the content filter: the fallback at once, never the partial text', async () => {
    s.openai.responder = () => ({ content: 'Here is how to', finishReason: 'content_filter' });
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'something unsafe');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe(s.app.config.llmErrorMessage);
    expect(s.openai.requests.length).toBe(1);
  });

  it('shows a refusal (content null, the refusal in its own field) as the answer', async () => {
    s.openai.responder = () => ({ refusal: 'I can’t help with that, but I can book a meeting.' });
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'do my homework');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe('I can’t help with that, but I can book a meeting.');
  });

  it('never shows raw action JSON to the customer', async () => {
    s.openai.responder = () => ({
      content:
        'Sure!\n```json\n[{"action":"Time_to_121meet","name":"Sid","email":"not-an-email","title":"Demo","participants":[],"meeting_time":"soon"}]\n```',
    });
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'book it');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const reply = list.at(-1)!.content;
    expect(reply).not.toContain('Time_to_121meet');
    expect(reply).not.toContain('{');
    expect(reply.startsWith('Sure!')).toBe(true);
  });

  it('asks the model again when it wrote an action as JSON that does not parse, never showing it', async () => {
    const broken =
      'Booked! [{"action":"Time_to_121meet","name":"Sid","email":"sid@example.com","meeting_time":"soon",}]';
    let calls = 0;
    s.openai.responder = () => (++calls === 1 ? { content: broken } : { content: 'What time suits you?' });
    const c = await newChat();
    const id = await s.send(c.conversation_id, c.customer_token, 'book it');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe('What time suits you?');
    expect(calls).toBe(2);
    expect(await messageState(id)).toEqual({ status: 'answered', attempts: 2 });
  });

  it('answers with LLM_ERROR_MESSAGE, not the raw JSON, when every answer holds an unreadable action', async () => {
    s.openai.responder = () => ({
      content: "Sure: {'action': 'Time_to_121meet', 'email': 'sid@example.com'}",
    });
    const c = await newChat();
    await s.send(c.conversation_id, c.customer_token, 'book it');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe(s.app.config.llmErrorMessage);
    expect(s.openai.requests.length).toBe(3);
  });
});

describe('LLM_MAX_OUTPUT_TOKENS=0 (a compatible server that refuses the field)', () => {
  let t: Stack;
  beforeAll(async () => {
    t = await startStack({ LLM_MAX_OUTPUT_TOKENS: '0' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('sends no max_completion_tokens', async () => {
    const long = 'la '.repeat(8000);
    t.openai.responder = () => ({ content: long });
    const a = await t.createAgent({ user_id: 'owner-chat', name: 'Acme Assistant' });
    const c = await t.openConversation(a.agent_id, { customer_name: 'Sid' });
    await t.send(c.conversation_id, c.customer_token, 'sing');
    const list = await t.waitForReplies(c.conversation_id, c.customer_token, 1, 30_000);
    expect(list.at(-1)!.content).toBe(long.trim());
    expect(t.openai.requests[0]).not.toHaveProperty('max_completion_tokens');
  });
});
