import { createHash } from 'node:crypto';
import { z } from 'zod';
import { formatOffset, zoneOffsetMinutes } from './time.js';

/**
 * A booking action validated and normalized: what the system will actually book. The model's raw
 * output never reaches Google without passing through here.
 */
export interface BookingRequest {
  name: string | null;
  email: string;
  title: string;
  /** Invitees besides `email`, de-duplicated (case-insensitive), never containing `email`. */
  participants: string[];
  /** The instant, and the offset the model gave it with (minutes east of UTC). */
  start: Date;
  offsetMinutes: number;
  friendlyTime: string | null;
}

export interface BookingLimits {
  maxParticipants: number;
  minNoticeMinutes: number;
  horizonDays: number;
}

/** RFC 3339 with a mandatory offset or Z: 2025-10-06T19:00:00+05:30. */
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|([+-])(\d{2}):(\d{2}))$/i;

const email = z.email({ message: 'is not a valid email address' }).max(254, 'is too long');

const actionSchema = z.object({
  name: z.string().trim().max(255, 'must be at most 255 characters').nullish(),
  email: z.string({ message: 'is missing' }).trim().pipe(email),
  title: z.string().trim().max(200, 'must be at most 200 characters').nullish(),
  // A model sometimes writes the invitees as one string ("a@x.com, b@y.com"): read as the list it
  // means rather than refused to the customer as "an invitee is not valid".
  participants: z.preprocess(
    (v) => (typeof v === 'string' ? v.split(/[\s,;]+/).filter(Boolean) : v),
    z.array(z.string().trim().pipe(email)).nullish(),
  ),
  meeting_time: z.string({ message: 'is missing' }).trim(),
  // Words, not a field the customer typed: past 200 characters they are dropped (the confirmation
  // then names the booked time itself) rather than refused to the customer.
  friendly_time: z.string().trim().nullish(),
});

export type ValidationResult = { ok: true; request: BookingRequest } | { ok: false; problems: string[] };

function parseRfc3339(value: string): { start: Date; offsetMinutes: number } | undefined {
  const m = RFC3339.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, z, sign, oh, om] = m;
  const month = Number(mo);
  const day = Number(d);
  if (
    month < 1 ||
    month > 12 ||
    day < 1 ||
    day > 31 ||
    Number(h) > 23 ||
    Number(mi) > 59 ||
    Number(s ?? 0) > 59 ||
    Number(oh ?? 0) > 23 ||
    Number(om ?? 0) > 59
  ) {
    return undefined;
  }
  const offsetMinutes =
    z?.toUpperCase() === 'Z' ? 0 : (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om));
  const local = Date.UTC(Number(y), month - 1, day, Number(h), Number(mi), Number(s ?? 0));
  // Reject dates JavaScript would roll over (Feb 30 -> Mar 2).
  if (new Date(local).getUTCDate() !== day) return undefined;
  return { start: new Date(local - offsetMinutes * 60_000), offsetMinutes };
}

/**
 * A meeting time alone (a reschedule's `new_time`, an availability query): same format, notice and
 * horizon rules as a booking. Returns the problem phrased for the customer, or the instant.
 */
export function validateMeetingTime(
  raw: unknown,
  limits: Pick<BookingLimits, 'minNoticeMinutes' | 'horizonDays'>,
  /** Null skips the timing rules (as validateBookingAction's). */
  now: Date | null,
): { ok: true; start: Date; offsetMinutes: number } | { ok: false; problem: string } {
  const when = typeof raw === 'string' ? parseRfc3339(raw.trim()) : undefined;
  if (!when) {
    return {
      ok: false,
      problem: 'the new time must be a full date and time with its time zone, e.g. 2025-10-06T19:00:00+05:30',
    };
  }
  const problem = now ? timingProblem(when.start, limits, now) : undefined;
  return problem ? { ok: false, problem } : { ok: true, ...when };
}

