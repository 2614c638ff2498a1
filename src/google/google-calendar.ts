import { calendar, type calendar_v3 } from '@googleapis/calendar';
import { OAuth2Client } from 'google-auth-library';
import type { Logger } from 'pino';
import type {
  BusyInterval,
  CalendarEventState,
  CalendarGateway,
  CreatedCalendarEvent,
  EventChangesQuery,
  EventTimes,
  NewCalendarEvent,
  RetryGuard,
} from '../domain/calendar-gateway.js';
import { ChangesTooOld, TooManyChanges, Upstream } from '../domain/errors.js';
import { retryAfterOf } from '../domain/retry-after.js';
import { isIanaTimeZone, zonedInstant } from '../domain/time.js';
import { createLeanFetch, type Fetch } from '../lean-fetch.js';
import type { GoogleTokenProvider } from './token-provider.js';

export interface GoogleCalendarOptions {
  rootUrl: string;
  timeoutMs: number;
  /** Attempts for retryable failures (429, 403 rate limits, 5xx, network), first included. */
  maxAttempts?: number;
  /** Base of the exponential backoff; full jitter is applied. */
  backoffBaseMs?: number;
  /** How long to wait for a pending Meet conference to be created. */
  conferenceWaitMs?: number;
  onCall?: (outcome: { op: string; ms: number; status: number | 'network' }) => void;
  /** The client's transport (gaxios `fetchImplementation`); default: src/lean-fetch.ts. */
  fetch?: Fetch;
}

/** Per-request options of every Calendar call (the client's own retry is off: see #call). */
interface CallOptions {
  retry: false;
  timeout: number;
  fetchImplementation: Fetch;
}

/** Owners whose auth client is kept between calls (the most recently used). */
const AUTH_CLIENTS_KEPT = 1000;

