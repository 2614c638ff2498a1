import OpenAI from 'openai';
import type { ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { maskKey, type OpenAIEmulator, startOpenAIEmulator } from './openai.js';

const API_KEY = 'sk-test-emulator-0123456789abcdefWXYZ';
const MODEL = 'gpt-4o-mini';

const weatherTool: ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    strict: true,
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};

let emu: OpenAIEmulator;

/** SDK client against the emulator; retries off unless a test opts in, so request counts are exact. */
function client(overrides: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}): OpenAI {
  return new OpenAI({ apiKey: API_KEY, baseURL: emu.baseURL, maxRetries: 0, ...overrides });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type APIError = InstanceType<typeof OpenAI.APIError>;

/** The error a call rejects with; fails the test if the call succeeds. */
async function failure(call: PromiseLike<unknown>): Promise<APIError> {
  try {
    await call;
  } catch (err) {
    return err as APIError;
  }
  throw new Error('expected the call to fail');
}

beforeAll(async () => {
  emu = await startOpenAIEmulator({ apiKey: API_KEY });
});
afterAll(async () => {
  await emu.close();
});
beforeEach(() => {
  emu.reset();
  emu.latencyMs = 0;
});

describe('OpenAI emulator: completions', () => {
  it('answers a plain request with an OpenAI-shaped chat.completion (default echo responder)', async () => {
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hello there' }],
    });
    expect(res.id).toMatch(/^chatcmpl-[A-Za-z0-9]{29}$/);
    expect(res.object).toBe('chat.completion');
    expect(res.model).toBe(MODEL);
    expect(typeof res.created).toBe('number');
    expect(res.system_fingerprint).toMatch(/^fp_/);
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0]).toMatchObject({
      index: 0,
      finish_reason: 'stop',
      logprobs: null,
      message: { role: 'assistant', content: 'You said: hello there', refusal: null },
    });
    expect(res.choices[0]?.message.tool_calls).toBeUndefined();
    const usage = res.usage!;
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(usage.prompt_tokens + usage.completion_tokens);
    expect(emu.requests).toHaveLength(1);
    expect(emu.requests[0]?.model).toBe(MODEL);
  });

  it('exposes the request id header like the real API', async () => {
    const { response } = await client()
      .chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] })
      .withResponse();
    expect(response.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it('lets the responder see the system prompt and full history', async () => {
    emu.responder = (req) => ({
      content: req.messages
        .map((m) => `${m.role}:${typeof m.content === 'string' ? m.content : '?'}`)
        .join('|'),
    });
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'one' },
        { role: 'assistant', content: 'two' },
        { role: 'user', content: [{ type: 'text', text: 'three' }] },
      ],
      temperature: 0.2,
    });
    expect(res.choices[0]?.message.content).toBe('system:be brief|user:one|assistant:two|user:?');
    expect(emu.requests[0]?.temperature).toBe(0.2);
    expect(emu.requests[0]?.messages).toHaveLength(4);
  });

  it('round-trips a tool call: tool_calls, then a tool message, then final text', async () => {
    emu.responder = (req) => {
      const last = req.messages.at(-1);
      if (last?.role === 'tool') return { content: `It is ${String(last.content)} in Paris.` };
      return { toolCalls: [{ name: 'get_weather', arguments: { city: 'Paris', unit: 'c' } }] };
    };
    const openai = client();
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];

    const first = await openai.chat.completions.create({ model: MODEL, messages, tools: [weatherTool] });
    const choice = first.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const call = choice.message.tool_calls?.[0];
    expect(call).toMatchObject({ type: 'function', function: { name: 'get_weather' } });
    expect(call?.id).toMatch(/^call_[A-Za-z0-9]{24}$/);
    if (call?.type !== 'function') throw new Error('expected a function tool call');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'Paris', unit: 'c' });

    messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: '18°C' });
    const second = await openai.chat.completions.create({ model: MODEL, messages, tools: [weatherTool] });
    expect(second.choices[0]?.message.content).toBe('It is 18°C in Paris.');
    expect(second.choices[0]?.finish_reason).toBe('stop');
    expect(emu.requests).toHaveLength(2);
    expect(emu.requests[1]?.messages[1]?.tool_calls).toEqual([
      {
        id: call.id,
        type: 'function',
        function: { name: 'get_weather', arguments: call.function.arguments },
      },
    ]);
  });

  it('returns text and several tool calls together', async () => {
    emu.responder = () => ({
      content: 'Checking both.',
      toolCalls: [
        { name: 'get_weather', arguments: { city: 'Paris', unit: 'c' } },
        { name: 'get_weather', arguments: { city: 'Rome', unit: 'c' } },
      ],
    });
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Paris and Rome?' }],
      tools: [weatherTool],
    });
    const message = res.choices[0]!.message;
    expect(message.content).toBe('Checking both.');
    expect(message.tool_calls).toHaveLength(2);
    expect(new Set(message.tool_calls?.map((c) => c.id)).size).toBe(2);
  });

  it('stops at max_completion_tokens with finish_reason length; refuses a limit below 1', async () => {
    emu.responder = () => ({ content: 'word '.repeat(100) });
    const cut = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'talk' }],
      max_completion_tokens: 10,
    });
    expect(cut.choices[0]?.finish_reason).toBe('length');
    expect(cut.choices[0]?.message.content).toBe('word '.repeat(100).slice(0, 40));
    const whole = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'talk' }],
      max_completion_tokens: 1000,
    });
    expect(whole.choices[0]?.finish_reason).toBe('stop');
    const err = await failure(
      client().chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'talk' }],
        max_completion_tokens: 0,
      }),
    );
    expect(err.status).toBe(400);
    expect(err.code).toBe('integer_below_min_value');
    expect(err.param).toBe('max_completion_tokens');
  });

  it('scripts a refusal and a content-filtered answer', async () => {
    emu.responder = () => ({ refusal: 'I cannot help with that.' });
    const refused = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(refused.choices[0]?.message).toMatchObject({ content: null, refusal: 'I cannot help with that.' });
    emu.responder = () => ({ content: 'partial', finishReason: 'content_filter' });
    const filtered = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(filtered.choices[0]?.finish_reason).toBe('content_filter');
  });

  it('lists models', async () => {
    const page = await client().models.list();
    const ids = page.data.map((m) => m.id);
    expect(ids).toContain('gpt-4o-mini');
    expect(page.data[0]).toMatchObject({ object: 'model' });
  });
});