function timingProblem(
  start: Date,
  limits: Pick<BookingLimits, 'minNoticeMinutes' | 'horizonDays'>,
  now: Date,
): string | undefined {
  const earliest = now.getTime() + limits.minNoticeMinutes * 60_000;
  const latest = now.getTime() + limits.horizonDays * 86_400_000;
  if (start.getTime() <= now.getTime()) return 'that time is in the past, please pick another time';
  if (start.getTime() < earliest) {
    return `meetings need at least ${limits.minNoticeMinutes} minutes' notice, please pick a later time`;
  }
  if (start.getTime() > latest) {
    return `meetings can be booked at most ${limits.horizonDays} days ahead, please pick an earlier date`;
  }
  return undefined;
}

/** Checks an action against the rules; `problems` are phrased for the customer. */
/**
 * `now`: the instant the timing rules (notice, horizon, not in the past) are checked against; null
 * skips them (a retry looking for the event an earlier attempt may have made from this action).
 */
export function validateBookingAction(
  raw: unknown,
  limits: BookingLimits,
  now: Date | null,
): ValidationResult {
  const parsed = actionSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const field = String(i.path[0] ?? 'action');
      const label =
        field === 'meeting_time'
          ? 'the meeting time'
          : field === 'participants'
            ? 'an invitee'
            : `the ${field}`;
      // zod 4's own messages ("Invalid input: expected object, received null") are not for customers.
      return `${label} ${i.message.startsWith('Invalid input') ? 'is not valid' : i.message}`;
    });
    return { ok: false, problems: [...new Set(problems)] };
  }
  const a = parsed.data;
  const problems: string[] = [];
  const when = parseRfc3339(a.meeting_time);
  if (!when) {
    problems.push(
      'the meeting time must be a full date and time with its time zone, e.g. 2025-10-06T19:00:00+05:30',
    );
  } else if (now) {
    const problem = timingProblem(when.start, limits, now);
    if (problem) problems.push(problem);
  }
  const main = a.email.toLowerCase();
  const seen = new Set([main]);
  const participants: string[] = [];
  for (const p of a.participants ?? []) {
    if (seen.has(p.toLowerCase())) continue;
    seen.add(p.toLowerCase());
    participants.push(p);
  }
  // Counted after de-duplication: repeats and the customer's own email (which the prompt asks the
  // model to list) take no invitee slot.
  if (participants.length > limits.maxParticipants) {
    problems.push(`at most ${limits.maxParticipants} participants can be invited`);
  }
  if (problems.length > 0 || !when) return { ok: false, problems };
  return {
    ok: true,
    request: {
      name: a.name || null,
      email: a.email,
      title: a.title || 'Meeting',
      participants,
      start: when.start,
      offsetMinutes: when.offsetMinutes,
      friendlyTime: a.friendly_time && a.friendly_time.length <= 200 ? a.friendly_time : null,
    },
  };
}

/** RFC 3339 of an instant written with a fixed offset (keeps the customer's offset on the end time). */
export function toOffsetIso(at: Date, offsetMinutes: number): string {
  const local = new Date(at.getTime() + offsetMinutes * 60_000);
  return `${local.toISOString().slice(0, 19)}${formatOffset(offsetMinutes)}`;
}

/**
 * The agent's IANA zone goes on the event only when it agrees with the offset the model gave at
 * that instant; otherwise the offset alone is exact and a wrong zone label would mislead.
 */
export function eventTimeZone(request: BookingRequest, agentZone: string): string | undefined {
  return zoneOffsetMinutes(request.start, agentZone) === request.offsetMinutes ? agentZone : undefined;
}

const WEEK_MS = 7 * 86_400_000;

