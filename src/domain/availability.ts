import { InvalidInput } from './errors.js';
import { localDateTime, zonedInstant } from './time.js';

/**
 * Availability rules, no I/O: an agent's booking settings, working hours in the agent's zone, and
 * free slots computed from the owner's busy time (Google freeBusy) plus a buffer.
 */

export const WEEKDAYS = [
  'sunday',
  'monday',
  'tuesday',
  'wednesday',
  'thursday',
  'friday',
  'saturday',
] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/** "HH:MM" local times, start < end, within one day ("24:00" allowed as an end). */
export interface TimeRange {
  start: string;
  end: string;
}

/** Open ranges per weekday; a weekday that is absent (or empty) is closed. */
export type WorkingHours = Partial<Record<Weekday, TimeRange[]>>;

export interface BookingSettings {
  /** Null: not set, any time can be booked (the seed's behaviour). */
  workingHours: WorkingHours | null;
  bufferMinutes: number;
  /** Null: the service-wide MIN_NOTICE_MINUTES / BOOKING_HORIZON_DAYS apply. */
  minNoticeMinutes: number | null;
  horizonDays: number | null;
}

export const DEFAULT_BOOKING_SETTINGS: BookingSettings = {
  workingHours: null,
  bufferMinutes: 0,
  minNoticeMinutes: null,
  horizonDays: null,
};

export const BOOKING_SETTING_LIMITS = {
  bufferMinutes: { min: 0, max: 240 },
  minNoticeMinutes: { min: 0, max: 43_200 },
  horizonDays: { min: 1, max: 365 },
} as const;

/** Whether a notice (minutes) and a horizon (days) leave any time to book: the notice must be shorter. */
export function leavesBookableTime(minNoticeMinutes: number, horizonDays: number): boolean {
  return minNoticeMinutes < horizonDays * 1440;
}

/** Where alternatives are searched when the agent has no working hours. */
export const DEFAULT_SEARCH_HOURS: TimeRange = { start: '09:00', end: '18:00' };

const CLOCK = /^([01]\d|2[0-3]):([0-5]\d)$|^24:00$/;
const minutesOf = (clock: string) => Number(clock.slice(0, 2)) * 60 + Number(clock.slice(3, 5));

/** Validates working hours from the owner API; messages name the field. */
export function parseWorkingHours(raw: unknown): WorkingHours {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidInput(
      'working_hours must be an object keyed by weekday, e.g. {"monday":[{"start":"09:00","end":"17:00"}]}',
    );
  }
  const out: WorkingHours = {};
  for (const [key, value] of Object.entries(raw)) {
    const day = key.toLowerCase() as Weekday;
    if (!WEEKDAYS.includes(day))
      throw new InvalidInput(`working_hours.${key} is not a weekday (monday … sunday)`);
    // "monday" and "Monday" are one day: one would silently replace the other.
    if (out[day]) throw new InvalidInput(`working_hours names ${day} twice (keys are not case-sensitive)`);
    if (!Array.isArray(value) || value.length > 6) {
      throw new InvalidInput(`working_hours.${key} must be a list of at most 6 {"start","end"} ranges`);
    }
    const ranges: TimeRange[] = [];
    for (const r of value as unknown[]) {
      const start = (r as { start?: unknown })?.start;
      const end = (r as { end?: unknown })?.end;
      if (typeof start !== 'string' || typeof end !== 'string' || !CLOCK.test(start) || !CLOCK.test(end)) {
        throw new InvalidInput(`working_hours.${key} ranges need "start" and "end" as HH:MM (00:00–24:00)`);
      }
      if (minutesOf(start) >= minutesOf(end)) {
        throw new InvalidInput(`working_hours.${key}: start ${start} must be before end ${end}`);
      }
      ranges.push({ start, end });
    }
    ranges.sort((a, b) => minutesOf(a.start) - minutesOf(b.start));
    for (let i = 1; i < ranges.length; i++) {
      if (minutesOf(ranges[i]!.start) < minutesOf(ranges[i - 1]!.end)) {
        throw new InvalidInput(`working_hours.${key} ranges must not overlap`);
      }
    }
    out[day] = ranges;
  }
  return out;
}

export interface Interval {
  start: Date;
  end: Date;
}

