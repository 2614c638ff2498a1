/**
 * The sandbox's language model: a small deterministic script plugged into the OpenAI emulator as its
 * `Responder`, so `npm run demo` (and the browser test) show the whole booking flow with no API key.
 *
 * It is stateless: every call re-reads the conversation the service sends (system prompt + history),
 * the same way a real model works. It greets, collects the customer's name, email and a time, reads
 * simple phrases ("tomorrow at 3pm", "Friday 10am", "next monday at 14:30", "Oct 6 at noon") relative to
 * the "Current date and time: <ISO> (<Weekday>), time zone <Zone>." line of the system prompt, and then
 * answers with the seed's `Time_to_121meet` JSON action, `meeting_time` carrying the zone's offset.
 *
 * No test-framework imports: the sandbox runs it outside vitest.
 */
import {
  BOOKING_ACTION,
  CANCEL_ACTION,
  CHECK_AVAILABILITY,
  RESCHEDULE_ACTION,
} from '../../src/domain/prompt.js';
import { toZonedIso, zonedInstant } from '../../src/domain/time.js';
import { type ChatRequest, messageText, type Responder, type ScriptedReply } from './openai.js';

/** "Now" as the system prompt states it: the wall clock in the agent's zone. */
export interface PromptNow {
  instant: Date;
  zone: string;
  /** Local calendar date and time in `zone`. */
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
}

/** A day as the customer said it, before it is resolved against "now". */
export type DaySpec =
  | { kind: 'offset'; days: number; word: string }
  | { kind: 'weekday'; weekday: number; next: boolean }
  | { kind: 'date'; month: number; day: number; year?: number };

export interface TimeSpec {
  hour: number;
  minute: number;
}

/** What the customer has told so far. */
export interface BookingState {
  name?: string;
  email?: string;
  day?: DaySpec;
  time?: TimeSpec;
  topic: string;
  /** True when the customer's latest message only says hello. */
  greetingOnly: boolean;
  /** True when a meeting was just confirmed and the customer has asked for nothing new since. */
  justBooked: boolean;
}

const NOW_LINE =
  /Current date and time: (\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}) \(\w+\), time zone ([A-Za-z0-9_+\-/]+)\./;

const WEEKDAYS: Array<[RegExp, number]> = [
  [/^sun(day)?$/, 0],
  [/^mon(day)?$/, 1],
  [/^tue(s|sday)?$/, 2],
  [/^wed(nesday)?$/, 3],
  [/^thu(r|rs|rsday)?$/, 4],
  [/^fri(day)?$/, 5],
  [/^sat(urday)?$/, 6],
];
const WEEKDAY_WORD =
  /\b(next\s+|this\s+|on\s+)?(sun(?:day)?|mon(?:day)?|tue(?:s|sday)?|wed(?:nesday)?|thu(?:r|rs|rsday)?|fri(?:day)?|sat(?:urday)?)\b/;
const WEEKDAY_NAMES = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = [
  'january',
  'february',
  'march',
  'april',
  'may',
  'june',
  'july',
  'august',
  'september',
  'october',
  'november',
  'december',
];
const MONTH_WORD =
  '(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)';
const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;
const GREETING =
  /^(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening)|greetings|yo)\b[\s!.,]*(there)?[\s!.,]*$/i;
