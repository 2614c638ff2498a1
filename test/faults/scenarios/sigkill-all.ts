import type { Harness, ScenarioContext } from '../harness.js';
import { seconds, sleep, waitUntil } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

const KILLS = 3;
const CONVERSATIONS = 120;

/** queue_pickups_total{path="insert"} of the process the suite sends to (its own /metrics). */
async function pickedByInsert(h: Harness): Promise<number> {
  const api = h.cluster.api;
  if (!api?.running) return 0;
  const res = await fetch(`${api.baseUrl}/metrics`, { headers: { authorization: `Bearer ${h.adminKey}` } });
  const text = await res.text();
  return Number(text.match(/^queue_pickups_total\{path="insert"\} (\d+)/m)?.[1] ?? 0);
}

/**
 * The process the customers POST to also works messages (`--role=all`), so messages sent to idle
 * conversations are claimed by their own insert and run there. It is SIGKILLed while it holds such
 * messages (and restarted 1-2 s later, as `--role=all` again), once in each of 3 waves of one
 * message to each of 120 conversations: the messages it held come back when their claim (15 s) lapses and are answered by whichever
 * process claims them; every message must still be answered exactly once and in order. The API
 * process is `--role=api` again afterwards.
 */
export const sigkillAll: Scenario = {
  name: 'random SIGKILL of the process claiming messages at insert (--role=all) + restart',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    const before = h.cluster.api;
    if (before?.running) {
      await before.stop('SIGTERM');
      ctx.stopped.add(before);
    }
    await h.cluster.startApi('all');
    try {
      // Slow model answers (600 ms): messages are held at each kill.
      h.openai.latencyMs = 600;
      const chats = await openChats(h, ctx, { prefix: 'killall', owners: 4, perOwner: CONVERSATIONS / 4 });
      const started = Date.now();
      const killed: string[] = [];
      let claimedAtInsert = 0;
      for (let k = 0; k < KILLS; k++) {
        // A wave: message k of every conversation. POSTs failing while the process is down are
        // retried (as a client would) until it is back. A conversation whose previous message is
        // still held (its claim lapsing after a kill) gets this one stored unclaimed.
        const wave = sendMessages(h, ctx, chats, {
          prefix: 'killall',
          from: k,
          to: k + 1,
          retryForMs: 60_000,
        });
        // Kill once it took messages by their insert (bounded: after 15 s it kills anyway).
        const held = await waitUntil(
          'messages claimed at insert',
          async () => {
            const n = await pickedByInsert(h);
            return n >= 4 ? n : undefined;
          },
          { timeoutMs: 15_000, intervalMs: 20 },
        ).catch(() => 0);
        claimedAtInsert += held;
        const victim = h.cluster.api!;
        victim.child.kill('SIGKILL');
        await victim.waitForExit(10_000, 'SIGKILL');
        ctx.stopped.add(victim);
        killed.push(`${victim.name} at ${seconds(Date.now() - started)} (${held} taken by their insert)`);
        await sleep(1000 + Math.random() * 1000);
        await h.cluster.startApi('all');
        await wave;
      }
      const lastRestart = Date.now();
      ctx.note(`SIGKILLed ${killed.join('; ')}`);
      if (claimedAtInsert === 0) ctx.fail('no message was claimed by its insert before a kill');
      if (await h.waitAllAnswered(ctx, 150_000)) {
        const { retried } = await h.jobStates(ctx.conversations);
        ctx.note(
          `all answered ${seconds(Date.now() - lastRestart)} after the last restart; ${retried} jobs ran again after a crash`,
        );
      }
    } finally {
      const all = h.cluster.api;
      if (all?.running) {
        await all.stop('SIGTERM');
        ctx.stopped.add(all);
      }
      await h.cluster.startApi('api');
    }
  },
};
