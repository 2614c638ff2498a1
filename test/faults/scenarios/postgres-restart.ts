import type { Harness, ScenarioContext } from '../harness.js';
import { restartPostgres } from '../postgres.js';
import { seconds, waitUntil } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

/**
 * PostgreSQL is restarted (pg_ctlcluster ... restart: every session is cut) while the workers are
 * answering 150 first messages; the second messages are sent right after it is back. No process may
 * die, the API must be ready again by itself, and everything must be answered exactly once.
 */
export const postgresRestart: Scenario = {
  name: 'PostgreSQL restarted mid-run',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    const host = new URL(h.config.databaseUrl).hostname;
    if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host) && !process.env.FAULTS_PG_CLUSTER) {
      throw new Error(
        `FAULTS_DATABASE_URL points at ${host}, not this machine: pg_ctlcluster cannot restart it ` +
          '(set FAULTS_PG_CLUSTER="<version> <name>" if that cluster is local after all)',
      );
    }
    // Slow model answers: the restart lands while jobs are in flight.
    h.openai.latencyMs = 400;
    const chats = await openChats(h, ctx, { prefix: 'pgrestart', owners: 5, perOwner: 30 });
    await sendMessages(h, ctx, chats, { prefix: 'pgrestart', to: 1 });
    await waitUntil(
      'a third of the first messages to be answered',
      async () => ((await h.replyCount(ctx.conversations)) >= chats.length / 3 ? true : undefined),
      { timeoutMs: 60_000 },
    );
    const answeredBefore = await h.replyCount(ctx.conversations);
    const retriesBefore = h.httpRetries;
    const t0 = Date.now();
    await restartPostgres();
    const restartedAt = Date.now();
    ctx.note(
      `restarted PostgreSQL in ${seconds(restartedAt - t0)} with ${answeredBefore}/${chats.length} answered`,
    );
    const api = h.cluster.api;
    const ready = await waitUntil(
      'the API to be ready again after the restart',
      async () => {
        const res = await fetch(`${api?.baseUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
        return res.status === 200 ? Date.now() : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    ctx.note(`API /readyz 200 again ${seconds(ready - restartedAt)} after the restart`);
    await sendMessages(h, ctx, chats, { prefix: 'pgrestart', from: 1, to: 2, retryForMs: 60_000 });
    const retried = h.httpRetries - retriesBefore;
    if (retried > 0) ctx.note(`${retried} API calls were retried after a 5xx/network error`);
    if (await h.waitAllAnswered(ctx, 120_000)) {
      const { retried: jobs } = await h.jobStates(ctx.conversations);
      ctx.note(`all answered ${seconds(Date.now() - restartedAt)} after the restart; ${jobs} jobs ran again`);
    }
  },
};
