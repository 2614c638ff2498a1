/**
 * In-process emulator of OpenAI's Chat Completions HTTP API (node:http only).
 *
 * Point the real SDK at it — `new OpenAI({ apiKey, baseURL: emu.baseURL })` — then script replies with
 * `emu.responder`, inject failures with `fail()` / `failFor()`, and assert on `emu.requests`.
 * Wire formats (response object, SSE chunks, error bodies and their messages) follow what
 * api.openai.com sends, so the SDK's parsing, retry and error-mapping code runs for real.
 *
 * No test-framework imports: the sandbox/demo mode reuses this file outside vitest.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay, setImmediate as nextTick } from 'node:timers/promises';

export interface OpenAIEmulatorOptions {
  port?: number;
  /** Defaults to 127.0.0.1. */
  host?: string;
  apiKey: string;
  latencyMs?: number;
}

export type ScriptedReply =
  /** `finishReason` scripts how the output ended ('content_filter': withheld after `content`). */
  | { content: string; finishReason?: 'stop' | 'length' | 'content_filter' }
  /** A refusal: `message.refusal` set, `content` null. */
  | { refusal: string }
  | {
      /** `arguments` objects are JSON.stringify'd; a string is sent verbatim (e.g. to script malformed JSON). */
      toolCalls: Array<{ name: string; arguments: unknown }>;
      content?: string | null;
    };

export type Responder = (req: ChatRequest) => ScriptedReply | Promise<ScriptedReply>;

export interface ChatRequest {
  model: string;
  messages: Array<{
    role: string;
    content: unknown;
    tool_calls?: unknown;
    tool_call_id?: string;
    name?: string;
  }>;
  tools?: unknown[];
  tool_choice?: unknown;
  stream?: boolean;
  [k: string]: unknown;
}

export type Fault =
  | {
      kind: 'status';
      status: 400 | 401 | 403 | 404 | 429 | 500 | 502 | 503;
      retryAfterSeconds?: number;
      /** Only the standard `retry-after` header, as a compatible server may send (OpenAI sends both). */
      retryAfterOnly?: boolean;
    }
  /** Delay, then answer normally (exercises client timeouts). */
  | { kind: 'stall'; ms: number }
  /** Destroy the socket without answering (network error). */
  | { kind: 'drop' }
  /** 429 `insufficient_quota`: the account is out of credit (retrying does not help). */
  | { kind: 'quota' };

/** The `error` object of an OpenAI error response body. */
interface ApiErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string | number | null;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.message);
  }
}

/** Assistant output after normalising a ScriptedReply. */
interface Completion {
  content: string | null;
  refusal: string | null;
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
  finishReason: 'stop' | 'length' | 'content_filter' | 'tool_calls';
}

const MODELS = ['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'gpt-4.1-mini', 'o4-mini'];
const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);
const TOOL_CHOICES = new Set(['none', 'auto', 'required']);
const FUNCTION_NAME = /^[a-zA-Z0-9_-]+$/;
const API_KEYS_URL = 'https://platform.openai.com/account/api-keys';

/** Plain text of a message `content` (a string or an array of content parts). */
export function messageText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((part): part is { type: 'text'; text: string } => isRecord(part) && part.type === 'text')
    .map((part) => part.text)
    .join('');
}

/** Default responder: `You said: <last user message text>`. */
export const echoResponder: Responder = (req) => {
  const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
  return { content: `You said: ${messageText(lastUser?.content)}` };
};

export async function startOpenAIEmulator(opts: OpenAIEmulatorOptions): Promise<OpenAIEmulator> {
  return OpenAIEmulator.start(opts);
}

export class OpenAIEmulator {
  readonly baseURL: string;
  responder: Responder = echoResponder;
  latencyMs: number;
  requests: ChatRequest[] = [];

  private readonly apiKey: string;
  private readonly fingerprint = `fp_${randomBytes(5).toString('hex')}`;
  private queued: Array<{ fault: Fault; remaining: number }> = [];
  private outage: { fault: Fault; until: number } | null = null;
  /** One controller per in-flight request: aborted when the client disconnects or on close(). */
  private readonly inflight = new Set<AbortController>();
  private closed = false;

