import type { Harness, ScenarioContext } from '../harness.js';
import { seconds, sleep, waitUntil } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

const KILLS = 4;
const CONVERSATIONS = 200;

/**
 * Workers are SIGKILLed at random moments (every 1-3 s once one is up, while jobs are in flight) as
 * 200 conversations x 2 messages flow, and each is restarted 1-3 s after its death. The jobs a dead
 * worker held come back when their claim (15 s) lapses; every message must still be answered
 * exactly once and in order.
 */
export const sigkill: Scenario = {
  name: 'random SIGKILL of workers + restart',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    // Slow model answers (600 ms): the backlog lasts through the kills and jobs are in flight at each.
    h.openai.latencyMs = 600;
    const chats = await openChats(h, ctx, { prefix: 'kill', owners: 5, perOwner: CONVERSATIONS / 5 });
    const started = Date.now();
    const sending = sendMessages(h, ctx, chats, { prefix: 'kill', to: 2 });
    const restarts: Promise<unknown>[] = [];
    const killed: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      await sleep(1000 + Math.random() * 2000);
      const ready = await waitUntil(
        'a ready worker to kill',
        async () => {
          const c = h.cluster.workers
            .map((worker, slot) => ({ worker, slot }))
            .filter((x) => x.worker?.ready);
          return c.length > 0 ? c : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 100 },
      );
      // Kill while jobs are in flight (bounded: after 15 s it kills anyway).
      const active = await waitUntil(
        'jobs in flight',
        async () => {
          const n = (await h.jobStates(ctx.conversations)).states.active ?? 0;
          return n >= 4 ? n : undefined;
        },
        { timeoutMs: 15_000, intervalMs: 50 },
      ).catch(() => 0);
      const pick = ready[Math.floor(Math.random() * ready.length)]!;
      const victim = pick.worker!;
      victim.child.kill('SIGKILL');
      await victim.waitForExit(10_000, 'SIGKILL');
      ctx.stopped.add(victim);
      killed.push(`${victim.name} at ${seconds(Date.now() - started)} (${active} jobs active)`);
      const slot = pick.slot;
      restarts.push(
        (async () => {
          await sleep(1000 + Math.random() * 2000);
          await h.cluster.startWorker(slot);
        })().catch((err: unknown) => ctx.fail(`restart of worker slot ${slot + 1} failed: ${String(err)}`)),
      );
    }
    await sending;
    await Promise.all(restarts);
    await h.cluster.restartDeadWorkers();
    const lastRestart = Date.now();
    ctx.note(`SIGKILLed ${killed.join('; ')}`);
    if (await h.waitAllAnswered(ctx, 150_000)) {
      const { retried } = await h.jobStates(ctx.conversations);
      ctx.note(
        `all answered ${seconds(Date.now() - lastRestart)} after the last restart; ${retried} jobs ran again after a crash`,
      );
    }
  },
};
