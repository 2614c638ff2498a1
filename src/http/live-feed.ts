import type { Database } from '../store/database.js';
import { MESSAGE_CHANNEL } from '../store/messages.js';

/**
 * Fans the database's message notifications out to the SSE connections of this process. One LISTEN
 * per process, whatever the number of open streams; the notification only says "conversation X has
 * news", and each stream then reads what it has not sent yet.
 */
export class LiveFeed {
  readonly #listeners = new Map<string, Set<() => void>>();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(private readonly database: Database) {}

  async start(): Promise<void> {
    this.#unlisten = await this.database.listen(MESSAGE_CHANNEL, (conversationId) => {
      for (const wake of this.#listeners.get(conversationId) ?? []) wake();
    });
  }

  subscribe(conversationId: string, wake: () => void): () => void {
    let set = this.#listeners.get(conversationId);
    if (!set) {
      set = new Set();
      this.#listeners.set(conversationId, set);
    }
    set.add(wake);
    return () => {
      set.delete(wake);
      if (set.size === 0) this.#listeners.delete(conversationId);
    };
  }

  /** Open streams of one conversation. */
  streamsOf(conversationId: string): number {
    return this.#listeners.get(conversationId)?.size ?? 0;
  }

  get openStreams(): number {
    let n = 0;
    for (const s of this.#listeners.values()) n += s.size;
    return n;
  }

  async stop(): Promise<void> {
    await this.#unlisten?.();
    this.#unlisten = undefined;
  }
}