  private constructor(
    private readonly server: Server,
    baseURL: string,
    opts: OpenAIEmulatorOptions,
  ) {
    this.baseURL = baseURL;
    this.apiKey = opts.apiKey;
    this.latencyMs = opts.latencyMs ?? 0;
  }

  /** Use startOpenAIEmulator(); the constructor needs a listening server to know its URL. */
  static async start(opts: OpenAIEmulatorOptions): Promise<OpenAIEmulator> {
    const host = opts.host ?? '127.0.0.1';
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    const urlHost = host.includes(':') ? `[${host}]` : host;
    const emulator = new OpenAIEmulator(server, `http://${urlHost}:${port}/v1`, opts);
    server.on('request', (req, res) => void emulator.handle(req, res));
    return emulator;
  }

  /** The next `times` chat-completion requests get `fault` (each SDK retry consumes one). */
  fail(fault: Fault, times = 1): void {
    if (!Number.isInteger(times) || times < 1)
      throw new RangeError(`times must be a positive integer: ${times}`);
    this.queued.push({ fault, remaining: times });
  }

  /** Every chat-completion request arriving in the next `ms` milliseconds gets `fault` (an outage). */
  failFor(fault: Fault, ms: number): void {
    this.outage = { fault, until: Date.now() + ms };
  }

  reset(): void {
    this.requests = [];
    this.queued = [];
    this.outage = null;
    this.responder = echoResponder;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Stalled requests would otherwise keep the server (and the test run) alive.
    for (const ctl of this.inflight) ctl.abort();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---------------------------------------------------------------- request handling

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const ctl = new AbortController();
    this.inflight.add(ctl);
    res.on('close', () => {
      ctl.abort();
      this.inflight.delete(ctl);
    });
    const requestId = `req_${randomBytes(16).toString('hex')}`;
    const started = Date.now();
    const headers = () => ({
      'x-request-id': requestId,
      'openai-version': '2020-10-01',
      'openai-processing-ms': String(Date.now() - started),
    });
    try {
      await this.route(req, res, ctl.signal, headers);
    } catch (err) {
      // The client went away (timeout, abort) or the emulator is closing: nobody to answer.
      if (ctl.signal.aborted || res.headersSent || res.destroyed) return;
      const error =
        err instanceof HttpError ? err : new HttpError(500, serverError(requestId, 'server_error'));
      sendJson(res, error.status, { error: error.body }, { ...headers(), ...error.headers });
    }
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    signal: AbortSignal,
    headers: () => Record<string, string>,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://emulator').pathname.replace(/\/+$/, '');

    if (method === 'POST' && path === '/v1/chat/completions') {
      return this.chatCompletions(req, res, signal, headers);
    }
    if (method === 'GET' && (path === '/v1/models' || path.startsWith('/v1/models/'))) {
      await this.wait(this.latencyMs, signal);
      this.authenticate(req);
      const id = path === '/v1/models' ? null : decodeURIComponent(path.slice('/v1/models/'.length));
      if (id === null) {
        sendJson(res, 200, { object: 'list', data: MODELS.map(modelObject) }, headers());
      } else if (MODELS.includes(id)) {
        sendJson(res, 200, modelObject(id), headers());
      } else {
        throw new HttpError(404, modelNotFound(id));
      }
      return;
    }
    throw new HttpError(404, invalidRequest(`Invalid URL (${method} ${path})`, null));
  }

  private async chatCompletions(
    req: IncomingMessage,
    res: ServerResponse,
    signal: AbortSignal,
    headers: () => Record<string, string>,
  ): Promise<void> {
    const raw = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      body = undefined;
    }
    if (isRecord(body)) this.requests.push(body as ChatRequest);

