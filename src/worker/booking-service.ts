import type { RawBuilder, Transaction } from 'kysely';
import type { Logger } from 'pino';
import { MEETING_DURATION } from '../domain/agent.js';
import {
  type BookingSettings,
  describeWorkingHours,
  freeSlots,
  type Interval,
  nearestSlots,
  overlapsBusy,
  withinWorkingHours,
} from '../domain/availability.js';
import {
  type BookingLimits,
  type BookingRequest,
  bookingKey,
  eventTimeZone,
  googleEventIdFor,
  namesAnotherClockTime,
  offsetOfAnotherSeason,
  toOffsetIso,
  validateBookingAction,
  validateMeetingTime,
} from '../domain/booking-request.js';
import type {
  CalendarEventState,
  CalendarGateway,
  CreatedCalendarEvent,
  RetryGuard,
} from '../domain/calendar-gateway.js';
import { CalendarNotConnected, Upstream } from '../domain/errors.js';
import {
  availabilityTexts,
  bookingTexts,
  cancellationConfirmation,
  meetingConfirmation,
  rescheduleConfirmation,
  withProse,
} from '../domain/messages.js';
import { meetingEventData } from '../domain/owner-events.js';
import { CANCEL_ACTION, RESCHEDULE_ACTION } from '../domain/prompt.js';
import { friendlyTime, toZonedIso, zonedInstant, zoneOffsetMinutes } from '../domain/time.js';
import { type LeaseKey, type LeaseRange, leaseReleaseCte, WHOLE_OWNER } from '../store/booking-leases.js';
import {
  bookedRows,
  type MeetingRow,
  type MeetingStore,
  type NewMeeting,
  type OverlapExcept,
} from '../store/meetings.js';
import type { MessageWork, ReplyRows, StoredReply } from '../store/messages.js';
import type { DB } from '../store/schema.js';
import type { OwnerEventSink } from './owner-events.js';
import type { OwnerBookingLock, OwnerLease } from './owner-lock.js';
import {
  type ActionResponder,
  OutcomeUnknown,
  type Reply,
  type RespondOptions,
  StaleAttempt,
  type UnsavedOutput,
} from './process-message.js';

export interface BookingServiceDeps {
  calendar: CalendarGateway;
  meetings: MeetingStore;
  lock: Pick<OwnerBookingLock, 'acquire'>;
  limits: BookingLimits & { maxBookingsPerConversation: number };
  meetingErrorMessage: string;
  now: () => Date;
  /** Owner webhooks: events recorded with the reply (its statement, or its transaction). */
  events?: OwnerEventSink | undefined;
  onOutcome?: (outcome: string) => void;
  /** Per freeBusy read sent alongside the lease statement: whether it was kept (see #lockAndRead). */
  onBusyRead?: (kept: boolean) => void;
}

/** How many alternatives a refused time gets, and how far around it they are searched. */
const ALTERNATIVES = 3;
const SEARCH_BEFORE_MS = 2 * 86_400_000;
const SEARCH_AFTER_MS = 14 * 86_400_000;
/** Slots listed by check_availability at most, and the longest range it reads. */
const MAX_LISTED_SLOTS = 16;
const MAX_CHECK_DAYS = 14;

/** Writes an outcome's rows in the reply's transaction (reschedule, cancel). */
type Persist = (trx: Transaction<DB>) => Promise<void>;
interface Outcome {
  text: string;
  /** A booking's meeting row (written with the reply, see BookingService.respond). */
  booked?: NewMeeting;
  persist?: Persist;
  stop?: boolean;
  duplicate?: boolean;
}

const BOOKED_EVENT = { type: 'meeting.booked' as const, key: (id: string) => `meeting.booked:${id}` };

/** State of one reply: the owner lock is taken once and held until the reply has committed. */
interface ReplyContext {
  work: MessageWork;
  log: Logger;
  settings: BookingSettings;
  limits: BookingLimits;
  now: Date;
  /** No retry follows this attempt: a failure now is the customer's answer. */
  lastAttempt: boolean;
  /** The output is an earlier attempt's (RespondOptions.earlierAttempt). */
  earlierAttempt: boolean;
  /** Aborted: no further change at Google (RespondOptions.signal). */
  signal: AbortSignal | undefined;
  /**
   * Before a read of Google is sent again: throws once the run was aborted (its claim taken over, the
   * process stopping), so a stale run stops retrying reads that would only keep the owner's time
   * taken, while the run that gives up waits for it (recover).
   */
  stopped: RetryGuard;
  booked: number;
  requested: Set<string>;
  lease?: OwnerLease;
  /** The model output, until stored (see #lock). */
  unsavedOutput?: UnsavedOutput | undefined;
  /** The answer acts more than once: its lease covers all of the owner's time. */
  wholeOwner: boolean;
  /**
   * Upcoming meetings this answer cancelled so far: their rows are closed by the reply's commit, so
   * until then the answer's later actions leave them out (busy time, the per-conversation limit).
   */
  cancelled: string[];
  /**
   * Meetings this answer moved so far, and to when (ms): the same move written twice (a tool call and
   * the same JSON in the text) is made and confirmed once; a second, different move is refused.
   */
  moved: Map<string, number>;
}

/**
 * What an availability check leaves out of the owner's busy time: the booking's own earlier event
 * (its key), the meeting being moved (its row, and its block in Google's answer), and the meetings
 * this answer cancelled before (their rows commit with the reply; their events are gone already).
 */
type BusyExcept = OverlapExcept & { interval?: Interval };

/**
 * Turns the model's actions into real changes: book (the seed's steps 5–11), reschedule, cancel.
 *
 * Never twice: the model output the actions come from is stored before any Calendar change (with
 * the owner's lease, #lock, before a booking, move or cancel), so every attempt acts on the
 * same actions; each booking gets an idempotency key from the customer message and the action; the
 * Google event id is derived from it (a repeated insert answers 409 and we fetch the event; a
 * booking about to give up looks that id up first), and the meeting row (unique key and event id)
 * commits with the confirmation (one statement; a transaction when the answer has several actions).
 * The confirmation is built from Google's answer and the booked instant; the model's words for the
 * time stand only where they agree with it (confirmedTime).
 *
 * Never double-booked: the availability check (Google freeBusy plus our own scheduled meetings,
 * widened by the agent's buffer) and the insert run under the owner's booking lock, which is
 * given back in the reply's commit (visible together with the meeting row), or after that write
 * failed.
 */
export class BookingService implements ActionResponder {
  constructor(private readonly deps: BookingServiceDeps) {}

  async respond(
    work: MessageWork,
    actions: unknown[],
    prose: string,
    log: Logger,
    options: RespondOptions = {},
  ): Promise<Reply> {
    const ctx = this.#context(work, log, options, actions);
    const texts: string[] = [];
    const rows: Array<{ booked: NewMeeting } | { persist: Persist }> = [];
    try {
      for (const [index, action] of actions.entries()) {
        const kind = (action as { action?: unknown } | null)?.action;
        const result =
          kind === RESCHEDULE_ACTION
            ? await this.#reschedule(ctx, action as Record<string, unknown>)
            : kind === CANCEL_ACTION
              ? await this.#cancel(ctx, action as Record<string, unknown>)
              : await this.#bookOne(ctx, action, index);
        if (result.duplicate) continue;
        texts.push(result.text);
        if (result.booked) {
          rows.push({ booked: result.booked });
          ctx.booked++;
        } else if (result.persist) rows.push({ persist: result.persist });
        if (result.stop) break;
      }
    } catch (err) {
      // On the last attempt, a failure after earlier actions of this answer were made at Google (a
      // booking's event inserted, a meeting moved or cancelled) ends the answer there: what they made
      // is recorded and confirmed, and the customer is told the rest failed. Rethrown, the failure
      // would become the fallback alone, and their events (invitations sent) would stay on the
      // owner's calendar with no meeting row. The failing action has already looked Google up for
      // itself (#eventCreatedBefore, #changedBefore). A stale or stopped run records nothing.
      const ends =
        ctx.lastAttempt &&
        rows.length > 0 &&
        !(err instanceof StaleAttempt) &&
        !(err instanceof OutcomeUnknown) &&
        !ctx.signal?.aborted;
      if (!ends) {
        await ctx.lease?.release();
        throw err;
      }
      ctx.log.error({ err }, 'an action failed on the last attempt; recording the ones made before it');
      this.deps.onOutcome?.('partly_failed');
      texts.push(this.deps.meetingErrorMessage);
    }
    return this.#compose(prose, texts, rows, ctx.lease);
  }

