/**
 * `npm run bench`'s pipeline, run small: a service process on the embedded database, both
 * emulators, a warm-up and a measured load. Checks what the figures rest on (every booking confirmed
 * and answered, one token refresh per owner, the warm-up booking for real), never a timing.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runPipeline } from '../../bench/pipeline.js';
import { type BenchStack, startBenchStack } from '../../bench/setup.js';

let stack: BenchStack;

beforeAll(async () => {
  stack = await startBenchStack({ modelLatencyMs: 20, googleLatencyMs: 10, workerConcurrency: 10 });
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
  });
  // The warm-up's bookings reached Google (runPipeline refuses to measure otherwise), and the
  // measured ones did: one insert per booking of the load, seen after the warm-up was cleared.
  expect(stack.google.requests.filter((q) => q.op === 'events.insert')).toHaveLength(5);
  // Offered 5/s; 10 slots over ~40 ms and 2 owners over 2 x 10 ms allow far more.
  expect(r.limit_per_s).toBe(5);
  for (const stage of Object.values(r.stages)) expect(stage.p99).toBeGreaterThanOrEqual(stage.p50);
}, 120_000);