/** Words that end a name ("I'm Ada and I'd like...", "Ada from Acme"). */
const NAME_STOP =
  /^(and|from|at|with|my|email|e-mail|is|i|i'd|id|would|like|want|need|here|calling|interested|looking|the|a|an|for|on|tomorrow|today|please|thanks|thank)$/i;

/** Reads the "Current date and time" line; falls back to `fallback` in UTC when there is none. */
export function parsePromptNow(system: string, fallback: Date = new Date()): PromptNow {
  const m = NOW_LINE.exec(system);
  if (m) {
    const [, y, mo, d, h, mi, zone] = m;
    const zoneName = zone ?? 'UTC';
    const instant = zonedInstant(Number(y), Number(mo), Number(d), Number(h), Number(mi), zoneName);
    return {
      instant,
      zone: zoneName,
      year: Number(y),
      month: Number(mo),
      day: Number(d),
      hour: Number(h),
      minute: Number(mi),
    };
  }
  return {
    instant: fallback,
    zone: 'UTC',
    year: fallback.getUTCFullYear(),
    month: fallback.getUTCMonth() + 1,
    day: fallback.getUTCDate(),
    hour: fallback.getUTCHours(),
    minute: fallback.getUTCMinutes(),
  };
}

function normalize(text: string): string {
  return text.toLowerCase().replace(/[’‘]/g, "'").replace(/\s+/g, ' ').trim();
}

/** The time of day in a message, if any: "3pm", "3:30 p.m.", "15:00", "noon", "at 9". */
export function parseTimeOfDay(text: string): TimeSpec | undefined {
  const t = normalize(text);
  const twelve = /\b(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?)(?![a-z])/.exec(t);
  if (twelve) {
    const h = Number(twelve[1]);
    const minute = Number(twelve[2] ?? 0);
    if (h >= 1 && h <= 12 && minute < 60) {
      const pm = twelve[3]?.startsWith('p');
      return { hour: (h % 12) + (pm ? 12 : 0), minute };
    }
  }
  const clock = /\b([01]?\d|2[0-3]):([0-5]\d)\b/.exec(t);
  if (clock) return { hour: Number(clock[1]), minute: Number(clock[2]) };
  if (/\b(noon|midday|lunchtime)\b/.test(t)) return { hour: 12, minute: 0 };
  const bare = /\b(?:at|around|about)\s+(\d{1,2})(?:\s*o'?clock)?(?![\d:/.-]|\s*(?:st|nd|rd|th)\b)/.exec(t);
  if (bare) {
    const h = Number(bare[1]);
    // A bare business hour: 1-7 means the afternoon, 8-11 the morning.
    if (h >= 1 && h <= 7) return { hour: h + 12, minute: 0 };
    if (h >= 8 && h <= 12) return { hour: h, minute: 0 };
  }
  return undefined;
}

/** The day in a message, if any: "today", "tomorrow", "Friday", "next monday", "Oct 6", "2025-10-06". */
export function parseDay(text: string): DaySpec | undefined {
  const t = normalize(text);
  if (/\bday after tomorrow\b/.test(t)) return { kind: 'offset', days: 2, word: 'the day after tomorrow' };
  if (/\b(tomorrow|tmrw|tmr|tomorow)\b/.test(t)) return { kind: 'offset', days: 1, word: 'tomorrow' };
  if (/\b(today|tonight|this (morning|afternoon|evening))\b/.test(t)) {
    return { kind: 'offset', days: 0, word: 'today' };
  }
  const inDays = /\bin (\d{1,2}|a|one|two|three) days?\b/.exec(t);
  if (inDays) {
    const words: Record<string, number> = { a: 1, one: 1, two: 2, three: 3 };
    const days = words[inDays[1] ?? ''] ?? Number(inDays[1]);
    return { kind: 'offset', days, word: `in ${days} day${days === 1 ? '' : 's'}` };
  }
  const iso = /\b(\d{4})-(\d{2})-(\d{2})\b/.exec(t);
  if (iso) return { kind: 'date', year: Number(iso[1]), month: Number(iso[2]), day: Number(iso[3]) };
  const monthFirst = new RegExp(`\\b${MONTH_WORD}\\.? (\\d{1,2})(?:st|nd|rd|th)?\\b`).exec(t);
  if (monthFirst) return { kind: 'date', month: monthIndex(monthFirst[1] ?? ''), day: Number(monthFirst[2]) };
  const dayFirst = new RegExp(`\\b(\\d{1,2})(?:st|nd|rd|th)? (?:of )?${MONTH_WORD}\\b`).exec(t);
  if (dayFirst) return { kind: 'date', month: monthIndex(dayFirst[2] ?? ''), day: Number(dayFirst[1]) };
  const weekday = WEEKDAY_WORD.exec(t);
  if (weekday) {
    const word = weekday[2] ?? '';
    const found = WEEKDAYS.find(([re]) => re.test(word));
    if (found) return { kind: 'weekday', weekday: found[1], next: weekday[1]?.trim() === 'next' };
  }
  return undefined;
}

function monthIndex(word: string): number {
  return MONTHS.findIndex((m) => m.startsWith(word.slice(0, 3))) + 1;
}

/** Local calendar arithmetic (no zone: plain dates). */
function addDays(y: number, m: number, d: number, days: number): { y: number; m: number; d: number } {
  const t = new Date(Date.UTC(y, m - 1, d + days));
  return { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: t.getUTCDate() };
}

function dayDiff(a: { y: number; m: number; d: number }, b: { y: number; m: number; d: number }): number {
  return Math.round((Date.UTC(b.y, b.m - 1, b.d) - Date.UTC(a.y, a.m - 1, a.d)) / 86_400_000);
}

/**
 * The instant meant by a day and a time, seen from `now`. No day: today if the time is still ahead,
 * else tomorrow. A bare weekday is the next one (today if it is that day and the time is ahead).
 */
export function resolveMeetingTime(now: PromptNow, day: DaySpec | undefined, time: TimeSpec): Date {
  const today = { y: now.year, m: now.month, d: now.day };
  const at = (date: { y: number; m: number; d: number }) =>
    zonedInstant(date.y, date.m, date.d, time.hour, time.minute, now.zone);
  if (!day) {
    const candidate = at(today);
    return candidate.getTime() > now.instant.getTime()
      ? candidate
      : at(addDays(today.y, today.m, today.d, 1));
  }
  if (day.kind === 'offset') return at(addDays(today.y, today.m, today.d, day.days));
  if (day.kind === 'weekday') {
    const todayWeekday = new Date(Date.UTC(today.y, today.m - 1, today.d)).getUTCDay();
    let delta = (day.weekday - todayWeekday + 7) % 7;
    if (delta === 0 && (day.next || at(today).getTime() <= now.instant.getTime())) delta = 7;
    return at(addDays(today.y, today.m, today.d, delta));
  }
  let year = day.year ?? today.y;
  if (day.year === undefined && dayDiff(today, { y: year, m: day.month, d: day.day }) < 0) year++;
  return at({ y: year, m: day.month, d: day.day });
}

/** "tomorrow at 3 PM CEST", "Friday at 10:30 AM GMT+5:30", "Monday, October 20 at 9 AM UTC". */
export function friendlyMeetingTime(now: PromptNow, start: Date): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone: now.zone,
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: '2-digit',
      timeZoneName: 'short',
    })
      .formatToParts(start)
      .map((p) => [p.type, p.value]),
  );
  const date = { y: Number(parts.year), m: Number(parts.month), d: Number(parts.day) };
  const diff = dayDiff({ y: now.year, m: now.month, d: now.day }, date);
  const weekday = WEEKDAY_NAMES[new Date(Date.UTC(date.y, date.m - 1, date.d)).getUTCDay()] ?? '';
  const dayText =
    diff === 0
      ? 'today'
      : diff === 1
        ? 'tomorrow'
        : diff > 1 && diff < 7
          ? weekday
          : `${weekday}, ${new Intl.DateTimeFormat('en-US', {
              month: 'long',
              day: 'numeric',
              timeZone: 'UTC',
            }).format(new Date(Date.UTC(date.y, date.m - 1, date.d)))}`;
  const clock = parts.minute === '00' ? parts.hour : `${parts.hour}:${parts.minute}`;
  return `${dayText} at ${clock} ${parts.dayPeriod} ${parts.timeZoneName}`;
}