  /**
   * The answer to a message given up on (JobContext.giveUp) whose stored output acts: its attempts
   * kept not finishing, and one of them may have made a change at Google (a booking's event, with its
   * invitations; a move; a cancel) before it stopped, its reply never committed. Nothing is changed at
   * Google now; each action is looked up once (events.get): a booking's derived event that exists, a
   * meeting's event already at the new time, a meeting's event gone, is recorded and confirmed as the
   * action would have been. The actions not found made are answered with MEETING_ERROR_MESSAGE (once).
   * Undefined when none was found: the caller answers with its fallback, as before. Nothing is
   * checked or made, only what Google already shows recorded.
   */
  async recover(
    work: MessageWork,
    actions: unknown[],
    prose: string,
    log: Logger,
    signal?: AbortSignal,
  ): Promise<Reply | undefined> {
    const ctx = this.#context(work, log, { lastAttempt: true, earlierAttempt: true, signal }, actions);
    // All of the owner's time: a run of this message still making a change (one whose claim was
    // taken over but that has not noticed yet) holds part of it until that change is answered. One
    // whose process stalled renews its hold no more: waiting a lease's length longer than usual
    // (`outlast`), this takes the owner's time once that hold lapsed, which drops it, and the
    // stalled run, once it runs again, cannot renew it (OwnerLease.confirm before any change or
    // retry). Then what is looked up below is final. If the owner's time stays taken even so (a
    // stale run still retrying a read, other bookings keeping it busy), it looks without the lease
    // rather than answer without looking.
    try {
      ctx.lease = await this.deps.lock.acquire(work.agent.userId, WHOLE_OWNER, undefined, undefined, {
        outlast: true,
        signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      log.warn({ err }, 'could not take the owner’s time before looking up what earlier attempts did');
    }
    const lease = ctx.lease;
    try {
      const reply = await this.#recovered(ctx, actions, prose);
      // Stopping meanwhile: the claim goes back, and the next run answers.
      signal?.throwIfAborted();
      if (!reply) await lease?.release();
      return reply;
    } catch (err) {
      await lease?.release();
      throw err;
    }
  }

  async #recovered(ctx: ReplyContext, actions: unknown[], prose: string): Promise<Reply | undefined> {
    const { log } = ctx;
    const texts: string[] = [];
    const rows: Array<{ booked: NewMeeting } | { persist: Persist }> = [];
    let failed = false;
    for (const [index, action] of actions.entries()) {
      const kind = (action as { action?: unknown } | null)?.action;
      let result: Outcome | undefined;
      try {
        result =
          kind === RESCHEDULE_ACTION
            ? await this.#recoverMove(ctx, action as Record<string, unknown>)
            : kind === CANCEL_ACTION
              ? await this.#recoverCancel(ctx, action as Record<string, unknown>)
              : await this.#recoverBooking(ctx, action, index);
      } catch (err) {
        if (ctx.signal?.aborted) throw err; // stopping: the claim goes back, the next run looks
        log.error({ err, index }, 'could not look up what a given-up action did; answering without it');
      }
      if (!result) {
        failed = true;
        continue;
      }
      if (result.duplicate) continue;
      texts.push(result.text);
      if (result.booked) rows.push({ booked: result.booked });
      else if (result.persist) rows.push({ persist: result.persist });
    }
    if (rows.length === 0) return undefined;
    if (failed) texts.push(this.deps.meetingErrorMessage);
    return this.#compose(prose, texts, rows, ctx.lease);
  }

  /**
   * Whether this run may (still) make a change at Google, before it and before each retry of it: its
   * signal not aborted (the heartbeat aborts a run whose claim was taken over, see JobQueue), and its
   * hold on the owner's time still its own (OwnerLease.confirm, which asks the database only after a
   * stall). Throws otherwise.
   */
  #mayChange(ctx: ReplyContext): () => Promise<void> {
    return async () => {
      ctx.signal?.throwIfAborted();
      await ctx.lease?.confirm();
    };
  }

