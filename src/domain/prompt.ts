import { toOffsetIso } from './booking-request.js';
import {
  formatOffset,
  localDateTime,
  type OffsetChange,
  offsetChanges,
  toZonedIso,
  WEEKDAYS,
  weekdayIn,
} from './time.js';

/** The action name the seed's contract uses, as JSON in the text and as an OpenAI tool. */
export const BOOKING_ACTION = 'Time_to_121meet';

/**
 * Built-in instructions appended to every agent's own system prompt. The JSON example is the seed's
 * action format; `meeting_time` must carry a UTC offset so no one has to guess the zone.
 */
export function bookingInstructions(zone: string): string {
  return [
    'You can book a video meeting (Google Meet) between the customer and the business.',
    'Before booking, make sure you know the customer’s name, email address, what the meeting is about and an exact date and time.',
    `Interpret dates and times the customer gives in the business time zone (${zone}) unless the customer names another zone.`,
    `When everything is known and the customer agrees, call the ${BOOKING_ACTION} tool, or answer with exactly this JSON (one array, nothing invented):`,
    '[{',
    `  "action": "${BOOKING_ACTION}",`,
    '  "name": "<customer name>",',
    '  "email": "<customer email>",',
    '  "title": "<short meeting title>",',
    '  "participants": ["<customer email>", "<other invitee emails>"],',
    '  "meeting_time": "<RFC 3339 date-time WITH its UTC offset, e.g. 2025-10-06T19:00:00+05:30>",',
    '  "friendly_time": "<how you would say the time to the customer, e.g. today at 7 PM IST>"',
    '}]',
    'Never claim a meeting is booked yourself: the system books it and sends the confirmation with the meeting link.',
  ].join('\n');
}

/** How far ahead the prompt announces the zone's offset changes, at most (a year and a day). */
export const MAX_OFFSET_CHANGE_DAYS = 366;

/** The window when the caller names none: the default booking horizon (BOOKING_HORIZON_DAYS). */
const DEFAULT_AHEAD_DAYS = 90;

/** Per zone and window: the zone's offset changes found, for the UTC day they were worked out on. */
const knownChanges = new Map<string, { day: number; changes: OffsetChange[] }>();

/**
 * The zone's offset changes between `receivedAt` and `aheadDays` later (the booking horizon, at most
 * MAX_OFFSET_CHANGE_DAYS), said so the model gives a meeting after one the offset in effect at the
 * meeting: told only today's offset, a model booking "Monday at 10" across the end of daylight
 * saving reuses it, which books 9:00 (the event in another zone's offset, as if the customer were
 * elsewhere) while its friendly_time says 10. Each change is given as the instant it happens, in the
 * old offset ("at 2025-11-02T02:00:00-04:00"), not as a date: where clocks fall back at midnight
 * (Cairo, Beirut, Santiago), the first instant on the new offset is the evening before. Worked out
 * once per zone, window and UTC day.
 */
export function offsetChangeSentence(receivedAt: Date, zone: string, aheadDays: number): string {
  const days = Math.max(1, Math.min(Math.ceil(aheadDays), MAX_OFFSET_CHANGE_DAYS));
  const day = Math.floor(receivedAt.getTime() / 86_400_000);
  const key = `${days} ${zone}`;
  let known = knownChanges.get(key);
  if (known?.day !== day) {
    known = { day, changes: offsetChanges(zone, new Date(day * 86_400_000), days + 1) };
    knownChanges.set(key, known);
  }
  const until = receivedAt.getTime() + days * 86_400_000;
  const ahead = known.changes.filter((c) => c.at > receivedAt && c.at.getTime() <= until).slice(0, 3);
  if (ahead.length === 0) return '';
  const said = ahead.map(
    (c) =>
      `at ${toOffsetIso(c.at, c.fromMinutes)} from ${formatOffset(c.fromMinutes)} to ${formatOffset(c.toMinutes)}`,
  );
  return `Its UTC offset changes ${said.join(', then ')}: give each meeting_time the offset in effect at that meeting.`;
}

/** "Now" for the model: the moment the customer's message was received, in the agent's zone. */
export function currentTimeLine(receivedAt: Date, zone: string, aheadDays = DEFAULT_AHEAD_DAYS): string {
  const now = `Current date and time: ${toZonedIso(receivedAt, zone)} (${weekdayIn(receivedAt, zone)}), time zone ${zone}.`;
  const changes = offsetChangeSentence(receivedAt, zone, aheadDays);
  return changes ? `${now} ${changes}` : now;
}

/** How many dates datesAheadLine lists. */
export const DATES_AHEAD = 14;

