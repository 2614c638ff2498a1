import type { Harness, ScenarioContext } from '../harness.js';
import { bookingMessage, CONFIRMATION_PREFIX } from '../model.js';
import { seconds, sleep, waitUntil } from '../util.js';
import { applyBookingCheck, checkBookings, insertsPerBooking } from './bookings.js';
import { openChats, type Scenario } from './common.js';

/** The promise of issue 6 item 2. */
const PICKUP_LIMIT_MS = 60_000;

/**
 * Issue 6 item 2: a worker is SIGKILLed in the middle of a booking — Google has created the event
 * (with a Meet conference still `pending`, so the worker sits polling events.get) but the meeting row
 * and the confirmation are not committed. A live worker must pick the job up again within 60 s, find
 * the event (409 on the same deterministic id, then events.get) and commit exactly one meeting row
 * and one confirmation.
 *
 * Only worker 1 runs when the booking arrives, so the suite knows which process holds the job; worker
 * 2 is started while worker 1 polls and is live when worker 1 dies.
 */
export const bookingCrash: Scenario = {
  name: 'SIGKILL mid-booking (item 2)',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = (_customer, reply) => reply.startsWith(CONFIRMATION_PREFIX);
    const chats = await openChats(h, ctx, { prefix: 'crash', owners: 1, perOwner: 1, connect: true });
    const chat = chats[0]!;
    const email = `${chat.userId}@owner.test`;
    // The conference turns `success` on the 8th events.get: the first worker polls ~7 times in its
    // 10 s wait, so it cannot finish the booking on its own before it is killed.
    h.google.conferenceMode = 'pending';
    h.google.pendingPolls = 8;

    const second = h.cluster.workers[1];
    if (second?.running) {
      ctx.stopped.add(second);
      await second.stop('SIGTERM', 40_000);
    }
    const holder = h.cluster.workers[0];
    if (!holder?.running) throw new Error('worker 1 is not running');
    h.google.reset();
    const messageId = await h.send(
      ctx,
      chat,
      bookingMessage({
        name: 'Crash Customer',
        email: 'crash.customer@example.com',
        title: 'Crash demo',
        hoursAhead: 30,
      }),
    );
    const created = await waitUntil(
      'the event to be created and its conference polled',
      async () => {
        const i = h.google.requests.findIndex((r) => r.op === 'events.insert' && r.status === 200);
        if (i < 0) return undefined;
        const polled = h.google.requests.slice(i + 1).some((r) => r.op === 'events.get' && r.status === 200);
        return polled ? h.google.requests[i]!.at : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 20 },
    );
    // Start the live worker that will take over; kill the holder once it is up (or after 6 s).
    const starting = h.cluster.startWorker(1);
    await Promise.race([starting.catch(() => {}), sleep(6000)]);
    const meetingsBefore = await h.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM meetings WHERE user_id = $1',
      [chat.userId],
    );
    const pending = await h.pendingCount(ctx.conversations);
    if ((meetingsBefore[0]?.n ?? 0) !== 0 || pending !== 1) {
      ctx.fail('the worker finished the booking before it could be killed (kill window missed)');
      await starting;
      return;
    }
    const gets = h.google.requests.filter((r) => r.op === 'events.get').length;
    ctx.stopped.add(holder);
    holder.child.kill('SIGKILL');
    await holder.waitForExit(10_000, 'SIGKILL');
    const killedAt = Date.now();
    const eventsAtKill = h.google.events(email).filter((e) => e.status !== 'cancelled').length;
    if (eventsAtKill !== 1) ctx.fail(`${eventsAtKill} events on the calendar at the kill (expected 1)`);
    ctx.note(
      `${holder.name} SIGKILLed ${seconds(killedAt - created)} after events.insert, while polling ` +
        `(${gets} events.get so far), with ${eventsAtKill} event on the calendar and no meeting row`,
    );
    await starting;

    // Picked up again by the live worker (its claim, 15 s, lapses and the message is claimed again).
    const answered = await h.waitAllAnswered(ctx, PICKUP_LIMIT_MS);
    const reply = await h.query<{ created_at: Date }>('SELECT created_at FROM messages WHERE reply_to = $1', [
      messageId,
    ]);
    const at = reply[0]?.created_at;
    if (answered && at) {
      const took = at.getTime() - killedAt;
      ctx.note(`confirmed by ${h.cluster.workers[1]?.name} ${seconds(took)} after the kill (limit 60 s)`);
      if (took > PICKUP_LIMIT_MS) ctx.fail(`picked up after ${seconds(took)} (limit 60 s)`);
    }
    await h.cluster.startWorker(0);
    const inserts = [...insertsPerBooking(h).values()];
    const conflicts = h.google.requests.filter((r) => r.op === 'events.insert' && r.status === 409).length;
    ctx.note(
      `events.insert calls: ${inserts.join(', ')} (${conflicts} answered 409: the re-run found the event)`,
    );
    applyBookingCheck(ctx, await checkBookings(h, chats, 1));
    const link = await h.query<{ meet_link: string | null }>(
      'SELECT meet_link FROM meetings WHERE user_id = $1',
      [chat.userId],
    );
    if (link[0])
      ctx.note(`meeting row has ${link[0].meet_link ? 'the Meet link' : 'no Meet link (still pending)'}`);
  },
};
