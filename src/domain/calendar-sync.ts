import type { CalendarEventState } from './calendar-gateway.js';

/** A scheduled meeting as keeping it in step with the owner's calendar needs it. */
export interface SyncedMeeting {
  meetingId: string;
  googleEventId: string;
  meetingTime: Date;
  durationMinutes: number;
}

/** What the owner did to a meeting's event in Google Calendar, to be done to the meeting too. */
export type MeetingDrift =
  | { kind: 'cancelled'; meetingId: string; eventId: string }
  | { kind: 'moved'; meetingId: string; eventId: string; meetingTime: Date; durationMinutes: number };

/**
 * The drift of one meeting from its event: cancelled when the event was deleted, moved when it starts
 * or lasts otherwise (to the minute, as meetings are stored), null when they agree. An event without
 * date-times (made all-day) or ending before it starts is left alone: no meeting time says it.
 */
export function driftOf(meeting: SyncedMeeting, event: CalendarEventState): MeetingDrift | null {
  const ids = { meetingId: meeting.meetingId, eventId: event.eventId };
  if (event.cancelled) return { kind: 'cancelled', ...ids };
  if (!event.start || !event.end) return null;
  const durationMinutes = Math.round((event.end.getTime() - event.start.getTime()) / 60_000);
  if (durationMinutes < 1) return null;
  if (
    event.start.getTime() === meeting.meetingTime.getTime() &&
    durationMinutes === meeting.durationMinutes
  ) {
    return null;
  }
  return { kind: 'moved', ...ids, meetingTime: event.start, durationMinutes };
}

/** The drifts of `meetings` among `events` (matched by event id; events of no meeting are ignored). */
export function driftsOf(
  meetings: readonly SyncedMeeting[],
  events: readonly CalendarEventState[],
): MeetingDrift[] {
  const byEvent = new Map(meetings.map((m) => [m.googleEventId, m]));
  const drifts = new Map<string, MeetingDrift>();
  for (const event of events) {
    const meeting = byEvent.get(event.eventId);
    if (!meeting) continue;
    const drift = driftOf(meeting, event);
    // The last answer for an event wins (pages are read in order); agreeing again clears it.
    if (drift) drifts.set(meeting.meetingId, drift);
    else drifts.delete(meeting.meetingId);
  }
  return [...drifts.values()];
}
