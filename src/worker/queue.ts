import { sql } from 'kysely';
import { PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import { Upstream } from '../domain/errors.js';
import type { Database } from '../store/database.js';
import { type Claim, type ClaimedWork, isClaimConflict, MessageQueueStore } from '../store/message-queue.js';
import {
  CUSTOMER_MESSAGE_CHANNEL,
  type Message,
  type MessageAccess,
  MessageStore,
  type MessageWork,
} from '../store/messages.js';
import { StaleAttempt } from './process-message.js';

/**
 * How many more times a message's last attempt runs after one that did not finish (its process died
 * or stopped, its claim lapsed, its fallback could not be written, or what an action made at Google
 * could not be read: OutcomeUnknown); the run after that gives up and
 * answers with the fallback at once (JobContext.giveUp), so no message holds its conversation for good.
 */
const LAST_ATTEMPT_RERUNS = 3;
/** A claim's length; the worker extends it every third of that while the handler runs. */
const LEASE_SECONDS = 15;
/** A handler still running after this is aborted and its claim left to lapse (pg-boss's expiry was 15 min). */
const MAX_RUN_MS = 15 * 60_000;

export interface JobContext {
  /** The message id and its claim number, for logs. */
  jobId: string;
  /** 0 on the first run. */
  attempt: number;
  /** No retry follows this attempt: the handler must answer the message (e.g. fallback reply). */
  isLastAttempt: boolean;
  /**
   * The last attempt already ran LAST_ATTEMPT_RERUNS + 1 times without finishing: answer with the
   * fallback now, without trying again what kept failing.
   */
  giveUp: boolean;
  signal: AbortSignal;
}

/**
 * What a handler that returned normally tells the queue. It returns only once its reply committed
 * (a failed write throws); that statement closed the message, which was the job's completion.
 */
export interface JobOutcome {
  /**
   * The conversation has another message waiting (as the reply's statement saw it). It became
   * claimable at that commit, and its insert's wake-up came too early (its conversation was held):
   * the queue fetches again at once (as it does when a customer message of this conversation was
   * announced while the job ran, see CUSTOMER_MESSAGE_CHANNEL).
   */
  nextWaiting?: boolean;
}

/**
 * Answers a claimed message whose row could not be read, on its last attempt (the fallback reply;
 * it returns once that committed, as a handler does).
 */
export type UnreadableHandler = (
  /** `claim`: the claim's number (`attempts`), which fences the answer as it fences a handler's. */
  message: { messageId: string; conversationId: string; claim: number },
  error: unknown,
) => Promise<JobOutcome | undefined>;

export interface QueueSettings {
  retryLimit: number;
  concurrency: number;
  /** Messages of the conversation the model sees (the claim reads them). */
  historyLimit: number;
  /** The backstop poll for work no notification announced (retries after their backoff); 2 s. */
  pollIntervalMs?: number;
  /** A claim's length (LEASE_SECONDS by default); the heartbeat extends claims every third of it. */
  claimSeconds?: number;
  /** A failed attempt's backoff, in seconds (`attempt` from 0); retryDelaySeconds by default. */
  retryDelaySeconds?: (attempt: number) => number;
  /**
   * Called for each message this process's worker takes: claimed by its own insert (`insert`,
   * JobQueue.accept) or by a claim statement (`claim`).
   */
  onPickup?: (path: 'insert' | 'claim', count: number) => void;
  /** Called as each job gives its slot back, with how long it held it (ms). */
  onSlotFreed?: (heldMs: number) => void;
}

/**
 * A retry's delay: `baseSeconds` (2 s) doubling per attempt, capped at 60 s, with jitter (as
 * pg-boss's backoff). Tests use a shorter base.
 */
export function retryDelaySeconds(attempt: number, baseSeconds = 2): number {
  const base = Math.min(60, baseSeconds * 2 ** attempt);
  return base / 2 + (Math.random() * base) / 2;
}

/**
 * How long the service that failed asked to be left alone (its Retry-After, on the Upstream error),
 * in seconds, at most 10 minutes; 0 when it did not say. A retry never comes sooner than that: a
 * rate-limited model would only refuse it again.
 */
function askedDelaySeconds(err: unknown): number {
  const ms = err instanceof Upstream ? (err.retryAfterMs ?? 0) : 0;
  return ms > 0 ? Math.min(600, ms / 1000) : 0;
}

/** A running claim's key: a run that outlived its claim and the run that took it over are two. */
const claimKey = (claim: Claim): string => `${claim.messageId}#${claim.attempts}`;

/**
 * The queues, in our database. Customer messages: the messages table itself
 * (src/store/message-queue.ts; a message and its job are one row, its reply's statement completes
 * it). Owner webhook deliveries: pg-boss 12 (src/worker/webhooks.ts), started and stopped here.
 * Guarantees relied on elsewhere:
 * - a stored customer message is queued (it is its own job);
 * - a conversation's messages are answered one at a time, in arrival order, while other
 *   conversations run in parallel;
 * - claims are extended while the handler runs: a message held by a crashed process is claimed
 *   again once its claim lapses;
 * - at-least-once: a handler may run more than once for a message, so handlers are idempotent.
 */
export class JobQueue {
  readonly #boss: PgBoss;
  readonly #messages: MessageQueueStore;
  readonly #store: MessageStore;
  readonly #claimSeconds: number;
  #started = false;
  #stopping = false;
  #unlisten: (() => Promise<void>) | undefined;
  #dispatcher:
    | {
        done: Promise<void>;
        inFlight: Map<string, Running>;
        stopTimers: () => void;
        wake: () => void;
        /** Holds a free slot for a message claimed by its own insert (accept); undefined when none. */
        reserve: () => SlotReservation | undefined;
        /** Slots held by reserve() and not yet run or given back. */
        reserved: () => number;
      }
    | undefined;

  constructor(
    private readonly database: Database,
    private readonly settings: QueueSettings,
    private readonly logger: Logger,
  ) {
    this.#claimSeconds = settings.claimSeconds ?? LEASE_SECONDS;
    this.#boss = new PgBoss({
      ...database.bossOptions(),
      // Webhook deliveries: the monitor notices their lapsed heartbeats; a short interval keeps their
      // crash recovery well under 60 s.
      monitorIntervalSeconds: 5,
      superviseIntervalSeconds: 5,
      maintenanceIntervalSeconds: 60,
      queueCacheIntervalSeconds: 5,
    });
    this.#messages = new MessageQueueStore(database.db);
    this.#store = new MessageStore(database.db);
    this.#boss.on('error', (err) => this.logger.error({ err }, 'job queue error'));
  }

  /** pg-boss, for the webhook deliveries' queue. */
  get boss(): PgBoss {
    return this.#boss;
  }

  async start(): Promise<void> {
    await this.#boss.start();
    this.#started = true;
  }

  /**
   * Stores a customer message (the POST's one statement) and returns it; undefined when the
   * conversation does not exist or the token is not its own.
   *
   * When this process works messages, is not stopping and has a free slot, the statement also claims
   * the message if its conversation is idle, and the slot runs it at once
   * (MessageQueueStore.insertClaimed): the message reaches the model without a wake-up hop or a claim
   * statement. Durability is the same as a claim's: the message is committed with its claim before
   * the POST is answered, and if this process dies before answering it, the claim lapses and any
   * worker claims it again (its claim's length); so does a statement whose answer is lost after its
   * commit (the POST fails, the message waits for its claim to lapse). Otherwise (no slot, the
   * conversation busy, an API-only process) it is stored unclaimed and announced, and whichever
   * worker is free claims it; only when a concurrent insert of its conversation claimed first does
   * that take a second statement.
   */
  async accept(conversationId: string, content: string, access: MessageAccess): Promise<Message | undefined> {
    const slot = this.#started && !this.#stopping ? this.#dispatcher?.reserve() : undefined;
    if (slot) {
      let stored: Awaited<ReturnType<MessageQueueStore['insertClaimed']>>;
      try {
        stored = await this.#messages.insertClaimed(
          conversationId,
          content,
          access === 'admin' ? null : access.customerTokenHash,
          this.#claimSeconds,
          this.settings.historyLimit,
        );
      } catch (err) {
        slot.cancel();
        throw err;
      }
      if (stored?.work) slot.run(stored.work);
      else slot.cancel();
      // Refused, or stored (claimed and running here, or unclaimed behind a pending message of its
      // conversation); else a concurrent insert of its conversation claimed first: stored below.
      if (!stored || stored.message) return stored?.message;
    }
    return this.#store.insertCustomerMessage(conversationId, content, access);
  }

  /**
   * Runs `handler` for up to `concurrency` messages at once in this process.
   *
   * One dispatcher loop: a wake-up causes one claim for all free slots (one statement that also
   * reads what answering each message needs); a freed slot fetches again when the last claim filled
   * every slot; polling every 2 s is the backstop for a missed notification and finds retries whose
   * backoff ended. Claims of running handlers are extended every third of a claim's length so a crash of
   * this process lets them run elsewhere once they lapse.
   */
  async workMessages(
    handler: (work: MessageWork, ctx: JobContext) => Promise<JobOutcome | undefined>,
    unreadable?: UnreadableHandler,
  ): Promise<void> {
    const inFlight = new Map<string, Running>();
    let wake: (() => void) | undefined;
    let woken = false;
    const nudge = () => {
      woken = true;
      wake?.();
    };
    // Every committed customer message is announced (its insert's statement). One of a conversation
    // whose message runs here can only be claimed once that job's reply commits, and a client that
    // answers the reply at once races it: its announcement may come before the commit (the claim it
    // causes finds the conversation held) while the reply's statement did not see it yet. The job
    // remembers it and fetches again once done.
    const unlisten = await this.database.listen(
      CUSTOMER_MESSAGE_CHANNEL,
      (payload) => {
        const [conversationId = '', messageId] = payload.split(' ');
        for (const job of inFlight.values()) {
          if (job.conversationId === conversationId && job.claim.messageId !== messageId) job.arrived = true;
        }
        nudge();
      },
      // Back after a lost LISTEN connection: what was announced meanwhile was missed.
      (listening) => {
        if (listening) nudge();
      },
    );
    this.#unlisten = unlisten;
    const heartbeat = setInterval(
      () => {
        const now = performance.now();
        const live: Running[] = [];
        for (const job of inFlight.values()) {
          if (now - job.startedPerf < MAX_RUN_MS) live.push(job);
          else job.controller.abort(new Error('the message took too long; its claim is left to lapse'));
        }
        this.#messages
          .extend(
            live.map((job) => job.claim),
            this.#claimSeconds,
          )
          .then((held) => {
            // A claim not extended is no longer this run's: taken over after it lapsed (this process
            // stalled), or closed. Its run is aborted, so it makes no further change at Google (the
            // booking path checks the signal before each one; its writes are fenced by the claim
            // anyway). Once answered, the abort reaches a run that has nothing left to do.
            const kept = new Set(held.map(claimKey));
            for (const job of live) {
              if (!kept.has(claimKey(job.claim)) && !job.controller.signal.aborted)
                job.controller.abort(new StaleAttempt('the message’s claim is no longer this run’s'));
            }
          })
          .catch((err: unknown) => this.logger.warn({ err }, 'extending message claims failed'));
      },
      (this.#claimSeconds * 1000) / 3,
    );
    heartbeat.unref();

    // True when the last fetch filled every free slot: more work may be waiting, so a finishing job
    // fetches again. Otherwise new work announces itself (NOTIFY on insert; a conversation's next
    // message through its handler's `nextWaiting`) and retries after a backoff are found by the
    // poll, so a finishing job costs no extra fetch.
    let saturated = false;
    const run = async ({ claim, conversationId, work, error }: ClaimedWork) => {
      const attempt = claim.attempts - 1;
      const job: Running = {
        claim,
        conversationId,
        controller: new AbortController(),
        startedPerf: performance.now(),
        arrived: false,
        releasedByStop: false,
      };
      // Keyed by claim, not message: a run that outlived its claim and the run that took the message
      // over in this process are two jobs (slots, heartbeats, stop).
      const key = claimKey(claim);
      inFlight.set(key, job);
      let nextWaiting = false;
      try {
        let outcome: JobOutcome | undefined;
        if (!work) {
          // A row that cannot be read (its agent's stored settings corrupt, say) is retried like a
          // failed attempt, so a repair meanwhile lets it run; its last attempt answers it with the
          // fallback instead, so it does not hold its conversation for good.
          if (!unreadable || attempt < this.settings.retryLimit) throw error;
          this.logger.error(
            { err: error, message_id: claim.messageId, attempt },
            'a claimed message could not be read on its last attempt: answering with the fallback',
          );
          outcome = await unreadable(
            { messageId: claim.messageId, conversationId, claim: claim.attempts },
            error,
          );
        } else {
          outcome = await handler(work, {
            jobId: key,
            attempt,
            isLastAttempt: attempt >= this.settings.retryLimit,
            giveUp: attempt > this.settings.retryLimit + LAST_ATTEMPT_RERUNS,
            signal: job.controller.signal,
          });
        }
        // The reply's statement closed the message: nothing left to complete. The conversation's
        // next message is claimable now; this process has a free slot, so it fetches it itself; if
        // it is stopping, it wakes the others.
        nextWaiting = outcome?.nextWaiting === true || job.arrived;
        if (nextWaiting && this.#stopping) await this.#wakeOthers(job.conversationId);
      } catch (err) {
        if (!work)
          this.logger.error({ err, message_id: claim.messageId }, 'a claimed message could not be read');
        // The claim goes back with a backoff (unless stop() gave it back already); a no-op if it was
        // meanwhile taken over elsewhere.
        if (job.releasedByStop) return;
        await this.#messages
          .release(
            claim,
            Math.max((this.settings.retryDelaySeconds ?? retryDelaySeconds)(attempt), askedDelaySeconds(err)),
            String((err as Error)?.message ?? err),
          )
          .catch((e: unknown) =>
            this.logger.error({ err: e, message_id: claim.messageId }, 'could not give a claim back'),
          );
      } finally {
        inFlight.delete(key);
        if (saturated || woken || nextWaiting) nudge();
        try {
          this.settings.onSlotFreed?.(performance.now() - job.startedPerf);
        } catch (err) {
          this.logger.warn({ err }, 'the slot-freed callback failed');
        }
      }
    };

    // Slots held for messages their own insert is claiming (accept), and slots a claim statement in
    // flight may fill: each side counts the other's as taken, so together they never run more than
    // `concurrency` messages.
    let reserved = 0;
    let claiming = 0;
    const reserve = (): SlotReservation | undefined => {
      if (this.#stopping || inFlight.size + reserved + claiming >= this.settings.concurrency)
        return undefined;
      reserved += 1;
      let open = true;
      const close = () => {
        if (!open) return false;
        open = false;
        reserved -= 1;
        return true;
      };
      return {
        run: (work) => {
          if (!close()) return;
          this.settings.onPickup?.('insert', 1);
          void run(work);
        },
        cancel: () => {
          // The slot is free again: if a wake-up found no free slot meanwhile, fetch now.
          if (close() && (saturated || woken)) nudge();
        },
      };
    };

    const loop = async () => {
      while (!this.#stopping) {
        const free = this.settings.concurrency - inFlight.size - reserved;
        let fetched = 0;
        if (free > 0) {
          woken = false;
          claiming = free;
          try {
            const claimed = await this.#messages.claim(free, this.#claimSeconds, this.settings.historyLimit);
            claiming = 0;
            fetched = claimed.length;
            saturated = fetched === free;
            if (fetched > 0) this.settings.onPickup?.('claim', fetched);
            // Each run enters inFlight synchronously, before anything else can reserve.
            for (const c of claimed) void run(c);
          } catch (err) {
            claiming = 0;
            if (isClaimConflict(err)) {
              // Another worker claimed a message of the same conversation at the same moment; the
              // statement claimed nothing. Fetch again: its snapshot will see that claim.
              woken = true;
            } else {
              this.logger.error({ err }, 'claiming messages failed');
              await new Promise((r) => setTimeout(r, 1000));
            }
          }
        }
        // A full batch means more may be waiting; otherwise sleep until woken or the poll.
        if (fetched > 0 && fetched === free) continue;
        // Woken with no free slot: wait (a finishing job nudges again). Looping here would spin
        // without awaiting and starve the event loop: jobs, heartbeats and signals would all stall.
        if (woken && this.settings.concurrency - inFlight.size - reserved > 0) continue;
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
      stopTimers: () => clearInterval(heartbeat),
      wake: nudge,
      reserve,
      reserved: () => reserved,
    };
  }

  /** Wakes every process's dispatcher (a customer message's announcement). Never throws. */
  async #wakeOthers(conversationId: string): Promise<void> {
    await sql`SELECT pg_notify(agent_meetings_channel(${CUSTOMER_MESSAGE_CHANNEL}), ${conversationId})`
      .execute(this.database.db)
      .catch((err: unknown) => this.logger.warn({ err }, 'could not wake the other workers'));
  }

  /**
   * Graceful: no new claims; running handlers get `timeoutMs` to finish; those still running then are
   * aborted and their claims given back, the other processes woken to claim them at once, and pg-boss
   * stops.
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
      // A POST whose insert is claiming its message still holds a reserved slot: it runs here too.
      while ((d.inFlight.size > 0 || d.reserved() > 0) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      d.stopTimers();
      const left = [...d.inFlight.values()];
      for (const job of left) {
        job.releasedByStop = true;
        job.controller.abort(new Error('process stopped'));
      }
      await Promise.all(
        left.map((job) => this.#messages.release(job.claim, 0, 'process stopped').catch(() => false)),
      );
      for (const conversationId of new Set(left.map((job) => job.conversationId))) {
        await this.#wakeOthers(conversationId);
      }
    }
    await this.#unlisten?.().catch(() => {});
    await this.#boss.stop({ graceful: true, timeout: 5_000, close: true });
  }
}

/** A worker slot held for a message its own insert is claiming (JobQueue.accept). */
interface SlotReservation {
  /** The insert claimed it: run it in this slot. */
  run(work: ClaimedWork): void;
  /** It was not claimed (or the statement failed): the slot is free again. */
  cancel(): void;
}

/** A message being answered in this process. */
interface Running {
  claim: Claim;
  conversationId: string;
  controller: AbortController;
  /** When it started, on the monotonic clock: its run limit and slot time, whatever the wall clock does. */
  startedPerf: number;
  /** Another message of its conversation was announced meanwhile (fetch again once done). */
  arrived: boolean;
  /** stop() gave its claim back: the run's own failure must not (its backoff would override). */
  releasedByStop: boolean;
}