describe('OpenAI emulator: streaming', () => {
  it('streams text in several chunks that reassemble to the reply, then usage and [DONE]', async () => {
    const text = 'The quick brown fox jumps over the lazy dog.';
    emu.responder = () => ({ content: text });
    const stream = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'go' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const contentChunks = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(contentChunks.length).toBeGreaterThan(3);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(text);
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);

    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finish.map((c) => c.choices[0]?.finish_reason)).toEqual(['stop']);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage?.total_tokens).toBeGreaterThan(0);
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('streams tool calls as index/id/name then argument fragments', async () => {
    const args = { city: 'San Francisco', unit: 'f' };
    emu.responder = () => ({
      toolCalls: [
        { name: 'get_weather', arguments: args },
        { name: 'get_weather', arguments: { city: 'Oslo', unit: 'c' } },
      ],
    });
    const stream = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [weatherTool],
      stream: true,
    });
    const calls: Array<{ id?: string; name?: string; arguments: string }> = [];
    let fragments = 0;
    let finishReason: string | null = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      for (const delta of choice?.delta.tool_calls ?? []) {
        calls[delta.index] ??= { arguments: '' };
        const call = calls[delta.index]!;
        if (delta.id) call.id = delta.id;
        if (delta.function?.name) call.name = delta.function.name;
        if (delta.function?.arguments) {
          call.arguments += delta.function.arguments;
          fragments += 1;
        }
      }
    }
    expect(finishReason).toBe('tool_calls');
    expect(fragments).toBeGreaterThan(2);
    expect(calls).toHaveLength(2);
    expect(calls[0]?.id).toMatch(/^call_/);
    expect(calls[0]?.name).toBe('get_weather');
    expect(JSON.parse(calls[0]?.arguments ?? '')).toEqual(args);
    expect(JSON.parse(calls[1]?.arguments ?? '')).toEqual({ city: 'Oslo', unit: 'c' });
  });

  it("works with the SDK's chat.completions.stream() helper (text and tool calls)", async () => {
    const openai = client();
    emu.responder = () => ({ content: 'streamed via helper' });
    const textRunner = openai.chat.completions.stream({
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
    });
    let deltas = '';
    textRunner.on('content', (delta) => {
      deltas += delta;
    });
    const text = await textRunner.finalChatCompletion();
    expect(deltas).toBe('streamed via helper');
    expect(text.choices[0]?.message.content).toBe('streamed via helper');
    expect(text.choices[0]?.finish_reason).toBe('stop');

    emu.responder = () => ({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Lima', unit: 'c' } }] });
    const toolRunner = openai.chat.completions.stream({
      model: MODEL,
      messages: [{ role: 'user', content: 'Lima?' }],
      tools: [weatherTool],
    });
    const final = await toolRunner.finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    expect(final.choices[0]?.finish_reason).toBe('tool_calls');
    if (call?.type !== 'function') throw new Error('expected a function tool call');
    expect(call.function.name).toBe('get_weather');
    // Strict tools are auto-parsed by the helper, proving the streamed arguments are valid JSON.
    expect(call.function.parsed_arguments).toEqual({ city: 'Lima', unit: 'c' });
  });
});