  /** A given-up booking (recover): its derived event, if it exists. */
  async #recoverBooking(ctx: ReplyContext, action: unknown, index: number): Promise<Outcome | undefined> {
    const { work } = ctx;
    // Rules on the clock and settings (notice, horizon) were met when its event was made, if it was.
    const checked = validateBookingAction(action, ctx.limits, null);
    if (!checked.ok) return undefined;
    const sameRequest = bookingKey(work.message.messageId, -1, checked.request);
    if (ctx.requested.has(sameRequest)) return { text: '', duplicate: true }; // once per answer (#bookOne)
    ctx.requested.add(sameRequest);
    const key = bookingKey(work.message.messageId, index, checked.request);
    const eventId = googleEventIdFor(key);
    const found = await this.deps.calendar.findEvent(work.agent.userId, eventId, ctx.stopped);
    if (!found) return undefined;
    ctx.log.warn(
      { event_id: eventId },
      'a given-up message’s booking was made by an earlier attempt; recording it',
    );
    this.deps.onOutcome?.('booked_recovered');
    return this.#booked(work, checked.request, key, found);
  }

  /** A given-up move (recover): its meeting's, if an earlier attempt made it. */
  async #recoverMove(ctx: ReplyContext, action: Record<string, unknown>): Promise<Outcome | undefined> {
    const target = await this.#target(ctx, action);
    if (!('meeting_id' in target)) return undefined;
    return this.#movedAlready(ctx, target, action) ?? this.#moveMadeBefore(ctx, action, target);
  }

  /**
   * A move of a meeting this answer moved already (ReplyContext.moved): the same one again is a
   * duplicate (made and confirmed once); another is refused, and the first stands. Undefined: the
   * first move of `meeting` in this answer.
   */
  #movedAlready(
    ctx: ReplyContext,
    meeting: MeetingRow,
    action: Record<string, unknown>,
  ): Outcome | undefined {
    const to = ctx.moved.get(meeting.meeting_id);
    if (to === undefined) return undefined;
    const when = validateMeetingTime(action.new_time, ctx.limits, null);
    if (when.ok && when.start.getTime() === to) return { text: '', duplicate: true };
    this.deps.onOutcome?.('moved_twice');
    return { text: availabilityTexts.movedTwice() };
  }

  /** A given-up cancel (recover): its meeting's, if an earlier attempt made it. */
  async #recoverCancel(ctx: ReplyContext, action: Record<string, unknown>): Promise<Outcome | undefined> {
    const target = await this.#target(ctx, action);
    if (!('meeting_id' in target)) return undefined;
    if (ctx.cancelled.includes(target.meeting_id)) return { text: '', duplicate: true }; // as #cancel
    return this.#cancelMadeBefore(ctx, target);
  }

  /**
   * The move an earlier attempt made (its reply never committed), recorded, when `meeting`'s event is
   * at the new time already (one events.get); undefined otherwise. Throws when the lookup fails.
   */
  async #moveMadeBefore(
    ctx: ReplyContext,
    action: Record<string, unknown>,
    meeting: MeetingRow,
  ): Promise<Outcome | undefined> {
    const when = validateMeetingTime(action.new_time, ctx.limits, null);
    if (!when.ok) return undefined;
    const state = await this.deps.calendar.eventState(
      ctx.work.agent.userId,
      meeting.google_event_id,
      ctx.stopped,
    );
    const span = state && !state.cancelled ? timedSpan(state) : undefined;
    if (!span || span.start.getTime() !== when.start.getTime()) return undefined;
    ctx.log.warn(
      { event_id: meeting.google_event_id },
      'an earlier attempt moved this meeting; recording the move',
    );
    // With the length that attempt gave the event (the one it had in Google then), as the move would.
    return this.#moved(ctx, action, meeting, when, undefined, meetingMinutes(span));
  }

  /** As #moveMadeBefore, for a cancel: recorded when `meeting`'s event is gone. */
  async #cancelMadeBefore(ctx: ReplyContext, meeting: MeetingRow): Promise<Outcome | undefined> {
    if (await this.deps.calendar.eventExists(ctx.work.agent.userId, meeting.google_event_id, ctx.stopped))
      return undefined;
    ctx.log.warn(
      { event_id: meeting.google_event_id },
      'an earlier attempt cancelled this meeting; recording the cancel',
    );
    return this.#cancelled(ctx, meeting);
  }

  /**
   * A move or cancel of a meeting that has started since the customer spoke: too late to change it;
   * on a retry, what an earlier attempt did (`madeBefore`) is recorded.
   */
  async #started(
    ctx: ReplyContext,
    what: 'reschedule' | 'cancel',
    madeBefore: () => Promise<Outcome | undefined>,
  ): Promise<Outcome> {
    if (ctx.earlierAttempt) {
      try {
        const made = await madeBefore();
        if (made) return made;
      } catch (err) {
        return this.#lookupFailure(err, ctx, what);
      }
    }
    this.deps.onOutcome?.('no_meeting');
    return { text: availabilityTexts.noMeeting() };
  }

  #context(work: MessageWork, log: Logger, options: RespondOptions, actions: unknown[]): ReplyContext {
    const settings = work.booking;
    return {
      work,
      log,
      settings,
      limits: this.#limits(settings),
      now: this.deps.now(),
      lastAttempt: options.lastAttempt ?? false,
      earlierAttempt: options.earlierAttempt ?? false,
      signal: options.signal,
      stopped: async () => options.signal?.throwIfAborted(),
      booked: 0,
      requested: new Set(),
      unsavedOutput: options.unsavedOutput,
      // One lease serves the whole answer (taken once, given back with the reply, and reused by
      // every action after the first: #lock): with two actions in it, it must cover the time of
      // each, so it covers all of the owner's time. (A cancel's own hold is on the cancelled
      // meeting's time: a booking or move after it in the same answer would otherwise check and
      // insert under a hold that does not cover its own time.)
      wholeOwner: actions.length > 1,
      cancelled: [],
      moved: new Map(),
    };
  }

  /** The reply of an answer's outcomes (texts and rows), giving the owner's lease back with it. */
  #compose(
    prose: string,
    texts: string[],
    rows: Array<{ booked: NewMeeting } | { persist: Persist }>,
    lease: OwnerLease | undefined,
  ): Reply {
    const text = withProse(prose, texts.join('\n\n'));
    const done = lease && ((committed: boolean) => lease.release(committed));
    // The owner's lease is given back with the reply, in the same commit as the meeting row: the
    // next booking sees both at once, and the release needs no commit of its own.
    const only = rows.length === 0 ? undefined : rows.length === 1 ? rows[0] : null;
    if (only === undefined && !lease) return { text };
    if (only === undefined || (only && 'booked' in only)) {
      // The common case, one booking (or a refusal after taking the lease): its rows join the
      // reply's own statement, one round trip and one commit for the whole reply.
      let deliveryId: string | undefined;
      return {
        text,
        write: async (store) => {
          const stored = await this.#writeBooked(store, only?.booked, lease);
          deliveryId = stored.result;
          return stored;
        },
        done: async (committed) => {
          await done?.(committed);
          // The delivery's row committed with the reply; its job follows, once this owner's next
          // booking may go on (the periodic relay enqueues it if this never runs).
          if (committed && deliveryId) await this.deps.events?.relayOne(deliveryId);
        },
      };
    }
    return { text, persist: (trx) => this.#persistAll(trx, rows, lease), done };
  }

  /**
   * The reply's statement with one booking's rows (if any) and the lease's release (if held); its
   * result is the webhook delivery's id, whose job the caller enqueues (WebhookDispatcher.relayOne).
   */
  async #writeBooked(
    store: (rows: ReplyRows) => Promise<StoredReply>,
    meeting: NewMeeting | undefined,
    lease: OwnerLease | undefined,
  ): Promise<StoredReply> {
    const events = this.deps.events;
    const write = (key?: LeaseKey) =>
      store(
        meeting
          ? bookedRows(meeting, {
              event: events && BOOKED_EVENT,
              lease: key,
              onlyIfRowIn: 'reply',
              enqueued: false,
            })
          : { ctes: key ? [leaseReleaseCte(key)] : [] },
      );
    return lease ? lease.releaseWith(write) : write();
  }

  /** Several outcomes' rows in the reply's transaction, in the actions' order; then the lease. */
  async #persistAll(
    trx: Transaction<DB>,
    rows: Array<{ booked: NewMeeting } | { persist: Persist }>,
    lease: OwnerLease | undefined,
  ): Promise<void> {
    const events = this.deps.events;
    let given = false;
    for (const row of rows) {
      if ('persist' in row) {
        await row.persist(trx);
        continue;
      }
      // A booking's statement gives the lease back with its meeting row (the first one does).
      const write = (key?: LeaseKey) =>
        this.deps.meetings.insertBooked(trx, row.booked, { event: events && BOOKED_EVENT, lease: key });
      const deliveryId = lease && !given ? await lease.releaseWith(write) : await write();
      given = given || lease !== undefined;
      if (deliveryId) await events?.enqueueRecorded(trx, deliveryId, row.booked.userId);
    }
    if (lease && !given) await lease.releaseIn(trx);
  }

  /**
   * The check_availability tool: free slots between two local dates in the agent's zone, as JSON
   * for the model. Problems (bad date, no calendar) are results too, so the model can answer.
   */
  async checkAvailability(work: MessageWork, rawArgs: unknown, log: Logger): Promise<string> {
    const settings = work.booking;
    const limits = this.#limits(settings);
    const zone = work.agent.timezone;
    const args = (rawArgs ?? {}) as { start_date?: unknown; end_date?: unknown };
    const first = parseLocalDate(args.start_date);
    const last =
      args.end_date === null || args.end_date === undefined ? first : parseLocalDate(args.end_date);
    if (!first || !last)
      return JSON.stringify({ error: 'start_date and end_date must be dates as YYYY-MM-DD' });
    const from = zonedInstant(first.year, first.month, first.day, 0, 0, zone);
    const days =
      Math.round(
        (Date.UTC(last.year, last.month - 1, last.day) - Date.UTC(first.year, first.month - 1, first.day)) /
          86_400_000,
      ) + 1;
    if (days < 1) return JSON.stringify({ error: 'end_date must not be before start_date' });
    if (days > MAX_CHECK_DAYS)
      return JSON.stringify({ error: `check at most ${MAX_CHECK_DAYS} days at once` });
    const to = zonedInstant(last.year, last.month, last.day + 1, 0, 0, zone);
    const now = this.deps.now();
    let slots: Date[];
    try {
      slots = await this.#freeSlotsBetween(work, settings, limits, now, from, to, {});
    } catch (err) {
      if (err instanceof CalendarNotConnected || (err instanceof Upstream && !err.retryable)) {
        log.warn({ err }, 'availability check failed');
        return JSON.stringify({ error: 'the calendar cannot be read right now; do not offer times' });
      }
      throw err;
    }
    this.deps.onOutcome?.('availability_checked');
    return JSON.stringify({
      time_zone: zone,
      duration_minutes: work.agent.meetingDurationMinutes,
      working_hours: settings.workingHours
        ? describeWorkingHours(settings.workingHours)
        : 'not set (09:00–18:00 searched)',
      free_slots: slots
        .slice(0, MAX_LISTED_SLOTS)
        .map((s) => ({ start: toZonedIso(s, zone), friendly: friendlyTime(s, zone) })),
      more: slots.length > MAX_LISTED_SLOTS,
    });
  }

  /** Lines for the system prompt: the meetings this conversation may reschedule or cancel. */
  promptContext(work: MessageWork): string {
    const upcoming = work.upcomingMeetings;
    if (upcoming.length === 0) return 'Meetings booked in this conversation: none upcoming.';
    return [
      'Meetings booked in this conversation (most recent first):',
      ...upcoming.map(
        (m) =>
          // The title is the customer's words (through the model's action): written as JSON text, so
          // that a line break or a quote in it cannot start lines of its own in the system prompt
          // (the line breaks JSON leaves as they are, U+0085, U+2028 and U+2029, escaped too).
          `- ${m.meetingId}: ${JSON.stringify(m.title).replace(/[\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)} at ${toZonedIso(m.meetingTime, work.agent.timezone)} (${m.durationMinutes} min)`,
      ),
    ].join('\n');
  }

  /** `own` plus the meetings this answer cancelled so far (ReplyContext.cancelled). */
  #except(ctx: ReplyContext, own: BusyExcept): BusyExcept {
    return ctx.cancelled.length > 0 ? { ...own, cancelled: ctx.cancelled } : own;
  }

  #limits(settings: BookingSettings): BookingLimits {
    return {
      maxParticipants: this.deps.limits.maxParticipants,
      minNoticeMinutes: settings.minNoticeMinutes ?? this.deps.limits.minNoticeMinutes,
      horizonDays: settings.horizonDays ?? this.deps.limits.horizonDays,
    };
  }

  /**
   * Takes the owner's booking lock on the time this booking, move or cancel may conflict with (all of
   * the owner's time when the answer has more than one action). The model output, if not stored yet,
   * is stored by the lease's own statement (one round trip, one commit before any Calendar change: a
   * retry acts on the same output, so its bookings keep their keys and event ids).
   */
  async #lock(ctx: ReplyContext, start: Date, end: Date, read?: RawBuilder<unknown>): Promise<OwnerLease> {
    if (ctx.lease) return ctx.lease;
    const unsaved = ctx.unsavedOutput;
    // The time this booking may conflict with: its meeting widened by the buffer (a meeting of the
    // owner's inside the buffer is a conflict either way, so two holds that overlap cover every
    // pair of bookings that could).
    const pad = ctx.settings.bufferMinutes * 60_000;
    const range: LeaseRange = ctx.wholeOwner
      ? WHOLE_OWNER
      : { from: start.getTime() - pad, to: end.getTime() + pad };
    const lease = await this.deps.lock.acquire(ctx.work.agent.userId, range, unsaved?.cte, read);
    if (unsaved) {
      ctx.unsavedOutput = undefined;
      if (lease.alsoRows === 0) {
        await lease.release();
        throw new StaleAttempt();
      }
    }
    ctx.lease = lease;
    return lease;
  }

  /**
   * Takes the owner's lock for a booking at [start, end) (see #lock) and reads the owner's busy time
   * around it (see #window). The freeBusy read is sent before the lease statement, so that round trip
   * is off the path to Google, and kept only when no hold of the owner ended after it was sent
   * (OwnerLease.quietSince): an event made under a hold that ended later (a booking this one waited
   * for, or one whose hold lapsed) may be missing from it, so then Google is read again. Our own
   * meetings are read by the lease statement itself when that statement took the hold and saw every
   * earlier holder's meeting row (OwnerLease.read), else after the grant: either way they include
   * the previous holder's.
   */
  async #lockAndRead(ctx: ReplyContext, start: Date, end: Date, except: BusyExcept): Promise<Interval[]> {
    const w = this.#window(ctx, start);
    if (ctx.lease) return this.#busy(ctx.work, w.readFrom, w.readTo, except, { guard: ctx.stopped });
    const userId = ctx.work.agent.userId;
    const sentAt = performance.now();
    const early = this.deps.calendar.freeBusy(userId, w.readFrom, w.readTo, ctx.stopped);
    // Awaited below, or dropped when the lock fails or the read is stale.
    early.catch(() => undefined);
    const ours = this.deps.meetings.overlappingRead(userId, w.readFrom, w.readTo, except);
    const lease = await this.#lock(ctx, start, end, ours.sql);
    const fresh = lease.quietSince(sentAt);
    this.deps.onBusyRead?.(fresh);
    return this.#busy(ctx.work, w.readFrom, w.readTo, except, {
      guard: ctx.stopped,
      ...(fresh ? { google: early } : {}),
      ...(lease.read !== undefined ? { ours: ours.parse(lease.read) } : {}),
    });
  }

  /**
   * The owner's busy time in [from, to): Google's answer plus our own scheduled meetings (`known`:
   * either, when already read).
   */
  async #busy(
    work: MessageWork,
    from: Date,
    to: Date,
    except: BusyExcept,
    known: { google?: Promise<Interval[]>; ours?: Interval[]; guard?: RetryGuard } = {},
  ): Promise<Interval[]> {
    const userId = work.agent.userId;
    const [google, ours] = await Promise.all([
      known.google ?? this.deps.calendar.freeBusy(userId, from, to, known.guard),
      known.ours ?? this.deps.meetings.overlapping(userId, from, to, except),
    ]);
    // A reschedule must not collide with the meeting it moves: its own block is taken out of Google's
    // answer (freeBusy has no event ids; an event sharing exactly that block is hidden with it).
    const own = except.interval;
    const fromGoogle = own ? google.flatMap((b) => subtract(b, own)) : google;
    return [...fromGoogle, ...ours];
  }

  async #freeSlotsBetween(
    work: MessageWork,
    settings: BookingSettings,
    limits: BookingLimits,
    now: Date,
    from: Date,
    to: Date,
    except: BusyExcept,
    busy?: Interval[],
  ): Promise<Date[]> {
    const durationMs = work.agent.meetingDurationMinutes * 60_000;
    const pad = settings.bufferMinutes * 60_000;
    const known =
      busy ??
      (await this.#busy(
        work,
        new Date(from.getTime() - pad),
        new Date(to.getTime() + durationMs + pad),
        except,
      ));
    return freeSlots({
      zone: work.agent.timezone,
      hours: settings.workingHours,
      durationMinutes: work.agent.meetingDurationMinutes,
      bufferMinutes: settings.bufferMinutes,
      busy: known,
      earliest: new Date(now.getTime() + limits.minNoticeMinutes * 60_000),
      latest: new Date(now.getTime() + limits.horizonDays * 86_400_000),
      from,
      to,
    });
  }

  /** The search window around a requested time, and the busy time read for it. */
  #window(ctx: ReplyContext, start: Date): { from: Date; to: Date; readFrom: Date; readTo: Date } {
    const from = new Date(Math.max(ctx.now.getTime(), start.getTime() - SEARCH_BEFORE_MS));
    const to = new Date(start.getTime() + SEARCH_AFTER_MS);
    const pad = ctx.settings.bufferMinutes * 60_000;
    const durationMs = 480 * 60_000; // longer than any meeting: one read covers the check too
    return {
      from,
      to,
      readFrom: new Date(from.getTime() - pad),
      readTo: new Date(to.getTime() + durationMs + pad),
    };
  }

  /** The refusal with the nearest free slots inside working hours (09:00–18:00 when unset). */
  async #refuse(
    ctx: ReplyContext,
    reason: 'busy' | 'outside_hours',
    start: Date,
    durationMinutes: number,
    except: BusyExcept,
    busy?: Interval[],
  ): Promise<Outcome> {
    const w = this.#window(ctx, start);
    const known = busy ?? (await this.#busy(ctx.work, w.readFrom, w.readTo, except, { guard: ctx.stopped }));
    const work = { ...ctx.work, agent: { ...ctx.work.agent, meetingDurationMinutes: durationMinutes } };
    const slots = await this.#freeSlotsBetween(
      work,
      ctx.settings,
      ctx.limits,
      ctx.now,
      w.from,
      w.to,
      except,
      known,
    );
    const zone = ctx.work.agent.timezone;
    const alternatives = nearestSlots(slots, start, ALTERNATIVES).map((s) => friendlyTime(s, zone));
    this.deps.onOutcome?.(reason);
    ctx.log.info({ reason, alternatives: alternatives.length }, 'requested time refused');
    const hours = ctx.settings.workingHours
      ? `${describeWorkingHours(ctx.settings.workingHours)}, ${zone}`
      : undefined;
    return { text: availabilityTexts.unavailable(reason, alternatives, hours) };
  }

  /**
   * A failed read of what an earlier attempt may have made at Google (its event, a move, a cancel),
   * on the last attempt: the change may have been made, so no answer now (OutcomeUnknown; the message
   * runs again). Otherwise as #calendarFailure.
   */
  #lookupFailure(err: unknown, ctx: ReplyContext, what: string): Outcome {
    if (ctx.lastAttempt && ctx.earlierAttempt && !ctx.signal?.aborted) {
      const unknown = outcomeUnknown(what, err, err);
      if (unknown) {
        ctx.log.error({ err }, `could not read what an earlier attempt did to ${what}`);
        throw unknown;
      }
    }
    return this.#calendarFailure(err, ctx, what);
  }

  /** Calendar failures that end this reply with MEETING_ERROR_MESSAGE; retryable ones rethrow. */
  #calendarFailure(err: unknown, ctx: ReplyContext, what: string): Outcome {
    if (err instanceof CalendarNotConnected) {
      this.deps.onOutcome?.(err.reason === 'revoked' ? 'revoked' : 'not_connected');
      ctx.log.warn(
        { user_id: ctx.work.agent.userId, reason: err.reason },
        `cannot ${what}: calendar not connected`,
      );
      return { text: this.deps.meetingErrorMessage, stop: true };
    }
    if (err instanceof Upstream && !err.retryable) {
      this.deps.onOutcome?.('google_error');
      ctx.log.error({ err }, `Google refused to ${what}`);
      return { text: this.deps.meetingErrorMessage, stop: true };
    }
    throw err; // retryable: the job runs again with the same keys
  }

  /**
   * Before a booking gives up (Google refused, or anything failed on the job's last attempt), looks
   * its event up by the derived id: an insert whose answer was lost, in this attempt or an earlier
   * one, may have created it and sent the invitations. Found and not cancelled, it is recorded and
   * confirmed through the normal success path; not found, the original failure stands. A lookup that
   * fails too is no answer (OutcomeUnknown: the message runs again), unless no later run could look
   * either (a refusal, a lost connection). Earlier attempts skip this: their retry's insert finds the
   * event (409).
   *
   * Nothing is booked twice, and the path is idempotent under retries and crashes:
   * - the lookup only reads (events.get): it never creates an event;
   * - the id derives from this booking's key (customer message, action index, request), so the only
   *   event it can find is this booking's own, inserted after the availability check under the
   *   owner lock;
   * - the meeting row (unique idempotency key and event id) commits with the reply, and
   *   the reply is unique per customer message: a duplicate or redelivered job finds the message
   *   answered and does nothing; a crash before that commit leaves the event without a row, as it
   *   was before the lookup, and any later run of the job finds it again (409 on its insert, or
   *   this lookup) and records it once.
   */
  async #eventCreatedBefore(
    ctx: ReplyContext,
    eventId: string,
    err: unknown,
  ): Promise<CreatedCalendarEvent | null> {
    if (err instanceof CalendarNotConnected) return null; // no token to look with
    const givingUp = ctx.lastAttempt || (err instanceof Upstream && !err.retryable);
    if (!givingUp) return null;
    try {
      const found = await this.deps.calendar.findEvent(ctx.work.agent.userId, eventId, ctx.stopped);
      if (found) {
        ctx.log.warn(
          { err, event_id: eventId, last_attempt: ctx.lastAttempt },
          'booking failed after its event was created; recording the event found on the calendar',
        );
      }
      return found;
    } catch (lookupErr) {
      // Aborted meanwhile (its retry not sent): not an answer; the run ends without one.
      if (ctx.signal?.aborted) throw lookupErr;
      ctx.log.error(
        { err: lookupErr, event_id: eventId },
        'could not look up the booking’s event before giving up',
      );
      const unknown = outcomeUnknown(`booking ${eventId}`, err, lookupErr);
      if (unknown) throw unknown;
      return null;
    }
  }

  /**
   * Before a move or a cancel gives up (Google refused, or anything failed on the job's last attempt):
   * whether Google shows it made already, by an earlier attempt whose reply never committed or by this
   * one whose answer was lost (`made`: read-only, events.get). Then it is recorded and confirmed like
   * any other; not found, the original failure stands; a lookup that fails too is no answer, as with
   * #eventCreatedBefore. As with bookings
   * (#eventCreatedBefore), earlier attempts skip this: their retry repeats the change, which is
   * harmless (the same times again; a delete of a deleted event answers 410).
   */
  async #changedBefore(
    ctx: ReplyContext,
    err: unknown,
    what: 'reschedule' | 'cancel',
    eventId: string,
    made: () => Promise<boolean>,
  ): Promise<boolean> {
    if (err instanceof CalendarNotConnected) return false; // no token to look with
    const givingUp = ctx.lastAttempt || (err instanceof Upstream && !err.retryable);
    if (!givingUp) return false;
    try {
      const done = await made();
      if (done) {
        ctx.log.warn(
          { err, event_id: eventId, last_attempt: ctx.lastAttempt },
          `${what} failed after Google made it; recording it`,
        );
      }
      return done;
    } catch (lookupErr) {
      // Aborted meanwhile (its retry not sent): not an answer; the run ends without one.
      if (ctx.signal?.aborted) throw lookupErr;
      ctx.log.error(
        { err: lookupErr, event_id: eventId },
        `could not look up the event before giving up the ${what}`,
      );
      const unknown = outcomeUnknown(`${what} of ${eventId}`, err, lookupErr);
      if (unknown) throw unknown;
      return false;
    }
  }

  async #bookOne(ctx: ReplyContext, action: unknown, index: number): Promise<Outcome> {
    const { work, log } = ctx;
    const { agent, conversation, message } = work;
    let checked = validateBookingAction(action, ctx.limits, ctx.now);
    // A retry acting on an earlier attempt's output: that attempt may have booked it (its reply never
    // committed). The rules that depend on the clock or the settings (notice, horizon, working hours)
    // were met then, on that attempt's clock and settings; if its event is on the calendar, the
    // booking stands and is recorded. Looked up only before such a refusal, once.
    let earlier: boolean | undefined;
    const madeBefore = async (request: BookingRequest): Promise<Outcome | undefined> => {
      if (earlier !== undefined || !ctx.earlierAttempt) return undefined;
      const eventId = googleEventIdFor(bookingKey(message.messageId, index, request));
      try {
        earlier = await this.deps.calendar.eventExists(agent.userId, eventId, ctx.stopped);
      } catch (err) {
        return this.#lookupFailure(err, ctx, 'book');
      }
      if (earlier)
        log.warn({ event_id: eventId }, 'an earlier attempt booked this action; recording its event');
      return undefined;
    };
    if (!checked.ok && ctx.earlierAttempt) {
      const untimed = validateBookingAction(action, ctx.limits, null);
      if (untimed.ok) {
        const failed = await madeBefore(untimed.request);
        if (failed) return failed;
        if (earlier) checked = untimed;
      }
    }
    if (!checked.ok) {
      this.deps.onOutcome?.('invalid');
      log.info({ problems: checked.problems }, 'booking action rejected');
      return { text: bookingTexts.invalid(checked.problems) };
    }
    const request = checked.request;
    // The model may state one booking twice in an answer (a tool call and the same JSON in its text,
    // or a repeated array item): each distinct request is booked once.
    const sameRequest = bookingKey(message.messageId, -1, request); // the key without the position
    if (ctx.requested.has(sameRequest)) {
      log.info({ index }, 'booking action repeats an earlier one in the same answer; booked once');
      return { text: '', duplicate: true };
    }
    ctx.requested.add(sameRequest);
    const key = bookingKey(message.messageId, index, request);

    // An earlier attempt of this job may already have created the Google event (its reply did not
    // commit, so no meeting row counts it yet): the same key makes the insert below find it again.
    // The count was read with the message (this conversation's meetings are added only through its
    // own messages, answered one at a time); bookings earlier in this answer are added, its cancels
    // taken off.
    const upcoming = work.upcomingMeetingCount + ctx.booked - ctx.cancelled.length;
    if (upcoming >= this.deps.limits.maxBookingsPerConversation) {
      this.deps.onOutcome?.('limit');
      // The end of the answer: a cancel after it may be the other half of a swap ("replace B with
      // A" written as [book A, cancel B]), and cancelling B without booking A would leave neither.
      return { text: bookingTexts.tooManyBookings(this.deps.limits.maxBookingsPerConversation), stop: true };
    }

    const zone = eventTimeZone(request, agent.timezone);
    const end = new Date(request.start.getTime() + agent.meetingDurationMinutes * 60_000);
    const eventId = googleEventIdFor(key);
    let created: CreatedCalendarEvent;
    let recovered = false;
    const except = this.#except(ctx, { key });
    try {
      if (!withinWorkingHours(request.start, end, agent.timezone, ctx.settings.workingHours)) {
        const failed = await madeBefore(request);
        if (failed) return failed;
        if (!earlier) {
          return await this.#refuse(
            ctx,
            'outside_hours',
            request.start,
            agent.meetingDurationMinutes,
            except,
          );
        }
      }
      const busy = await this.#lockAndRead(ctx, request.start, end, except);
      if (
        overlapsBusy(request.start, end, busy, ctx.settings.bufferMinutes) &&
        // Our own event from an earlier attempt of this job shows as busy too: that one is ours (known
        // already when a refusal above looked for it).
        !(earlier ?? (await this.deps.calendar.eventExists(agent.userId, eventId, ctx.stopped)))
      ) {
        return await this.#refuse(ctx, 'busy', request.start, agent.meetingDurationMinutes, except, busy);
      }
      // The hold must still be ours when the event is made (this process may have stalled since), and
      // so must the message's claim: a run whose claim was taken over meanwhile (its heartbeat found
      // out and aborted it) makes nothing; the current claim, or the run that gave up, answers. Both
      // are checked again before any retry of the insert (#mayChange).
      const mayChange = this.#mayChange(ctx);
      await mayChange();
      created = await this.deps.calendar.createEvent(
        agent.userId,
        {
          eventId,
          conferenceRequestId: `am-${key.slice(0, 32)}`,
          summary: request.title,
          description: describeBooking(request.name ?? conversation.customerName, request.email, agent.name),
          startDateTime: toOffsetIso(request.start, request.offsetMinutes),
          endDateTime: toOffsetIso(end, request.offsetMinutes),
          timeZone: zone,
          attendees: [request.email, ...request.participants],
        },
        mayChange,
      );
    } catch (err) {
      // A stale attempt acts on nothing, not even the last attempt's event lookup (its key is this
      // attempt's, from an output the message is not answered from).
      if (err instanceof StaleAttempt || ctx.signal?.aborted) throw err;
      const found = await this.#eventCreatedBefore(ctx, eventId, err);
      if (!found) return this.#calendarFailure(err, ctx, 'book');
      created = found;
      recovered = true;
    }
    this.deps.onOutcome?.(recovered ? 'booked_recovered' : created.existed ? 'booked_existing' : 'booked');
    log.info(
      {
        event_id: created.eventId,
        conference: created.conferenceStatus,
        existed: created.existed,
        recovered,
      },
      'meeting booked on Google Calendar',
    );
    return this.#booked(work, request, key, created);
  }

  /** A booking's confirmation and meeting row, from Google's event and the booked instant (confirmedTime). */
  #booked(
    work: MessageWork,
    request: BookingRequest,
    key: string,
    created: CreatedCalendarEvent,
  ): { text: string; booked: NewMeeting } {
    const { agent, conversation, message } = work;
    const zone = eventTimeZone(request, agent.timezone);
    // An event an earlier attempt made may have been moved by the owner since (its invitation went
    // out before this reply commits): the row takes the times it has now, as a move does, so that
    // nothing is left for the calendar sync to catch up on (a pass may have read that change while
    // no row existed to compare it with, and not read it again). All-day: the request's times; of a
    // length no meeting may have: its start, and the agent's length (as a move does).
    const span =
      created.existed && created.start && created.end && created.end > created.start
        ? { start: created.start, end: created.end }
        : null;
    const minutes = span ? meetingMinutes(span) : undefined;
    const meetingTime = span ? span.start : request.start;
    const moved = meetingTime.getTime() !== request.start.getTime();
    const meeting: NewMeeting = {
      userId: agent.userId,
      agentId: agent.agentId,
      conversationId: conversation.conversationId,
      messageId: message.messageId,
      idempotencyKey: key,
      googleEventId: created.eventId,
      title: request.title,
      customerName: request.name ?? conversation.customerName,
      customerEmail: request.email,
      participants: request.participants,
      meetingTime,
      durationMinutes: minutes ?? agent.meetingDurationMinutes,
      timezone: zone ?? agent.timezone,
      meetLink: created.meetLink,
      htmlLink: created.htmlLink,
    };
    // Moved by the owner: the model's words name the time asked for, not the one it has.
    const when = moved
      ? friendlyTime(meetingTime, agent.timezone)
      : confirmedTime(request.friendlyTime, request.start, request.offsetMinutes, agent.timezone);
    return { text: meetingConfirmation(when, created.meetLink, created.conferenceStatus), booked: meeting };
  }

  /**
   * The meeting an action refers to: one of this conversation's upcoming meetings, by id (see below
   * for an action that gives none). An id from anywhere else is never acted on.
   * Upcoming as of when the customer spoke (as the prompt's "now"), not this attempt's clock: every
   * attempt of the message picks the same meeting, and a retry or the run that gives up still finds
   * the one an earlier attempt moved or cancelled after its old time has passed (a meeting that has
   * started since is then only recorded as changed if Google shows it so, never changed now).
   */
  async #target(ctx: ReplyContext, action: Record<string, unknown>): Promise<MeetingRow | Outcome> {
    const upcoming = await this.deps.meetings.upcomingInConversation(
      ctx.work.conversation.conversationId,
      ctx.work.message.createdAt,
    );
    if (upcoming.length === 0) {
      this.deps.onOutcome?.('no_meeting');
      return { text: availabilityTexts.noMeeting() };
    }
    // The meeting named in `meeting_id` (or `meetingId` / `id`, as a model may spell it in its text's
    // JSON). Null or empty: the latest upcoming one, as the prompt tells the model. Named nowhere:
    // the only upcoming one; with several, none (a guess could move or cancel the wrong meeting, its
    // invitees told). A tool call whose arguments were not JSON, or an id that is not text: none.
    const unknown = (why: string, id: string | null = null): Outcome => {
      this.deps.onOutcome?.('unknown_meeting');
      ctx.log.warn({ meeting_id: id?.slice(0, 60) ?? null }, why);
      return { text: availabilityTexts.unknownMeeting() };
    };
    if (action.invalid_arguments === true) return unknown('action arguments are not JSON');
    const key = (['meeting_id', 'meetingId', 'id'] as const).find((k) => k in action);
    if (key === undefined) {
      return upcoming.length === 1
        ? upcoming[0]!
        : unknown('action names no meeting, and several are upcoming');
    }
    const named = action[key];
    if (named === null || (typeof named === 'string' && named.trim() === '')) return upcoming[0]!;
    if (typeof named !== 'string') return unknown('action names a meeting by an id that is not text');
    const found = upcoming.find((m) => m.meeting_id === named.trim());
    if (!found) return unknown('action names a meeting outside this conversation', named);
    return found;
  }

  async #reschedule(ctx: ReplyContext, action: Record<string, unknown>): Promise<Outcome> {
    const { work, log } = ctx;
    const { agent } = work;
    const target = await this.#target(ctx, action);
    if (!('meeting_id' in target)) return target;
    const again = this.#movedAlready(ctx, target, action);
    if (again) return again;
    const meeting = target;
    if (meeting.meeting_time <= ctx.now) {
      return this.#started(ctx, 'reschedule', () => this.#moveMadeBefore(ctx, action, meeting));
    }
    let when = validateMeetingTime(action.new_time, ctx.limits, ctx.now);
    const untimed =
      when.ok || !ctx.earlierAttempt ? when : validateMeetingTime(action.new_time, ctx.limits, null);
    if (!untimed.ok) {
      this.deps.onOutcome?.('invalid');
      return { text: bookingTexts.invalid([untimed.problem]) };
    }
    // The event as the owner's calendar has it now (one events.get per move): the owner may have
    // lengthened or moved it in Google since our row last heard of it (the calendar sync catches up
    // within CALENDAR_SYNC_SECONDS). The move keeps the event's current length, and the block it
    // frees is where the event is now, not where the row says.
    let current: CalendarEventState | null;
    try {
      current = await this.deps.calendar.eventState(agent.userId, meeting.google_event_id, ctx.stopped);
    } catch (err) {
      return this.#lookupFailure(err, ctx, 'reschedule');
    }
    if (!current || current.cancelled) {
      // Deleted in Google Calendar (the calendar sync records the cancel), or unknown to the calendar
      // connected now (404: the owner reconnected another account): nothing to move.
      this.deps.onOutcome?.(current ? 'event_deleted' : 'event_missing');
      log.warn(
        { event_id: meeting.google_event_id, deleted: Boolean(current) },
        'the meeting to move has no event on the owner’s calendar',
      );
      return { text: this.deps.meetingErrorMessage, stop: true };
    }
    // All-day (made so by the owner), or of a length no meeting may have: the row's place or length.
    const now = timedSpan(current);
    const durationMinutes = (now && meetingMinutes(now)) ?? meeting.duration_minutes;
    // A retry of a move an earlier attempt may have made (its reply never committed): the event is
    // then at the new time already, so Google's busy time there is the event itself, and the timing
    // rules were met on that attempt's clock. The move stands; it is recorded, not refused.
    const movedBefore = ctx.earlierAttempt && now?.start.getTime() === untimed.start.getTime();
    if (movedBefore) {
      log.warn(
        { event_id: meeting.google_event_id },
        'an earlier attempt moved this meeting; recording the move',
      );
      when = untimed;
    }
    if (!when.ok) {
      this.deps.onOutcome?.('invalid');
      return { text: bookingTexts.invalid([when.problem]) };
    }
    const start = when.start;
    const end = new Date(start.getTime() + durationMinutes * 60_000);
    const own = now ?? {
      start: meeting.meeting_time,
      end: new Date(meeting.meeting_time.getTime() + meeting.duration_minutes * 60_000),
    };
    const except = this.#except(ctx, { meetingId: meeting.meeting_id, interval: own });
    const zone = eventZone(start, when.offsetMinutes, agent.timezone);
    // Google's answer to the move; none when an earlier attempt's move is recorded (#changedBefore).
    let patched: Awaited<ReturnType<CalendarGateway['patchEvent']>> | undefined;
    try {
      if (!movedBefore && !withinWorkingHours(start, end, agent.timezone, ctx.settings.workingHours)) {
        return await this.#refuse(ctx, 'outside_hours', start, durationMinutes, except);
      }
      const busy = await this.#lockAndRead(ctx, start, end, except);
      if (!movedBefore && overlapsBusy(start, end, busy, ctx.settings.bufferMinutes)) {
        return await this.#refuse(ctx, 'busy', start, durationMinutes, except, busy);
      }
      const mayChange = this.#mayChange(ctx); // as before an insert
      await mayChange();
      // Patching to the same times again (a retried job) changes nothing.
      patched = await this.deps.calendar.patchEvent(
        agent.userId,
        meeting.google_event_id,
        {
          startDateTime: toOffsetIso(start, when.offsetMinutes),
          endDateTime: toOffsetIso(end, when.offsetMinutes),
          timeZone: zone,
        },
        mayChange,
      );
    } catch (err) {
      if (err instanceof StaleAttempt || ctx.signal?.aborted) throw err;
      const moved =
        movedBefore ||
        (await this.#changedBefore(ctx, err, 'reschedule', meeting.google_event_id, async () => {
          const at = await this.deps.calendar.eventStart(agent.userId, meeting.google_event_id, ctx.stopped);
          return at?.getTime() === start.getTime();
        }));
      if (!moved) return this.#calendarFailure(err, ctx, 'reschedule');
    }
    return this.#moved(ctx, action, meeting, when, patched, durationMinutes);
  }

  /**
   * A move's confirmation and rows; `patched` is Google's answer (none when recorded from a lookup),
   * `durationMinutes` the length it gave the event (none: the row's stands).
   */
  #moved(
    ctx: ReplyContext,
    action: Record<string, unknown>,
    meeting: MeetingRow,
    when: { start: Date; offsetMinutes: number },
    patched: CreatedCalendarEvent | undefined,
    durationMinutes?: number,
  ): Outcome {
    const { work } = ctx;
    const { agent } = work;
    const start = when.start;
    const zone = eventZone(start, when.offsetMinutes, agent.timezone);
    ctx.moved.set(meeting.meeting_id, start.getTime());
    this.deps.onOutcome?.('rescheduled');
    ctx.log.info(
      { meeting_id: meeting.meeting_id, event_id: meeting.google_event_id },
      'meeting rescheduled',
    );
    const friendly = confirmedTime(action.friendly_time, start, when.offsetMinutes, agent.timezone);
    return {
      text: rescheduleConfirmation(
        friendly,
        patched?.meetLink ?? meeting.meet_link,
        patched?.conferenceStatus,
      ),
      persist: async (trx) => {
        const row = await this.deps.meetings.reschedule(trx, meeting.meeting_id, {
          meetingTime: start,
          timezone: zone ?? agent.timezone,
          durationMinutes,
        });
        if (row && this.deps.events) {
          await this.deps.events.emit(trx, {
            userId: agent.userId,
            type: 'meeting.rescheduled',
            key: `meeting.rescheduled:${work.message.messageId}:${row.meeting_id}`,
            data: meetingEventData(row),
          });
        }
      },
    };
  }

  async #cancel(ctx: ReplyContext, action: Record<string, unknown>): Promise<Outcome> {
    const { work } = ctx;
    const target = await this.#target(ctx, action);
    if (!('meeting_id' in target)) return target;
    const meeting = target;
    // The same meeting named twice in one answer (a tool call and the same JSON in the text, or two
    // cancels of "the latest" one, whose row stays scheduled until the reply): cancelled once, and
    // counted once by the answer's later bookings (ReplyContext.cancelled).
    if (ctx.cancelled.includes(meeting.meeting_id)) return { text: '', duplicate: true };
    if (meeting.meeting_time <= ctx.now) {
      return this.#started(ctx, 'cancel', () => this.#cancelMadeBefore(ctx, meeting));
    }
    // A hold on the owner's time (the meeting's; all of it when the answer acts more than once), as a
    // booking's around its insert: its statement stores the model output (the first attempt's), and
    // a run that gives up on this message takes all of the owner's time first, so it waits for a
    // delete still in flight in a run whose claim was taken over before it looks (see recover), and a
    // run that stalled past its hold sends no delete once it runs again (mayChange).
    const end = new Date(meeting.meeting_time.getTime() + meeting.duration_minutes * 60_000);
    try {
      await this.#lock(ctx, meeting.meeting_time, end);
      const mayChange = this.#mayChange(ctx); // as before an insert
      await mayChange();
      // 404/410 count as done: an earlier attempt (or the owner) already deleted it.
      await this.deps.calendar.deleteEvent(work.agent.userId, meeting.google_event_id, mayChange);
    } catch (err) {
      if (err instanceof StaleAttempt || ctx.signal?.aborted) throw err;
      const gone = await this.#changedBefore(
        ctx,
        err,
        'cancel',
        meeting.google_event_id,
        async () =>
          !(await this.deps.calendar.eventExists(work.agent.userId, meeting.google_event_id, ctx.stopped)),
      );
      if (!gone) return this.#calendarFailure(err, ctx, 'cancel');
    }
    return this.#cancelled(ctx, meeting);
  }

  /** A cancel's confirmation and rows. */
  #cancelled(ctx: ReplyContext, meeting: MeetingRow): Outcome {
    const { work } = ctx;
    if (meeting.meeting_time > ctx.now) ctx.cancelled.push(meeting.meeting_id);
    this.deps.onOutcome?.('cancelled');
    ctx.log.info({ meeting_id: meeting.meeting_id, event_id: meeting.google_event_id }, 'meeting cancelled');
    return {
      text: cancellationConfirmation(
        friendlyTime(meeting.meeting_time, meeting.timezone ?? work.agent.timezone),
      ),
      persist: async (trx) => {
        const row = await this.deps.meetings.cancelIn(trx, meeting.meeting_id);
        if (row && this.deps.events) {
          await this.deps.events.emit(trx, {
            userId: work.agent.userId,
            type: 'meeting.cancelled',
            key: `meeting.cancelled:${row.meeting_id}`,
            data: meetingEventData(row),
          });
        }
      },
    };
  }
}

