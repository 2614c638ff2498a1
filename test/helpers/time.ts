/**
 * Wall times for tests, written independently of src/domain/time.ts so that they check it rather
 * than repeat it.
 */

function formatOffset(minutes: number): string {
  const abs = Math.abs(minutes);
  const hh = String(Math.floor(abs / 60)).padStart(2, '0');
  const mm = String(abs % 60).padStart(2, '0');
  return `${minutes < 0 ? '-' : '+'}${hh}:${mm}`;
}

/**
 * `hour:minute` at a fixed UTC offset, `days` after today's date there: the RFC 3339 text, the
 * instant, and the local date (YYYY-MM-DD).
 */
export function wallTime(days: number, hour: number, minute: number, offsetMinutes: number) {
  const local = new Date(Date.now() + offsetMinutes * 60_000);
  const localMs = Date.UTC(
    local.getUTCFullYear(),
    local.getUTCMonth(),
    local.getUTCDate() + days,
    hour,
    minute,
  );
  return {
    iso: `${new Date(localMs).toISOString().slice(0, 19)}${formatOffset(offsetMinutes)}`,
    at: new Date(localMs - offsetMinutes * 60_000),
    date: new Date(localMs).toISOString().slice(0, 10),
  };
}

/** An instant as the seed's confirmation writes it, in `zone` ("Monday, March 2, 2026 at 7:00 PM GMT+5:30"). */
export function friendlyIn(zone: string, at: Date): string {
  return new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    weekday: 'long',
    year: 'numeric',
    month: 'long',
    day: 'numeric',
    hour: 'numeric',
    minute: '2-digit',
    timeZoneName: 'short',
  }).format(at);
}
