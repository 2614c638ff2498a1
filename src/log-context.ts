import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Fields every log line carries while a piece of work runs (message_id, conversation_id, agent_id):
 * set once where the work starts, added by the logger's mixin to every line below it, including
 * lines logged deep inside the Google and OpenAI adapters.
 */
const context = new AsyncLocalStorage<Record<string, string>>();

export function withLogContext<T>(fields: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  return context.run({ ...(context.getStore() ?? {}), ...fields }, fn);
}

export function addLogContext(fields: Record<string, string>): void {
  const store = context.getStore();
  if (store) Object.assign(store, fields);
}

export function logContext(): Record<string, string> {
  return context.getStore() ?? {};
}