/** An event's date-times, when it has them (not all-day) and they are in order. */
function timedSpan(state: CalendarEventState): { start: Date; end: Date } | undefined {
  return state.start && state.end && state.end > state.start
    ? { start: state.start, end: state.end }
    : undefined;
}

/**
 * A span's length in whole minutes when a meeting may have it (from 1 to the longest an agent's
 * meetings may be set to), else undefined: the meeting row's length stands.
 */
function meetingMinutes(span: { start: Date; end: Date }): number | undefined {
  const minutes = Math.round((span.end.getTime() - span.start.getTime()) / 60_000);
  return minutes >= 1 && minutes <= MEETING_DURATION.max ? minutes : undefined;
}

/**
 * The time a confirmation names: the model's words for it, unless they may name another hour than
 * the one booked (its offset the agent zone's other season's: offsetOfAnotherSeason; or a clock time
 * in them that is not the meeting's: namesAnotherClockTime), or there are none; then the booked
 * instant in the agent's zone.
 */
function confirmedTime(words: unknown, start: Date, offsetMinutes: number, agentZone: string): string {
  const given = typeof words === 'string' ? words.trim().slice(0, 200) : '';
  return given &&
    !offsetOfAnotherSeason(start, offsetMinutes, agentZone) &&
    !namesAnotherClockTime(given, start, offsetMinutes, agentZone)
    ? given
    : friendlyTime(start, agentZone);
}

