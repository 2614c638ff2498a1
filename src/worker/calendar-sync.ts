import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { CalendarEventState, CalendarGateway } from '../domain/calendar-gateway.js';
import { driftOf, driftsOf, type MeetingDrift, type SyncedMeeting } from '../domain/calendar-sync.js';
import { CalendarNotConnected, ChangesTooOld, TooManyChanges, Upstream } from '../domain/errors.js';
import { meetingEventData } from '../domain/owner-events.js';
import { WHOLE_OWNER } from '../store/booking-leases.js';
import type { CalendarSyncStore, SyncClaim } from '../store/calendar-sync.js';
import type { Meeting, MeetingStore } from '../store/meetings.js';
import type { DB } from '../store/schema.js';
import type { OwnerEventSink } from './owner-events.js';
import type { OwnerBookingLock } from './owner-lock.js';

type PassOutcome = 'synced' | 'deferred' | 'failed';

/** Owners claimed per statement and passed over at once; a pass claims until none is due. */
const CLAIM_BATCH = 20;
/**
 * Read changes from this long before the last pass was claimed (the database's clock, the same for
 * every process): `updatedMin` is compared with Google's clock, not ours. Reading a change twice is
 * harmless (a meeting already in step has no drift).
 */
const CLOCK_MARGIN_MS = 5 * 60_000;
/** The first pass over an owner reads their meetings' whole window from this long ago. */
const WINDOW_BEFORE_MS = 24 * 3_600_000;
/** Google reads of one owner's events in flight at once. */
const READS_AT_ONCE = 4;