describe('OpenAI emulator: auth and validation', () => {
  it('rejects a wrong key with 401 invalid_api_key and a masked key', async () => {
    const wrong = 'sk-proj-wrongwrongwrongwrong1234';
    const err = await failure(
      client({ apiKey: wrong }).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.status).toBe(401);
    expect(err.code).toBe('invalid_api_key');
    expect(err.type).toBe('invalid_request_error');
    expect(err.message).toContain(
      `Incorrect API key provided: sk-proj-${'*'.repeat(20)}1234. You can find your API key at https://platform.openai.com/account/api-keys.`,
    );
    expect(emu.requests).toHaveLength(1);
  });

  it('rejects a missing Authorization header with its own message', async () => {
    const err = await failure(
      client({ apiKey: 'unused', defaultHeaders: { Authorization: null } }).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.message).toContain("You didn't provide an API key.");
  });

  it('masks keys like OpenAI', () => {
    expect(maskKey('sk-abcdefghijklmnopqrstuvwxyz')).toBe(`sk-abcde${'*'.repeat(17)}wxyz`);
    expect(maskKey('API_KEY')).toBe('API_KEY');
  });

  it('rejects a strict tool schema without additionalProperties:false or with optional properties', async () => {
    const openai = client();
    const lax = (parameters: Record<string, unknown>): ChatCompletionTool => ({
      type: 'function',
      function: { name: 'book', strict: true, parameters },
    });
    const create = (tool: ChatCompletionTool) =>
      failure(
        openai.chat.completions.create({
          model: MODEL,
          messages: [{ role: 'user', content: 'x' }],
          tools: [weatherTool, tool],
        }),
      );

    const noAdditional = await create(
      lax({ type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }),
    );
    expect(noAdditional).toBeInstanceOf(OpenAI.BadRequestError);
    expect(noAdditional.param).toBe('tools[1].function.parameters');
    expect(noAdditional.code).toBe('invalid_function_parameters');
    expect(noAdditional.message).toContain(
      "Invalid schema for function 'book': In context=(), 'additionalProperties' is required to be supplied and to be false.",
    );

    const nestedOptional = await create(
      lax({
        type: 'object',
        properties: {
          when: {
            type: 'object',
            properties: { start: { type: 'string' }, tz: { type: 'string' } },
            required: ['start'],
            additionalProperties: false,
          },
        },
        required: ['when'],
        additionalProperties: false,
      }),
    );
    expect(nestedOptional).toBeInstanceOf(OpenAI.BadRequestError);
    expect(nestedOptional.message).toContain(
      "In context=('properties', 'when'), 'required' is required to be supplied and to be an array including every key in properties. Missing 'tz'.",
    );
    expect(emu.requests).toHaveLength(2);
  });

  it.each([
    [{ model: MODEL, messages: [] }, 'messages', 'empty_array'],
    [{ messages: [{ role: 'user', content: 'x' }] }, null, null],
    [{ model: MODEL, messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role', 'invalid_value'],
    [
      { model: MODEL, messages: [{ role: 'tool', tool_call_id: 'call_1', content: 'x' }] },
      'messages.[0].role',
      null,
    ],
    [
      {
        model: MODEL,
        messages: [
          { role: 'user', content: 'x' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }],
          },
          { role: 'user', content: 'never answered the tool call' },
        ],
      },
      'messages.[2].role',
      null,
    ],
    [
      {
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { description: 'no name' } }],
      },
      'tools[0].function.name',
      'missing_required_parameter',
    ],
    [{ model: MODEL, messages: [{ role: 'user', content: 'x' }], tool_choice: 'auto' }, 'tool_choice', null],
  ])('rejects an invalid body with a 400 invalid_request_error (%#)', async (body, param, code) => {
    const err = await failure(
      client().chat.completions.create(body as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming),
    );
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.type).toBe('invalid_request_error');
    expect(err.param).toBe(param);
    expect(err.code).toBe(code);
  });

  it('turns a throwing responder into a 500 server_error', async () => {
    emu.responder = () => {
      throw new Error('script bug');
    };
    const err = await failure(
      client().chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(err.type).toBe('server_error');
  });
});

