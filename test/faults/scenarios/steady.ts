import type { Harness, ScenarioContext } from '../harness.js';
import { seconds } from '../util.js';
import { expectEcho, openChats, type Scenario, sendMessages } from './common.js';

const CONVERSATIONS = 500;
const MESSAGES = 2;

/** 500 conversations x 2 messages through 1 API + 2 workers: each answered once, in order. */
export const steady: Scenario = {
  name: `${CONVERSATIONS} conversations x ${MESSAGES} messages`,
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = expectEcho;
    const chats = await openChats(h, ctx, { prefix: 'steady', owners: 10, perOwner: CONVERSATIONS / 10 });
    const started = Date.now();
    await sendMessages(h, ctx, chats, { prefix: 'steady', to: MESSAGES });
    ctx.note(`${ctx.sent.length} messages accepted in ${seconds(Date.now() - started)}`);
    if (await h.waitAllAnswered(ctx, 180_000)) {
      const ms = Date.now() - started;
      ctx.note(
        `all answered ${seconds(ms)} after the first send (${Math.round(ctx.sent.length / (ms / 1000))} msg/s)`,
      );
    }
  },
};