    // A fault belongs to the request at arrival time, before latency/auth/validation.
    const fault = this.takeFault();
    await this.wait(this.latencyMs + (fault?.kind === 'stall' ? fault.ms : 0), signal);
    if (fault?.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'status') {
      const model = isRecord(body) && typeof body.model === 'string' ? body.model : 'gpt-4o';
      throw statusFault(fault, model, headers()['x-request-id'], bearerToken(req));
    }
    if (fault?.kind === 'quota') {
      throw new HttpError(429, {
        message:
          'You exceeded your current quota, please check your plan and billing details. For more ' +
          'information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.',
        type: 'insufficient_quota',
        param: null,
        code: 'insufficient_quota',
      });
    }

    this.authenticate(req);
    if (!isRecord(body)) throw new HttpError(400, jsonParseError());
    const problem = validateChatRequest(body);
    if (problem) throw new HttpError(400, problem);

    const request = body as ChatRequest;
    let completion: Completion;
    try {
      completion = withinTokenLimit(normalizeReply(await this.responder(request)), request);
    } catch {
      throw new HttpError(500, serverError(headers()['x-request-id'], 'server_error'));
    }
    if (signal.aborted) return;

    const id = randomId('chatcmpl-', 29);
    const created = Math.floor(Date.now() / 1000);
    const usage = usageFor(request, completion);
    if (request.stream === true) {
      await this.writeStream(res, signal, headers(), {
        id,
        created,
        model: request.model,
        request,
        completion,
        usage,
      });
      return;
    }
    const message: Record<string, unknown> = {
      role: 'assistant',
      content: completion.content,
      refusal: completion.refusal,
      annotations: [],
    };
    if (completion.toolCalls.length > 0) {
      message.tool_calls = completion.toolCalls.map((call) => ({
        id: call.id,
        type: 'function',
        function: { name: call.name, arguments: call.arguments },
      }));
    }
    sendJson(
      res,
      200,
      {
        id,
        object: 'chat.completion',
        created,
        model: request.model,
        choices: [
          {
            index: 0,
            message,
            logprobs: null,
            finish_reason: completion.finishReason,
          },
        ],
        usage,
        service_tier: 'default',
        system_fingerprint: this.fingerprint,
      },
      headers(),
    );
  }

  /** Server-sent events exactly as OpenAI streams them: role chunk, deltas, finish chunk, usage chunk, [DONE]. */
  private async writeStream(
    res: ServerResponse,
    signal: AbortSignal,
    headers: Record<string, string>,
    args: {
      id: string;
      created: number;
      model: string;
      request: ChatRequest;
      completion: Completion;
      usage: ReturnType<typeof usageFor>;
    },
  ): Promise<void> {
    const { completion, request } = args;
    const includeUsage = isRecord(request.stream_options) && request.stream_options.include_usage === true;
    const base = {
      id: args.id,
      object: 'chat.completion.chunk',
      created: args.created,
      model: args.model,
      service_tier: 'default',
      system_fingerprint: this.fingerprint,
    };
    // With include_usage every chunk carries `usage: null` except the dedicated final usage chunk.
    const chunk = (delta: Record<string, unknown>, finishReason: string | null = null) => ({
      ...base,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...(includeUsage ? { usage: null } : {}),
    });

    const events: unknown[] = [];
    const hasText = completion.content !== null;
    if (hasText || completion.toolCalls.length === 0) {
      events.push(chunk({ role: 'assistant', content: '', refusal: null }));
      for (const piece of splitWords(completion.content ?? '')) events.push(chunk({ content: piece }));
    }
    completion.toolCalls.forEach((call, index) => {
      const header = { index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } };
      const opening = index === 0 && !hasText;
      events.push(
        chunk(
          opening
            ? { role: 'assistant', content: null, tool_calls: [header], refusal: null }
            : { tool_calls: [header] },
        ),
      );
      for (const fragment of splitEvery(call.arguments, 8)) {
        events.push(chunk({ tool_calls: [{ index, function: { arguments: fragment } }] }));
      }
    });
    events.push(chunk({}, completion.finishReason));
    if (includeUsage) events.push({ ...base, choices: [], usage: args.usage });

    res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
    });
    for (const event of events) {
      if (signal.aborted) return;
      res.write(`data: ${JSON.stringify(event)}\n\n`);
      // Yield between events so they reach the client as separate network chunks.
      await nextTick();
    }
    if (!signal.aborted) res.end('data: [DONE]\n\n');
  }

  private takeFault(): Fault | null {
    if (this.outage) {
      if (Date.now() < this.outage.until) return this.outage.fault;
      this.outage = null;
    }
    const head = this.queued[0];
    if (!head) return null;
    head.remaining -= 1;
    if (head.remaining <= 0) this.queued.shift();
    return head.fault;
  }

  private authenticate(req: IncomingMessage): void {
    const token = bearerToken(req);
    if (!token) throw new HttpError(401, missingApiKey());
    if (token !== this.apiKey) throw new HttpError(401, incorrectApiKey(token));
  }

  private async wait(ms: number, signal: AbortSignal): Promise<void> {
    if (ms > 0) await delay(ms, undefined, { signal });
  }
}