interface GoogleErrorShape {
  status?: number;
  code?: string;
  response?: {
    status?: number;
    headers?: unknown;
    data?: { error?: { errors?: Array<{ reason?: string }>; message?: string } };
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The longest `Retry-After` a Calendar call waits out itself before trying again. */
const IN_CALL_WAIT_MAX_MS = 5_000;

type Failure =
  | { kind: 'unauthorized' }
  | { kind: 'retryable'; status: number | 'network' }
  | { kind: 'fatal'; status: number; reason: string };

/**
 * How Google's answers are treated (https://developers.google.com/workspace/calendar/api/guides/errors):
 * 401 -> refresh and retry once; 429, 403 rateLimitExceeded/userRateLimitExceeded, 5xx and network
 * errors -> backoff and retry; everything else (400, 403 quotaExceeded/forbidden, 404) -> give up.
 */
function classify(err: unknown): Failure {
  const e = err as GoogleErrorShape;
  const status = e.response?.status ?? e.status;
  if (status === undefined) return { kind: 'retryable', status: 'network' };
  const reason = e.response?.data?.error?.errors?.[0]?.reason ?? '';
  if (status === 401) return { kind: 'unauthorized' };
  if (status === 429 || status >= 500) return { kind: 'retryable', status };
  if (status === 403 && (reason === 'rateLimitExceeded' || reason === 'userRateLimitExceeded')) {
    return { kind: 'retryable', status };
  }
  return { kind: 'fatal', status, reason };
}

function meetLinkOf(event: calendar_v3.Schema$Event): string | null {
  if (event.hangoutLink) return event.hangoutLink;
  return event.conferenceData?.entryPoints?.find((p) => p.entryPointType === 'video')?.uri ?? null;
}

function conferenceStatusOf(event: calendar_v3.Schema$Event): CreatedCalendarEvent['conferenceStatus'] {
  const code = event.conferenceData?.createRequest?.status?.statusCode;
  if (code === 'success' || code === 'pending' || code === 'failure') return code;
  return meetLinkOf(event) ? 'success' : 'none';
}

/** Pages of events.list (2500 events each) read at most, for busy time or for changed events. */
const MAX_EVENT_PAGES = 10;

/** An event's busy interval as freeBusy would report it, or null when it does not block time. */
export function busyIntervalOf(event: calendar_v3.Schema$Event, zone: string): BusyInterval | null {
  if (event.status === 'cancelled' || event.transparency === 'transparent') return null;
  if (event.attendees?.some((a) => a.self && a.responseStatus === 'declined')) return null;
  const start = instantOf(event.start, zone);
  const end = instantOf(event.end, zone);
  if (!start || !end || end <= start) return null;
  return { start, end };
}

/** What keeping a meeting in step needs of an event: deleted or not, and its date-times. */
function eventStateOf(eventId: string, event: calendar_v3.Schema$Event): CalendarEventState {
  const at = (t: calendar_v3.Schema$EventDateTime | undefined) => {
    const ms = t?.dateTime ? Date.parse(t.dateTime) : Number.NaN;
    return Number.isNaN(ms) ? null : new Date(ms);
  };
  return { eventId, cancelled: event.status === 'cancelled', start: at(event.start), end: at(event.end) };
}

/** A dateTime, or an all-day date at midnight in the calendar's time zone. */
function instantOf(t: calendar_v3.Schema$EventDateTime | undefined, zone: string): Date | null {
  if (t?.dateTime) {
    const at = new Date(t.dateTime);
    return Number.isNaN(at.getTime()) ? null : at;
  }
  const m = t?.date ? /^(\d{4})-(\d{2})-(\d{2})$/.exec(t.date) : null;
  if (!m) return null;
  return zonedInstant(Number(m[1]), Number(m[2]), Number(m[3]), 0, 0, isIanaTimeZone(zone) ? zone : 'UTC');
}

/** Google Calendar v3 through the official client, with our own retries, refresh and idempotency. */
export class GoogleCalendarGateway implements CalendarGateway {
  readonly #maxAttempts: number;
  readonly #backoffBaseMs: number;
  readonly #conferenceWaitMs: number;
  /**
   * One client for every owner (building the Calendar API object costs more than a call's own
   * work); each call names its owner's auth client (`auth` in the request's parameters).
   */
  readonly #api: calendar_v3.Calendar;
  readonly #callOptions: CallOptions;
  /** Per owner, an auth client holding only its current access token (see #authFor). */
  readonly #auth = new Map<string, { token: string; client: OAuth2Client }>();

  constructor(
    private readonly tokens: GoogleTokenProvider,
    private readonly options: GoogleCalendarOptions,
    private readonly logger: Logger,
  ) {
    this.#maxAttempts = options.maxAttempts ?? 4;
    this.#backoffBaseMs = options.backoffBaseMs ?? 500;
    this.#conferenceWaitMs = options.conferenceWaitMs ?? 10_000;
    this.#api = calendar({ version: 'v3', rootUrl: options.rootUrl });
    this.#callOptions = {
      retry: false,
      timeout: options.timeoutMs,
      fetchImplementation: options.fetch ?? createLeanFetch(),
    };
  }

  /**
   * The owner's auth client for `token`: only an access token, so the library cannot refresh by
   * itself and bypass our single-refresh lock. Kept while the token is the owner's current one.
   */
  #authFor(ownerId: string, token: string): OAuth2Client {
    const kept = this.#auth.get(ownerId);
    this.#auth.delete(ownerId);
    const entry = kept?.token === token ? kept : { token, client: new OAuth2Client() };
    if (entry !== kept) entry.client.setCredentials({ access_token: token });
    // Map order is insertion order: re-inserting marks it most recently used.
    this.#auth.set(ownerId, entry);
    if (this.#auth.size > AUTH_CLIENTS_KEPT) this.#auth.delete(this.#auth.keys().next().value!);
    return entry.client;
  }

  /**
   * Runs one Calendar call for an owner: a fresh token, one forced refresh on 401, bounded backoff
   * on retryable failures. The client's own retry is off (it never retries POST anyway) so that
   * every retry is ours and counted.
   */
  async #call<T>(
    ownerId: string,
    op: string,
    fn: (api: calendar_v3.Calendar, auth: OAuth2Client, options: CallOptions) => Promise<T>,
    guard?: RetryGuard,
  ): Promise<T> {
    let token = await this.tokens.accessToken(ownerId);
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      const auth = this.#authFor(ownerId, token);
      const started = performance.now();
      try {
        const result = await fn(this.#api, auth, this.#callOptions);
        this.options.onCall?.({ op, ms: performance.now() - started, status: 200 });
        return result;
      } catch (err) {
        const failure = classify(err);
        const ms = performance.now() - started;
        this.options.onCall?.({
          op,
          ms,
          status:
            failure.kind === 'unauthorized'
              ? 401
              : failure.kind === 'fatal'
                ? failure.status
                : failure.status,
        });
        if (failure.kind === 'unauthorized' && !refreshed) {
          refreshed = true;
          token = await this.tokens.accessToken(ownerId, token);
          await guard?.();
          attempt--;
          continue;
        }
        // Google asks for a wait rarely (its guides say: back off exponentially), but when it does,
        // a short one is waited here and a longer one ends the call: the job's retry then waits it
        // (JobQueue), holding no worker slot meanwhile.
        const asked =
          failure.kind === 'retryable'
            ? retryAfterOf((err as GoogleErrorShape).response?.headers)
            : undefined;
        if (
          failure.kind === 'retryable' &&
          attempt < this.#maxAttempts &&
          (asked === undefined || asked <= IN_CALL_WAIT_MAX_MS)
        ) {
          const delay = Math.max(asked ?? 0, Math.random() * this.#backoffBaseMs * 2 ** (attempt - 1));
          this.logger.warn(
            { op, status: failure.status, attempt, delay_ms: Math.round(delay) },
            'Google call failed; retrying',
          );
          await sleep(delay);
          // Sent again only while its caller may still make it (RetryGuard).
          await guard?.();
          continue;
        }
        if (failure.kind === 'retryable') {
          throw new Upstream(`Google ${op} failed after ${attempt} attempts (${failure.status})`, true, {
            cause: err,
            retryAfterMs: asked,
          });
        }
        const status = failure.kind === 'unauthorized' ? 401 : failure.status;
        const reason = failure.kind === 'fatal' ? failure.reason : 'authError';
        throw new GoogleFatal(op, status, reason, err);
      }
    }
  }

  async createEvent(ownerId: string, e: NewCalendarEvent, guard?: RetryGuard): Promise<CreatedCalendarEvent> {
    const requestBody: calendar_v3.Schema$Event = {
      id: e.eventId,
      summary: e.summary,
      description: e.description,
      start: { dateTime: e.startDateTime, ...(e.timeZone ? { timeZone: e.timeZone } : {}) },
      end: { dateTime: e.endDateTime, ...(e.timeZone ? { timeZone: e.timeZone } : {}) },
      attendees: e.attendees.map((email) => ({ email })),
      reminders: {
        useDefault: false,
        overrides: [
          { method: 'email', minutes: 24 * 60 },
          { method: 'popup', minutes: 30 },
        ],
      },
      conferenceData: {
        createRequest: { requestId: e.conferenceRequestId, conferenceSolutionKey: { type: 'hangoutsMeet' } },
      },
    };
    let event: calendar_v3.Schema$Event;
    let existed = false;
    try {
      event = await this.#call(
        ownerId,
        'events.insert',
        async (api, auth, options) => {
          const res = await api.events.insert(
            { auth, calendarId: 'primary', conferenceDataVersion: 1, sendUpdates: 'all', requestBody },
            options,
          );
          return res.data;
        },
        guard,
      );
    } catch (err) {
      // 409 duplicate: this booking's event already exists (an earlier attempt whose answer was
      // lost, or a crashed worker): fetch it and carry on instead of booking again.
      if (!(err instanceof GoogleFatal) || err.status !== 409) throw this.#toDomain(err);
      existed = true;
      event = await this.#getEvent(ownerId, e.eventId);
      // Deleted since (by the owner): Google keeps the id, so it can be neither booked again nor
      // confirmed. https://developers.google.com/workspace/calendar/api/v3/reference/events/get
      if (event.status === 'cancelled') {
        throw new Upstream(`Google events.insert: event ${e.eventId} exists but was cancelled`, false);
      }
    }
    return this.#created(ownerId, event, e.eventId, existed);
  }