/**
 * What to throw when the lookup before giving up failed (#eventCreatedBefore, #changedBefore): the
 * change may have been made, so no answer now, the message runs again (OutcomeUnknown), no sooner
 * than Google asked in either failure. Undefined when no later run could look either (the connection
 * gone, a refusal): the original failure then stands, as it always did.
 */
function outcomeUnknown(what: string, err: unknown, lookupErr: unknown): OutcomeUnknown | undefined {
  if (lookupErr instanceof CalendarNotConnected) return undefined;
  if (lookupErr instanceof Upstream && !lookupErr.retryable) return undefined;
  const asked = [err, lookupErr].map((e) => (e instanceof Upstream ? (e.retryAfterMs ?? 0) : 0));
  const retryAfterMs = Math.max(...asked);
  return new OutcomeUnknown(`${what}: whether Google made it could not be looked up`, {
    cause: lookupErr,
    retryAfterMs: retryAfterMs > 0 ? retryAfterMs : undefined,
  });
}

/** The zone a moved event is written in: the agent's when the requested offset is its own there. */
function eventZone(start: Date, offsetMinutes: number, agentZone: string): string | undefined {
  return zoneOffsetMinutes(start, agentZone) === offsetMinutes ? agentZone : undefined;
}

function describeBooking(name: string | null, email: string, agentName: string): string {
  return `Meeting with ${name ? `${name} <${email}>` : email}, booked through the ${agentName} chat assistant.`;
}

/** `b` without the part covered by `cut` (zero, one or two pieces). */
function subtract(b: Interval, cut: Interval): Interval[] {
  if (cut.end <= b.start || cut.start >= b.end) return [b];
  const out: Interval[] = [];
  if (b.start < cut.start) out.push({ start: b.start, end: cut.start });
  if (cut.end < b.end) out.push({ start: cut.end, end: b.end });
  return out;
}

function parseLocalDate(raw: unknown): { year: number; month: number; day: number } | undefined {
  if (typeof raw !== 'string') return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(raw.trim());
  if (!m) return undefined;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  if (d.getUTCMonth() !== Number(m[2]) - 1) return undefined;
  return { year: Number(m[1]), month: Number(m[2]), day: Number(m[3]) };
}