// ---------------------------------------------------------------- validation

/** Mirrors the 400s OpenAI returns for malformed chat requests; returns the first problem found. */
function validateChatRequest(body: Record<string, unknown>): ApiErrorBody | null {
  if (typeof body.model !== 'string' || body.model === '') {
    return invalidRequest('you must provide a model parameter', null);
  }
  const { messages } = body;
  if (messages === undefined) return missingParam('messages');
  if (!Array.isArray(messages)) return invalidType('messages', 'an array of objects', messages);
  if (messages.length === 0) {
    return invalidRequest(
      "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
      'messages',
      'empty_array',
    );
  }
  for (const [i, message] of messages.entries()) {
    const problem = validateMessage(message, i);
    if (problem) return problem;
  }
  const pairing = validateToolPairing(messages as ChatRequest['messages']);
  if (pairing) return pairing;

  const toolNames: string[] = [];
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) return invalidType('tools', 'an array of objects', body.tools);
    for (const [i, tool] of body.tools.entries()) {
      const problem = validateTool(tool, i);
      if (problem) return problem;
      toolNames.push(String((tool as { function: { name: string } }).function.name));
    }
  }

  const maxTokens = body.max_completion_tokens;
  if (maxTokens !== undefined && maxTokens !== null) {
    if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens)) {
      return invalidType('max_completion_tokens', 'an integer', maxTokens);
    }
    if (maxTokens < 1) {
      return invalidRequest(
        `Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got ${maxTokens} instead.`,
        'max_completion_tokens',
        'integer_below_min_value',
      );
    }
  }

  if (body.tool_choice !== undefined && body.tool_choice !== null) {
    if (toolNames.length === 0) {
      return invalidRequest(
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
        'tool_choice',
      );
    }
    const choice = body.tool_choice;
    if (typeof choice === 'string' && !TOOL_CHOICES.has(choice)) {
      return invalidValue(choice, "'none', 'auto', and 'required'", 'tool_choice');
    }
    if (isRecord(choice) && isRecord(choice.function) && typeof choice.function.name === 'string') {
      if (!toolNames.includes(choice.function.name)) {
        return invalidRequest(
          `Invalid value for 'tool_choice': function '${choice.function.name}' not found in 'tools'.`,
          'tool_choice',
        );
      }
    }
  }

  if (body.stream_options != null && body.stream !== true) {
    return invalidRequest(
      "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
      'stream_options',
    );
  }
  return null;
}

