import { createHmac } from 'node:crypto';
import type { Transaction } from 'kysely';
import { fromKysely, type JobWithMetadata, type PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import type { OwnerEvent } from '../domain/owner-events.js';
import type { DB } from '../store/schema.js';
import type { WebhookStore } from '../store/webhooks.js';
import {
  postWebhook,
  publicOnlyLookup,
  type WebhookUrlPolicy,
  webhookUrlProblem,
} from '../webhook-target.js';
import type { OwnerEventSink } from './owner-events.js';

/** pg-boss queue of webhook deliveries (beside the customer-message queue, same database). */
export const WEBHOOK_QUEUE = 'webhook-deliveries';
/**
 * Where pg-boss moves a delivery job whose last attempt did not finish (see #unfinished): the
 * worker running it died or stalled past the job's expiry, or the attempt threw before it could
 * record its outcome.
 */
export const WEBHOOK_DEAD_QUEUE = 'webhook-deliveries-unfinished';

export interface WebhookJob {
  deliveryId: string;
}

export interface WebhookOptions {
  /** Retries after the first attempt (pg-boss, exponential backoff with jitter). */
  retryLimit?: number;
  retryDelaySeconds?: number;
  retryDelayMaxSeconds?: number;
  timeoutMs?: number;
  /**
   * How long pg-boss lets one attempt run before failing it (a worker that died or stalled
   * mid-attempt); default 300. Longer than `timeoutMs` in production: an attempt that ends on its
   * own always records its outcome first.
   */
  expireSeconds?: number;
  /** How often rows written by SQL (calendar.revoked) are picked up. */
  relayIntervalMs?: number;
  /** How often a worker looks for pending deliveries that no job will attempt again; default 60 s. */
  sweepIntervalMs?: number;
  /** Where deliveries may go (WEBHOOK_URLS); default `public-https`. */
  urls?: WebhookUrlPolicy;
  /** Deliveries sent at once per worker process, one per owner at most; default 5. */
  concurrency?: number;
  /**
   * Seconds between a delivery worker's looks for jobs that no NOTIFY announced (retries whose
   * backoff ended); default 5. A new delivery wakes the workers at once (the queue's `notify`).
   */
  pollSeconds?: number;
}

/** The name of the error an attempt throws when its POST was accepted but could not be recorded. */
const DELIVERED_UNRECORDED = 'DeliveredUnrecorded';

/**
 * What pg-boss stored as a failed attempt's output: a thrown error's `{name, message, stack}` and own
 * properties (serialize-error), or `{value: {message}}` / `{value: "..."}` for an attempt its
 * supervisor timed out.
 */
interface FailureOutput {
  name?: string;
  message?: string;
  /** DELIVERED_UNRECORDED's: what the receiver answered. */
  statusCode?: unknown;
  value?: { message?: unknown } | string;
}

function failureMessage(output: FailureOutput | null): string {
  if (typeof output?.message === 'string') return output.message;
  if (typeof output?.value === 'string') return output.value;
  if (typeof output?.value?.message === 'string') return output.value.message;
  return 'the worker stopped';
}

/** `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"): what receivers recompute. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * Owner webhooks: an event is recorded (delivery row + pg-boss job) in the same transaction as the
 * change it reports, so a committed change always has its delivery and a rolled-back one never
 * does. Deliveries are JSON POSTs signed with the owner's secret (`X-Signature`,
 * `X-Signature-Timestamp`), retried by pg-boss with backoff until a 2xx or the retries are spent;
 * each attempt is recorded on the delivery row. At-least-once: receivers dedupe on the body's `id`.
 */
export class WebhookDispatcher implements OwnerEventSink {
  readonly #retryLimit: number;
  readonly #retryDelay: number;
  readonly #retryDelayMax: number;
  readonly #timeoutMs: number;
  readonly #expireSeconds: number;
  readonly #relayIntervalMs: number;
  readonly #sweepIntervalMs: number;
  /**
   * Where deliveries may go. Under `public-https` the POST's socket connects only to public addresses
   * (publicOnlyLookup checks the very addresses used, so a name rebound to a private address after it
   * was saved is refused too); redirects are never followed.
   */
  readonly #urls: WebhookUrlPolicy;
  readonly #concurrency: number;
  readonly #pollSeconds: number;
  #relay: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #working = false;

  constructor(
    private readonly boss: PgBoss,
    private readonly store: WebhookStore,
    private readonly db: import('kysely').Kysely<DB>,
    /** pg-boss's schema (the sweep reads its `job` table). */
    private readonly jobsSchema: string,
    private readonly logger: Logger,
    options: WebhookOptions = {},
  ) {
    this.#retryLimit = options.retryLimit ?? 8;
    this.#retryDelay = options.retryDelaySeconds ?? 10;
    this.#retryDelayMax = options.retryDelayMaxSeconds ?? 3600;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#expireSeconds = options.expireSeconds ?? 5 * 60;
    this.#relayIntervalMs = options.relayIntervalMs ?? 5_000;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.#urls = options.urls ?? 'public-https';
    this.#concurrency = options.concurrency ?? 5;
    this.#pollSeconds = options.pollSeconds ?? 5;
  }

  /** Creates the queues (every role: API processes enqueue too). */
  async start(): Promise<void> {
    // The dead-letter queue first: a queue can name only an existing one.
    await this.#ensureQueue(WEBHOOK_DEAD_QUEUE, {
      // Marking a row: only a database outage fails it, and then the sweep is the backstop.
      retryLimit: 20,
      retryDelay: 5,
      retryBackoff: true,
      retryDelayMax: 300,
      expireInSeconds: 60,
    });
    await this.#ensureQueue(WEBHOOK_QUEUE, {
      retryLimit: this.#retryLimit,
      retryDelay: this.#retryDelay,
      retryBackoff: true,
      retryDelayMax: this.#retryDelayMax,
      expireInSeconds: this.#expireSeconds,
      // A new delivery's job wakes the workers (pg-boss's LISTEN): they poll only as a backstop.
      notify: true,
      // Jobs sent from now on carry it; a job sent before it was set has none (pg-boss copies the
      // queue's setting at send).
      deadLetter: WEBHOOK_DEAD_QUEUE,
    });
  }

  async #ensureQueue(
    name: string,
    options: NonNullable<Parameters<PgBoss['createQueue']>[1]>,
  ): Promise<void> {
    if (!(await this.boss.getQueue(name))) {
      try {
        await this.boss.createQueue(name, options);
        return;
      } catch (err) {
        if (!(await this.boss.getQueue(name))) throw err;
      }
    }
    await this.boss.updateQueue(name, options);
  }

  async emit(trx: Transaction<DB>, event: OwnerEvent): Promise<void> {
    const deliveryId = await this.store.record(trx, event);
    if (deliveryId) await this.#enqueue(trx, deliveryId, event.userId);
  }

  async enqueueRecorded(trx: Transaction<DB>, deliveryId: string, userId: string): Promise<void> {
    await this.#enqueue(trx, deliveryId, userId);
  }

  /** The job is in its owner's group: see work() for what the group bounds. */
  async #enqueue(trx: Transaction<DB>, deliveryId: string, userId: string): Promise<void> {
    await this.boss.send(WEBHOOK_QUEUE, { deliveryId } satisfies WebhookJob, {
      db: fromKysely(trx),
      singletonKey: deliveryId,
      group: { id: userId },
    });
  }

  /** Worker role: delivers jobs, and relays deliveries written by SQL (calendar.revoked). */
  async work(): Promise<void> {
    this.#working = true;
    // Several deliveries at once per process, but one at a time per owner: a receiver that answers
    // slowly, or never (each attempt then waits out the timeout), holds only its own owner's
    // deliveries back (up to #timeoutMs per attempt), not every other owner's.
    await this.boss.work<WebhookJob>(
      WEBHOOK_QUEUE,
      {
        batchSize: 1,
        includeMetadata: true,
        // Every worker polls on its own: at the defaults, one look a second per process while idle.
        pollingIntervalSeconds: Math.min(2, this.#pollSeconds),
        notifyPollingIntervalSeconds: this.#pollSeconds,
        localConcurrency: this.#concurrency,
        localGroupConcurrency: 1,
      },
      async (jobs) => {
        for (const job of jobs as JobWithMetadata<WebhookJob>[]) await this.#deliver(job);
      },
    );
    await this.boss.work<WebhookJob>(
      WEBHOOK_DEAD_QUEUE,
      {
        batchSize: 10,
        includeMetadata: true,
        pollingIntervalSeconds: Math.min(2, this.#pollSeconds),
      },
      async (jobs) => {
        for (const job of jobs as JobWithMetadata<WebhookJob>[]) await this.#unfinished(job);
      },
    );
    const relay = () => {
      this.relayOnce().catch((err: unknown) => this.logger.warn({ err }, 'webhook relay failed'));
    };
    relay();
    this.#relay = setInterval(relay, this.#relayIntervalMs);
    this.#relay.unref();
    this.#sweep = setInterval(() => {
      this.sweepOnce().catch((err: unknown) => this.logger.warn({ err }, 'webhook sweep failed'));
    }, this.#sweepIntervalMs);
    this.#sweep.unref();
  }

  /**
   * Marks failed the pending deliveries that no job will attempt again (WebhookStore.failOrphaned):
   * the backstop behind the dead-letter queue, for jobs sent before it existed or whose dead-letter
   * job failed too. Returns how many it marked.
   */
  async sweepOnce(): Promise<number> {
    const ids = await this.store.failOrphaned(this.jobsSchema, [WEBHOOK_QUEUE, WEBHOOK_DEAD_QUEUE], 100);
    for (const id of ids) {
      this.logger.error({ delivery_id: id }, 'webhook delivery failed; no attempt of it was left');
    }
    return ids.length;
  }

  /**
   * Enqueues the job of one delivery written with `enqueued = false` in a statement that committed
   * (a booking's reply, MeetingStore.bookedRows). Never throws: what it could not do, the periodic
   * relay does (the row stays unenqueued until its job is committed with the mark).
   */
  async relayOne(deliveryId: string): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        const userId = await this.store.claimOne(trx, deliveryId);
        if (userId !== undefined) await this.#enqueue(trx, deliveryId, userId);
      });
    } catch (err) {
      this.logger.warn(
        { err, delivery_id: deliveryId },
        'could not enqueue a webhook delivery; the relay will',
      );
    }
  }

  /** Enqueues deliveries that have no job yet (written by the revocation trigger, or relayOne's misses). */
  async relayOnce(): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const claimed = await this.store.claimUnenqueued(trx, 50);
      for (const { deliveryId, userId } of claimed) await this.#enqueue(trx, deliveryId, userId);
      return claimed.length;
    });
  }

  /**
   * A delivery whose last attempt never recorded its outcome: pg-boss failed that attempt (its
   * worker died or stalled past `expireSeconds`, or it threw before recording anything) and, the
   * retries being spent, moved the job here. Without this the row would say `pending` for good.
   * Marked failed only while still pending: an attempt that recorded its outcome meanwhile stands,
   * and a late 2xx from the stalled attempt still marks it delivered (WebhookStore.recordAttempt).
   */
  async #unfinished(job: JobWithMetadata<WebhookJob>): Promise<void> {
    const output = job.sourceOutput as FailureOutput | null;
    if (output?.name === DELIVERED_UNRECORDED) {
      // The receiver accepted it; only the record of that failed (see #deliver).
      await this.store.recordAttempt(job.data.deliveryId, {
        ok: true,
        statusCode: typeof output.statusCode === 'number' ? output.statusCode : null,
        error: null,
        final: true,
      });
      return;
    }
    const why = failureMessage(output);
    const marked = await this.store.markUnfinished(
      job.data.deliveryId,
      `the last attempt did not finish: ${why}`,
    );
    if (marked) {
      this.logger.error(
        { delivery_id: job.data.deliveryId, error: why },
        'webhook delivery failed; its last attempt did not finish',
      );
    }
  }

  async #deliver(job: JobWithMetadata<WebhookJob>): Promise<void> {
    const d = await this.store.delivery(job.data.deliveryId);
    if (d?.status !== 'pending') return;
    const hook = await this.store.get(d.user_id);
    const final = job.retryCount >= job.retryLimit;
    if (!hook) {
      await this.store.recordAttempt(d.delivery_id, {
        ok: false,
        statusCode: null,
        error: 'the owner has no webhook any more',
        final: true,
      });
      return;
    }
    const body = JSON.stringify({
      id: d.delivery_id,
      type: d.event_type,
      created_at: d.created_at.toISOString(),
      data: typeof d.payload === 'string' ? JSON.parse(d.payload) : d.payload,
    });
    const timestamp = String(Math.floor(Date.now() / 1000));
    let statusCode: number | null = null;
    let error: string | null = null;
    // A URL saved under a looser WEBHOOK_URLS is refused for good (no retry changes it).
    const refused = webhookUrlProblem(new URL(hook.url), this.#urls);
    if (refused) {
      await this.store.recordAttempt(d.delivery_id, { ok: false, statusCode, error: refused, final: true });
      this.logger.error({ delivery_id: d.delivery_id, error: refused }, 'webhook URL refused; not delivered');
      return;
    }
    try {
      statusCode = await postWebhook(
        new URL(hook.url),
        {
          'content-type': 'application/json',
          'user-agent': 'agent-meetings-webhooks/1',
          'x-webhook-id': d.delivery_id,
          'x-webhook-event': d.event_type,
          'x-signature-timestamp': timestamp,
          'x-signature': webhookSignature(hook.secret, timestamp, body),
        },
        body,
        { timeoutMs: this.#timeoutMs, ...(this.#urls === 'any' ? {} : { lookup: publicOnlyLookup }) },
      );
      if (statusCode < 200 || statusCode >= 300) error = `receiver answered ${statusCode}`;
    } catch (err) {
      error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
    try {
      await this.store.recordAttempt(d.delivery_id, { ok: error === null, statusCode, error, final });
    } catch (err) {
      if (error !== null) throw err;
      // Delivered, but not recorded: said so to pg-boss, so that a last attempt's dead letter
      // records it delivered (#unfinished) rather than failed. An earlier attempt's retry POSTs again
      // (at least once).
      throw Object.assign(new Error(`receiver answered ${statusCode}; recording it failed: ${String(err)}`), {
        name: DELIVERED_UNRECORDED,
        statusCode,
      });
    }
    const log = this.logger.child({
      delivery_id: d.delivery_id,
      event: d.event_type,
      attempt: job.retryCount,
    });
    if (error === null) {
      log.info({ status: statusCode }, 'webhook delivered');
      return;
    }
    if (final) {
      log.error({ error }, 'webhook delivery failed; retries spent');
      return;
    }
    log.warn({ error }, 'webhook delivery failed; will retry');
    throw new Error(error); // pg-boss retries with backoff
  }

  async stop(): Promise<void> {
    if (this.#relay) clearInterval(this.#relay);
    if (this.#sweep) clearInterval(this.#sweep);
    if (this.#working) {
      await Promise.all([
        this.boss.offWork(WEBHOOK_QUEUE).catch(() => {}),
        this.boss.offWork(WEBHOOK_DEAD_QUEUE).catch(() => {}),
      ]);
    }
  }
}
