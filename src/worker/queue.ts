import { sql, type Transaction } from 'kysely';
import { fromKysely, type JobWithMetadata, PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import { bossSchemaFor, type Database } from '../store/database.js';
import { CUSTOMER_MESSAGE_CHANNEL } from '../store/messages.js';
import type { DB } from '../store/schema.js';

/** How many times JobQueue.sweepFailed runs a failed job again at most. */
const SWEEP_LIMIT = 3;

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
  /** No retry follows this attempt: the handler must answer the message (e.g. fallback reply). */
  isLastAttempt: boolean;
  signal: AbortSignal;
  /**
   * Completes the job inside the caller's transaction (the reply's). The last attempt must: a job
   * whose last attempt is not completed ends `failed`, and under key_strict_fifo a failed job holds
   * its conversation's later messages for good, so its completion may not be a statement that a
   * crash could lose after the reply committed. Earlier attempts need not (the queue completes them
   * after the handler returned; a lost completion only runs the job again).
   */
  completeIn(trx: Transaction<DB>): Promise<void>;
}

/**
 * What a handler that returned normally tells the queue. It returns only once its reply committed
 * (a failed write throws); the queue then completes the job.
 */
export interface JobOutcome {
  /**
   * The conversation has another message waiting (as the reply's statement saw it). Under
   * key_strict_fifo it becomes fetchable only once this job completes, and its insert's wake-up came
   * too early: the queue fetches again right after completing (as it does when a customer message of
   * this conversation was announced while the job ran, see CUSTOMER_MESSAGE_CHANNEL).
   */
  nextWaiting?: boolean;
}

export interface QueueSettings {
  retryLimit: number;
  concurrency: number;
  /** The backstop poll for work no notification announced (retries after their backoff); 2 s. */
  pollIntervalMs?: number;
  /** How often failed jobs that hold their conversation are run again (JobQueue.sweepFailed); 30 s. */
  sweepIntervalMs?: number;
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
  #stopping = false;
  /** Jobs past their sweep limit at the last sweep (logged when the number changes). */
  #stuckReported = 0;
  #unlisten: (() => Promise<void>) | undefined;
  #dispatcher:
    | {
        done: Promise<void>;
        inFlight: Map<string, JobWithMetadata<MessageJob>>;
        controllers: Map<string, AbortController>;
        stopTimers: () => void;
        wake: () => void;
      }
    | undefined;

