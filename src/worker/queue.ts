import { sql, type Transaction } from 'kysely';
import { fromKysely, type JobWithMetadata, PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import { bossSchemaFor, type Database } from '../store/database.js';
import type { DB } from '../store/schema.js';

/** One job per customer message; the job names the message, the message row holds the content. */
export const MESSAGE_QUEUE = 'customer-messages';

export interface MessageJob {
  messageId: string;
  conversationId: string;
}

export interface JobContext {
  jobId: string;
  /** 0 on the first run. */
  attempt: number;
  /** No retry follows this attempt: the handler must settle the message (e.g. fallback reply). */
  isLastAttempt: boolean;
  signal: AbortSignal;
  /**
   * Completes the job inside the caller's transaction (with the reply it produced), and wakes the
   * workers when this conversation has a next message waiting: under key_strict_fifo that message
   * became fetchable only now, and no insert NOTIFY will announce it.
   */
  settle(trx: Transaction<DB>): Promise<void>;
}

export interface QueueSettings {
  retryLimit: number;
  concurrency: number;
}

/**
 * The durable queue (pg-boss 12 in our database). Guarantees relied on elsewhere:
 * - enqueue happens in the caller's transaction, so a stored message always has its job and a
 *   rolled-back one never does;
 * - `key_strict_fifo` keyed by conversation: one job of a conversation at a time, in arrival order,
 *   while other conversations run in parallel;
 * - heartbeats: a job held by a crashed process is retried once its heartbeat lapses;
 * - at-least-once: a handler may run more than once for a job, so handlers are idempotent.
 */
export class JobQueue {
  readonly #boss: PgBoss;
  readonly #bossSchema: string;
  #started = false;

  constructor(
    database: Database,
    private readonly settings: QueueSettings,
    private readonly logger: Logger,
  ) {
    this.#boss = new PgBoss({
      ...database.bossOptions(),
      // The monitor notices lapsed heartbeats; a short interval keeps crash recovery well under 60 s.
      monitorIntervalSeconds: 5,
      superviseIntervalSeconds: 5,
      maintenanceIntervalSeconds: 60,
      queueCacheIntervalSeconds: 5,
    });
    this.#bossSchema = bossSchemaFor(database.schema);
    this.#boss.on('error', (err) => this.logger.error({ err }, 'job queue error'));
  }

  get boss(): PgBoss {
    return this.#boss;
  }

  async start(): Promise<void> {
    await this.#boss.start();
    this.#started = true;
    const options = {
      policy: 'key_strict_fifo' as const,
      notify: true,
      retryLimit: this.settings.retryLimit,
      retryDelay: 2,
      retryBackoff: true,
      retryDelayMax: 60,
      heartbeatSeconds: 10,
      expireInSeconds: 15 * 60,
    };
    if (!(await this.#boss.getQueue(MESSAGE_QUEUE))) {
      try {
        await this.#boss.createQueue(MESSAGE_QUEUE, options);
      } catch (err) {
        // Another process created it between our check and create.
        if (!(await this.#boss.getQueue(MESSAGE_QUEUE))) throw err;
      }
    } else {
      const { policy: _p, retryDelayMax: _r, heartbeatSeconds: _h, ...rest } = options;
      await this.#boss.updateQueue(MESSAGE_QUEUE, rest);
    }
  }

  /** Enqueues in the caller's transaction: committed together with the message, or not at all. */
  async enqueueMessage(trx: Transaction<DB>, job: MessageJob): Promise<void> {
    await this.#boss.send(MESSAGE_QUEUE, job, { singletonKey: job.conversationId, db: fromKysely(trx) });
  }

  async workMessages(handler: (job: MessageJob, ctx: JobContext) => Promise<void>): Promise<void> {
    await this.#boss.work(
      MESSAGE_QUEUE,
      {
        localConcurrency: this.settings.concurrency,
        batchSize: 1,
        includeMetadata: true,
        // NOTIFY wakes workers the moment a job is stored; polling is the backstop for missed ones.
        pollingIntervalSeconds: 2,
        notifyPollingIntervalSeconds: 2,
      },
      async (jobs: JobWithMetadata<MessageJob>[]) => {
        for (const job of jobs) {
          await handler(job.data, {
            jobId: job.id,
            attempt: job.retryCount,
            isLastAttempt: job.retryCount >= job.retryLimit,
            signal: job.signal,
            settle: (trx) => this.#settle(trx, job),
          });
        }
      },
    );
  }

  async #settle(trx: Transaction<DB>, job: JobWithMetadata<MessageJob>): Promise<void> {
    // Passing the attempt (id + retryCount) makes this a no-op if the job was meanwhile retried.
    await this.#boss.complete(MESSAGE_QUEUE, { id: job.id, retryCount: job.retryCount }, null, {
      db: fromKysely(trx),
    });
    const next = await trx
      .selectFrom('messages')
      .select('message_id')
      .where('conversation_id', '=', job.data.conversationId)
      .where('status', '=', 'pending')
      .where('message_id', '!=', job.data.messageId)
      .limit(1)
      .executeTakeFirst();
    if (next) {
      // pg-boss's wake-up channel (its notifyChannelSql): every worker of this queue, in every process.
      await sql`SELECT pg_notify('pgboss_' || left(encode(sha224(convert_to(${this.#bossSchema}::text, 'UTF8')), 'hex'), 24), ${MESSAGE_QUEUE})`.execute(
        trx,
      );
    }
  }

  /** Jobs waiting or running (metrics, tests). */
  async depth(): Promise<{ queued: number; active: number }> {
    const q = await this.#boss.getQueue(MESSAGE_QUEUE);
    return { queued: q?.queuedCount ?? 0, active: q?.activeCount ?? 0 };
  }

  /** Graceful: running handlers finish (up to `timeoutMs`), then the queue closes. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    await this.#boss.stop({ graceful: true, timeout: timeoutMs, close: true });
  }
}
