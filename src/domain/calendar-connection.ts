import { InvalidInput } from './errors.js';

/** Owner ids come from the external dashboard: 1–50 of letters, digits and `-_.@`. */
export const USER_ID_PATTERN = '^[A-Za-z0-9._@-]{1,50}$';
const USER_ID_RE = new RegExp(USER_ID_PATTERN);

/** Either scope lets us create events on the owner's calendar. */
export const CALENDAR_SCOPES = [
  'https://www.googleapis.com/auth/calendar',
  'https://www.googleapis.com/auth/calendar.events',
] as const;

/** ISO 8601 / RFC 3339 date-time that carries a zone (`Z` or `±hh:mm`). */
const ZONED_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i;

export function assertUserId(userId: string): void {
  if (!USER_ID_RE.test(userId)) {
    throw new InvalidInput('user_id must be 1-50 characters of letters, digits, "-", "_", "." or "@"');
  }
}

export function parseZonedDateTime(value: string, field: string): Date {
  const date = new Date(value);
  // JavaScript rolls impossible dates over (2025-02-30 -> March 2); reject them instead.
  const [y = 0, m = 0, d = 0] = value.slice(0, 10).split('-').map(Number);
  const daysInMonth = new Date(Date.UTC(y, m, 0)).getUTCDate();
  if (!ZONED_DATE_TIME.test(value) || Number.isNaN(date.getTime()) || d < 1 || d > daysInMonth) {
    throw new InvalidInput(
      `${field} must be an ISO 8601 date-time with a time zone, e.g. 2025-10-06T15:30:00Z`,
    );
  }
  // Its offset can move it out of the 4 digits the form allows; PostgreSQL has no year 0 either.
  if (!isStorableInstant(date)) throw new InvalidInput(`${field} must be between the years 1 and 9999`);
  return date;
}

/** An instant PostgreSQL stores as written: in UTC, in the years 1 to 9999 (it has no year 0). */
export function isStorableInstant(date: Date): boolean {
  const year = date.getUTCFullYear();
  return year >= 1 && year <= 9999;
}

export interface ConnectInput {
  access_token: string;
  refresh_token?: string | undefined;
  token_expiry: string;
  scope: string;
}

export interface ValidConnection {
  accessToken: string;
  refreshToken: string | undefined;
  tokenExpiry: Date;
  scope: string;
}

/** Checks what the JSON schema cannot express; field types were checked by the route schema. */
export function validateConnectInput(input: ConnectInput): ValidConnection {
  if (input.access_token.trim() === '') throw new InvalidInput('access_token must be a non-empty string');
  if (input.refresh_token !== undefined && input.refresh_token.trim() === '') {
    throw new InvalidInput('refresh_token must be a non-empty string when given');
  }
  const tokenExpiry = parseZonedDateTime(input.token_expiry, 'token_expiry');
  const scopes = input.scope.split(/\s+/).filter(Boolean);
  if (!scopes.some((s) => (CALENDAR_SCOPES as readonly string[]).includes(s))) {
    throw new InvalidInput(`scope must include ${CALENDAR_SCOPES[0]} or ${CALENDAR_SCOPES[1]}`);
  }
  return {
    accessToken: input.access_token,
    refreshToken: input.refresh_token,
    tokenExpiry,
    scope: scopes.join(' '),
  };
}

/**
 * Shows enough of a secret to tell two apart, never enough to use it: a short prefix and suffix of
 * long values, nothing of short ones.
 */
export function maskSecret(value: string | null | undefined): string | null {
  if (!value) return null;
  if (value.length < 16) return '****';
  return `${value.slice(0, 6)}…${value.slice(-4)}`;
}

export function expiryStatus(expiry: Date, now: Date): { is_expired: boolean; expires_in_minutes: number } {
  const ms = expiry.getTime() - now.getTime();
  return { is_expired: ms <= 0, expires_in_minutes: ms <= 0 ? 0 : Math.floor(ms / 60_000) };
}
