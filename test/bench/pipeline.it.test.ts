/**
 * `npm run bench`'s pipeline, run small: a service process on the embedded database (and on the
 * server, as the bench runs with BENCH_DATABASE_URL), both emulators, a warm-up and a measured load. Checks what the figures rest on (every booking confirmed
 * and answered, one token refresh per owner, the warm-up booking for real), never a timing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attendeesInserted, runPipeline } from '../../bench/pipeline.js';
import { type BenchStack, startBenchStack } from '../../bench/setup.js';
import { throughputLimit, zeroOverheadEnd } from '../../bench/stats.js';

let stack: BenchStack;
const server = process.env.TEST_DB === 'server';

beforeAll(async () => {
  stack = await startBenchStack({
    databaseUrl: server ? process.env.TEST_DATABASE_URL : undefined,
    modelLatencyMs: 20,
    googleLatencyMs: 10,
    workerConcurrency: 10,
  });
}, 120_000);
afterAll(async () => {
  await stack?.close();
});

it('books every message of the load after a warm-up that booked too, one refresh per owner', async () => {
  const r = await runPipeline(stack, { rate: 5, durationS: 1, owners: 2, warmupS: 1, slots: 10 });
  expect(r).toMatchObject({
    offered_per_s: 5,
    bookings: 5,
    send_errors: 0,
    unanswered: 0,
    confirmed: 5,
    owners: 2,
    refreshes_per_owner: '1',
    // On the server, end-to-end ends when the reply's commit is seen (its NOTIFY reached the bench);
    // no other process can listen to the embedded database, so there it ends at the stored reply.
    e2e_end: server ? 'visible' : 'created_at',
  });
  expect('reply_visible' in r.stages).toBe(server);
  // Each measured booking sent one freeBusy read alongside its lease statement (read from the
  // service's /metrics, the warm-up's excluded).
  expect(r.busy_reads).toBe(5);
  expect(r.busy_reads_kept_pct).toBeGreaterThanOrEqual(0);
  expect(r.busy_reads_kept_pct).toBeLessThanOrEqual(100);
  // The measured jobs' time in a worker slot (the service's worker_slot_seconds, the warm-up's
  // excluded): at least the model's 20 ms and Google's two 10 ms calls each; 5 jobs over 10 slots for
  // the load's ~1 s keep them a few percent busy.
  expect(r.slot_ms_mean).toBeGreaterThanOrEqual(40);
  expect(r.slot_ms_mean).toBeLessThan(5000);
  expect(r.slot_busy_pct).toBeGreaterThan(0);
  expect(r.slot_busy_pct).toBeLessThan(100);
  // Each job's slot time contains its own emulator calls, so ours is what is left of it.
  expect(r.slot_overhead_ms).toBeGreaterThanOrEqual(0);
  expect(r.slot_overhead_ms).toBeLessThan(r.slot_ms_mean!);
  // The warm-up's bookings reached Google (runPipeline refuses to measure otherwise), and each
  // measured booking did, as its own customer (the request log was cleared after the warm-up).
  expect(new Set(attendeesInserted(stack, 'c'))).toEqual(new Set([0, 1, 2, 3, 4]));
  expect(attendeesInserted(stack, 'w')).toEqual([]);
  // Offered 5/s; 10 slots over ~40 ms of emulator time allow far more.
  expect(r.limit_per_s).toBe(5);
  // The zero-overhead replay of this run: 5 sends 200 ms apart, each answered ~40 ms after it, so
  // ~5 answers in ~0.84 s; the real run, paying our overhead too, reads no more than that.
  expect(r.zero_overhead_per_s).toBeGreaterThan(5);
  expect(r.zero_overhead_per_s).toBeLessThan(6.25);
  expect(r.bookings_per_s).toBeLessThanOrEqual(r.zero_overhead_per_s);
  // (Both rates are rounded to 0.1/s, the share is computed before rounding.)
  expect(Math.abs(r.of_zero_overhead_pct - (100 * r.bookings_per_s) / r.zero_overhead_per_s)).toBeLessThan(2);
  // Each booking's emulator time has its model call (20 ms), its freeBusy and its insert (10 ms
  // each): its freeBusy was matched to it (by the window it read), not lost (that would read ~30).
  expect(r.emulator_p50_ms).toBeGreaterThanOrEqual(38);
  // Every stage was measured (a stage with no samples would be NaN).
  expect(Object.keys(r.stages).length).toBeGreaterThan(0);
  for (const stage of Object.values(r.stages)) {
    expect(Number.isFinite(stage.p50)).toBe(true);
    expect(stage.p99).toBeGreaterThanOrEqual(stage.p50);
  }
  // The tokens had under a minute left: each owner's first booking waited for the refresh and read
  // Google with the token it issued.
  const { issued, firstReadWith } = tokensOfTheLoad();
  expect(issued.size).toBe(2);
  expect(firstReadWith).toHaveLength(2);
  for (const token of firstReadWith) expect(issued.has(token)).toBe(true);
}, 120_000);

it('with tokens good for two more minutes, each owner is still refreshed once, in the background: no booking waits', async () => {
  const r = await runPipeline(stack, {
    rate: 5,
    durationS: 1,
    owners: 2,
    warmupS: 1,
    slots: 10,
    tokenExpiryS: 120,
  });
  expect(r).toMatchObject({ bookings: 5, confirmed: 5, unanswered: 0, refreshes_per_owner: '1' });
  // Each owner's first booking read Google with the token it had, while its refresh ran (later ones
  // may carry the new token, stored by then).
  const { issued, firstReadWith } = tokensOfTheLoad();
  expect(issued.size).toBe(2);
  expect(firstReadWith).toHaveLength(2);
  for (const token of firstReadWith) expect(issued.has(token)).toBe(false);
}, 120_000);

/**
 * The measured load's refreshes (the tokens they issued), and the token each owner's first freeBusy
 * read of the load carried.
 */
