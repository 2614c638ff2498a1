import { readdirSync, readFileSync } from 'node:fs';
/** Small statistics helpers for the benchmarks. */

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function summarize(values: number[]): {
  n: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
} {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    mean: sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : Number.NaN,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? Number.NaN,
  };
}

/**
 * Bookings per second the emulators' latencies allow, an upper bound: every worker slot held for a
 * booking's emulator time (the mean, as throughput = slots ÷ mean time in a slot). Owners add no
 * bound here: the owner's booking lease is per time range and the bench's bookings of one owner are
 * an hour apart, so they run at once. Bookings also hold slots during our own work, so the bound is
 * not reached exactly even by code that costs nothing.
 */
export function throughputLimit(o: { offeredPerS: number; slots: number; emulatorMeanMs: number }): number {
  const bySlots =
    Number.isFinite(o.emulatorMeanMs) && o.emulatorMeanMs > 0
      ? (o.slots * 1000) / o.emulatorMeanMs
      : Number.POSITIVE_INFINITY;
  return Math.min(o.offeredPerS, bySlots);
}

/**
 * The run replayed on code that costs nothing: each booking, in send order, takes the first worker slot
 * free at or after its send and holds it for exactly its own emulator time. Returns when the last one
 * is answered (ms, on the sends' clock). `bookings_per_s` divided over this instead of the real last
 * answer is what the run would have measured with no overhead at all, filling and draining included
 * (the first answers cannot come before one booking's emulator time, which a steady-state bound such as
 * throughputLimit leaves out).
 */
export function zeroOverheadEnd(
  bookings: Array<{ sentAt: number; emulatorMs: number }>,
  slots: number,
): number {
  if (slots < 1) throw new Error('zeroOverheadEnd: at least one slot');
  const free: number[] = []; // when each slot in use frees, as a min-heap
  let end = Number.NEGATIVE_INFINITY;
  for (const b of [...bookings].sort((x, y) => x.sentAt - y.sentAt)) {
    let start = b.sentAt;
    if (free.length >= slots) start = Math.max(start, popMin(free));
    const done = start + b.emulatorMs;
    pushHeap(free, done);
    end = Math.max(end, done);
  }
  return end;
}

function pushHeap(h: number[], v: number): void {
  h.push(v);
  for (let i = h.length - 1; i > 0; ) {
    const up = (i - 1) >> 1;
    if (h[up]! <= h[i]!) break;
    [h[up], h[i]] = [h[i]!, h[up]!];
    i = up;
  }
}

function popMin(h: number[]): number {
  const top = h[0]!;
  const last = h.pop()!;
  if (h.length > 0) {
    h[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]! < h[m]!) m = l;
      if (r < h.length && h[r]! < h[m]!) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
  return top;
}

export const round = (v: number, digits = 1) => (Number.isFinite(v) ? Number(v.toFixed(digits)) : v);

/** Samples the process's resident memory; `peak()` is the highest seen. */
export function rssSampler(intervalMs = 100): { peak(): number; stop(): void } {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, intervalMs);
  t.unref();
  return { peak: () => peak, stop: () => clearInterval(t) };
}

export function table(rows: Array<Record<string, string | number>>): string {
  if (rows.length === 0) return '';
  // Every column any row has, in first-seen order; a row without one shows '-'.
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (r: Record<string, string | number>, c: string) => (c in r ? String(r[c]) : '-');
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(width[i]!)).join(' | ')} |`;
  return [
    line(cols),
    line(width.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(cols.map((c) => cell(r, c)))),
  ].join('\n');
}

/** CPU seconds (user + system) used so far by process `pid`, from /proc (0 when unreadable). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (USER_HZ)
  } catch {
    return 0;
  }
}

/** CPU seconds used so far by each process whose command name is `comm` (e.g. the PostgreSQL server's), by pid. */
export function cpuSecondsByPid(comm: string): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === comm)
        byPid.set(Number(entry), cpuSeconds(Number(entry)));
    } catch {
      // gone meanwhile
    }
  }
  return byPid;
}

/**
 * CPU seconds the processes named `comm` used since `before` (cpuSecondsByPid), summed per pid: a process
 * that started since counts from zero; one that exited since is left out (its share is lost, never
 * subtracted: a backend that closed during the window used to make the total negative).
 */
export function cpuSecondsSince(comm: string, before: Map<number, number>): number {
  let total = 0;
  for (const [pid, seconds] of cpuSecondsByPid(comm)) total += Math.max(0, seconds - (before.get(pid) ?? 0));
  return total;
}

/** Share of one core each part used between `start()` and `stop()`, in percent (service: all its processes). */
export function cpuMeter(servicePids: number[]): { stop(): Record<string, number> } {
  const t0 = performance.now();
  const serviceCpu = () => servicePids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const service0 = serviceCpu();
  const bench0 = process.cpuUsage();
  const pg0 = cpuSecondsByPid('postgres');
  return {
    stop() {
      const wall = (performance.now() - t0) / 1000;
      const bench = process.cpuUsage(bench0);
      const pct = (s: number) => Math.round((100 * s) / wall);
      return {
        cpu_service_pct: pct(serviceCpu() - service0),
        cpu_bench_pct: pct((bench.user + bench.system) / 1e6),
        cpu_postgres_pct: pct(cpuSecondsSince('postgres', pg0)),
      };
    },
  };
}
