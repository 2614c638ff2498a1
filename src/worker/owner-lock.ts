import { randomUUID } from 'node:crypto';
import type { RawBuilder, Transaction } from 'kysely';
import type { Logger } from 'pino';
import { Upstream } from '../domain/errors.js';
import type { BookingLeaseStore, LeaseRange } from '../store/booking-leases.js';
import type { DB } from '../store/schema.js';

export interface OwnerLockOptions {
  /** Lease length; renewed every third of it while held, so a crashed holder blocks at most this long. */
  leaseMs?: number;
  /** How long to wait for the lease before giving up (retryable: the job runs again later). */
  waitMs?: number;
  /** How often a held lease is renewed (default a third of `leaseMs`; tests stand in for a stall). */
  renewEveryMs?: number;
}

/** A held owner lock. */
export interface OwnerLease {
  /**
   * Gives the lease back inside the caller's transaction (the reply's, with the meeting row): the
   * next booking of this owner can take it exactly when that row becomes visible, and the release
   * costs no commit of its own.
   */
  releaseIn(trx: Transaction<DB>): Promise<void>;
  /**
   * As `releaseIn`, for a caller that gives the hold back within a statement of its own: the reply's
   * statement itself (autocommit, see MeetingStore.bookedRows) or one in the reply's transaction
   * (MeetingStore.insertBooked). `write` gets the hold's key, and the lease counts as given back once
   * `write` resolved (if it throws, release() gives it back as after any failure).
   */
  releaseWith<T>(write: (key: { userId: string; holder: string }) => Promise<T>): Promise<T>;
  /**
   * Frees the lock once the reply's write (its statement or transaction) is over. `committed`: it
   * committed, so a releaseIn or releaseWith in it already gave the lease back; otherwise the hold
   * is given back now (the owner's row stays: rows are never deleted, see migration 010).
   * Idempotent.
   */
  release(committed?: boolean): Promise<void>;
  /** Rows of the `also` CTE given to acquire(), which ran in the lease's first statement (0 without). */
  alsoRows: number;
  /**
   * The value of the `read` given to acquire(), when the lease's first statement took the hold and
   * what it read is current (BookingLeaseStore.tryAcquire); undefined otherwise: read after the grant.
   */
  read?: unknown;
  /**
   * Makes sure the hold is still ours right before a Calendar change made under it: when the hold
   * was last confirmed (taken or renewed) more than a third of the lease ago, as after a stall of this
   * process (a long GC pause, a frozen VM), it is renewed now, and a hold that lapsed meanwhile (and
   * may have let an overlapping booking in) fails the booking with a retryable error instead. Costs no
   * statement otherwise.
   */
  confirm(): Promise<void>;
  /**
   * True only if no hold of this owner ended (was given back, or lapsed and was dropped) after
   * `sentAt` (this process's performance.now()) by the time the hold was taken; false may also mean
   * it cannot tell. Then a Calendar read sent at `sentAt`, before the lease statement, already saw
   * every event made under an earlier hold of an overlapping range (each was made before its hold
   * ended), and later ones wait for this hold: BookingService sends its freeBusy read alongside the
   * lease statement and keeps it only when this holds.
   */
  quietSince(sentAt: number): boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A hold of this process on an owner's time range, and when it ends. */
interface LocalHold {
  range: LeaseRange;
  ended: Promise<void>;
}

const overlaps = (a: LeaseRange, b: LeaseRange) => a.from < b.to && b.from < a.to;

/**
 * "Two customers asking for the same slot of one owner at the same moment cannot both get it": the
 * availability check and the booking (freeBusy -> events.insert -> meeting row committed) run under
 * the owner's lock on the range of time the booking may conflict with (its meeting widened by the
 * buffer), across every process. Bookings of one owner whose ranges do not overlap run at once.
 *
 * Why a lease row and not an advisory lock: the critical section contains Google calls (seconds).
 * A transaction-scoped advisory lock would keep a transaction open across them, and on the embedded
 * database (one connection) that blocks every other query of the process; a session advisory lock
 * needs a dedicated connection per held owner on a server and does not exist as such on PGlite. A
 * lease (like the token-refresh lease) is a few one-statement queries on either database; it is
 * renewed while held and lapses by itself if its holder dies. In this process, a caller first waits
 * for this process's holds that overlap its range, so callers do not poll the database against each
 * other.
 */
export class OwnerBookingLock {
  /** This process's holds and waiters per owner, in arrival order. */
  readonly #local = new Map<string, LocalHold[]>();
  readonly #leaseMs: number;
  readonly #waitMs: number;
  readonly #renewEveryMs: number;

  constructor(
    private readonly leases: BookingLeaseStore,
    private readonly logger: Logger,
    options: OwnerLockOptions = {},
  ) {
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#waitMs = options.waitMs ?? 25_000;
    this.#renewEveryMs = options.renewEveryMs ?? this.#leaseMs / 3;
  }

