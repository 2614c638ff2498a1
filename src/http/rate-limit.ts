/**
 * A fixed-window counter per key, in this process's memory. Used for the per-conversation limit
 * (the per-IP limit is @fastify/rate-limit). Several API processes each count separately, so the
 * effective limit is N times the setting; see README "Scaling".
 */
export class WindowCounter {
  readonly #hits = new Map<string, { count: number; resetAt: number }>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts a hit; returns 0 when allowed, else the seconds until the window resets. */
  hit(key: string): number {
    const t = this.now();
    let entry = this.#hits.get(key);
    if (!entry || entry.resetAt <= t) {
      entry = { count: 0, resetAt: t + this.windowMs };
      this.#hits.set(key, entry);
      if (this.#hits.size > 100_000) this.#sweep(t);
    }
    entry.count++;
    return entry.count > this.max ? Math.max(1, Math.ceil((entry.resetAt - t) / 1000)) : 0;
  }

  /** Takes back a hit that turned out not to count (a request refused after it was counted). */
  refund(key: string): void {
    const entry = this.#hits.get(key);
    if (!entry) return;
    entry.count--;
    if (entry.count <= 0) this.#hits.delete(key);
  }

  #sweep(t: number): void {
    for (const [k, v] of this.#hits) if (v.resetAt <= t) this.#hits.delete(k);
  }
}