function validateMessage(message: unknown, i: number): ApiErrorBody | null {
  const at = `messages[${i}]`;
  if (!isRecord(message)) return invalidType(at, 'an object', message);
  const { role } = message;
  if (role === undefined) return missingParam(`${at}.role`);
  if (typeof role !== 'string' || !ROLES.has(role)) {
    return invalidValue(String(role), "'system', 'developer', 'user', 'assistant', and 'tool'", `${at}.role`);
  }
  const hasToolCalls = Array.isArray(message.tool_calls) && message.tool_calls.length > 0;
  const { content } = message;
  if (content === undefined || content === null) {
    // Only an assistant turn that calls tools may omit its text.
    if (!(role === 'assistant' && hasToolCalls)) return missingParam(`${at}.content`);
  } else if (typeof content !== 'string' && !Array.isArray(content)) {
    return invalidType(`${at}.content`, 'one of a string or array of objects', content);
  }
  if (role === 'tool' && typeof message.tool_call_id !== 'string') return missingParam(`${at}.tool_call_id`);
  if (message.tool_calls !== undefined && message.tool_calls !== null) {
    if (role !== 'assistant') {
      return invalidRequest(`Unrecognized request argument supplied: ${at}.tool_calls`, `${at}.tool_calls`);
    }
    if (!Array.isArray(message.tool_calls)) {
      return invalidType(`${at}.tool_calls`, 'an array of objects', message.tool_calls);
    }
    for (const [j, call] of message.tool_calls.entries()) {
      const callAt = `${at}.tool_calls[${j}]`;
      if (!isRecord(call)) return invalidType(callAt, 'an object', call);
      if (typeof call.id !== 'string') return missingParam(`${callAt}.id`);
      if (call.type !== 'function') return missingParam(`${callAt}.type`);
      if (!isRecord(call.function)) return missingParam(`${callAt}.function`);
      if (typeof call.function.name !== 'string') return missingParam(`${callAt}.function.name`);
      // A common client bug: sending parsed arguments back instead of the original JSON string.
      if (typeof call.function.arguments !== 'string') {
        return invalidType(`${callAt}.function.arguments`, 'a string', call.function.arguments);
      }
    }
  }
  return null;
}

/** Tool messages must directly follow the assistant message whose tool_calls they answer, and answer all of them. */
function validateToolPairing(messages: ChatRequest['messages']): ApiErrorBody | null {
  let open: { ids: string[]; answered: Set<string> } | null = null;
  const unanswered = (at: number): ApiErrorBody | null => {
    const missing = open?.ids.filter((id) => !open?.answered.has(id)) ?? [];
    if (missing.length === 0) return null;
    return invalidRequest(
      "An assistant message with 'tool_calls' must be followed by tool messages responding to each " +
        `'tool_call_id'. The following tool_call_ids did not have response messages: ${missing.join(', ')}`,
      `messages.[${at}].role`,
    );
  };
  for (const [i, message] of messages.entries()) {
    if (message.role === 'tool') {
      if (!open) {
        return invalidRequest(
          "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
          `messages.[${i}].role`,
        );
      }
      const id = String(message.tool_call_id);
      if (!open.ids.includes(id)) {
        return invalidRequest(
          `Invalid parameter: 'tool_call_id' of '${id}' not found in 'tool_calls' of previous message.`,
          `messages.[${i}].tool_call_id`,
        );
      }
      open.answered.add(id);
      continue;
    }
    const problem = unanswered(i);
    if (problem) return problem;
    open = null;
    if (message.role === 'assistant' && Array.isArray(message.tool_calls) && message.tool_calls.length > 0) {
      open = { ids: message.tool_calls.map((call: { id: string }) => call.id), answered: new Set() };
    }
  }
  return unanswered(messages.length);
}

