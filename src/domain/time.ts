/** Time-zone helpers on top of Intl (the runtime's IANA database); no I/O. */

import { IANA_ZONE_NAMES } from './tz-names.js';

/**
 * Zone names already found valid, lower-cased (Intl accepts any casing). Only valid names are kept,
 * so the set is bounded by the zone database however many distinct strings callers (model output
 * included) throw at it.
 */
const knownZones = new Set<string>();

/** Lower-cased name -> IANA's spelling, built on first use. */
let spellings: Map<string, string> | undefined;

/**
 * The zone's name as IANA spells it ("asia/kolkata" -> "Asia/Kolkata"), or undefined when `zone` is
 * not a zone name. Intl accepts any casing and so do we, but Google Calendar refuses a `timeZone`
 * that is not spelled exactly (every booking of an agent saved as "america/new_york" would fail), and
 * Intl's own canonical name may be another of the zone's names (Asia/Calcutta for Asia/Kolkata): the
 * name the owner typed is kept, only its spelling fixed (src/domain/tz-names.ts). A zone the runtime
 * knows and the list does not (newer than it) gets the runtime's name for it; names only ICU knows
 * ("SystemV/EST5") are not zone names here.
 */
export function ianaZoneName(zone: string): string | undefined {
  if (!isIanaTimeZone(zone)) return undefined;
  spellings ??= new Map(IANA_ZONE_NAMES.map((name) => [name.toLowerCase(), name]));
  const spelled = spellings.get(zone.toLowerCase());
  if (spelled) return spelled;
  // Not in the list: the runtime's name for it, if that is an IANA name (newer than the list); not
  // a name only ICU knows ("SystemV/EST5"), which Google would refuse, nor one of ICU's three-letter
  // ids, which stand for zones their letters do not say (BST is Asia/Dhaka, IST Asia/Calcutta).
  if (!AREA_LOCATION.test(zone)) return undefined;
  const resolved = new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
  runtimeZones ??= new Set(Intl.supportedValuesOf('timeZone'));
  return spellings.get(resolved.toLowerCase()) ?? (runtimeZones.has(resolved) ? resolved : undefined);
}

/** An IANA zone name's shape: an area and a location ("America/Argentina/Buenos_Aires"). */
const AREA_LOCATION = /^[A-Za-z]+\/[A-Za-z0-9_+\-/]+$/;

/** The runtime's canonical zone names (Intl.supportedValuesOf), built on first use. */
let runtimeZones: Set<string> | undefined;

/** True for names in the IANA time zone database ("Asia/Kolkata", "UTC"); false for "UTC+05:30". */
export function isIanaTimeZone(zone: string): boolean {
  const key = zone.toLowerCase();
  if (knownZones.has(key)) return true;
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(zone) || /^(UTC|GMT)[+-]/i.test(zone)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    return false;
  }
  knownZones.add(key);
  return true;
}

interface ZonedParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  weekday: string;
}

/**
 * One en-US formatter per zone and option set: building one costs far more than formatting with it
 * (~157 µs against ~4 µs here), and confirmations, refusals and tool results format again and again.
 */
function formatterFor(
  cache: Map<string, Intl.DateTimeFormat>,
  zone: string,
  options: Intl.DateTimeFormatOptions,
): Intl.DateTimeFormat {
  let f = cache.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { ...options, timeZone: zone });
    cache.set(zone, f);
  }
  return f;
}

const PARTS: Intl.DateTimeFormatOptions = {
  hourCycle: 'h23',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  weekday: 'long',
};
const partsFormatters = new Map<string, Intl.DateTimeFormat>();

/** The zone's wall clock at `at` (whole seconds), read from Intl: the reference the cache below keeps. */
function formattedParts(at: number, zone: string): ZonedParts {
  const f = formatterFor(partsFormatters, zone, PARTS);
  const parts = Object.fromEntries(f.formatToParts(at).map((p) => [p.type, p.value]));
  return {
    year: Number(parts.year),
    month: Number(parts.month),
    day: Number(parts.day),
    hour: Number(parts.hour),
    minute: Number(parts.minute),
    second: Number(parts.second),
    weekday: String(parts.weekday),
  };
}

/** The zone's offset at `at` (whole seconds), in ms: its wall clock read as UTC, minus the instant. */
function formattedOffsetMs(at: number, zone: string): number {
  const p = formattedParts(at, zone);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - at;
}

/**
 * Offsets already read from Intl, per zone and quarter hour (`<quarter> <zone>` -> ms). Why: every
 * message's prompt reads the zone's clock now, again and again within the same quarter hour, and
 * `formatToParts` was ~1 % of the service's CPU at 50 bookings/s (bench/README.md).
 *
 * A quarter hour is kept the second time it is asked for (`null` marks the first: most meeting times
 * are asked for once, and reading one offset is cheaper than checking a quarter hour), and only when
 * the offset at its first and its last second agree: it then holds for the whole quarter hour, since
 * no zone in the time zone database changes its offset twice within 15 minutes. One whose offset
 * changes inside it is read from Intl each time. The map is emptied when it reaches OFFSETS_KEPT
 * entries.
 */
const offsets = new Map<string, number | null>();
const QUARTER_MS = 15 * 60_000;
const OFFSETS_KEPT = 10_000;

function offsetMs(at: number, zone: string): number {
  const quarter = Math.floor(at / QUARTER_MS);
  const key = `${quarter} ${zone}`;
  const kept = offsets.get(key);
  if (typeof kept === 'number') return kept;
  if (offsets.size >= OFFSETS_KEPT) offsets.clear();
  if (kept === undefined) {
    offsets.set(key, null);
    return formattedOffsetMs(at, zone);
  }
  const start = quarter * QUARTER_MS;
  const first = formattedOffsetMs(start, zone);
  if (formattedOffsetMs(start + QUARTER_MS - 1000, zone) !== first) return formattedOffsetMs(at, zone);
  offsets.set(key, first);
  return first;
}

