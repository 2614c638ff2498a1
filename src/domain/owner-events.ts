/**
 * Events an owner's webhook receives (Cal.com's BOOKING_CREATED / RESCHEDULED / CANCELLED, plus the
 * revocation of the calendar connection). The JSON body is `{id, type, created_at, data}`.
 */
export const OWNER_EVENT_TYPES = [
  'meeting.booked',
  'meeting.rescheduled',
  'meeting.cancelled',
  'calendar.revoked',
] as const;
export type OwnerEventType = (typeof OWNER_EVENT_TYPES)[number];

export interface OwnerEvent {
  userId: string;
  type: OwnerEventType;
  /** Unique per change: the same change (a retried job) is delivered once. */
  key: string;
  data: Record<string, unknown>;
}

/** The fields of a meeting row an event carries. */
export interface MeetingLike {
  meeting_id: string;
  user_id: string;
  agent_id: string | null;
  conversation_id: string;
  google_event_id: string;
  title: string;
  customer_name: string | null;
  customer_email: string | null;
  participants: string[];
  meeting_time: Date;
  duration_minutes: number;
  timezone: string | null;
  meet_link: string | null;
  html_link: string | null;
  status: string;
  previous_meeting_time?: Date | null;
  cancelled_at?: Date | null;
}

export function meetingEventData(m: MeetingLike): Record<string, unknown> {
  return {
    meeting: {
      meeting_id: m.meeting_id,
      user_id: m.user_id,
      agent_id: m.agent_id,
      conversation_id: m.conversation_id,
      google_event_id: m.google_event_id,
      title: m.title,
      customer_name: m.customer_name,
      customer_email: m.customer_email,
      participants: m.participants,
      meeting_time: m.meeting_time.toISOString(),
      end_time: new Date(m.meeting_time.getTime() + m.duration_minutes * 60_000).toISOString(),
      duration_minutes: m.duration_minutes,
      timezone: m.timezone,
      meet_link: m.meet_link,
      html_link: m.html_link,
      status: m.status,
      ...(m.previous_meeting_time ? { previous_meeting_time: m.previous_meeting_time.toISOString() } : {}),
      ...(m.cancelled_at ? { cancelled_at: m.cancelled_at.toISOString() } : {}),
    },
  };
}