/**
 * The next DATES_AHEAD dates in the agent's zone with their weekdays, from the day the customer
 * spoke: a model told only today's weekday miscounts ("Friday at 10" booked on Thursday's date,
 * confirmed as Friday). Counted on the calendar, not by adding 24 hours (a 25-hour day would
 * repeat a date).
 */
export function datesAheadLine(receivedAt: Date, zone: string): string {
  const today = localDateTime(receivedAt, zone);
  const dates = Array.from({ length: DATES_AHEAD }, (_, i) => {
    const date = new Date(Date.UTC(today.year, today.month - 1, today.day + i));
    const label = i === 0 ? ' (today)' : i === 1 ? ' (tomorrow)' : '';
    return `${WEEKDAYS[date.getUTCDay()]} ${date.toISOString().slice(0, 10)}${label}`;
  });
  return `The next ${DATES_AHEAD} dates in ${zone}: ${dates.join(', ')}.`;
}

/** `aheadDays`: how far ahead meetings may be booked (the agent's horizon), for currentTimeLine. */
export function buildSystemPrompt(
  agentPrompt: string,
  zone: string,
  receivedAt: Date,
  aheadDays = DEFAULT_AHEAD_DAYS,
): string {
  return [
    agentPrompt.trim(),
    bookingInstructions(zone),
    datesAheadLine(receivedAt, zone),
    currentTimeLine(receivedAt, zone, aheadDays),
  ]
    .filter(Boolean)
    .join('\n\n');
}

/** JSON schema of the booking tool (OpenAI strict mode: every field required, no extras). */
export const bookingToolParameters = {
  type: 'object',
  properties: {
    name: { type: 'string', description: 'Customer name' },
    email: { type: 'string', description: 'Customer email address' },
    title: { type: 'string', description: 'Short meeting title' },
    participants: { type: 'array', items: { type: 'string' }, description: 'Invitee email addresses' },
    meeting_time: {
      type: 'string',
      description: 'RFC 3339 date-time with UTC offset, e.g. 2025-10-06T19:00:00+05:30',
    },
    friendly_time: { type: ['string', 'null'], description: 'The time as said to the customer' },
  },
  required: ['name', 'email', 'title', 'participants', 'meeting_time', 'friendly_time'],
  additionalProperties: false,
} as const;

/** Tools beyond the seed's booking action (issue 8). */
export const CHECK_AVAILABILITY = 'check_availability';
export const RESCHEDULE_ACTION = 'reschedule_meeting';
export const CANCEL_ACTION = 'cancel_meeting';

/** Action names that change meetings (as tool calls, or as JSON `action` in the text). */
export const MEETING_ACTIONS = [BOOKING_ACTION, RESCHEDULE_ACTION, CANCEL_ACTION] as const;

export const checkAvailabilityParameters = {
  type: 'object',
  properties: {
    start_date: { type: 'string', description: 'First day to check, YYYY-MM-DD in the business time zone' },
    end_date: {
      type: ['string', 'null'],
      description: 'Last day to check (inclusive), YYYY-MM-DD; null for just start_date',
    },
  },
  required: ['start_date', 'end_date'],
  additionalProperties: false,
} as const;

export const rescheduleParameters = {
  type: 'object',
  properties: {
    meeting_id: {
      type: ['string', 'null'],
      description: 'Id of a meeting listed as booked in this conversation; null for the latest one',
    },
    new_time: {
      type: 'string',
      description: 'New RFC 3339 date-time with UTC offset, e.g. 2025-10-06T19:00:00+05:30',
    },
    friendly_time: { type: ['string', 'null'], description: 'The new time as said to the customer' },
  },
  required: ['meeting_id', 'new_time', 'friendly_time'],
  additionalProperties: false,
} as const;

export const cancelParameters = {
  type: 'object',
  properties: {
    meeting_id: {
      type: ['string', 'null'],
      description: 'Id of a meeting listed as booked in this conversation; null for the latest one',
    },
  },
  required: ['meeting_id'],
  additionalProperties: false,
} as const;

/** Instructions for availability, rescheduling and cancelling, appended after the booking ones. */
export function meetingToolInstructions(): string {
  return [
    `Before proposing or booking a time, you can call ${CHECK_AVAILABILITY} to see real free times; offer only those.`,
    `To move a meeting booked in this conversation, call ${RESCHEDULE_ACTION} (or answer with {"action": "${RESCHEDULE_ACTION}", "meeting_id": <id or null>, "new_time": "<RFC 3339 with offset>", "friendly_time": "<text>"}).`,
    `To cancel one, call ${CANCEL_ACTION} (or answer with {"action": "${CANCEL_ACTION}", "meeting_id": <id or null>}).`,
    'Use only meeting ids listed below; with null the most recently booked upcoming meeting is meant.',
  ].join('\n');
}
