import OpenAI from 'openai';
import { Upstream } from '../domain/errors.js';
import { headerOf, retryAfterOf } from '../domain/retry-after.js';
import { createLeanFetch, type Fetch } from '../lean-fetch.js';
import type { ChatModel, ChatRequest, ChatResult, ChatTurn } from './chat-model.js';

export interface OpenAIChatModelOptions {
  apiKey: string;
  baseURL?: string | undefined;
  timeoutMs: number;
  /** Quick in-call retries (the SDK honours retry-after); longer outages are the job queue's retries. */
  maxRetries?: number;
  /** Observes every call (metrics). */
  onCall?: (outcome: { ms: number; status: number | 'network' | 'ok' }) => void;
  /** The SDK's transport (its `fetch` option); default: src/lean-fetch.ts. */
  fetch?: Fetch;
  /**
   * The most an answer may take (`max_completion_tokens`); default 4096, twenty times a long chat
   * reply with a booking. A model stuck repeating itself stops there (`finish_reason: length`)
   * instead of running to its own limit: a huge message for the customer, and its cost. A reasoning
   * model's hidden reasoning counts too: give it more. 0: not sent (a compatible server that refuses
   * the field).
   */
  maxOutputTokens?: number;
}

function toOpenAI(turn: ChatTurn): OpenAI.Chat.Completions.ChatCompletionMessageParam {
  switch (turn.role) {
    case 'assistant':
      return {
        role: 'assistant',
        content: turn.content,
        ...(turn.toolCalls?.length
          ? {
              tool_calls: turn.toolCalls.map((c) => ({
                id: c.id,
                type: 'function' as const,
                function: { name: c.name, arguments: c.arguments },
              })),
            }
          : {}),
      };
    case 'tool':
      return { role: 'tool', tool_call_id: turn.toolCallId, content: turn.content };
    default:
      return { role: turn.role, content: turn.content };
  }
}

/** Chat Completions through the official SDK; any OpenAI-compatible server works via baseURL. */
export class OpenAIChatModel implements ChatModel {
  readonly #client: OpenAI;
  readonly #onCall: OpenAIChatModelOptions['onCall'];
  readonly #maxOutputTokens: number;

  constructor(options: OpenAIChatModelOptions) {
    this.#client = new OpenAI({
      // The SDK refuses to start without a key; a keyless local server still gets a placeholder.
      apiKey: options.apiKey || 'not-set',
      baseURL: options.baseURL,
      timeout: options.timeoutMs,
      maxRetries: options.maxRetries ?? 2,
      fetch: options.fetch ?? createLeanFetch(),
    });
    this.#onCall = options.onCall;
    this.#maxOutputTokens = options.maxOutputTokens ?? 4096;
  }

  async complete(request: ChatRequest, signal?: AbortSignal): Promise<ChatResult> {
    const started = performance.now();
    try {
      const completion = await this.#client.chat.completions.create(
        {
          model: request.model,
          messages: request.messages.map(toOpenAI),
          ...(this.#maxOutputTokens > 0 ? { max_completion_tokens: this.#maxOutputTokens } : {}),
          ...(request.tools?.length
            ? {
                tools: request.tools.map((t) => ({
                  type: 'function' as const,
                  function: {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                    strict: true,
                  },
                })),
                // Strict schemas are not compatible with parallel tool calls.
                parallel_tool_calls: false,
              }
            : {}),
        },
        { signal },
      );
      this.#onCall?.({ ms: performance.now() - started, status: 'ok' });
      const choice = completion.choices[0];
      // An answer cut short is never shown, nor acted on (its text or an action's arguments end
      // mid-way): at the length limit the model is asked again (the job's retry; sampled anew, it
      // usually ends); withheld by the content filter, asking again will not help.
      if (choice?.finish_reason === 'length') {
        throw new Upstream('the model’s answer was cut off at its length limit', true);
      }
      if (choice?.finish_reason === 'content_filter') {
        throw new Upstream('the model’s answer was withheld by its content filter', false);
      }
      const message = choice?.message;
      return {
        // A refusal (structured outputs) is the model's answer to the customer, in its own field.
        text: message?.content ?? message?.refusal ?? null,
        toolCalls: (message?.tool_calls ?? [])
          .filter((c) => c.type === 'function')
          .map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
      };
    } catch (err) {
      throw this.#translate(err, performance.now() - started);
    }
  }

  #translate(err: unknown, ms: number): Error {
    if (err instanceof OpenAI.APIConnectionError) {
      // Includes APIConnectionTimeoutError.
      this.#onCall?.({ ms, status: 'network' });
      return new Upstream(`model service unreachable: ${err.message}`, true, { cause: err });
    }
    if (err instanceof OpenAI.APIError) {
      const status = err.status ?? 0;
      this.#onCall?.({ ms, status });
      // 408/409/429 and 5xx may pass; 400/401/403/404/422 will not until someone changes config, nor
      // will a 429 `insufficient_quota` (the account is out of credit) until someone pays.
      const retryable =
        (status === 408 || status === 409 || status === 429 || status >= 500) &&
        err.code !== 'insufficient_quota';
      // OpenAI sends both; a compatible server may send only the standard one (seconds or a date).
      const askedMs = headerOf(err.headers, 'retry-after-ms')?.trim();
      const asked = askedMs && /^\d+(\.\d+)?$/.test(askedMs) ? Number(askedMs) : undefined;
      return new Upstream(`model service answered ${status}: ${err.message}`, retryable, {
        cause: err,
        retryAfterMs: asked ?? retryAfterOf(err.headers),
      });
    }
    return err instanceof Error ? err : new Error(String(err));
  }
}