function tokensOfTheLoad() {
  const requests = [...stack.google.requests].sort((a, b) => a.at - b.at);
  const first = new Map<string, string | undefined>();
  for (const q of requests)
    if (q.op === 'freebusy.query' && q.account && !first.has(q.account)) first.set(q.account, q.accessToken);
  return {
    issued: new Set(requests.filter((q) => q.op === 'token').map((q) => q.accessToken)),
    firstReadWith: [...first.values()],
  };
}

describe('throughputLimit', () => {
  const base = { offeredPerS: 200, slots: 100, emulatorMeanMs: 600 };
  it('is the lower of the offered load and the slots over the mean emulator time', () => {
    // 100 slots / 0.6 s = 166.7/s.
    expect(throughputLimit(base)).toBeCloseTo(166.67, 1);
    expect(throughputLimit({ ...base, slots: 60 })).toBeCloseTo(100, 5);
    expect(throughputLimit({ ...base, offeredPerS: 10 })).toBe(10);
  });
  it('has no bound from an unknown emulator time', () => {
    expect(throughputLimit({ ...base, emulatorMeanMs: 0 })).toBe(200);
    expect(throughputLimit({ ...base, emulatorMeanMs: Number.NaN })).toBe(200);
  });
});

describe('zeroOverheadEnd', () => {
  const at = (sentAt: number, emulatorMs = 100) => ({ sentAt, emulatorMs });
  it('answers each booking its emulator time after its send while slots are free', () => {
    expect(zeroOverheadEnd([at(0), at(10), at(20, 300)], 3)).toBe(320);
    // A slot freed before the next send is used again without a wait.
    expect(zeroOverheadEnd([at(0), at(150), at(300)], 1)).toBe(400);
  });
  it('queues bookings for the first slot to free, in send order', () => {
    // One slot, four bookings sent together: 4 x 100 ms back to back.
    expect(zeroOverheadEnd([at(0), at(0), at(0), at(0)], 1)).toBe(400);
    // Two slots: the third waits for the one that frees first (at 50), the fourth for the next (100).
    expect(zeroOverheadEnd([at(0, 100), at(0, 50), at(1, 100), at(2, 100)], 2)).toBe(200);
    // Send order, not list order.
    expect(zeroOverheadEnd([at(2, 100), at(0, 50), at(1, 100), at(0, 100)], 2)).toBe(200);
  });
  it('over a long overloaded run, approaches slots / emulator time', () => {
    // 200/s offered for 10 s, 100 slots of 600 ms: 166.7/s in the steady state. Booking 100k + j
    // (sent at 500k + 5j) starts when booking 100(k-1) + j frees its slot, at 600k + 5j: the last
    // (k 19, j 99) is answered at 11,895 + 600 ms, so the run reads 2000 / 12.495 s = 160.1/s.
    const sends = Array.from({ length: 2000 }, (_, i) => at(i * 5, 600));
    const end = zeroOverheadEnd(sends, 100);
    expect(end).toBe(12_495);
    expect(2000 / (end / 1000)).toBeCloseTo(160.1, 1);
    expect(zeroOverheadEnd([], 5)).toBe(Number.NEGATIVE_INFINITY);
  });
});