function validateTool(tool: unknown, i: number): ApiErrorBody | null {
  const at = `tools[${i}]`;
  if (!isRecord(tool)) return invalidType(at, 'an object', tool);
  if (tool.type === undefined) return missingParam(`${at}.type`);
  if (tool.type !== 'function') return invalidValue(String(tool.type), "'function'", `${at}.type`);
  const fn = tool.function;
  if (!isRecord(fn)) return missingParam(`${at}.function`);
  if (typeof fn.name !== 'string') return missingParam(`${at}.function.name`);
  if (!FUNCTION_NAME.test(fn.name)) {
    return invalidRequest(
      `Invalid '${at}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.`,
      `${at}.function.name`,
      'invalid_value',
    );
  }
  if (fn.name.length > 64) {
    return invalidRequest(
      `Invalid '${at}.function.name': string too long. Expected a string with maximum length 64, but got a string with length ${fn.name.length} instead.`,
      `${at}.function.name`,
      'string_above_max_length',
    );
  }
  if (fn.parameters !== undefined && !isRecord(fn.parameters)) {
    return invalidType(`${at}.function.parameters`, 'an object', fn.parameters);
  }
  if (fn.strict === true && fn.parameters !== undefined) {
    const problem = strictSchemaProblem(fn.parameters, []);
    if (problem) {
      return invalidRequest(
        `Invalid schema for function '${fn.name}': In context=${pythonTuple(problem.context)}, ${problem.message}`,
        `${at}.function.parameters`,
        'invalid_function_parameters',
      );
    }
  }
  return null;
}

/**
 * Structured Outputs rules for `strict: true`: every object schema (at any depth) needs
 * `additionalProperties: false` and must list every property in `required`.
 */
function strictSchemaProblem(
  schema: unknown,
  context: string[],
): { context: string[]; message: string } | null {
  if (!isRecord(schema)) return null;
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  if (types.includes('object') || isRecord(schema.properties)) {
    if (schema.additionalProperties !== false) {
      return { context, message: "'additionalProperties' is required to be supplied and to be false." };
    }
    const properties = isRecord(schema.properties) ? Object.keys(schema.properties) : [];
    const required = Array.isArray(schema.required) ? schema.required : [];
    const missing = properties.find((key) => !required.includes(key));
    if (missing !== undefined) {
      return {
        context,
        message: `'required' is required to be supplied and to be an array including every key in properties. Missing '${missing}'.`,
      };
    }
    const extra = required.find((key) => !properties.includes(String(key)));
    if (extra !== undefined) {
      return {
        context,
        message: `'required' must be an array that includes every key in \`properties\`. Extra required key '${String(extra)}' supplied.`,
      };
    }
  }
  const children: Array<[unknown, string[]]> = [];
  if (isRecord(schema.properties)) {
    for (const [key, sub] of Object.entries(schema.properties))
      children.push([sub, [...context, 'properties', key]]);
  }
  if (schema.items !== undefined) children.push([schema.items, [...context, 'items']]);
  for (const keyword of ['anyOf', 'allOf', 'oneOf'] as const) {
    const list = schema[keyword];
    if (!Array.isArray(list)) continue;
    for (const [n, sub] of list.entries()) children.push([sub, [...context, keyword, String(n)]]);
  }
  for (const keyword of ['$defs', 'definitions'] as const) {
    const defs = schema[keyword];
    if (isRecord(defs))
      for (const [key, sub] of Object.entries(defs)) children.push([sub, [...context, keyword, key]]);
  }
  for (const [sub, path] of children) {
    const problem = strictSchemaProblem(sub, path);
    if (problem) return problem;
  }
  return null;
}

/** OpenAI prints schema contexts as Python tuples: (), ('items',), ('properties', 'a'). */
function pythonTuple(parts: string[]): string {
  if (parts.length === 0) return '()';
  if (parts.length === 1) return `('${parts[0]}',)`;
  return `(${parts.map((p) => `'${p}'`).join(', ')})`;
}

// ---------------------------------------------------------------- error bodies

function invalidRequest(message: string, param: string | null, code: string | null = null): ApiErrorBody {
  return { message, type: 'invalid_request_error', param, code };
}

function missingParam(param: string): ApiErrorBody {
  return invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
}

function invalidType(param: string, expected: string, got: unknown): ApiErrorBody {
  return invalidRequest(
    `Invalid type for '${param}': expected ${expected}, but got ${describeType(got)} instead.`,
    param,
    'invalid_type',
  );
}

function invalidValue(value: string, supported: string, param: string): ApiErrorBody {
  return invalidRequest(
    `Invalid value: '${value}'. Supported values are: ${supported}.`,
    param,
    'invalid_value',
  );
}

