import type { CalendarConnection } from './calendar-connections.js';
import type { Database } from './database.js';

/** Channel the google_calendar_tokens trigger (migration 006) notifies with the changed user_id. */
export const CONNECTION_CHANNEL = 'agent_meetings_connections';

/**
 * Read-through cache of calendar connections for the owner API's `GET /api/google-tokens/:user_id`,
 * which dashboards poll. Without it every poll costs a database round trip; with it a poll is served
 * from memory (measured in bench/README.md).
 *
 * Coherence across processes: a trigger on google_calendar_tokens NOTIFYs the user_id on every
 * insert, update and delete, whoever writes (this API, a worker refreshing a token in another
 * process, an operator's SQL). Each process evicts on the notification. The remaining window is the
 * notification's delivery after commit (milliseconds); writes made through this process also evict
 * at once (`evict`), so a caller reads its own writes.
 *
 * A read racing a change must not put the old row back after the eviction: a read fills the cache
 * only if no notification for that owner (and no loss of the LISTEN connection) arrived while it ran.
 * The check is per owner, not global: with many owners, some token is refreshed every few seconds,
 * and a global check would keep the cache from ever filling under load (measured in bench/README.md).
 * Concurrent misses for one owner share one database read; a read started before an eviction is
 * never shared with a caller that arrives after it (read-your-writes). While the LISTEN connection
 * is down (server restart) notifications can be lost, so the cache is emptied and bypassed until it
 * is back. As a backstop, a row older than `maxAgeMs` is read again.
 *
 * The worker's token provider reads a fresh token through it too; every refresh decision re-reads the
 * row from the database.
 */
export class ConnectionCache {
  readonly #entries = new Map<string, Entry>();
  /** Reads in flight, one per owner; an eviction marks its read stale and removes it from here. */
  readonly #loading = new Map<string, Load>();
  #live = false;
  #unlisten: (() => Promise<void>) | undefined;

  readonly #maxEntries: number;
  readonly #maxAgeMs: number;
  readonly #onLookup: ((result: 'hit' | 'miss') => void) | undefined;

  constructor(
    private readonly database: Database,
    private readonly load: (userId: string) => Promise<CalendarConnection | undefined>,
    options: {
      /** Owners kept at most (the oldest is dropped first); default 10,000. */
      maxEntries?: number;
      /**
       * A row is read again once it is this old (default 60 s): the bound on staleness should
       * notifications stop arriving while the LISTEN connection looks up (a pooler in transaction
       * mode delivers none, a silently dropped socket neither), e.g. a disconnect made through
       * another process.
       */
      maxAgeMs?: number;
      /** Each lookup: served from memory or a read already in flight (`hit`), or a database read (`miss`). */
      onLookup?: (result: 'hit' | 'miss') => void;
    } = {},
  ) {
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#maxAgeMs = options.maxAgeMs ?? 60_000;
    this.#onLookup = options.onLookup;
  }

  async start(): Promise<void> {
    this.#unlisten = await this.database.listen(
      CONNECTION_CHANNEL,
      (userId) => this.evict(userId),
      (listening) => {
        this.#forgetAll();
        this.#live = listening;
      },
    );
  }

  async stop(): Promise<void> {
    this.#live = false;
    this.#forgetAll();
    await this.#unlisten?.();
  }

  async get(userId: string): Promise<CalendarConnection | undefined> {
    const hit = this.#entries.get(userId);
    if (hit !== undefined) {
      if (performance.now() < hit.until) {
        this.#onLookup?.('hit');
        return hit.row ?? undefined;
      }
      this.#entries.delete(userId);
    }
    const shared = this.#loading.get(userId);
    if (shared) {
      this.#onLookup?.('hit');
      return shared.row;
    }
    this.#onLookup?.('miss');
    const load: Load = { stale: false, row: this.load(userId) };
    this.#loading.set(userId, load);
    try {
      const row = await load.row;
      if (this.#live && !load.stale) this.#remember(userId, row ?? null);
      return row;
    } finally {
      if (this.#loading.get(userId) === load) this.#loading.delete(userId);
    }
  }

  /** Forget one owner's row (after a write through this process, or on its notification). */
  evict(userId: string): void {
    this.#entries.delete(userId);
    const load = this.#loading.get(userId);
    if (load) {
      load.stale = true;
      this.#loading.delete(userId);
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  #remember(userId: string, row: CalendarConnection | null): void {
    if (this.#entries.size >= this.#maxEntries) {
      // Map iterates in insertion order: drop the oldest entry.
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(userId, { row, until: performance.now() + this.#maxAgeMs });
  }

  #forgetAll(): void {
    this.#entries.clear();
    for (const load of this.#loading.values()) load.stale = true;
    this.#loading.clear();
  }
}

interface Entry {
  row: CalendarConnection | null;
  /** performance.now() past which the row is read again. */
  until: number;
}

interface Load {
  /** A notification for this owner (or a lost LISTEN connection) arrived while the read ran. */
  stale: boolean;
  row: Promise<CalendarConnection | undefined>;
}