/** The open windows of one local date (the ranges of its weekday), as instants. */
function windowsOn(
  date: { year: number; month: number; day: number },
  zone: string,
  hours: WorkingHours | null,
): Interval[] {
  const weekday = WEEKDAYS[new Date(Date.UTC(date.year, date.month - 1, date.day)).getUTCDay()]!;
  const ranges = hours ? (hours[weekday] ?? []) : [DEFAULT_SEARCH_HOURS];
  return ranges.map((r) => {
    const s = minutesOf(r.start);
    const e = minutesOf(r.end);
    return {
      start: zonedInstant(date.year, date.month, date.day, Math.floor(s / 60), s % 60, zone),
      // 24:00 is midnight of the next day.
      end: zonedInstant(
        date.year,
        date.month,
        date.day + (e === 1440 ? 1 : 0),
        e === 1440 ? 0 : Math.floor(e / 60),
        e % 60,
        zone,
      ),
    };
  });
}

/** True when [start, end) lies inside one working range of its local day (always true when unset). */
export function withinWorkingHours(
  start: Date,
  end: Date,
  zone: string,
  hours: WorkingHours | null,
): boolean {
  if (!hours) return true;
  const local = localDateTime(start, zone);
  return windowsOn(local, zone, hours).some((w) => start >= w.start && end <= w.end);
}

/** True when [start, end), widened by the buffer on both sides, touches a busy interval. */
export function overlapsBusy(start: Date, end: Date, busy: Interval[], bufferMinutes: number): boolean {
  const pad = bufferMinutes * 60_000;
  return busy.some((b) => start.getTime() < b.end.getTime() + pad && end.getTime() + pad > b.start.getTime());
}

export interface SlotSearch {
  zone: string;
  hours: WorkingHours | null;
  durationMinutes: number;
  bufferMinutes: number;
  busy: Interval[];
  /** Bookable bounds (notice and horizon). */
  earliest: Date;
  latest: Date;
  /** The range searched. */
  from: Date;
  to: Date;
  stepMinutes?: number;
}

/** Every free slot start in the range, in order: inside working hours (09:00–18:00 when unset). */
export function freeSlots(q: SlotSearch): Date[] {
  const step = (q.stepMinutes ?? 30) * 60_000;
  const duration = q.durationMinutes * 60_000;
  const out: Date[] = [];
  const first = localDateTime(q.from, q.zone);
  const days = Math.ceil((q.to.getTime() - q.from.getTime()) / 86_400_000) + 2;
  for (let i = -1; i < days; i++) {
    const d = new Date(Date.UTC(first.year, first.month - 1, first.day + i));
    const date = { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
    for (const w of windowsOn(date, q.zone, q.hours)) {
      for (let t = w.start.getTime(); t + duration <= w.end.getTime(); t += step) {
        if (t < q.from.getTime() || t >= q.to.getTime()) continue;
        if (t < q.earliest.getTime() || t > q.latest.getTime()) continue;
        const start = new Date(t);
        if (overlapsBusy(start, new Date(t + duration), q.busy, q.bufferMinutes)) continue;
        out.push(start);
      }
    }
  }
  out.sort((a, b) => a.getTime() - b.getTime());
  return out.filter((s, i) => i === 0 || s.getTime() !== out[i - 1]!.getTime());
}

/** The `count` slots nearest to `target` (either side), returned in time order. */
export function nearestSlots(slots: Date[], target: Date, count: number): Date[] {
  return [...slots]
    .sort((a, b) => {
      const da = Math.abs(a.getTime() - target.getTime());
      const db = Math.abs(b.getTime() - target.getTime());
      return da - db || a.getTime() - b.getTime();
    })
    .slice(0, count)
    .sort((a, b) => a.getTime() - b.getTime());
}

/** "Monday 09:00–17:00; Tuesday 09:00–12:00, 13:00–17:00" for customer texts. */
export function describeWorkingHours(hours: WorkingHours): string {
  const parts: string[] = [];
  for (const day of [...WEEKDAYS.slice(1), WEEKDAYS[0]]) {
    const ranges = hours[day];
    if (!ranges?.length) continue;
    parts.push(
      `${day.charAt(0).toUpperCase()}${day.slice(1)} ${ranges.map((r) => `${r.start}–${r.end}`).join(', ')}`,
    );
  }
  return parts.length ? parts.join('; ') : 'no open hours';
}