/** A name the customer gave, from an explicit phrase or as the answer to "may I have your name?". */
export function parseName(text: string, askedForName: boolean): string | undefined {
  const signed = /^([A-Z][a-z'-]+(?:\s+[A-Z][a-zA-Z'-]+){1,2})[\s,;:(<-]+[A-Za-z0-9._%+-]+@/.exec(
    text.trim(),
  );
  if (signed) return signed[1]; // "Ada Lovelace ada@example.com ..."
  const clean = text.replace(/[’‘]/g, "'").replace(EMAIL, ' ').trim();
  const explicit =
    /\b(?:my name is|my name's|name is|name's|call me)\s+([A-Za-z][A-Za-z'.-]*(?:\s+[A-Za-z][A-Za-z'.-]*){0,3})/i.exec(
      clean,
    );
  if (explicit) return tidyName(explicit[1] ?? '');
  // "I'm Ada Lovelace" only when the words are capitalized ("I'm interested in..." is no name).
  const introduced = /\b(?:I'm|I am|Im|[Tt]his is)\s+([A-Z][a-zA-Z'.-]*(?:\s+[A-Z][a-zA-Z'.-]*){0,3})/.exec(
    clean,
  );
  if (introduced) return tidyName(introduced[1] ?? '');
  if (!askedForName) return undefined;
  const answer = clean
    .replace(/^(sure|ok(ay)?|yes|yeah|of course)[,!.]?\s+/i, '')
    .replace(/^(it's|it is|i'm|i am|its)\s+/i, '')
    .replace(/[\s,;:!.]+$/g, '')
    .replace(/\s*[,;]\s*$/, '');
  const looksLikeName = /^[\p{L}][\p{L}'.-]*(?:\s+[\p{L}][\p{L}'.-]*){0,3}$/u.test(answer);
  // "Friday", "hello" or "noon" answer something else than the question.
  if (!looksLikeName || parseDay(answer) || parseTimeOfDay(answer) || GREETING.test(answer)) return undefined;
  return tidyName(answer);
}