/** `fn` over `items`, at most `limit` at once, every outcome kept in order (none rejects the whole). */
async function settleLimited<T, R>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        // Not started once the process is stopping: counted as not read.
        signal.throwIfAborted();
        results[i] = { status: 'fulfilled', value: await fn(items[i]!) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/**
 * The rejected reads among `results` (each logged), after rethrowing a lost connection: an owner
 * whose grant Google revoked mid-pass is left alone, as one revoked before it (see syncOwner).
 */
function failedReads(
  results: PromiseSettledResult<unknown>[],
  log: Logger,
  ids: (i: number) => string,
): number {
  const lost = results.find((r) => r.status === 'rejected' && r.reason instanceof CalendarNotConnected);
  if (lost?.status === 'rejected') throw lost.reason;
  let failed = 0;
  for (const [i, r] of results.entries()) {
    if (r.status !== 'rejected') continue;
    failed++;
    log.warn({ err: r.reason, event_id: ids(i) }, 'calendar sync could not read an event');
  }
  return failed;
}

export interface CalendarSyncDeps {
  db: Kysely<DB>;
  store: CalendarSyncStore;
  meetings: MeetingStore;
  calendar: CalendarGateway;
  lock: OwnerBookingLock;
  events?: OwnerEventSink | undefined;
  logger: Logger;
  /** Seconds between two passes over one owner (CALENDAR_SYNC_SECONDS). */
  everySeconds: number;
  onChange?: (kind: MeetingDrift['kind']) => void;
  onPass?: (result: PassOutcome) => void;
}

/**
 * Keeps our meetings in step with the owner's calendar: an event the owner deleted in Google
 * Calendar cancels its meeting here, an event they moved (or lengthened) moves it. Without this the
 * meeting stayed `scheduled`: offered to the model as the conversation's meeting, counted against
 * MAX_BOOKINGS_PER_CONVERSATION, listed by the owner API.
 *
 * Each pass reads, per owner with a meeting not yet over, the events Google changed since the last
 * pass (events.list with updatedMin, deleted ones included), or the meetings' whole window the first
 * time or when Google no longer keeps changes that old. Only when an event of ours differs from its
 * meeting does the pass take the owner's whole time (the lock chat bookings, moves and cancels take,
 * see OwnerBookingLock) and read each such event again under it: a chat move between its change at
 * Google and its reply's commit would otherwise look like an owner's move, or an owner's move read
 * before our own later one would undo it. What it then finds is committed with its owner event
 * (meeting.cancelled / meeting.rescheduled, `source: "calendar"`) in one transaction.
 */
export class CalendarSync {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  readonly #stop = new AbortController();
  /** A retry of a Google read is not sent once the process is stopping. */
  readonly #guard = async () => this.#stop.signal.throwIfAborted();

  constructor(private readonly deps: CalendarSyncDeps) {}

  /** Ticks at most every 30 s; the claim statement decides which owners are due. */
  start(): void {
    const tickMs = Math.min(this.deps.everySeconds, 30) * 1000;
    const tick = () => {
      this.#running ??= this.runOnce()
        .catch((err: unknown) => this.deps.logger.error({ err }, 'calendar sync pass failed'))
        .finally(() => {
          this.#running = undefined;
        });
    };
    this.#timer = setInterval(tick, tickMs);
    this.#timer.unref();
  }

  /** Stops ticking; a pass running is cut short (its lock wait aborted) and waited for. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#stop.abort(new Error('stopping'));
    await this.#running;
  }

  /**
   * One round: every owner due, claimed a batch at a time in user order, each batch after the last
   * one's candidates (so a round looks at each owner once, and a batch another process claimed
   * first does not end the round).
   */
  async runOnce(): Promise<void> {
    let after: string | null = null;
    for (;;) {
      if (this.#stop.signal.aborted) return;
      const batch = await this.deps.store.claimDue(this.deps.everySeconds, CLAIM_BATCH, after);
      if (batch.last === null) return;
      after = batch.last;
      // A batch's owners at once (each catches its own failure): an owner claimed waits for no other
      // owner's pass, so the claim's interval is not spent waiting in line.
      await Promise.all(batch.claims.map((claim) => this.syncOwner(claim)));
    }
  }

  /** One owner's pass; failures are logged and the owner's changes read again next time. */
  async syncOwner(claim: SyncClaim): Promise<void> {
    const { userId } = claim;
    const log = this.deps.logger.child({ user_id: userId });
    if (this.#stop.signal.aborted) return;
    try {
      const outcome = await this.#pass(userId, claim.syncedThrough, log);
      // Only a pass that saw and settled everything moves the owner's read point: after a deferred
      // or partly failed one, the next pass reads the same changes again (applied ones are in step
      // by then and change nothing).
      if (outcome === 'synced') {
        await this.deps.store.markSynced(
          userId,
          claim.syncedThrough,
          new Date(claim.claimedAt.getTime() - CLOCK_MARGIN_MS),
        );
      }
      this.deps.onPass?.(outcome);
    } catch (err) {
      if (this.#stop.signal.aborted) return;
      if (err instanceof CalendarNotConnected) return; // revoked meanwhile: nothing to read until reconnected
      this.deps.onPass?.('failed');
      log.warn({ err }, 'calendar sync of an owner failed; read again at the next pass');
    }
  }

  async #pass(userId: string, since: Date | null, log: Logger): Promise<PassOutcome> {
    const meetings = await this.deps.store.watched(userId);
    if (meetings.length === 0) return 'synced';
    const read = await this.#read(userId, meetings, since, log);
    const drifts = driftsOf(meetings, read.events);
    const applied = drifts.length > 0 ? await this.#apply(userId, drifts, log) : 'synced';
    return read.complete ? applied : 'failed';
  }

  async #read(
    userId: string,
    meetings: SyncedMeeting[],
    since: Date | null,
    log: Logger,
  ): Promise<{ events: CalendarEventState[]; complete: boolean }> {
    if (since) {
      try {
        const events = await this.deps.calendar.eventChanges(userId, { updatedMin: since }, this.#guard);
        return { events, complete: true };
      } catch (err) {
        // No longer kept, or more than one read goes through: the window instead.
        if (!(err instanceof ChangesTooOld || err instanceof TooManyChanges)) throw err;
      }
    }
    const ends = meetings.map((m) => m.meetingTime.getTime() + m.durationMinutes * 60_000);
    let listed: CalendarEventState[] = [];
    try {
      listed = await this.deps.calendar.eventChanges(
        userId,
        { from: new Date(Date.now() - WINDOW_BEFORE_MS), to: new Date(Math.max(...ends) + 60_000) },
        this.#guard,
      );
    } catch (err) {
      // A window too full to read: each meeting's event is read by itself below (bounded by the
      // owner's meetings, not by the calendar's events).
      if (!(err instanceof TooManyChanges)) throw err;
      log.info('calendar sync: the meetings’ window holds too many events; reading each meeting’s event');
    }
    // The window holds only events still in it: one the owner moved out of it is not listed. Each
    // meeting whose event was not listed is read by itself, a few at a time. An event Google does
    // not know (404: purged long after its deletion, or the owner reconnected another account) is
    // left alone: nothing says what became of it.
    const seen = new Set(listed.map((e) => e.eventId));
    const missing = meetings.filter((m) => !seen.has(m.googleEventId));
    const results = await settleLimited(missing, READS_AT_ONCE, this.#stop.signal, (m) =>
      this.deps.calendar.eventState(userId, m.googleEventId, this.#guard),
    );
    const failed = failedReads(results, log, (i) => missing[i]?.googleEventId ?? '');
    const events = [...listed];
    for (const r of results) if (r.status === 'fulfilled' && r.value) events.push(r.value);
    return { events, complete: failed === 0 };
  }

  /**
   * Under the owner's whole time: each drift read again from Google and from our row, then committed.
   * A drift in a conversation whose customer message is still pending with a stored model output
   * (it may act on its meetings) is left for a later pass: that message's attempt may have made the
   * move or cancel at Google and then failed before its reply committed (its hold given back until
   * the retry). The retry records the change itself; recording it here as the owner's would tell the
   * owner twice, or leave the retry without its meeting. Such messages are looked for before the
   * lease (no lease when every drift waits) and again under it (a run that acted meanwhile).
   */
  async #apply(userId: string, drifts: MeetingDrift[], log: Logger): Promise<PassOutcome> {
    const before = await this.#notInFlight(drifts.map((d) => d.meetingId));
    let outcome: PassOutcome = before.length < drifts.length ? 'deferred' : 'synced';
    if (before.length === 0) return outcome;
    let lease: Awaited<ReturnType<OwnerBookingLock['acquire']>>;
    try {
      lease = await this.deps.lock.acquire(userId, WHOLE_OWNER, undefined, undefined, {
        signal: this.#stop.signal,
      });
    } catch (err) {
      if (err instanceof Upstream) throw new Upstream('the owner’s time stayed taken', true, { cause: err });
      throw err;
    }
    try {
      const live = await this.#notInFlight(before.map((m) => m.meeting_id));
      if (live.length < before.length) outcome = 'deferred';
      // Read at once, not one after another: the owner's bookings wait while this holds their time.
      const now = await settleLimited(live, READS_AT_ONCE, this.#stop.signal, (m) =>
        this.deps.calendar.eventState(userId, m.google_event_id, this.#guard),
      );
      if (failedReads(now, log, (i) => live[i]?.google_event_id ?? '') > 0) outcome = 'failed';
      for (const [i, meeting] of live.entries()) {
        this.#stop.signal.throwIfAborted();
        const state = now[i]!;
        // Not read (counted above), or unknown to Google (see #read): left alone.
        if (state.status === 'rejected' || !state.value) continue;
        const drift = driftOf(
          {
            meetingId: meeting.meeting_id,
            googleEventId: meeting.google_event_id,
            meetingTime: meeting.meeting_time,
            durationMinutes: meeting.duration_minutes,
          },
          state.value,
        );
        if (!drift) continue;
        // This process may have stalled since it took the hold: still ours, or no change is made.
        await lease.confirm();
        await this.#commit(drift, log);
      }
    } finally {
      await lease.release();
    }
    if (outcome === 'deferred')
      log.info('calendar sync left a change for later: its conversation has a message in flight');
    return outcome;
  }

  /** The scheduled meetings among these whose conversation has no message in flight (see #apply). */
  async #notInFlight(meetingIds: string[]): Promise<Meeting[]> {
    const rows = await this.deps.meetings.getMany(meetingIds);
    const scheduled = rows.filter((m) => m.status === 'scheduled');
    const busy = await this.deps.store.conversationsInFlight(scheduled.map((m) => m.conversation_id));
    return scheduled.filter((m) => !busy.has(m.conversation_id));
  }

  async #commit(drift: MeetingDrift, log: Logger): Promise<void> {
    const { events, meetings } = this.deps;
    const row = await this.deps.db.transaction().execute(async (trx) => {
      const changed =
        drift.kind === 'cancelled'
          ? await meetings.cancelIn(trx, drift.meetingId)
          : await this.deps.store.moveIn(trx, drift.meetingId, drift);
      if (changed && events) {
        const type = drift.kind === 'cancelled' ? 'meeting.cancelled' : 'meeting.rescheduled';
        await events.emit(trx, {
          userId: changed.user_id,
          type,
          key:
            drift.kind === 'cancelled'
              ? `meeting.cancelled:${changed.meeting_id}`
              : `meeting.rescheduled:calendar:${changed.meeting_id}:${changed.reschedule_count}`,
          data: { ...meetingEventData(changed), source: 'calendar' },
        });
      }
      return changed;
    });
    if (!row) return;
    this.deps.onChange?.(drift.kind);
    log.info(
      { meeting_id: row.meeting_id, change: drift.kind, meeting_time: row.meeting_time },
      drift.kind === 'cancelled'
        ? 'meeting cancelled: its event was deleted in Google Calendar'
        : 'meeting moved: its event was moved in Google Calendar',
    );
  }
}
