import { type Harness, type ScenarioContext, SERVICE_SETTINGS } from '../harness.js';
import { seconds, sleep } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

const OUTAGE_MS = 30_000;

/**
 * The model answers 503 to every request for 30 s while 100 conversations x 2 messages arrive. The
 * messages must wait (no reply, no fallback text) and all be answered with the model's real answer
 * after the outage ends. This needs JOB_RETRY_LIMIT high enough that a job's retries (backoff 2 s
 * doubling with jitter, capped at 60 s) outlast the outage: the suite runs the service with
 * JOB_RETRY_LIMIT=10 (see SERVICE_SETTINGS).
 */
export const openaiOutage: Scenario = {
  name: 'OpenAI outage (503 for 30 s)',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    const chats = await openChats(h, ctx, { prefix: 'outage', owners: 4, perOwner: 25 });
    h.openai.failFor({ kind: 'status', status: 503 }, OUTAGE_MS);
    const outageEnds = Date.now() + OUTAGE_MS;
    await sendMessages(h, ctx, chats, { prefix: 'outage', to: 2 });
    await sleep(Math.max(0, outageEnds - Date.now() - 1000));
    const during = await h.replyCount(ctx.conversations);
    const requests = h.openai.requests.length;
    ctx.note(
      `during the outage: ${requests} model calls refused, ${during} replies (must be 0), ` +
        `JOB_RETRY_LIMIT=${SERVICE_SETTINGS.JOB_RETRY_LIMIT}`,
    );
    if (during > 0) ctx.fail(`${during} messages were answered during the outage (fallback text?)`);
    await sleep(Math.max(0, outageEnds - Date.now()));
    if (!(await h.waitAllAnswered(ctx, 150_000))) return;
    const t = await h.tally(ctx);
    const last = Math.max(...t.rows.map((r) => r.replyAt?.getTime() ?? 0));
    const early = t.rows.filter((r) => r.replyAt && r.replyAt.getTime() < outageEnds - 500).length;
    // `attempts` counts runs; the last one answered.
    const maxAttempts = Math.max(...t.rows.map((r) => r.attempts)) - 1;
    ctx.note(
      `all answered ${seconds(last - outageEnds)} after the outage ended; up to ${maxAttempts} failed attempts ` +
        `for one message (with the default JOB_RETRY_LIMIT=4, a 5th failure is the end: fallback text)`,
    );
    if (early > 0) ctx.fail(`${early} replies are dated before the outage ended`);
  },
};
