import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { CalendarGateway } from '../domain/calendar-gateway.js';
import { driftOf, driftsOf, type MeetingDrift } from '../domain/calendar-sync.js';
import { CalendarNotConnected, ChangesTooOld, Upstream } from '../domain/errors.js';
import { meetingEventData } from '../domain/owner-events.js';
import { WHOLE_OWNER } from '../store/booking-leases.js';
import type { CalendarSyncStore, SyncClaim } from '../store/calendar-sync.js';
import type { MeetingStore } from '../store/meetings.js';
import type { DB } from '../store/schema.js';
import type { OwnerEventSink } from './owner-events.js';
import type { OwnerBookingLock } from './owner-lock.js';

/** Owners claimed per statement; a pass claims until none is due. */
const CLAIM_BATCH = 20;
/**
 * Read changes from this long before the last pass began: `updatedMin` is compared with Google's
 * clock, not ours. Reading a change twice is harmless (a meeting already in step has no drift).
 */
const CLOCK_MARGIN_MS = 5 * 60_000;
/** The first pass over an owner reads their meetings' whole window from this long ago. */
const WINDOW_BEFORE_MS = 24 * 3_600_000;

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
  onPass?: (result: 'synced' | 'failed') => void;
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

  /** One pass: every owner due, claimed a batch at a time. */
  async runOnce(): Promise<void> {
    for (;;) {
      if (this.#stop.signal.aborted) return;
      const claims = await this.deps.store.claimDue(this.deps.everySeconds, CLAIM_BATCH);
      if (claims.length === 0) return;
      for (const claim of claims) {
        if (this.#stop.signal.aborted) return;
        await this.syncOwner(claim);
      }
    }
  }

  /** One owner's pass; failures are logged and the owner's changes read again next time. */
  async syncOwner(claim: SyncClaim): Promise<void> {
    const { userId } = claim;
    const log = this.deps.logger.child({ user_id: userId });
    const startedAt = Date.now();
    try {
      const meetings = await this.deps.store.watched(userId);
      if (meetings.length > 0) {
        const events = await this.#read(userId, meetings, claim.syncedThrough);
        const drifts = driftsOf(meetings, events);
        if (drifts.length > 0) await this.#apply(userId, drifts, log);
      }
      await this.deps.store.markSynced(userId, new Date(startedAt - CLOCK_MARGIN_MS));
      this.deps.onPass?.('synced');
    } catch (err) {
      this.deps.onPass?.('failed');
      if (err instanceof CalendarNotConnected) return; // nothing to read until it is reconnected
      if (this.#stop.signal.aborted) return;
      log.warn({ err }, 'calendar sync of an owner failed; read again at the next pass');
    }
  }

  async #read(
    userId: string,
    meetings: { meetingTime: Date; durationMinutes: number }[],
    since: Date | null,
  ) {
    if (since) {
      try {
        return await this.deps.calendar.eventChanges(userId, { updatedMin: since }, this.#guard);
      } catch (err) {
        if (!(err instanceof ChangesTooOld)) throw err;
      }
    }
    const ends = meetings.map((m) => m.meetingTime.getTime() + m.durationMinutes * 60_000);
    return this.deps.calendar.eventChanges(
      userId,
      { from: new Date(Date.now() - WINDOW_BEFORE_MS), to: new Date(Math.max(...ends) + 60_000) },
      this.#guard,
    );
  }

  /** Under the owner's whole time: each drift read again from Google and from our row, then committed. */
  async #apply(userId: string, drifts: MeetingDrift[], log: Logger): Promise<void> {
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
      for (const seen of drifts) {
        const meeting = await this.deps.meetings.get(seen.meetingId);
        if (meeting?.status !== 'scheduled') continue;
        const now = await this.deps.calendar.eventState(userId, seen.eventId, this.#guard);
        const drift = driftOf(
          {
            meetingId: meeting.meeting_id,
            googleEventId: meeting.google_event_id,
            meetingTime: meeting.meeting_time,
            durationMinutes: meeting.duration_minutes,
          },
          now,
        );
        if (!drift) continue;
        // This process may have stalled since it took the hold: still ours, or no change is made.
        await lease.confirm();
        await this.#commit(drift, log);
      }
    } finally {
      await lease.release();
    }
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