/**
 * Whether the action's UTC offset is one the agent's zone keeps within a year of the meeting but not
 * at its instant: the model took the wrong side of a daylight-saving change (the summer offset a day
 * after clocks went back, the winter one after they went forward), so the wall clock it put into
 * `friendly_time` names another hour than the one booked, and the confirmation says the booked one
 * instead. Looked for week by week over a year either side (a mismatched offset only, so no cost on a
 * booking written in the zone's own offset). An offset the zone never keeps (most customers' own
 * zones) is a time written elsewhere's way, and its words stand; a customer whose zone's offset is the
 * agent zone's other season's gets the booked time in the agent's zone (accurate, in other words).
 */
export function offsetOfAnotherSeason(start: Date, offsetMinutes: number, agentZone: string): boolean {
  if (zoneOffsetMinutes(start, agentZone) === offsetMinutes) return false;
  for (let week = -52; week <= 52; week++) {
    if (week === 0) continue;
    if (zoneOffsetMinutes(new Date(start.getTime() + week * WEEK_MS), agentZone) === offsetMinutes)
      return true;
  }
  return false;
}

/** A 12-hour clock time: "3 PM", "3:30pm", "11.15 a.m.". */
const TWELVE_HOUR = /\b(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?\s?m\b\.?/gi;
/** A 24-hour clock time: "15:00", "9:30", "15h30". */
const TWENTY_FOUR_HOUR = /\b([01]?\d|2[0-3])[:h]([0-5]\d)\b/gi;

/**
 * Whether `words` (the model's `friendly_time`) name a clock time that is not the meeting's: neither
 * its wall clock in the agent's zone nor in the action's own offset. The model may have written the
 * instant wrong while its words say what the customer asked for; the confirmation must then name the
 * booked time, not the words. The commonest such mistake is a `Z` (UTC) where the agent's local time
 * was meant, and its words then match the UTC clock: so a UTC offset's clock counts only when the
 * words say UTC or GMT. Words that name no clock time this reads ("tomorrow", another language's)
 * are not judged.
 */
export function namesAnotherClockTime(
  words: string,
  start: Date,
  offsetMinutes: number,
  agentZone: string,
): boolean {
  const minuteOfDay = (offset: number) => {
    const local = new Date(start.getTime() + offset * 60_000);
    return local.getUTCHours() * 60 + local.getUTCMinutes();
  };
  const booked = new Set([minuteOfDay(zoneOffsetMinutes(start, agentZone))]);
  // "GMT+9" is no UTC: it is how friendlyTime writes Tokyo, and the model copies it.
  if (offsetMinutes !== 0 || /\b(?:UTC|GMT)\b(?!\s*[+\-−]\s*\d)/i.test(words))
    booked.add(minuteOfDay(offsetMinutes));
  const named: number[] = [];
  const rest = words.replace(TWELVE_HOUR, (match, h: string, m: string | undefined, half: string) => {
    const hour = Number(h);
    // "13:00 pm" is no 12-hour time: left for the 24-hour reading.
    if (hour < 1 || hour > 12) return match;
    named.push(((hour % 12) + (half.toLowerCase() === 'p' ? 12 : 0)) * 60 + Number(m ?? 0));
    return ' ';
  });
  for (const m of rest.matchAll(TWENTY_FOUR_HOUR)) named.push(Number(m[1]) * 60 + Number(m[2]));
  if (/\bnoon\b/i.test(rest)) named.push(12 * 60);
  if (/\bmidnight\b/i.test(rest)) named.push(0);
  return named.some((minute) => !booked.has(minute));
}

/**
 * The booking's idempotency key: the same customer message and the same action always give the
 * same key (and so the same Google event id); anything else gives another.
 */
export function bookingKey(messageId: string, index: number, request: BookingRequest): string {
  const canonical = JSON.stringify([
    messageId,
    index,
    request.email.toLowerCase(),
    request.start.toISOString(),
    request.title,
    request.participants.map((p) => p.toLowerCase()).sort(),
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

/**
 * Google event ids must be base32hex (a-v, 0-9), 5-1024 characters. Hex digits are a subset of
 * base32hex, so the key's hex digest is a valid id as it is.
 */
export function googleEventIdFor(key: string): string {
  return `am${key.slice(0, 48)}`;
}
