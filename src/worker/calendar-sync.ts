import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { CalendarEventState, CalendarGateway } from '../domain/calendar-gateway.js';
import { driftOf, driftsOf, type MeetingDrift, type SyncedMeeting } from '../domain/calendar-sync.js';
import { CalendarNotConnected, ChangesTooOld, Upstream } from '../domain/errors.js';
import { meetingEventData } from '../domain/owner-events.js';
import { WHOLE_OWNER } from '../store/booking-leases.js';
import type { CalendarSyncStore, SyncClaim } from '../store/calendar-sync.js';
import type { Meeting, MeetingStore } from '../store/meetings.js';
import type { DB } from '../store/schema.js';
import type { OwnerEventSink } from './owner-events.js';
import type { OwnerBookingLock } from './owner-lock.js';

/** Owners claimed per statement and passed over at once; a pass claims until none is due. */
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
  onPass?: (result: 'synced' | 'deferred' | 'failed') => void;
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
      // A batch's owners at once (each catches its own failure): an owner claimed waits for no other
      // owner's pass, so the claim's interval is not spent waiting in line.
      await Promise.all(claims.map((claim) => this.syncOwner(claim)));
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
        // A drift left for later (a customer's message in flight in its conversation) is read again
        // from the same point at the next pass: `synced_through` stays where it was.
        if (drifts.length > 0 && (await this.#apply(userId, drifts, log)) > 0) {
          this.deps.onPass?.('deferred');
          return;
        }
      }
      await this.deps.store.markSynced(userId, new Date(startedAt - CLOCK_MARGIN_MS));
      this.deps.onPass?.('synced');
    } catch (err) {
      if (this.#stop.signal.aborted) return;
      if (err instanceof CalendarNotConnected) return; // revoked meanwhile: nothing to read until reconnected
      this.deps.onPass?.('failed');
      log.warn({ err }, 'calendar sync of an owner failed; read again at the next pass');
    }
  }

  async #read(userId: string, meetings: SyncedMeeting[], since: Date | null): Promise<CalendarEventState[]> {
    if (since) {
      try {
        return await this.deps.calendar.eventChanges(userId, { updatedMin: since }, this.#guard);
      } catch (err) {
        if (!(err instanceof ChangesTooOld)) throw err;
      }
    }
    const ends = meetings.map((m) => m.meetingTime.getTime() + m.durationMinutes * 60_000);
    const listed = await this.deps.calendar.eventChanges(
      userId,
      { from: new Date(Date.now() - WINDOW_BEFORE_MS), to: new Date(Math.max(...ends) + 60_000) },
      this.#guard,
    );
    // The window holds only events still in it: one the owner moved out of it, or deleted long
    // enough ago for Google to have purged it, is not listed. Each meeting whose event was not
    // listed is read by itself (events.get: a 404/410 is a deleted event).
    const seen = new Set(listed.map((e) => e.eventId));
    const missing = meetings.filter((m) => !seen.has(m.googleEventId));
    const read = await Promise.all(
      missing.map((m) => this.deps.calendar.eventState(userId, m.googleEventId, this.#guard)),
    );
    return [...listed, ...read];
  }

  /**
   * Under the owner's whole time: each drift read again from Google and from our row, then committed.
   * Returns how many were left for a later pass: a drift in a conversation with a customer message
   * still pending may be that message's own move or cancel, made at Google by an attempt that then
   * failed (its hold given back until the retry); the retry records it itself, and recording it here
   * as the owner's would tell the owner twice, or leave the retry without its meeting.
   */
  async #apply(userId: string, drifts: MeetingDrift[], log: Logger): Promise<number> {
    let lease: Awaited<ReturnType<OwnerBookingLock['acquire']>>;
    try {
      lease = await this.deps.lock.acquire(userId, WHOLE_OWNER, undefined, undefined, {
        signal: this.#stop.signal,
      });
    } catch (err) {
      if (err instanceof Upstream) throw new Upstream('the owner’s time stayed taken', true, { cause: err });
      throw err;
    }
    let deferred = 0;
    try {
      // Read at once, not one after another: the owner's bookings wait while this holds their time.
      const rows = await Promise.all(drifts.map((d) => this.deps.meetings.get(d.meetingId)));
      const scheduled = rows.filter((m) => m?.status === 'scheduled') as Meeting[];
      const busy = await this.deps.store.conversationsInFlight(scheduled.map((m) => m.conversation_id));
      const live = scheduled.filter((m) => !busy.has(m.conversation_id));
      deferred = scheduled.length - live.length;
      const now = await Promise.all(
        live.map((m) => this.deps.calendar.eventState(userId, m.google_event_id, this.#guard)),
      );
      for (const [i, meeting] of live.entries()) {
        this.#stop.signal.throwIfAborted();
        const drift = driftOf(
          {
            meetingId: meeting.meeting_id,
            googleEventId: meeting.google_event_id,
            meetingTime: meeting.meeting_time,
            durationMinutes: meeting.duration_minutes,
          },
          now[i]!,
        );
        if (!drift) continue;
        // This process may have stalled since it took the hold: still ours, or no change is made.
        await lease.confirm();
        await this.#commit(drift, log);
      }
    } finally {
      await lease.release();
    }
    return deferred;
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