function jsonParseError(): ApiErrorBody {
  return invalidRequest(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP " +
      'library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you ' +
      'have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)',
    null,
  );
}

function missingApiKey(): ApiErrorBody {
  return invalidRequest(
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer " +
      "auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're " +
      'accessing the API from your browser and are prompted for a username and password. You can obtain an ' +
      `API key from ${API_KEYS_URL}.`,
    null,
  );
}

function incorrectApiKey(token: string): ApiErrorBody {
  return invalidRequest(
    `Incorrect API key provided: ${maskKey(token)}. You can find your API key at ${API_KEYS_URL}.`,
    null,
    'invalid_api_key',
  );
}

/** OpenAI shows the first 8 and last 4 characters of a key, starring the rest; short keys appear verbatim. */
export function maskKey(key: string): string {
  if (key.length <= 12) return key;
  return `${key.slice(0, 8)}${'*'.repeat(key.length - 12)}${key.slice(-4)}`;
}

function modelNotFound(model: string): ApiErrorBody {
  return invalidRequest(
    `The model \`${model}\` does not exist or you do not have access to it.`,
    null,
    'model_not_found',
  );
}

function serverError(requestId: string | undefined, type: string): ApiErrorBody {
  return {
    message:
      'The server had an error while processing your request. Sorry about that! You can retry your request, ' +
      'or contact us through our help center at help.openai.com if the error persists. ' +
      `(Please include the request ID ${requestId ?? ''} in your message.)`,
    type,
    param: null,
    code: null,
  };
}

function statusFault(
  fault: Extract<Fault, { kind: 'status' }>,
  model: string,
  requestId: string | undefined,
  token: string | null,
): HttpError {
  const seconds = fault.retryAfterSeconds;
  const headers: Record<string, string> = {};
  if (seconds !== undefined) {
    // OpenAI sends whole seconds in retry-after; the SDK prefers the finer retry-after-ms when present.
    headers['retry-after'] = String(Math.ceil(seconds));
    if (!fault.retryAfterOnly) headers['retry-after-ms'] = String(Math.round(seconds * 1000));
  }
  return new HttpError(fault.status, faultBody(fault.status, model, requestId, token, headers), headers);
}

function faultBody(
  status: Extract<Fault, { kind: 'status' }>['status'],
  model: string,
  requestId: string | undefined,
  token: string | null,
  headers: Record<string, string>,
): ApiErrorBody {
  switch (status) {
    case 400:
      return invalidRequest('Bad request (fault injected by the OpenAI emulator).', null);
    case 401:
      return token ? incorrectApiKey(token) : missingApiKey();
    case 403:
      return {
        message: 'Country, region, or territory not supported',
        type: 'request_forbidden',
        param: null,
        code: 'unsupported_country_region_territory',
      };
    case 404:
      return modelNotFound(model);
    case 429: {
      const seconds = Number(headers['retry-after-ms'] ?? 120) / 1000;
      const shown = seconds < 1 ? `${Math.round(seconds * 1000)}ms` : `${seconds}s`;
      headers['x-ratelimit-limit-requests'] = '500';
      headers['x-ratelimit-remaining-requests'] = '0';
      headers['x-ratelimit-reset-requests'] = shown;
      return {
        message:
          `Rate limit reached for ${model} in organization org-emulator on requests per min (RPM): ` +
          `Limit 500, Used 500, Requested 1. Please try again in ${shown}. ` +
          'Visit https://platform.openai.com/account/rate-limits to learn more.',
        type: 'requests',
        param: null,
        code: 'rate_limit_exceeded',
      };
    }
    case 500:
      return serverError(requestId, 'server_error');
    case 502:
      // Cloudflare's JSON body for a bad gateway in front of api.openai.com.
      return { message: 'Bad gateway.', type: 'cf_bad_gateway', param: null, code: 502 };
    case 503:
      return {
        message:
          'That model is currently overloaded with other requests. You can retry your request, or contact us ' +
          'through our help center at help.openai.com if the error persists. ' +
          `(Please include the request ID ${requestId ?? ''} in your message.)`,
        type: 'server_error',
        param: null,
        code: null,
      };
  }
}

