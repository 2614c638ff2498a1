/**
 * `npm run bench`'s pipeline, run small: a service process on the embedded database (and on the
 * server, as the bench runs with BENCH_DATABASE_URL), both emulators, a warm-up and a measured load. Checks what the figures rest on (every booking confirmed
 * and answered, one token refresh per owner, the warm-up booking for real), never a timing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attendeesInserted, runPipeline } from '../../bench/pipeline.js';
import { type BenchStack, startBenchStack } from '../../bench/setup.js';
import { throughputLimit } from '../../bench/stats.js';

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
  // The warm-up's bookings reached Google (runPipeline refuses to measure otherwise), and each
  // measured booking did, as its own customer (the request log was cleared after the warm-up).
  expect(new Set(attendeesInserted(stack, 'c'))).toEqual(new Set([0, 1, 2, 3, 4]));
  expect(attendeesInserted(stack, 'w')).toEqual([]);
  // Offered 5/s; 10 slots over ~40 ms of emulator time allow far more.
  expect(r.limit_per_s).toBe(5);
  // Each booking's emulator time has its model call (20 ms), its freeBusy and its insert (10 ms
  // each): its freeBusy was matched to it (by the window it read), not lost (that would read ~30).
  expect(r.emulator_p50_ms).toBeGreaterThanOrEqual(38);
  // Every stage was measured (a stage with no samples would be NaN).
  expect(Object.keys(r.stages).length).toBeGreaterThan(0);
  for (const stage of Object.values(r.stages)) {
    expect(Number.isFinite(stage.p50)).toBe(true);
    expect(stage.p99).toBeGreaterThanOrEqual(stage.p50);
  }
}, 120_000);

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