function tidyName(raw: string): string | undefined {
  const words: string[] = [];
  for (const w of raw.trim().split(/\s+/)) {
    if (NAME_STOP.test(w)) break;
    words.push(w.replace(/[.,]+$/, ''));
  }
  if (words.length === 0) return undefined;
  return words.map((w) => (w === w.toLowerCase() ? w.charAt(0).toUpperCase() + w.slice(1) : w)).join(' ');
}

export function parseEmail(text: string): string | undefined {
  const all = text.match(EMAIL);
  return all?.at(-1)?.replace(/\.$/, '');
}

function topicOf(text: string): string | undefined {
  const t = normalize(text);
  if (/\bdemo\b/.test(t)) return 'Demo';
  if (/\bconsult(ation)?\b/.test(t)) return 'Consultation';
  if (/\bonboarding\b/.test(t)) return 'Onboarding';
  if (/\binterview\b/.test(t)) return 'Interview';
  if (/\b(call|chat|talk|speak)\b/.test(t)) return 'Call';
  return undefined;
}

const isConfirmation = (text: string) => /Meeting (confirmed|rescheduled)!/.test(text);
/** Replies after which the customer's earlier time no longer stands (booked, moved, cancelled, refused, failed). */
const closesBooking = (text: string) =>
  isConfirmation(text) ||
  /Meeting cancelled|couldn't book|trouble scheduling|already has \d+ upcoming|not available|outside our working hours/i.test(
    text,
  );

/** Reads what the customer has said so far from the chat history (oldest first). */
export function readState(history: Array<{ role: string; text: string }>): BookingState {
  const state: BookingState = { topic: 'Meeting', greetingOnly: false, justBooked: false };
  let lastAssistant = '';
  let lastClose = -1;
  history.forEach((m, i) => {
    if (m.role === 'assistant' && closesBooking(m.text)) lastClose = i;
  });
  history.forEach((m, i) => {
    if (m.role === 'assistant') {
      lastAssistant = m.text;
      return;
    }
    if (m.role !== 'user') return;
    const name = parseName(m.text, /\byour name\b/i.test(lastAssistant));
    if (name) state.name = name;
    const email = parseEmail(m.text);
    if (email) state.email = email;
    const topic = topicOf(m.text);
    if (topic) state.topic = topic;
    // A time given before the last confirmation or refusal belongs to that booking.
    if (i > lastClose) {
      const day = parseDay(m.text);
      if (day) state.day = day;
      const time = parseTimeOfDay(m.text);
      if (time) state.time = time;
    }
  });
  const last = history.at(-1);
  state.greetingOnly = last?.role === 'user' && GREETING.test(last.text.trim());
  state.justBooked =
    lastClose >= 0 &&
    isConfirmation(history[lastClose]?.text ?? '') &&
    state.day === undefined &&
    state.time === undefined;
  return state;
}

const GREETING_TEXT =
  'Hello! 👋 I can book a video call with our team on Google Meet. ' +
  'When would suit you? You can say something like “tomorrow at 3pm” or “Friday 10am”.';

