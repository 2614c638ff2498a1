/** What the worker needs from a language model; OpenAI is one implementation (openai-chat-model.ts). */

export type ChatTurn =
  | { role: 'system'; content: string }
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string | null; toolCalls?: ToolCall[] }
  | { role: 'tool'; toolCallId: string; content: string };

export interface ToolCall {
  id: string;
  name: string;
  /** Raw JSON text as the model produced it; parse and validate before use. */
  arguments: string;
}

export interface ToolDefinition {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export interface ChatRequest {
  model: string;
  messages: ChatTurn[];
  tools?: ToolDefinition[];
}

export interface ChatResult {
  text: string | null;
  toolCalls: ToolCall[];
}

export interface ChatModel {
  /** Throws `Upstream` (with `retryable`) when the model service fails. */
  complete(request: ChatRequest, signal?: AbortSignal): Promise<ChatResult>;
}