  constructor(
    private readonly database: Database,
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

  /**
   * Runs `handler` for up to `concurrency` jobs at once in this process.
   *
   * One dispatcher loop instead of pg-boss `work()` with N local workers: pg-boss wakes every one of
   * its workers on each NOTIFY, so 50 workers meant 50 fetch queries per new message (a serialized
   * storm on the embedded database). Here a wake-up causes one fetch for all free slots; a freed slot
   * fetches again at once; polling every 2 s is the backstop for a missed notification. In-flight jobs
   * are heartbeated (`touch`) so a crash of this process lets them run elsewhere.
   */
  async workMessages(
    handler: (job: MessageJob, ctx: JobContext) => Promise<JobOutcome | undefined>,
  ): Promise<void> {
    const inFlight = new Map<string, JobWithMetadata<MessageJob>>();
    const controllers = new Map<string, AbortController>();
    let wake: (() => void) | undefined;
    let woken = false;
    const nudge = () => {
      woken = true;
      wake?.();
    };
    const channel = await this.#wakeChannel();
    const unlistenQueue = await this.database.listen(channel, (queue) => {
      if (queue === MESSAGE_QUEUE) nudge();
    });
    // A customer message whose conversation has a job in flight here: it becomes fetchable only once
    // that job completes, which happens after its reply is visible, so a client answering the reply
    // at once sends it into that gap (its insert's wake-up fetches nothing, the job's snapshot did
    // not see it). The job remembers it and fetches again once completed; an announcement that
    // reaches us just after the completion (it travels on another connection) fetches at once.
    const running = new Map<string, { messageId: string; arrived: boolean; completed: boolean }>();
    const unlistenCustomers = await this.database.listen(CUSTOMER_MESSAGE_CHANNEL, (payload) => {
      const [conversationId = '', messageId] = payload.split(' ');
      const job = running.get(conversationId);
      if (!job || job.messageId === messageId) return;
      if (job.completed) nudge();
      else job.arrived = true;
    });
    this.#unlisten = async () => {
      await unlistenQueue();
      await unlistenCustomers();
    };
    const heartbeat = setInterval(() => {
      const jobs = [...inFlight.values()].map((j) => ({ id: j.id, retryCount: j.retryCount }));
      if (jobs.length > 0) {
        this.#boss
          .touch(MESSAGE_QUEUE, jobs)
          .catch((err: unknown) => this.logger.warn({ err }, 'job heartbeat failed'));
      }
    }, 4_000);
    heartbeat.unref();
    let sweeping = false;
    const sweep = setInterval(() => {
      if (sweeping) return; // the previous sweep is still running
      sweeping = true;
      this.sweepFailed()
        .then(
          (moved) => {
            if (moved > 0) nudge();
          },
          (err: unknown) => this.logger.warn({ err }, 'failed-job sweep failed'),
        )
        .finally(() => {
          sweeping = false;
        });
    }, this.settings.sweepIntervalMs ?? 30_000);
    sweep.unref();

    // True when the last fetch filled every free slot: more work may be waiting, so a finishing job
    // fetches again. Otherwise new work announces itself (NOTIFY on insert; a conversation's next
    // message through its handler's `nextWaiting`) and retries after a backoff are found by the
    // poll, so a finishing job costs no extra fetch.
    let saturated = false;
    const run = async (job: JobWithMetadata<MessageJob>) => {
      const controller = new AbortController();
      controllers.set(job.id, controller);
      const conversation = { messageId: job.data.messageId, arrived: false, completed: false };
      running.set(job.data.conversationId, conversation);
      let nextWaiting = false;
      try {
        const outcome = await handler(job.data, {
          jobId: job.id,
          attempt: job.retryCount,
          isLastAttempt: job.retryCount >= job.retryLimit,
          signal: controller.signal,
          completeIn: async (trx) => {
            // The attempt (id + retryCount) makes this a no-op if the job was meanwhile retried.
            await this.#boss.complete(MESSAGE_QUEUE, { id: job.id, retryCount: job.retryCount }, null, {
              db: fromKysely(trx),
            });
          },
        });
        // The handler returned once its reply committed (or it found the message already answered):
        // the job is done. Completing it after that commit, in a statement of its own, keeps the
        // job's bookkeeping off the reply's path and loses nothing on an attempt that has a retry
        // left: if this process dies before the completion, the job's heartbeat lapses, it runs
        // again and finds its message answered. The last attempt completed in its reply's
        // transaction (JobContext.completeIn), and this is then a no-op (pg-boss completes only an
        // active job), as it is if the job was meanwhile retried elsewhere (id + retryCount).
        await this.#boss.complete(MESSAGE_QUEUE, { id: job.id, retryCount: job.retryCount });
        conversation.completed = true;
        // This job no longer holds its conversation: a next message is fetchable now. This process
        // has a free slot, so it fetches it itself; if it is stopping, it wakes the others.
        nextWaiting = outcome?.nextWaiting === true || conversation.arrived;
        if (nextWaiting && this.#stopping) await this.#wakeOthers(channel);
      } catch (err) {
        // Back to pg-boss's retry policy (backoff); a no-op if the attempt was already completed.
        await this.#boss
          .fail(
            MESSAGE_QUEUE,
            { id: job.id, retryCount: job.retryCount },
            { message: String((err as Error)?.message ?? err) },
          )
          .catch((e: unknown) =>
            this.logger.error({ err: e, job_id: job.id }, 'could not record a job failure'),
          );
      } finally {
        inFlight.delete(job.id);
        controllers.delete(job.id);
        // Kept a moment after completion for a late announcement (see `running`).
        setTimeout(() => {
          if (running.get(job.data.conversationId) === conversation) running.delete(job.data.conversationId);
        }, 1_000).unref();
        if (saturated || woken || nextWaiting) nudge();
      }
    };