/** The sandbox model's answer to one chat-completion request. */
export function sandboxReply(request: Pick<ChatRequest, 'messages'>, fallbackNow: Date = new Date()): string {
  const system = request.messages
    .filter((m) => m.role === 'system' || m.role === 'developer')
    .map((m) => messageText(m.content))
    .join('\n');
  const now = parsePromptNow(system, fallbackNow);
  const history = request.messages
    .filter((m) => m.role === 'user' || m.role === 'assistant')
    .map((m) => ({ role: m.role, text: messageText(m.content) }));
  const s = readState(history);
  const latest = history.at(-1)?.role === 'user' ? (history.at(-1)?.text ?? '') : '';

  // Changes to a meeting booked earlier in this chat: the service picks the conversation's meeting.
  const hadMeeting = history.some((m) => m.role === 'assistant' && isConfirmation(m.text));
  if (hadMeeting && /\bcancel/i.test(latest)) {
    return `Sure — cancelling your meeting.\n\n${JSON.stringify({ action: CANCEL_ACTION, meeting_id: null })}`;
  }
  if (hadMeeting && /\b(reschedule|move|change|instead|push)\b/i.test(latest)) {
    const time = parseTimeOfDay(latest);
    if (!time) return 'Sure — what day and time would you like to move it to?';
    const start = resolveMeetingTime(now, parseDay(latest), time);
    const when = friendlyMeetingTime(now, start);
    const action = {
      action: RESCHEDULE_ACTION,
      meeting_id: null,
      new_time: toZonedIso(start, now.zone),
      friendly_time: when,
    };
    return `Moving your meeting to ${when}.\n\n${JSON.stringify(action)}`;
  }

  if (s.justBooked) {
    return /\b(thanks|thank you|thx|great|perfect|cool)\b/i.test(latest)
      ? 'You’re welcome! See you in the meeting. 👋'
      : 'You’re all set — the invitation is in your inbox. If you’d like another meeting, just tell me when.';
  }
  if (s.greetingOnly && !s.name && !s.email && !s.day && !s.time) return GREETING_TEXT;

  const start = s.time ? resolveMeetingTime(now, s.day, s.time) : undefined;
  if (start && start.getTime() <= now.instant.getTime() + 5 * 60_000) {
    return `That time has already passed here (${now.zone}). Which later time works for you?`;
  }
  const when = start ? friendlyMeetingTime(now, start) : undefined;
  const gaveTime = Boolean(parseTimeOfDay(latest) || parseDay(latest));
  const ack = when && gaveTime ? `${capitalize(when)} works. ` : '';

  if (!s.name) {
    const intro = s.topic === 'Demo' && !ack ? 'I’d be happy to set up a demo! ' : ack;
    return `${intro}May I have your name?`;
  }
  if (!s.email) {
    return `${ack}Thanks, ${s.name.split(' ')[0]}! What email address should I send the invitation to?`;
  }
  if (!start || !when) {
    if (s.day && !s.time) return `What time ${describeDay(s.day)} works for you?`;
    return `Thanks, ${s.name.split(' ')[0]}! When would suit you? For example “tomorrow at 3pm” or “Friday 10am”.`;
  }
  const action = {
    action: BOOKING_ACTION,
    name: s.name,
    email: s.email,
    title: `${s.topic} with ${s.name}`,
    participants: [s.email],
    meeting_time: toZonedIso(start, now.zone),
    friendly_time: when,
  };
  return `Perfect, ${s.name.split(' ')[0]} — booking your ${s.topic.toLowerCase()} for ${when}.\n\n${JSON.stringify([action], null, 2)}`;
}

function describeDay(day: DaySpec): string {
  if (day.kind === 'offset') return day.word;
  if (day.kind === 'weekday') return `on ${WEEKDAY_NAMES[day.weekday]}`;
  return `on ${MONTHS[day.month - 1]?.replace(/^./, (c) => c.toUpperCase())} ${day.day}`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

const AVAILABILITY_QUESTION = /\b(free|available|availability|open slots?|what times?)\b/i;

/**
 * One model turn: asks the check_availability tool when the customer asks what is free (and the
 * tool is offered), turns the tool's answer into a reply, and otherwise answers as `sandboxReply`.
 */
export function sandboxTurn(
  request: Pick<ChatRequest, 'messages' | 'tools'>,
  fallbackNow: Date = new Date(),
): ScriptedReply {
  const last = request.messages.at(-1);
  if (last?.role === 'tool') {
    let slots: Array<{ friendly: string }> = [];
    try {
      slots =
        (JSON.parse(messageText(last.content)) as { free_slots?: Array<{ friendly: string }> }).free_slots ??
        [];
    } catch {
      slots = [];
    }
    if (slots.length === 0)
      return { content: 'I couldn’t find a free time that day. Would another day work?' };
    return {
      content: `Here are some free times: ${slots
        .slice(0, 3)
        .map((x) => x.friendly)
        .join('; ')}. Which one suits you?`,
    };
  }
  const offered = (request.tools ?? []).some(
    (t) => (t as { function?: { name?: string } }).function?.name === CHECK_AVAILABILITY,
  );
  const latest = last?.role === 'user' ? messageText(last.content) : '';
  if (offered && AVAILABILITY_QUESTION.test(latest) && !parseTimeOfDay(latest)) {
    const system = request.messages
      .filter((m) => m.role === 'system' || m.role === 'developer')
      .map((m) => messageText(m.content))
      .join('\n');
    const now = parsePromptNow(system, fallbackNow);
    const day = parseDay(latest) ?? { kind: 'offset' as const, days: 1, word: 'tomorrow' };
    const date = toZonedIso(resolveMeetingTime(now, day, { hour: 12, minute: 0 }), now.zone).slice(0, 10);
    return { toolCalls: [{ name: CHECK_AVAILABILITY, arguments: { start_date: date, end_date: null } }] };
  }
  return { content: sandboxReply(request, fallbackNow) };
}

/** Plug into the OpenAI emulator: `emulator.responder = sandboxResponder()`. */
export function sandboxResponder(now: () => Date = () => new Date()): Responder {
  return (req): ScriptedReply => sandboxTurn(req, now());
}
