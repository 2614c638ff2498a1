import type { Fault } from '../../emulators/google.js';
import { type Chat, type Harness, type ScenarioContext, SERVICE_SETTINGS } from '../harness.js';
import { BOOK_PREFIX, bookingMessage, CONFIRMATION_PREFIX, echoOf } from '../model.js';
import { mapLimit, seconds, sleep } from '../util.js';
import { applyBookingCheck, checkBookings, insertsPerBooking } from './bookings.js';
import { CLIENT_CONCURRENCY, chatText, openChats, type Scenario } from './common.js';

const OWNERS = 8;
const PER_OWNER = 5;
const status = (code: number, reason?: string): Fault => ({
  kind: 'status',
  status: code,
  ...(reason ? { reason } : {}),
});

/**
 * 40 customers book while Google misbehaves, in three waves: a 503 + 429 storm; a stalled insert
 * (longer than GOOGLE_TIMEOUT_MS: the client gives up while Google still creates the event), lost
 * responses, 500s and 403 rate limits; then a storm of 503s on every call with a stalled events.get.
 * Retries must stay bounded and every booking must end as exactly one event, one meeting row and
 * one confirmation.
 */
export const googleStorm: Scenario = {
  name: 'Google 5xx/429 storms + stalled response',
  async run(h: Harness, ctx: ScenarioContext) {
    ctx.expectReply = (customer, reply) =>
      customer.startsWith(BOOK_PREFIX) ? reply.startsWith(CONFIRMATION_PREFIX) : reply === echoOf(customer);
    const chats = await openChats(h, ctx, {
      prefix: 'gstorm',
      owners: OWNERS,
      perOwner: PER_OWNER,
      connect: true,
    });
    h.google.reset();
    const started = Date.now();
    const stallMs = SERVICE_SETTINGS.GOOGLE_TIMEOUT_MS + 2000;
    const waves: Array<{ arm: () => void; chats: Chat[] }> = [
      {
        arm: () => {
          h.google.fail('events.insert', status(503), 12);
          h.google.fail('*', status(429), 10);
        },
        chats: chats.slice(0, 14),
      },
      {
        arm: () => {
          h.google.fail('events.insert', { kind: 'stall', ms: stallMs }, 1);
          h.google.fail('events.insert', { kind: 'lost-response' }, 3);
          h.google.fail('*', status(500), 8);
          h.google.fail('events.insert', status(403, 'userRateLimitExceeded'), 4);
        },
        chats: chats.slice(14, 27),
      },
      {
        arm: () => {
          h.google.fail('*', status(503), 10);
          // A lost insert answer makes the retry answer 409 and the event be fetched: that fetch stalls.
          h.google.fail('events.insert', { kind: 'lost-response' }, 2);
          h.google.fail('events.get', { kind: 'stall', ms: stallMs }, 1);
          h.google.fail('events.insert', status(429), 6);
        },
        chats: chats.slice(27),
      },
    ];
    const sending: Promise<unknown>[] = [];
    for (const wave of waves) {
      wave.arm();
      sending.push(
        mapLimit(wave.chats, CLIENT_CONCURRENCY, async (chat) => {
          const c = chats.indexOf(chat);
          await h.send(
            ctx,
            chat,
            bookingMessage({
              name: `Customer ${c + 1}`,
              email: `customer${c + 1}@example.com`,
              title: `Storm demo ${c + 1}`,
              hoursAhead: 24 + c,
            }),
          );
          await h.send(ctx, chat, chatText('gstorm', c, 1));
        }),
      );
      await sleep(1500);
    }
    await Promise.all(sending);
    if (!(await h.waitAllAnswered(ctx, 150_000))) return;
    ctx.note(`all answered ${seconds(Date.now() - started)} after the first booking`);

    const injected = new Map<string, number>();
    for (const r of h.google.requests) {
      if (!r.fault) continue;
      const key = r.fault === 'status' ? String(r.status || 'lost') : r.fault;
      injected.set(key, (injected.get(key) ?? 0) + 1);
    }
    const inserts = insertsPerBooking(h);
    const maxInserts = Math.max(0, ...inserts.values());
    const bound = SERVICE_SETTINGS.GOOGLE_ATTEMPTS_PER_RUN * (SERVICE_SETTINGS.JOB_RETRY_LIMIT + 1);
    const { retried } = await h.jobStates(ctx.conversations);
    ctx.note(
      `faults served: ${[...injected].map(([k, n]) => `${k} x${n}`).join(', ')}; ` +
        `${[...inserts.values()].reduce((a, b) => a + b, 0)} events.insert calls, at most ${maxInserts} for one booking ` +
        `(bound ${bound}); ${retried} jobs retried`,
    );
    if (maxInserts > bound)
      ctx.fail(`unbounded retries: ${maxInserts} inserts for one booking (bound ${bound})`);
    applyBookingCheck(ctx, await checkBookings(h, chats, 1));
  },
};