export const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/** `at` to the whole second, in epoch ms (Intl's clock has no finer field). */
const wholeSecond = (at: Date) => Math.floor(at.getTime() / 1000) * 1000;

/** The wall clock at `second` with offset `offset` (ms): the same parts Intl's `formatToParts` gives. */
function wallParts(second: number, offset: number): ZonedParts {
  const wall = new Date(second + offset);
  return {
    year: wall.getUTCFullYear(),
    month: wall.getUTCMonth() + 1,
    day: wall.getUTCDate(),
    hour: wall.getUTCHours(),
    minute: wall.getUTCMinutes(),
    second: wall.getUTCSeconds(),
    weekday: WEEKDAYS[wall.getUTCDay()]!,
  };
}

function zonedParts(at: Date, zone: string): ZonedParts {
  const second = wholeSecond(at);
  return wallParts(second, offsetMs(second, zone));
}

/** The zone's offset from UTC at that instant, in minutes (Asia/Kolkata -> 330). */
export function zoneOffsetMinutes(at: Date, zone: string): number {
  return Math.round(offsetMs(wholeSecond(at), zone) / 60_000);
}

export function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 3339 local time with the zone's offset, e.g. 2025-10-06T19:00:00+05:30. */
export function toZonedIso(at: Date, zone: string): string {
  const second = wholeSecond(at);
  const offset = offsetMs(second, zone);
  const p = wallParts(second, offset);
  return `${p.year}-${pad(p.month)}-${pad(p.day)}T${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}${formatOffset(Math.round(offset / 60_000))}`;
}

export function weekdayIn(at: Date, zone: string): string {
  return zonedParts(at, zone).weekday;
}

const FRIENDLY: Intl.DateTimeFormatOptions = {
  weekday: 'long',
  year: 'numeric',
  month: 'long',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
  timeZoneName: 'short',
};
const friendlyFormatters = new Map<string, Intl.DateTimeFormat>();

/** "Monday, October 6, 2025 at 7:00 PM GMT+5:30" style text for confirmations. */
export function friendlyTime(at: Date, zone: string): string {
  return formatterFor(friendlyFormatters, zone, FRIENDLY).format(at);
}

/** The local calendar date and clock in `zone` at that instant (weekday 0 = Sunday). */
export function localDateTime(
  at: Date,
  zone: string,
): { year: number; month: number; day: number; hour: number; minute: number; weekday: number } {
  const p = zonedParts(at, zone);
  return {
    year: p.year,
    month: p.month,
    day: p.day,
    hour: p.hour,
    minute: p.minute,
    weekday: new Date(Date.UTC(p.year, p.month - 1, p.day)).getUTCDay(),
  };
}

/**
 * The instant a wall-clock time in `zone` denotes. A time that occurs twice (clocks set back) is its
 * first occurrence; a time that does not occur (clocks set forward: in America/Santiago, 2025-09-07
 * 00:00 never happens) is moved forward by the gap, to the instant it would have been on the old
 * offset (00:00 there is 01:00 -03, the moment the day begins). Offsets a day before and after are
 * the candidates: no zone changes its offset twice within a day.
 */
export function zonedInstant(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  zone: string,
): Date {
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  const before = zoneOffsetMinutes(new Date(wall - 86_400_000), zone) * 60_000;
  const after = zoneOffsetMinutes(new Date(wall + 86_400_000), zone) * 60_000;
  // The same wall clock on each offset; the earlier (the larger offset) first.
  const candidates =
    before === after ? [wall - before] : [wall - Math.max(before, after), wall - Math.min(before, after)];
  for (const t of candidates) {
    const at = new Date(t);
    if (wholeSecond(at) + offsetMs(wholeSecond(at), zone) === wall) return at;
  }
  // In a gap: the old offset (the one before the change) carries it past the change.
  return new Date(wall - before);
}

/** A change of a zone's UTC offset: the first instant of the new offset. */
export interface OffsetChange {
  at: Date;
  fromMinutes: number;
  toMinutes: number;
}

/**
 * The zone's offset changes in the `days` after `from` (daylight saving, or a change of the zone's
 * rules), found by comparing its offset a day apart and narrowing each difference to the minute.
 * Reads Intl directly (a few hundred reads: callers keep the answer, see prompt.ts).
 */
export function offsetChanges(zone: string, from: Date, days: number): OffsetChange[] {
  const minute = 60_000;
  const offsetAt = (ms: number) => Math.round(formattedOffsetMs(Math.floor(ms / 1000) * 1000, zone) / minute);
  const changes: OffsetChange[] = [];
  let t = Math.floor(from.getTime() / minute) * minute;
  let offset = offsetAt(t);
  for (let d = 0; d < days; d++) {
    const next = t + 86_400_000;
    const nextOffset = offsetAt(next);
    if (nextOffset !== offset) {
      // The first minute on the new offset, within (t, next].
      let lo = t;
      let hi = next;
      while (hi - lo > minute) {
        const mid = lo + Math.floor((hi - lo) / 2 / minute) * minute;
        if (offsetAt(mid) === offset) lo = mid;
        else hi = mid;
      }
      changes.push({ at: new Date(hi), fromMinutes: offset, toMinutes: nextOffset });
    }
    t = next;
    offset = nextOffset;
  }
  return changes;
}
