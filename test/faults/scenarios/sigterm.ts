import { readFileSync } from 'node:fs';
import type { Harness, ScenarioContext } from '../harness.js';
import { seconds, waitUntil } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

/** `message answered` lines a worker logged after it logged `shutting down`. */
function answeredAfterShutdown(logPath: string): number {
  let stopping = false;
  let answered = 0;
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    if (line.includes('"msg":"shutting down"')) stopping = true;
    else if (stopping && line.includes('"msg":"message answered"')) answered++;
  }
  return answered;
}

/**
 * A worker gets SIGTERM while it runs jobs (the model takes 400 ms per answer): it must let them
 * finish (or hand them back to the queue) and exit 0; nothing may be lost or answered twice.
 */
export const sigterm: Scenario = {
  name: 'SIGTERM of a worker mid-run',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    h.openai.latencyMs = 400;
    const chats = await openChats(h, ctx, { prefix: 'sigterm', owners: 4, perOwner: 30 });
    const sending = sendMessages(h, ctx, chats, { prefix: 'sigterm', to: 2 });
    await waitUntil(
      '20 replies before the SIGTERM',
      async () => ((await h.replyCount(ctx.conversations)) >= 20 ? true : undefined),
      { timeoutMs: 60_000 },
    );
    const victim = h.cluster.workers[0];
    if (!victim?.running) throw new Error('worker 1 is not running');
    const { states } = await h.jobStates(ctx.conversations);
    const t0 = Date.now();
    ctx.stopped.add(victim);
    const exit = await victim.stop('SIGTERM', 40_000);
    const finished = answeredAfterShutdown(victim.logPath);
    ctx.note(
      `${victim.name} exited code ${exit.code} ${seconds(Date.now() - t0)} after SIGTERM ` +
        `(${states.active ?? 0} jobs active cluster-wide; it finished ${finished} after the signal)`,
    );
    if (exit.code !== 0)
      ctx.fail(`${victim.name} exited ${JSON.stringify(exit)} after SIGTERM (expected code 0)`);
    await sending;
    await h.cluster.startWorker(0);
    if (await h.waitAllAnswered(ctx, 120_000)) {
      const { retried } = await h.jobStates(ctx.conversations);
      ctx.note(`all answered; ${retried} jobs went back to the queue and ran again`);
    }
  },
};