    const loop = async () => {
      while (!this.#stopping) {
        const free = this.settings.concurrency - inFlight.size;
        let fetched = 0;
        if (free > 0) {
          woken = false;
          try {
            const jobs = await this.#boss.fetch<MessageJob>(MESSAGE_QUEUE, {
              batchSize: free,
              includeMetadata: true,
            });
            fetched = jobs.length;
            saturated = fetched === free;
            for (const job of jobs) {
              inFlight.set(job.id, job);
              void run(job);
            }
          } catch (err) {
            this.logger.error({ err }, 'fetching jobs failed');
            await new Promise((r) => setTimeout(r, 1000));
          }
        }
        // A full batch means more may be waiting; otherwise sleep until woken or the poll.
        if (fetched > 0 && fetched === free) continue;
        // Woken with no free slot: wait (a finishing job nudges again). Looping here would spin
        // without awaiting and starve the event loop: jobs, heartbeats and signals would all stall.
        if (woken && this.settings.concurrency - inFlight.size > 0) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.settings.pollIntervalMs ?? 2_000);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    };
    this.#dispatcher = {
      done: loop(),
      inFlight,
      controllers,
      stopTimers: () => {
        clearInterval(heartbeat);
        clearInterval(sweep);
      },
      wake: nudge,
    };
  }

  /**
   * Runs again the failed jobs that hold their conversation. Under key_strict_fifo a job that ended
   * `failed` holds every later message of its conversation until pg-boss deletes it (days). A job
   * fails only when its last attempt could not answer: the process died or was stopped during it,
   * its heartbeat lapsed, its fallback reply could not be written, or the completion of a message
   * already answered was lost. pg-boss's retry gives the job one more attempt, again a last one:
   * it finds the message answered and completes, or answers it (the fallback at worst). A job is
   * swept SWEEP_LIMIT times at most (each adds one to its retry limit): one that keeps failing is
   * left failed, logged as an error, and pg-boss deletes it after its retention as before. Several
   * processes may sweep at once: pg-boss moves back only a job still failed. Returns how many were.
   */
  async sweepFailed(): Promise<number> {
    // One read of pg-boss's job table (its documented columns; getBlockedKeys + findJobs would page
    // through every completed job of each conversation): failed jobs of this queue still under
    // their sweep limit.
    const r = await sql<{ id: string; swept_out: boolean }>`
      SELECT id, retry_limit >= ${this.settings.retryLimit + SWEEP_LIMIT} AS swept_out
        FROM ${sql.id(this.#bossSchema, 'job')}
       WHERE name = ${MESSAGE_QUEUE} AND state = 'failed' AND policy = 'key_strict_fifo'
       LIMIT 1000`.execute(this.database.db);
    const ids = r.rows.filter((j) => !j.swept_out).map((j) => j.id);
    const stuck = r.rows.length - ids.length;
    if (stuck > 0 && stuck !== this.#stuckReported) {
      this.logger.error({ jobs: stuck }, 'failed jobs still hold their conversation after every sweep');
    }
    this.#stuckReported = stuck;
    if (ids.length === 0) return 0;
    const res = (await this.#boss.retry(MESSAGE_QUEUE, ids)) as { affected?: number };
    const moved = res.affected ?? 0;
    if (moved > 0) this.logger.warn({ jobs: moved }, 'ran again failed jobs that held their conversation');
    return moved;
  }

  /** Wakes every process's dispatcher (the channel pg-boss notifies on insert). Never throws. */
  async #wakeOthers(channel: string): Promise<void> {
    await sql`SELECT pg_notify(${channel}, ${MESSAGE_QUEUE})`
      .execute(this.database.db)
      .catch((err: unknown) => this.logger.warn({ err }, 'could not wake the other workers'));
  }

  /** pg-boss's wake-up channel for this schema (its notifyChannelSql). */
  async #wakeChannel(): Promise<string> {
    const r = await sql<{ channel: string }>`
      SELECT 'pgboss_' || left(encode(sha224(convert_to(${this.#bossSchema}::text, 'UTF8')), 'hex'), 24) AS channel`.execute(
      this.database.db,
    );
    return r.rows[0]!.channel;
  }

  /** Jobs waiting or running (metrics, tests). */
  async depth(): Promise<{ queued: number; active: number }> {
    const q = await this.#boss.getQueue(MESSAGE_QUEUE);
    return { queued: q?.queuedCount ?? 0, active: q?.activeCount ?? 0 };
  }

  /**
   * Graceful: no new jobs; running handlers get `timeoutMs` to finish; whatever is still running
   * then is failed back to the queue (retried by a live process), and the queue closes.
   */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    this.#stopping = true;
    const d = this.#dispatcher;
    if (d) {
      d.wake();
      await d.done;
      const deadline = Date.now() + timeoutMs;
      while (d.inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      d.stopTimers();
      const left = [...d.inFlight.values()];
      for (const c of d.controllers.values()) c.abort();
      if (left.length > 0) {
        await this.#boss
          .fail(
            MESSAGE_QUEUE,
            left.map((j) => ({ id: j.id, retryCount: j.retryCount })),
            { message: 'process stopped' },
          )
          .catch(() => {});
      }
    }
    await this.#unlisten?.().catch(() => {});
    await this.#boss.stop({ graceful: true, timeout: 5_000, close: true });
  }
}