describe('OpenAI emulator: faults', () => {
  it('429 then success: the SDK retries after retry-after-ms, each attempt is logged', async () => {
    emu.fail({ kind: 'status', status: 429, retryAfterSeconds: 0.01 });
    const res = await client({ maxRetries: 1 }).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'again' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: again');
    expect(emu.requests).toHaveLength(2);
  });

  it('429 surfaces as RateLimitError with OpenAI headers and body when retries run out', async () => {
    emu.fail({ kind: 'status', status: 429, retryAfterSeconds: 2 });
    const err = await failure(
      client().chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.code).toBe('rate_limit_exceeded');
    expect(err.type).toBe('requests');
    expect(err.headers?.get('retry-after')).toBe('2');
    expect(err.headers?.get('retry-after-ms')).toBe('2000');
  });

  it('fail(fault, times) fails exactly that many attempts', async () => {
    emu.fail({ kind: 'status', status: 503, retryAfterSeconds: 0.01 }, 2);
    const res = await client({ maxRetries: 2 }).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: x');
    expect(emu.requests).toHaveLength(3);
  });

  it('failFor() is an outage: everything fails until it ends', async () => {
    const openai = client();
    emu.failFor({ kind: 'status', status: 502 }, 250);
    for (let i = 0; i < 3; i++) {
      const err = await failure(
        openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
      );
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err.status).toBe(502);
    }
    await sleep(300);
    const res = await openai.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'up' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: up');
    expect(emu.requests).toHaveLength(4);
  });

  it('stall longer than the SDK timeout gives APIConnectionTimeoutError; the emulator keeps serving', async () => {
    emu.fail({ kind: 'stall', ms: 2_000 });
    const started = Date.now();
    const err = await failure(
      client({ timeout: 150 }).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(Date.now() - started).toBeLessThan(1_500);
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'y' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: y');
  });

  it('a short stall (and latencyMs) just delays the answer', async () => {
    emu.latencyMs = 30;
    emu.fail({ kind: 'stall', ms: 60 });
    const started = Date.now();
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'z' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: z');
    expect(Date.now() - started).toBeGreaterThanOrEqual(85);
  });

  it('drop destroys the socket: APIConnectionError (not a timeout)', async () => {
    emu.fail({ kind: 'drop' });
    const err = await failure(
      client().chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError);
    expect(err).not.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(emu.requests).toHaveLength(1);
  });

  it('reset() clears requests, pending faults and the responder', async () => {
    emu.responder = () => ({ content: 'scripted' });
    emu.fail({ kind: 'status', status: 500 }, 5);
    emu.failFor({ kind: 'drop' }, 60_000);
    await client()
      .chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] })
      .catch(() => undefined);
    emu.reset();
    expect(emu.requests).toEqual([]);
    const res = await client().chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'ok' }],
    });
    expect(res.choices[0]?.message.content).toBe('You said: ok');
  });

  it('close() does not hang on a stalled request', async () => {
    const own = await startOpenAIEmulator({ apiKey: API_KEY });
    own.fail({ kind: 'stall', ms: 60_000 });
    const pending = failure(
      new OpenAI({ apiKey: API_KEY, baseURL: own.baseURL, maxRetries: 0 }).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    await sleep(50);
    const started = Date.now();
    await own.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await pending).toBeInstanceOf(OpenAI.APIConnectionError);
  });
});