// ---------------------------------------------------------------- helpers

function normalizeReply(reply: ScriptedReply): Completion {
  if (
    isRecord(reply) &&
    'toolCalls' in reply &&
    Array.isArray(reply.toolCalls) &&
    reply.toolCalls.length > 0
  ) {
    return {
      content: typeof reply.content === 'string' ? reply.content : null,
      refusal: null,
      finishReason: 'tool_calls',
      toolCalls: reply.toolCalls.map((call) => {
        if (typeof call.name !== 'string' || call.name === '') throw new Error('tool call without a name');
        return {
          id: randomId('call_', 24),
          name: call.name,
          arguments:
            typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments ?? {}),
        };
      }),
    };
  }
  if (isRecord(reply) && 'content' in reply && typeof reply.content === 'string') {
    const finishReason = 'finishReason' in reply && reply.finishReason ? reply.finishReason : 'stop';
    return { content: reply.content, refusal: null, toolCalls: [], finishReason };
  }
  if (isRecord(reply) && 'refusal' in reply && typeof reply.refusal === 'string') {
    return { content: null, refusal: reply.refusal, toolCalls: [], finishReason: 'stop' };
  }
  throw new Error(`responder returned an invalid ScriptedReply: ${JSON.stringify(reply)}`);
}

/**
 * The output as OpenAI returns it under `max_completion_tokens`: generation stops at the limit
 * (≈4 characters per token, as usageFor counts), mid-text or mid-arguments, with `finish_reason`
 * `length`.
 */
function withinTokenLimit(completion: Completion, request: ChatRequest): Completion {
  const limit = request.max_completion_tokens;
  if (typeof limit !== 'number') return completion;
  let budget = limit * 4;
  const cut = (text: string) => {
    const kept = text.slice(0, Math.max(0, budget));
    budget -= kept.length;
    return kept;
  };
  const text = completion.content ?? '';
  const whole =
    text.length + completion.toolCalls.reduce((n, c) => n + c.name.length + c.arguments.length, 0);
  if (whole <= budget) return completion;
  const content = completion.content === null ? null : cut(text);
  const toolCalls = completion.toolCalls
    .map((call) => ({ ...call, arguments: budget > 0 ? cut(call.arguments) : '' }))
    .filter((call, i) => i === 0 || call.arguments !== '');
  return { ...completion, content, toolCalls, finishReason: 'length' };
}

/** Rough token counts (≈4 characters per token) — enough for code that logs or budgets usage. */
function usageFor(request: ChatRequest, completion: Completion) {
  const promptText = JSON.stringify(request.messages) + (request.tools ? JSON.stringify(request.tools) : '');
  const completionText =
    (completion.content ?? '') + completion.toolCalls.map((call) => call.name + call.arguments).join('');
  const prompt_tokens = Math.max(1, Math.ceil(promptText.length / 4));
  const completion_tokens = Math.max(1, Math.ceil(completionText.length / 4));
  return {
    prompt_tokens,
    completion_tokens,
    total_tokens: prompt_tokens + completion_tokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function modelObject(id: string) {
  return { id, object: 'model', created: 1_715_367_049, owned_by: 'system' };
}

function bearerToken(req: IncomingMessage): string | null {
  const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  return match?.[1]?.trim() || null;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** Words with their trailing whitespace, so the pieces concatenate back to the original text. */
function splitWords(text: string): string[] {
  return text.match(/\S+\s*|\s+/g) ?? [];
}

function splitEvery(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomId(prefix: string, length: number): string {
  let id = prefix;
  for (const byte of randomBytes(length)) id += ALPHANUMERIC.charAt(byte % ALPHANUMERIC.length);
  return id;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return Number.isInteger(value) ? 'an integer' : 'a decimal';
    case 'boolean':
      return 'a boolean';
    case 'object':
      return 'an object';
    default:
      return typeof value;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
