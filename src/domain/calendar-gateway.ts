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

export interface CreatedCalendarEvent {
  eventId: string;
  htmlLink: string | null;
  /** Null when the conference could not be created (yet): the link is then in the invite. */
  meetLink: string | null;
  conferenceStatus: 'success' | 'pending' | 'failure' | 'none';
  /** True when the event already existed (a retried booking). */
  existed: boolean;
}

export interface CalendarGateway {
  createEvent(ownerId: string, event: NewCalendarEvent): Promise<CreatedCalendarEvent>;
  /** Resolves when the event is gone, including when it already was (404/410). */
  deleteEvent(ownerId: string, eventId: string): Promise<void>;
}