  async #created(
    ownerId: string,
    found: calendar_v3.Schema$Event,
    eventId: string,
    existed: boolean,
  ): Promise<CreatedCalendarEvent> {
    const event = await this.#awaitConference(ownerId, found);
    const { start, end } = eventStateOf(eventId, event);
    return {
      eventId: event.id ?? eventId,
      htmlLink: event.htmlLink ?? null,
      meetLink: meetLinkOf(event),
      conferenceStatus: conferenceStatusOf(event),
      existed,
      start,
      end,
    };
  }

  async #getEvent(ownerId: string, eventId: string): Promise<calendar_v3.Schema$Event> {
    try {
      return await this.#call(ownerId, 'events.get', async (api, auth, options) => {
        const res = await api.events.get({ auth, calendarId: 'primary', eventId }, options);
        return res.data;
      });
    } catch (err) {
      throw this.#toDomain(err);
    }
  }

  /** Meet creation is asynchronous: poll while `pending`, bounded; the meeting stands either way. */
  async #awaitConference(
    ownerId: string,
    event: calendar_v3.Schema$Event,
  ): Promise<calendar_v3.Schema$Event> {
    const deadline = Date.now() + this.#conferenceWaitMs;
    let current = event;
    let delay = 250;
    while (conferenceStatusOf(current) === 'pending' && Date.now() + delay <= deadline && current.id) {
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
      try {
        current = await this.#getEvent(ownerId, current.id);
      } catch (err) {
        this.logger.warn(
          { err, event_id: current.id },
          'could not poll the Meet conference; the link will be in the invite',
        );
        break;
      }
    }
    return current;
  }

  /**
   * freeBusy.query on the primary calendar. Needs the `calendar`, `calendar.readonly`,
   * `calendar.freebusy` or `calendar.events.freebusy` scope: `calendar.events` alone is refused (403),
   * and then the busy time is read with events.list, which that scope allows.
   * https://developers.google.com/workspace/calendar/api/v3/reference/freebusy/query
   */
  async freeBusy(ownerId: string, from: Date, to: Date, guard?: RetryGuard): Promise<BusyInterval[]> {
    let data: calendar_v3.Schema$FreeBusyResponse;
    try {
      data = await this.#call(
        ownerId,
        'freebusy.query',
        async (api, auth, options) => {
          const res = await api.freebusy.query(
            {
              auth,
              requestBody: {
                timeMin: from.toISOString(),
                timeMax: to.toISOString(),
                items: [{ id: 'primary' }],
              },
            },
            options,
          );
          return res.data;
        },
        guard,
      );
    } catch (err) {
      // A grant of calendar.events alone may create events but not query freeBusy (403
      // insufficientPermissions); it may list them, so the busy time is read from the events.
      if (err instanceof GoogleFatal && err.status === 403 && err.reason === 'insufficientPermissions') {
        return this.#busyFromEvents(ownerId, from, to, guard);
      }
      throw this.#toDomain(err);
    }
    const cal = data.calendars?.primary;
    // Per-calendar errors come back with a 200: "could not check", never free. Google's passing
    // ones (internalError, backendError) are retried as the job's retry; the others are final. An
    // answer without the calendar asked about is no answer either.
    if (!cal) throw new Upstream('Google freeBusy answered without the calendar asked about', true);
    if (cal.errors?.length) {
      const reason = cal.errors[0]?.reason ?? 'error';
      throw new Upstream(
        `Google freeBusy could not read the calendar (${reason})`,
        reason === 'internalError' || reason === 'backendError',
      );
    }
    return (cal.busy ?? [])
      .map((b) => ({ start: new Date(b.start ?? ''), end: new Date(b.end ?? '') }))
      .filter((b) => !Number.isNaN(b.start.getTime()) && !Number.isNaN(b.end.getTime()))
      .sort((a, b) => a.start.getTime() - b.start.getTime());
  }

  /**
   * Busy time from events.list, counted the way freeBusy counts it: every event of the primary
   * calendar in the range (recurring ones expanded) except cancelled ones, transparent ("free")
   * ones and invitations the owner declined. All-day events span their dates in the calendar's
   * time zone. https://developers.google.com/workspace/calendar/api/v3/reference/events/list
   */
  async #busyFromEvents(ownerId: string, from: Date, to: Date, guard?: RetryGuard): Promise<BusyInterval[]> {
    const busy: BusyInterval[] = [];
    const range = { timeMin: from.toISOString(), timeMax: to.toISOString(), singleEvents: true };
    try {
      // Never "free" because we stopped reading: past the last page read, the booking fails instead.
      for await (const data of this.#eventPages(ownerId, range, 'events to check', guard)) {
        const zone = data.timeZone ?? 'UTC';
        for (const event of data.items ?? []) {
          const interval = busyIntervalOf(event, zone);
          if (interval) busy.push(interval);
        }
      }
    } catch (err) {
      throw this.#toDomain(err);
    }
    return busy.sort((a, b) => a.start.getTime() - b.start.getTime());
  }

  /**
   * events.list of the primary calendar, page after page (2500 events each), errors as #call throws
   * them; more than MAX_EVENT_PAGES pages is a final Upstream (`what`: what was being read).
   */
  async *#eventPages(
    ownerId: string,
    params: Omit<calendar_v3.Params$Resource$Events$List, 'auth' | 'calendarId' | 'maxResults' | 'pageToken'>,
    what: string,
    guard?: RetryGuard,
  ): AsyncGenerator<calendar_v3.Schema$Events> {
    let pageToken: string | undefined;
    for (let page = 0; page < MAX_EVENT_PAGES; page++) {
      // A next page is a request of its own: not sent once the caller may no longer read.
      if (page > 0) await guard?.();
      const data = await this.#call(
        ownerId,
        'events.list',
        async (api, auth, options) => {
          const query = {
            auth,
            calendarId: 'primary',
            maxResults: 2500,
            ...params,
            ...(pageToken ? { pageToken } : {}),
          };
          return (await api.events.list(query, options)).data;
        },
        guard,
      );
      yield data;
      pageToken = data.nextPageToken ?? undefined;
      if (!pageToken) return;
    }
    throw new TooManyPages(`Google events.list: more than ${MAX_EVENT_PAGES} pages of ${what}`);
  }

  async eventExists(ownerId: string, eventId: string, guard?: RetryGuard): Promise<boolean> {
    return (await this.#liveEvent(ownerId, eventId, guard)) !== null;
  }

  async findEvent(
    ownerId: string,
    eventId: string,
    guard?: RetryGuard,
  ): Promise<CreatedCalendarEvent | null> {
    const event = await this.#liveEvent(ownerId, eventId, guard);
    return event ? this.#created(ownerId, event, eventId, true) : null;
  }

  async eventStart(ownerId: string, eventId: string, guard?: RetryGuard): Promise<Date | null> {
    const at = (await this.#liveEvent(ownerId, eventId, guard))?.start?.dateTime;
    return at ? new Date(at) : null;
  }

  async eventChanges(
    ownerId: string,
    query: EventChangesQuery,
    guard?: RetryGuard,
  ): Promise<CalendarEventState[]> {
    const found: CalendarEventState[] = [];
    const bounds =
      'updatedMin' in query
        ? { updatedMin: query.updatedMin.toISOString() }
        : { timeMin: query.from.toISOString(), timeMax: query.to.toISOString() };
    // With updatedMin Google includes deleted events anyway; the window needs it said.
    const params = { showDeleted: true, ...bounds };
    try {
      for await (const data of this.#eventPages(ownerId, params, 'changed events', guard)) {
        for (const event of data.items ?? []) if (event.id) found.push(eventStateOf(event.id, event));
      }
    } catch (err) {
      // 410 Gone on a list: the changes asked for are no longer kept (updatedMinTooLongAgo).
      if (err instanceof GoogleFatal && err.status === 410 && 'updatedMin' in query)
        throw new ChangesTooOld();
      if (err instanceof TooManyPages) throw new TooManyChanges(err.message);
      throw this.#toDomain(err);
    }
    return found;
  }

  async eventState(ownerId: string, eventId: string, guard?: RetryGuard): Promise<CalendarEventState | null> {
    const event = await this.#readEvent(ownerId, eventId, guard);
    if (event === 404) return null;
    if (event === 410) return { eventId, cancelled: true, start: null, end: null };
    return eventStateOf(eventId, event);
  }

  /** events.get; null for 404/410 and for a cancelled (deleted) event, which get still returns. */
  async #liveEvent(
    ownerId: string,
    eventId: string,
    guard?: RetryGuard,
  ): Promise<calendar_v3.Schema$Event | null> {
    const event = await this.#readEvent(ownerId, eventId, guard);
    return typeof event === 'number' || event.status === 'cancelled' ? null : event;
  }

  /**
   * events.get: the event (a deleted one as Google keeps it, `cancelled`), or Google's 404 or 410
   * (#getEvent, for an event known to exist, throws on those).
   */
  async #readEvent(
    ownerId: string,
    eventId: string,
    guard?: RetryGuard,
  ): Promise<calendar_v3.Schema$Event | 404 | 410> {
    try {
      return await this.#call(
        ownerId,
        'events.get',
        async (api, auth, options) =>
          (await api.events.get({ auth, calendarId: 'primary', eventId }, options)).data,
        guard,
      );
    } catch (err) {
      if (err instanceof GoogleFatal && (err.status === 404 || err.status === 410)) return err.status;
      throw this.#toDomain(err);
    }
  }

  async patchEvent(
    ownerId: string,
    eventId: string,
    times: EventTimes,
    guard?: RetryGuard,
  ): Promise<CreatedCalendarEvent> {
    let event: calendar_v3.Schema$Event;
    try {
      event = await this.#call(
        ownerId,
        'events.patch',
        async (api, auth, options) => {
          const res = await api.events.patch(
            {
              auth,
              calendarId: 'primary',
              eventId,
              sendUpdates: 'all',
              // `date: null`: an event the owner made all-day keeps its `date` through a patch that
              // does not clear it, and Google refuses an event with both (apps-api-issues #3110).
              requestBody: {
                start: {
                  date: null,
                  dateTime: times.startDateTime,
                  ...(times.timeZone ? { timeZone: times.timeZone } : {}),
                },
                end: {
                  date: null,
                  dateTime: times.endDateTime,
                  ...(times.timeZone ? { timeZone: times.timeZone } : {}),
                },
              },
            },
            options,
          );
          return res.data;
        },
        guard,
      );
    } catch (err) {
      throw this.#toDomain(err);
    }
    // Deleted at Google (by the owner, say): Google keeps it as cancelled and a patch answers 200
    // with it still cancelled, on nobody's calendar. Not a move, and no retry makes it one: refused
    // as a deleted event's 404/410 would be.
    if (event.status === 'cancelled') {
      this.logger.error({ op: 'events.patch', event_id: eventId }, 'the event to move was deleted at Google');
      throw new Upstream('Google events.patch: the event was deleted', false);
    }
    const { start, end } = eventStateOf(eventId, event);
    return {
      eventId: event.id ?? eventId,
      htmlLink: event.htmlLink ?? null,
      meetLink: meetLinkOf(event),
      conferenceStatus: conferenceStatusOf(event),
      existed: true,
      start,
      end,
    };
  }

  async deleteEvent(ownerId: string, eventId: string, guard?: RetryGuard): Promise<void> {
    try {
      await this.#call(
        ownerId,
        'events.delete',
        (api, auth, options) =>
          api.events.delete({ auth, calendarId: 'primary', eventId, sendUpdates: 'all' }, options),
        guard,
      );
    } catch (err) {
      // 404/410: already deleted (by the owner, or by an earlier attempt).
      if (err instanceof GoogleFatal && (err.status === 404 || err.status === 410)) return;
      throw this.#toDomain(err);
    }
  }

  #toDomain(err: unknown): Error {
    if (err instanceof GoogleFatal) {
      this.logger.error({ op: err.op, status: err.status, reason: err.reason }, 'Google refused the request');
      return new Upstream(err.message, false, { cause: err });
    }
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** More pages of events.list than a read goes through: final (the busy time is then not known). */
class TooManyPages extends Upstream {
  constructor(message: string) {
    super(message, false);
  }
}

/** A Google answer that retrying will not change. */
class GoogleFatal extends Error {
  constructor(
    readonly op: string,
    readonly status: number,
    readonly reason: string,
    cause: unknown,
  ) {
    super(`Google ${op} answered ${status}${reason ? ` ${reason}` : ''}`, { cause });
    this.name = 'GoogleFatal';
  }
}
