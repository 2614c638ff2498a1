/** What booking needs from a calendar provider; Google is the implementation (src/google). */

export interface NewCalendarEvent {
  /** Deterministic id (base32hex): the same booking always maps to the same event. */
  eventId: string;
  /** Conference request id, stable per booking (Google returns the same conference for it). */
  conferenceRequestId: string;
  summary: string;
  description: string;
  startDateTime: string;
  endDateTime: string;
  /** IANA zone, or undefined when the offsets in the date-times are all there is. */
  timeZone: string | undefined;
  attendees: string[];
}

/** The event's Meet conference: made, still being made, refused by Google, or none asked for. */
export type ConferenceStatus = 'success' | 'pending' | 'failure' | 'none';

export interface CreatedCalendarEvent {
  eventId: string;
  htmlLink: string | null;
  /**
   * Null when there is no conference link: still `pending` (the invite gets it once made), or none
   * (`failure`, `none`).
   */
  meetLink: string | null;
  conferenceStatus: ConferenceStatus;
  /** True when the event already existed (a retried booking). */
  existed: boolean;
  /** Its start and end as Google has them now; null when it has no date-times (made all-day). */
  start: Date | null;
  end: Date | null;
}

/** New times for an existing event (a reschedule). */
export interface EventTimes {
  startDateTime: string;
  endDateTime: string;
  timeZone: string | undefined;
}

/** An event as the owner's calendar has it now (keeping our meetings in step with it). */
export interface CalendarEventState {
  eventId: string;
  /** Deleted at Google (kept there as `cancelled` for a while), or no longer there at all. */
  cancelled: boolean;
  /** Null when the event has no date-time (made all-day): such an event is left alone. */
  start: Date | null;
  end: Date | null;
}

/**
 * Which events to read: those changed since `updatedMin` (deleted ones always included), or every
 * event overlapping [from, to), deleted ones included.
 */
export type EventChangesQuery = { updatedMin: Date } | { from: Date; to: Date };

export interface BusyInterval {
  start: Date;
  end: Date;
}

/**
 * Runs before a call is sent again (a retry after a failure, or after a forced token refresh), never
 * before its first try; throws to stop: the caller may no longer make it (a change: its run was
 * aborted, its hold on the owner's time lost; a read: its run was aborted, so it would only keep the
 * owner's time taken). A request already sent cannot be taken back; a retry can be held.
 */
export type RetryGuard = () => Promise<void>;

export interface CalendarGateway {
  createEvent(ownerId: string, event: NewCalendarEvent, guard?: RetryGuard): Promise<CreatedCalendarEvent>;
  /** Busy time on the owner's primary calendar within [from, to), merged, in order. */
  freeBusy(ownerId: string, from: Date, to: Date, guard?: RetryGuard): Promise<BusyInterval[]>;
  /** True when the event exists and is not cancelled (a retried booking whose insert already happened). */
  eventExists(ownerId: string, eventId: string, guard?: RetryGuard): Promise<boolean>;
  /**
   * The event as createEvent would have answered it (a pending conference awaited the same way), or
   * null when it does not exist or was cancelled. Read-only: a booking giving up uses it to find the
   * event an insert whose answer was lost may have created.
   */
  findEvent(ownerId: string, eventId: string, guard?: RetryGuard): Promise<CreatedCalendarEvent | null>;
  /**
   * When a live event starts (null when it does not exist, was cancelled, or is all-day). Read-only:
   * a retried move uses it to find whether an earlier attempt already moved the event.
   */
  eventStart(ownerId: string, eventId: string, guard?: RetryGuard): Promise<Date | null>;
  /** Moves an event; attendees are notified (sendUpdates=all). Same times again is harmless. */
  patchEvent(
    ownerId: string,
    eventId: string,
    times: EventTimes,
    guard?: RetryGuard,
  ): Promise<CreatedCalendarEvent>;
  /**
   * Events of the owner's primary calendar (see EventChangesQuery), recurring ones as one master.
   * Throws ChangesTooOld when Google no longer keeps changes from as far back as `updatedMin`.
   */
  eventChanges(ownerId: string, query: EventChangesQuery, guard?: RetryGuard): Promise<CalendarEventState[]>;
  /**
   * One event now: `cancelled` when it was deleted (Google still has it as cancelled, or answers 410
   * Gone); null when Google does not know it (404). Read-only.
   */
  eventState(ownerId: string, eventId: string, guard?: RetryGuard): Promise<CalendarEventState | null>;
  /** Resolves when the event is gone, including when it already was (404/410). */
  deleteEvent(ownerId: string, eventId: string, guard?: RetryGuard): Promise<void>;
}