  /**
   * Takes the owner's lock on `range` (WHOLE_OWNER for all of the owner's time). `also`: a
   * data-modifying CTE run once, in the first statement that tries for the lease, whether or not
   * that one gets it (the model output a booking acts on: stored by the commit that also takes the
   * lease, one round trip, see BookingService#lock). `read`: a scalar subquery for that first
   * statement to evaluate too (see OwnerLease.read). `outlast`: wait a lease's length longer than
   * usual, so that a hold whose process stalled (and renews it no more) has lapsed before this gives
   * up (see BookingService.recover); such a waiter joins this process's queue of holds only once it
   * holds the time, so this process's other bookings of the owner do not wait behind its long wait.
   * `signal`: stop waiting once aborted (the run is stopping).
   */
  async acquire(
    userId: string,
    range: LeaseRange,
    also?: RawBuilder<unknown>,
    read?: RawBuilder<unknown>,
    options: { outlast?: boolean; signal?: AbortSignal | undefined } = {},
  ): Promise<OwnerLease> {
    const { outlast = false, signal } = options;
    const waitMs = this.#waitMs + (outlast ? this.#leaseMs : 0);
    const earlier = (this.#local.get(userId) ?? [])
      .filter((h) => overlaps(h.range, range))
      .map((h) => h.ended);
    let releaseLocal!: () => void;
    const mine: LocalHold = {
      range,
      ended: new Promise<void>((resolve) => {
        releaseLocal = resolve;
      }),
    };
    const joinLocal = () => {
      const holds = this.#local.get(userId) ?? [];
      holds.push(mine);
      this.#local.set(userId, holds);
    };
    if (!outlast) joinLocal();
    const dropLocal = () => {
      releaseLocal();
      const left = (this.#local.get(userId) ?? []).filter((h) => h !== mine);
      if (left.length === 0) this.#local.delete(userId);
      else this.#local.set(userId, left);
    };
    const previous = Promise.all(earlier);

    const deadline = performance.now() + waitMs;
    // Set once a statement that may take the hold was sent: a failure after it gives the hold back
    // (its commit may have reached the database even if its answer did not).
    let sentFor: string | undefined;
    try {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      try {
        signal?.throwIfAborted();
        await Promise.race([
          previous,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Upstream(`timed out waiting for another booking of ${userId}`, true)),
              waitMs,
            );
            if (signal) {
              onAbort = () => reject(signal.reason);
              signal.addEventListener('abort', onAbort, { once: true });
            }
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener('abort', onAbort);
      }
      const holder = randomUUID();
      sentFor = holder;
      let delay = 25;
      let attempt = await this.leases.tryAcquire(userId, holder, range, this.#leaseMs, also, read);
      const { alsoRows, read: firstRead } = attempt;
      while (!attempt.acquired) {
        if (performance.now() > deadline) {
          throw new Upstream(`timed out waiting for another process's booking of ${userId}`, true);
        }
        await sleep(delay);
        signal?.throwIfAborted();
        delay = Math.min(delay * 2, 250);
        attempt = await this.leases.tryAcquire(userId, holder, range, this.#leaseMs);
      }
      if (outlast) joinLocal();
      // The taking statement began no later than its answer came back, so a hold that ended
      // `quietMs` before it began (database clock) ended before `sentAt` if quietMs exceeds the time
      // from `sentAt` to that answer (this process's monotonic clock): durations only, so the two
      // clocks need not agree; the margin covers rounding and their rates differing by up to 0.1 %.
      const answeredAt = performance.now();
      const quietMs = attempt.quietMs;
      // When the hold was last known to be live (taken, or renewed), and whether a renewal found it gone.
      // The monotonic clock: a wall clock stepped back (NTP) after a stall would make a lapsed hold look
      // fresh, and a change would then be sent over time another booking holds.
      let confirmedAt = performance.now();
      let lost = false;
      const renew = async (): Promise<boolean> => {
        const started = performance.now();
        const held = await this.leases.renew(userId, holder, this.#leaseMs);
        if (held) confirmedAt = started;
        else lost = true;
        return held;
      };
      const renewal = setInterval(() => {
        renew().then(
          (held) => {
            if (!held) this.logger.error({ user_id: userId }, 'booking lease lost while held');
          },
          (err: unknown) => this.logger.warn({ err, user_id: userId }, 'booking lease renewal failed'),
        );
      }, this.#renewEveryMs);
      renewal.unref();
      const leaseMs = this.#leaseMs;
      let released = false;
      let releasedInTrx = false;
      return {
        alsoRows,
        ...(firstRead !== undefined ? { read: firstRead } : {}),
        quietSince: (sentAt) => quietMs > (answeredAt - sentAt) * 1.001 + 1,
        confirm: async () => {
          if (!lost && performance.now() - confirmedAt <= leaseMs / 3) return;
          if (lost || !(await renew())) {
            throw new Upstream(`the booking lease of ${userId} lapsed while held; booking again`, true);
          }
        },
        releaseIn: async (trx) => {
          // No renewal from here on: it would wait on this transaction's row lock, then find the row
          // gone. release() follows at once either way.
          clearInterval(renewal);
          await this.leases.release(userId, holder, trx);
          releasedInTrx = true;
        },
        releaseWith: async (write) => {
          clearInterval(renewal);
          const result = await write({ userId, holder });
          releasedInTrx = true;
          return result;
        },
        release: async (committed = false) => {
          if (released) return;
          released = true;
          clearInterval(renewal);
          try {
            if (!(committed && releasedInTrx)) await this.leases.release(userId, holder);
          } catch (err) {
            // It lapses by itself within leaseMs.
            this.logger.warn({ err, user_id: userId }, 'could not release the booking lease');
          } finally {
            dropLocal();
          }
        },
      };
    } catch (err) {
      if (sentFor) {
        await this.leases.release(userId, sentFor).catch((e: unknown) => {
          // It lapses by itself within leaseMs.
          this.logger.warn({ err: e, user_id: userId }, 'could not give back a hold after a failure');
        });
      }
      dropLocal();
      throw err;
    }
  }
}
