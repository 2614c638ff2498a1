/**
 * In-process emulator of the slice of Google's APIs this service uses: the OAuth 2.0 token endpoint
 * (refresh_token and authorization_code grants, revocation) and Calendar v3 events.insert / get / patch /
 * delete / list and freeBusy.query. It speaks HTTP on loopback so tests drive it through the real
 * `@googleapis/calendar` and `google-auth-library` clients, and it injects faults (error statuses, lost
 * responses, stalls) on demand.
 *
 * node:http only and no test-runner imports: a sandbox/demo mode can run it as a stand-in for Google.
 *
 * Behaviour follows Google's documentation and observed responses:
 * - errors: https://developers.google.com/workspace/calendar/api/guides/errors
 * - events: https://developers.google.com/workspace/calendar/api/v3/reference/events
 * - conferences: https://developers.google.com/workspace/calendar/api/guides/create-events#conferencing
 * - freeBusy: https://developers.google.com/workspace/calendar/api/v3/reference/freebusy/query
 * - OAuth: https://developers.google.com/identity/protocols/oauth2/web-server#offline
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { calendar_v3 } from '@googleapis/calendar';
import { IANA_ZONE_NAMES } from '../../src/domain/tz-names.js';

export type CalendarEventResource = calendar_v3.Schema$Event;

export interface GoogleEmulatorOptions {
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  clientId: string;
  clientSecret: string;
  /** Lifetime of issued access tokens; default 3600 (Google's usual `expires_in`). */
  accessTokenTtlSeconds?: number;
  latencyMs?: number;
}

export type GoogleOp =
  | 'token'
  | 'revoke'
  | 'events.insert'
  | 'events.get'
  | 'events.patch'
  | 'events.delete'
  | 'freebusy.query'
  | 'events.list'
  | '*';

export type Fault =
  /** Answer `status` with Google's error body, after `delayMs` (default none); the work is not done. */
  | {
      kind: 'status';
      status: number;
      reason?: string;
      message?: string;
      delayMs?: number;
      /** A `Retry-After` header sent with the error, as written (seconds or an HTTP-date). */
      retryAfter?: string;
    }
  /** Perform the operation, then destroy the socket without answering. */
  | { kind: 'lost-response' }
  /** Wait `ms`, then handle the request normally (the work is done even if the client gave up). */
  | { kind: 'stall'; ms: number }
  /**
   * freebusy.query only: a 200 whose calendars each carry this error instead of busy time (Google's
   * per-calendar errors: `internalError`, `notFound`, `groupTooBig`, ...); `missing` answers with no
   * entry for the calendars asked about at all.
   */
  | { kind: 'calendar-error'; reason: string | 'missing' };

export interface RequestLogEntry {
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  /** HTTP status sent; 0 when the response was deliberately lost, the client had gone, or the emulator closed. */
  status: number;
  /** Date.now() when the request arrived. */
  at: number;
  /** Date.now() when the answer was written (unset while pending, or when none was sent). */
  doneAt?: number;
  /** The account's email when the request carried a valid access token. */
  account?: string;
  /** That access token (Calendar requests), or the one a successful token request issued. */
  accessToken?: string;
  op: Exclude<GoogleOp, '*'> | 'unknown';
  fault?: Fault['kind'];
}

export interface SentUpdate {
  eventId: string;
  op: 'insert' | 'patch' | 'delete';
  /** The `sendUpdates` query value as sent; undefined when omitted (Google then sends no invitations). */
  sendUpdates: string | undefined;
}

export interface GrantOptions {
  email: string;
  /** Space-separated scopes; default calendar.events + calendar.freebusy. */
  scope?: string;
  /** May be negative: the access token is then already expired. */
  accessTokenExpiresInSeconds?: number;
  /** Time zone of the account's primary calendar, set when the account is created; default 'UTC'. */
  timeZone?: string;
}

export interface GrantResult {
  access_token: string;
  refresh_token: string;
  expiry: Date;
  scope: string;
}

export const CALENDAR_SCOPES = {
  calendar: 'https://www.googleapis.com/auth/calendar',
  readonly: 'https://www.googleapis.com/auth/calendar.readonly',
  events: 'https://www.googleapis.com/auth/calendar.events',
  eventsOwned: 'https://www.googleapis.com/auth/calendar.events.owned',
  eventsReadonly: 'https://www.googleapis.com/auth/calendar.events.readonly',
  eventsFreebusy: 'https://www.googleapis.com/auth/calendar.events.freebusy',
  freebusy: 'https://www.googleapis.com/auth/calendar.freebusy',
  appCreated: 'https://www.googleapis.com/auth/calendar.app.created',
} as const;

export const DEFAULT_GRANT_SCOPE = `${CALENDAR_SCOPES.events} ${CALENDAR_SCOPES.freebusy}`;

export async function startGoogleEmulator(opts: GoogleEmulatorOptions): Promise<GoogleEmulator> {
  const emulator = new GoogleEmulator(opts);
  await emulator.listen(opts.port ?? 0, opts.host ?? '127.0.0.1');
  return emulator;
}

// ---------------------------------------------------------------------------------------------------
// Internal model

type Json = Record<string, unknown>;

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

interface StoredEvent {
  resource: Json;
  startMs: number;
  endMs: number;
  allDay: boolean;
  /** events.get calls left before a pending conference turns into success. */
  pendingGets?: number;
}

interface Account {
  email: string;
  timeZone: string;
  events: Map<string, StoredEvent>;
  busy: Array<{ startMs: number; endMs: number }>;
  /** requestId -> Meet code: Google returns the same conference for a reused requestId. */
  conferences: Map<string, string>;
  sentUpdates: SentUpdate[];
}

interface AccessToken {
  email: string;
  scope: string;
  expiresAt: number;
  refreshToken?: string;
  revoked: boolean;
}

interface RefreshToken {
  email: string;
  scope: string;
  revoked: boolean;
  refreshes: number;
  /** The refresh token that replaced this one (rotation on). */
  rotatedTo?: string;
}

interface AuthCode {
  email: string;
  scope: string;
  redirectUri: string;
  used: boolean;
}

interface Route {
  op: Exclude<GoogleOp, '*'>;
  calendarId?: string;
  eventId?: string;
}

interface Caller {
  account: Account;
  scope: string;
  token: string;
}

// Scopes each method accepts, from the generated client's documentation of calendar v3.
const WRITE_SCOPES = [
  CALENDAR_SCOPES.calendar,
  CALENDAR_SCOPES.events,
  CALENDAR_SCOPES.eventsOwned,
  CALENDAR_SCOPES.appCreated,
];
const READ_SCOPES = [
  ...WRITE_SCOPES,
  CALENDAR_SCOPES.readonly,
  CALENDAR_SCOPES.eventsReadonly,
  CALENDAR_SCOPES.eventsFreebusy,
  'https://www.googleapis.com/auth/calendar.events.owned.readonly',
  'https://www.googleapis.com/auth/calendar.events.public.readonly',
];
// Note: calendar.events alone does NOT allow freeBusy.query.
const FREEBUSY_SCOPES = [
  CALENDAR_SCOPES.calendar,
  CALENDAR_SCOPES.readonly,
  CALENDAR_SCOPES.freebusy,
  CALENDAR_SCOPES.eventsFreebusy,
];
const OP_SCOPES: Record<string, { scopes: string[]; method: string }> = {
  'events.insert': { scopes: WRITE_SCOPES, method: 'calendar.v3.Events.Insert' },
  'events.patch': { scopes: WRITE_SCOPES, method: 'calendar.v3.Events.Patch' },
  'events.delete': { scopes: WRITE_SCOPES, method: 'calendar.v3.Events.Delete' },
  'events.get': { scopes: READ_SCOPES, method: 'calendar.v3.Events.Get' },
  'events.list': { scopes: READ_SCOPES, method: 'calendar.v3.Events.List' },
  'freebusy.query': { scopes: FREEBUSY_SCOPES, method: 'calendar.v3.Freebusy.Query' },
};

const JSON_TYPE = 'application/json; charset=UTF-8';
const MEET_ICON =
  'https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png';
const SEND_UPDATES = ['all', 'externalOnly', 'none'];
const BASE32HEX_ID = /^[a-v0-9]{5,1024}$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})?$/;
const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;
const EMAIL = /^[^\s@]+@[^\s@]+$/;

/** Fields of an Event a client may write; everything else is server-owned. */
const WRITABLE_FIELDS = [
  'summary',
  'description',
  'location',
  'colorId',
  'start',
  'end',
  'status',
  'transparency',
  'visibility',
  'attendees',
  'reminders',
  'extendedProperties',
  'source',
  'guestsCanModify',
  'guestsCanInviteOthers',
  'guestsCanSeeOtherGuests',
  'anyoneCanAddSelf',
  'attendeesOmitted',
];

// Calendar backend error texts, as listed in Google's error guide. Usage limits use domain 'usageLimits'.
const KNOWN_REASONS: Record<string, { domain: string; message: string }> = {
  badRequest: { domain: 'global', message: 'Bad Request' },
  invalid: { domain: 'global', message: 'Invalid Value' },
  required: { domain: 'global', message: 'Required' },
  forbidden: { domain: 'global', message: 'Forbidden' },
  notFound: { domain: 'global', message: 'Not Found' },
  duplicate: { domain: 'global', message: 'The requested identifier already exists.' },
  deleted: { domain: 'global', message: 'Resource has been deleted' },
  conditionNotMet: { domain: 'global', message: 'Precondition Failed' },
  backendError: { domain: 'global', message: 'Backend Error' },
  rateLimitExceeded: { domain: 'usageLimits', message: 'Rate Limit Exceeded' },
  userRateLimitExceeded: { domain: 'usageLimits', message: 'User Rate Limit Exceeded' },
  quotaExceeded: { domain: 'usageLimits', message: 'Calendar usage limits exceeded.' },
  dailyLimitExceeded: { domain: 'usageLimits', message: 'Daily Limit Exceeded' },
  timeRangeEmpty: { domain: 'calendar', message: 'The specified time range is empty.' },
};
const DEFAULT_REASON_BY_STATUS: Record<number, string> = {
  400: 'badRequest',
  403: 'forbidden',
  404: 'notFound',
  409: 'duplicate',
  410: 'deleted',
  412: 'conditionNotMet',
  429: 'rateLimitExceeded',
};

// ---------------------------------------------------------------------------------------------------

export class GoogleEmulator {
  /** e.g. 'http://127.0.0.1:PORT/' (trailing slash): pass as `rootUrl` to calendar(). */
  get rootUrl(): string {
    return this.baseUrl;
  }
  /** e.g. 'http://127.0.0.1:PORT/token': pass as `endpoints.oauth2TokenUrl` to OAuth2Client. */
  get tokenUrl(): string {
    return `${this.baseUrl}token`;
  }
  requests: RequestLogEntry[] = [];
  /**
   * At most this many events per events.list page, whatever `maxResults` asks (Google documents that
   * a page may hold fewer, or none, while more follow): tests of paging without thousands of events.
   * Cleared by reset().
   */
  listPageSize: number | undefined;
  conferenceMode: 'success' | 'pending' | 'failure' = 'success';
  /** With mode 'pending', the Nth events.get after the insert (N = pendingPolls) sees success. */
  pendingPolls = 2;
  /**
   * Refresh token rotation: each successful refresh_token grant also answers a new `refresh_token`,
   * and the one it replaces stops working at once (invalid_grant), as with OAuth rotation
   * (RFC 9700 §4.14.2). Google documents that a refresh may return a new refresh token; a client
   * that keeps the old one is locked out at its next refresh. Off by default (Google's usual answer).
   */
  rotateRefreshTokens = false;
  /**
   * Refresh answers without `expires_in`. RFC 6749 §5.1 makes the field RECOMMENDED, not required;
   * Google always sends it, but a token endpoint behind a proxy or a compatible server may not.
   * The access token issued still lasts `accessTokenTtlSeconds`. Off by default.
   */
  omitExpiresIn = false;
  latencyMs: number;

  private readonly clientId: string;
  private readonly clientSecret: string;
  private readonly accessTokenTtlSeconds: number;
  private readonly server: Server;
  private readonly accounts = new Map<string, Account>();
  private readonly accessTokens = new Map<string, AccessToken>();
  private readonly refreshTokens = new Map<string, RefreshToken>();
  private readonly authCodes = new Map<string, AuthCode>();
  private readonly meetCodes = new Set<string>();
  private faults: Array<{
    op: GoogleOp;
    fault: Fault;
    remaining: number;
    when?: (request: RequestLogEntry) => boolean;
  }> = [];
  private readonly timers = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  private closed = false;
  private lastEtag = 0;
  private baseUrl = '';

  constructor(opts: GoogleEmulatorOptions) {
    this.clientId = opts.clientId;
    this.clientSecret = opts.clientSecret;
    this.accessTokenTtlSeconds = opts.accessTokenTtlSeconds ?? 3600;
    this.latencyMs = opts.latencyMs ?? 0;
    this.server = createServer((req, res) => {
      this.onRequest(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) {
          send(res, calendarError(500, 'backendError', `Emulator failure: ${String(err)}`));
        }
      });
    });
  }

  /** @internal Use startGoogleEmulator(). */
  async listen(port: number, host: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as AddressInfo;
    const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.baseUrl = `http://${hostPart}:${address.port}/`;
  }

  // ---- test/demo controls ----------------------------------------------------------------------------

  /** Creates the account (one primary calendar) if needed and issues a grant as if the owner consented. */
  grant(opts: GrantOptions): GrantResult {
    const account = this.ensureAccount(opts.email, opts.timeZone);
    const scope = opts.scope ?? DEFAULT_GRANT_SCOPE;
    const refreshToken = `1//emu-${token(32)}`;
    this.refreshTokens.set(refreshToken, { email: account.email, scope, revoked: false, refreshes: 0 });
    const ttl = opts.accessTokenExpiresInSeconds ?? this.accessTokenTtlSeconds;
    const access = this.issueAccessToken(account.email, scope, ttl, refreshToken);
    return {
      access_token: access.token,
      refresh_token: refreshToken,
      expiry: new Date(access.expiresAt),
      scope,
    };
  }

  /**
   * An authorization code for the authorization_code grant (what Google's consent redirect carries), for
   * a demo "connect your calendar" flow. Exchanging it returns access + refresh token.
   */
  authorizationCode(opts: { email: string; redirectUri: string; scope?: string; timeZone?: string }): string {
    const account = this.ensureAccount(opts.email, opts.timeZone);
    const code = `4/emu-${token(24)}`;
    this.authCodes.set(code, {
      email: account.email,
      scope: opts.scope ?? DEFAULT_GRANT_SCOPE,
      redirectUri: opts.redirectUri,
      used: false,
    });
    return code;
  }

  /**
   * Later refreshes with it get 400 invalid_grant. Access tokens already issued from it stay valid unless
   * `alsoAccessTokens` (what happens when the owner removes the app's access in their Google account).
   */
  revokeRefreshToken(refreshToken: string, opts: { alsoAccessTokens?: boolean } = {}): void {
    const grant = this.refreshTokens.get(refreshToken);
    if (grant) grant.revoked = true;
    if (opts.alsoAccessTokens) {
      for (const access of this.accessTokens.values()) {
        if (access.refreshToken === refreshToken) access.revoked = true;
      }
    }
  }

  /** Later API calls with it get 401 authError. */
  expireAccessToken(accessToken: string): void {
    const access = this.accessTokens.get(accessToken);
    if (access) access.expiresAt = Math.min(access.expiresAt, Date.now() - 1);
  }

  /** Events on the account's primary calendar (cancelled ones included), rendered as Google returns them. */
  events(email: string): CalendarEventResource[] {
    const account = this.accounts.get(email.toLowerCase());
    if (!account) return [];
    return [...account.events.values()].map((e) => this.render(e, account.timeZone));
  }

  /** An opaque busy block (as if made in the Calendar UI) that freeBusy reports; not listed by events.list. */
  addBusy(email: string, start: Date, end: Date): void {
    this.ensureAccount(email).busy.push({ startMs: start.getTime(), endMs: end.getTime() });
  }

  /** The sendUpdates value of every insert/patch/delete on that account, oldest first. */
  sentUpdates(email: string): SentUpdate[] {
    return [...(this.accounts.get(email.toLowerCase())?.sentUpdates ?? [])];
  }

  /** The refresh token a refresh with `refreshToken` answered in its place (rotation on). */
  rotatedRefreshToken(refreshToken: string): string | undefined {
    return this.refreshTokens.get(refreshToken)?.rotatedTo;
  }

  /** Successful refresh_token grants: in total, or for one refresh token. */
  refreshCount(refreshToken?: string): number {
    if (refreshToken !== undefined) return this.refreshTokens.get(refreshToken)?.refreshes ?? 0;
    let total = 0;
    for (const grant of this.refreshTokens.values()) total += grant.refreshes;
    return total;
  }

  /**
   * The next `times` requests matching `op` ('*' = any), and `when` if given (it sees the request as
   * logged: query and parsed body), get `fault` instead of normal handling.
   */
  fail(op: GoogleOp, fault: Fault, times = 1, when?: (request: RequestLogEntry) => boolean): void {
    this.faults.push({ op, fault, remaining: times, ...(when ? { when } : {}) });
  }

  /** Ends every wait now (stall faults, latency): the requests waiting go on at once. */
  releaseStalls(): void {
    for (const t of this.timers) {
      clearTimeout(t.timer);
      t.resolve();
    }
    this.timers.clear();
  }

  /** Clears pending faults, the request log, the sendUpdates log and listPageSize. Accounts, tokens and events stay. */
  reset(): void {
    this.faults = [];
    this.requests.length = 0;
    this.listPageSize = undefined;
    for (const account of this.accounts.values()) account.sentUpdates.length = 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.releaseStalls();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- HTTP plumbing ---------------------------------------------------------------------------------

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://emulator.invalid');
    const raw = await readBody(req);
    const method = (req.method ?? 'GET').toUpperCase();
    const route = matchRoute(method, url.pathname);
    const parsed = parseBody(raw, req.headers['content-type']);
    const entry: RequestLogEntry = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      body: parsed.value,
      status: 0,
      at: Date.now(),
      op: route?.op ?? 'unknown',
    };
    this.requests.push(entry);

    await this.sleep(this.latencyMs);
    const fault = this.takeFault(entry);
    if (fault) entry.fault = fault.kind;
    if (fault?.kind === 'stall') await this.sleep(fault.ms);
    if (fault?.kind === 'status' && fault.delayMs) await this.sleep(fault.delayMs);
    if (this.closed) return;

    let reply: Reply;
    if (fault?.kind === 'status') {
      reply = faultReply(entry.op, fault);
      if (fault.retryAfter !== undefined)
        reply = { ...reply, headers: { ...reply.headers, 'retry-after': fault.retryAfter } };
    } else if (!route) {
      reply = calendarError(404, 'notFound', 'Not Found');
    } else if (parsed.invalid) {
      reply =
        route.op === 'token' || route.op === 'revoke'
          ? oauthError(400, 'invalid_request', 'Bad Request')
          : calendarError(400, 'parseError', 'Parse Error');
    } else {
      reply = this.dispatch(route, req, entry, parsed.value);
      if (route.op === 'token' && reply.status === 200)
        entry.accessToken = (reply.body as { access_token?: string }).access_token;
      if (fault?.kind === 'calendar-error' && route.op === 'freebusy.query' && reply.status === 200) {
        const body = reply.body as { calendars: Record<string, unknown> };
        for (const id of Object.keys(body.calendars)) {
          if (fault.reason === 'missing') delete body.calendars[id];
          else body.calendars[id] = { errors: [{ domain: 'global', reason: fault.reason }], busy: [] };
        }
      }
    }

    if (fault?.kind === 'lost-response') {
      // The work is done; the client never learns it (a network error on its side).
      req.socket.destroy();
      return;
    }
    // A client that gave up (timeout during a stall) never receives it: logged as 0.
    entry.status = res.destroyed ? 0 : reply.status;
    send(res, reply);
    entry.doneAt = Date.now();
  }

  private dispatch(route: Route, req: IncomingMessage, entry: RequestLogEntry, body: unknown): Reply {
    const query = entry.query;
    if (route.op === 'token') return this.token(req, asForm(body));
    if (route.op === 'revoke') return this.revoke(query, asForm(body));
    const caller = this.authenticate(req, route.op);
    if ('status' in caller) return caller;
    entry.account = caller.account.email;
    entry.accessToken = caller.token;
    if (route.op === 'freebusy.query') return this.freeBusy(caller, body);
    const calendarId = route.calendarId ?? '';
    const account = caller.account;
    if (calendarId !== 'primary' && calendarId.toLowerCase() !== account.email) {
      return calendarError(404, 'notFound', 'Not Found');
    }
    switch (route.op) {
      case 'events.insert':
        return this.insert(account, query, body);
      case 'events.list':
        return this.list(account, query);
      case 'events.get':
        return this.get(account, route.eventId ?? '', query);
      case 'events.patch':
        return this.patch(account, route.eventId ?? '', query, body);
      case 'events.delete':
        return this.delete(account, route.eventId ?? '', query);
    }
  }

  private takeFault(entry: RequestLogEntry): Fault | undefined {
    const index = this.faults.findIndex(
      (f) => (f.op === '*' || f.op === entry.op) && (!f.when || f.when(entry)),
    );
    const found = this.faults[index];
    if (!found) return undefined;
    found.remaining -= 1;
    if (found.remaining <= 0) this.faults.splice(index, 1);
    return found.fault;
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const entry = {
        resolve,
        timer: setTimeout(() => {
          this.timers.delete(entry);
          resolve();
        }, ms),
      };
      this.timers.add(entry);
    });
  }

  // ---- OAuth -----------------------------------------------------------------------------------------

  /** POST /token: https://developers.google.com/identity/protocols/oauth2/web-server#offline */
  private token(req: IncomingMessage, form: Record<string, string>): Reply {
    const grantType = form.grant_type;
    if (!grantType) return oauthError(400, 'invalid_request', 'Required parameter is missing: grant_type');
    if (grantType !== 'refresh_token' && grantType !== 'authorization_code') {
      return oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${grantType}`);
    }
    // Client authentication: form fields or HTTP Basic (RFC 6749 §2.3.1).
    let clientId = form.client_id;
    let clientSecret = form.client_secret;
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (basic?.[1]) {
      const [id = '', secret = ''] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
      clientId = decodeURIComponent(id);
      clientSecret = decodeURIComponent(secret);
    }
    if (!clientId) return oauthError(400, 'invalid_request', 'Could not determine client ID from request.');
    if (clientId !== this.clientId)
      return oauthError(401, 'invalid_client', 'The OAuth client was not found.');
    if (clientSecret !== this.clientSecret) return oauthError(401, 'invalid_client', 'Unauthorized');

    if (grantType === 'authorization_code') return this.exchangeCode(form);

    const refreshToken = form.refresh_token;
    if (!refreshToken) return oauthError(400, 'invalid_request', 'Missing required parameter: refresh_token');
    const grant = this.refreshTokens.get(refreshToken);
    if (!grant || grant.revoked)
      return oauthError(400, 'invalid_grant', 'Token has been expired or revoked.');
    grant.refreshes += 1;
    let rotated: string | undefined;
    if (this.rotateRefreshTokens) {
      rotated = `1//emu-${token(32)}`;
      this.refreshTokens.set(rotated, {
        email: grant.email,
        scope: grant.scope,
        revoked: false,
        refreshes: 0,
      });
      grant.revoked = true;
      grant.rotatedTo = rotated;
    }
    const access = this.issueAccessToken(
      grant.email,
      grant.scope,
      this.accessTokenTtlSeconds,
      rotated ?? refreshToken,
    );
    // Google usually sends no refresh_token on a refresh: the client must keep the one it has.
    return {
      status: 200,
      headers: { 'cache-control': 'no-cache, no-store, max-age=0, must-revalidate', pragma: 'no-cache' },
      body: {
        access_token: access.token,
        ...(this.omitExpiresIn ? {} : { expires_in: this.accessTokenTtlSeconds }),
        ...(rotated ? { refresh_token: rotated } : {}),
        scope: grant.scope,
        token_type: 'Bearer',
      },
    };
  }

  private exchangeCode(form: Record<string, string>): Reply {
    if (!form.code) return oauthError(400, 'invalid_request', 'Missing required parameter: code');
    const code = this.authCodes.get(form.code);
    if (!code) return oauthError(400, 'invalid_grant', 'Malformed auth code.');
    if (code.used) return oauthError(400, 'invalid_grant', 'Bad Request');
    if (form.redirect_uri !== code.redirectUri)
      return oauthError(400, 'redirect_uri_mismatch', 'Bad Request');
    code.used = true;
    const refreshToken = `1//emu-${token(32)}`;
    this.refreshTokens.set(refreshToken, {
      email: code.email,
      scope: code.scope,
      revoked: false,
      refreshes: 0,
    });
    const access = this.issueAccessToken(code.email, code.scope, this.accessTokenTtlSeconds, refreshToken);
    return {
      status: 200,
      body: {
        access_token: access.token,
        expires_in: this.accessTokenTtlSeconds,
        refresh_token: refreshToken,
        scope: code.scope,
        token_type: 'Bearer',
      },
    };
  }

  /** POST /revoke?token=…: revoking a refresh token also revokes the access tokens issued from it. */
  private revoke(query: Record<string, string>, form: Record<string, string>): Reply {
    const value = query.token ?? form.token;
    const refresh = value ? this.refreshTokens.get(value) : undefined;
    const access = value ? this.accessTokens.get(value) : undefined;
    if (refresh && !refresh.revoked) {
      this.revokeRefreshToken(value as string, { alsoAccessTokens: true });
      return { status: 200, body: {} };
    }
    if (access && !access.revoked && access.expiresAt > Date.now()) {
      if (access.refreshToken) this.revokeRefreshToken(access.refreshToken, { alsoAccessTokens: true });
      else access.revoked = true;
      return { status: 200, body: {} };
    }
    return oauthError(400, 'invalid_token', 'Token expired or revoked');
  }

  private issueAccessToken(
    email: string,
    scope: string,
    ttlSeconds: number,
    refreshToken?: string,
  ): { token: string; expiresAt: number } {
    const value = `ya29.emu-${token(40)}`;
    const expiresAt = Date.now() + ttlSeconds * 1000;
    this.accessTokens.set(value, { email, scope, expiresAt, refreshToken, revoked: false });
    return { token: value, expiresAt };
  }

  private ensureAccount(email: string, timeZone?: string): Account {
    const key = email.toLowerCase();
    let account = this.accounts.get(key);
    if (!account) {
      account = {
        email: key,
        timeZone: timeZone ?? 'UTC',
        events: new Map(),
        busy: [],
        conferences: new Map(),
        sentUpdates: [],
      };
      this.accounts.set(key, account);
    }
    return account;
  }

  /** Bearer check done by Google's front end, before the Calendar backend sees the request. */
  private authenticate(req: IncomingMessage, op: string): Caller | Reply {
    const header = req.headers.authorization;
    const bearer = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];
    if (!bearer) {
      return frontEndAuthError(
        'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        'Login Required.',
        'required',
      );
    }
    const access = this.accessTokens.get(bearer);
    if (!access || access.revoked || access.expiresAt <= Date.now()) {
      return frontEndAuthError(
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        'Invalid Credentials',
        'authError',
      );
    }
    const needed = OP_SCOPES[op];
    const granted = access.scope.split(/\s+/);
    if (needed && !needed.scopes.some((s) => granted.includes(s))) {
      return {
        status: 403,
        body: {
          error: {
            code: 403,
            message: 'Request had insufficient authentication scopes.',
            errors: [
              { message: 'Insufficient Permission', domain: 'global', reason: 'insufficientPermissions' },
            ],
            status: 'PERMISSION_DENIED',
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
                reason: 'ACCESS_TOKEN_SCOPE_INSUFFICIENT',
                domain: 'googleapis.com',
                metadata: { service: 'calendar-json.googleapis.com', method: needed.method },
              },
            ],
          },
        },
      };
    }
    const account = this.accounts.get(access.email);
    if (!account) throw new Error(`token for unknown account ${access.email}`);
    return { account, scope: access.scope, token: bearer };
  }

  // ---- Calendar: events ------------------------------------------------------------------------------

  private insert(account: Account, query: Record<string, string>, bodyIn: unknown): Reply {
    const sendUpdates = checkSendUpdates(query);
    if (typeof sendUpdates === 'object') return sendUpdates;
    const cdv = checkConferenceDataVersion(query);
    if (typeof cdv === 'object') return cdv;
    if (!isObject(bodyIn)) return calendarError(400, 'badRequest', 'Bad Request');
    const body = bodyIn;

    const id = body.id;
    if (id !== undefined && (typeof id !== 'string' || !BASE32HEX_ID.test(id))) {
      return calendarError(400, 'invalid', 'Invalid resource id value.');
    }
    const fields = pickWritable(body);
    const checked = validateEvent(fields, account.email);
    if ('status' in checked) return checked;
    if (typeof id === 'string' && account.events.has(id)) {
      return calendarError(409, 'duplicate', 'The requested identifier already exists.');
    }

    const eventId = typeof id === 'string' ? id : newEventId(account.events);
    const stored: StoredEvent = {
      resource: {},
      startMs: checked.startMs,
      endMs: checked.endMs,
      allDay: checked.allDay,
    };
    const now = Date.now();
    stored.resource = {
      kind: 'calendar#event',
      etag: this.nextEtag(),
      id: eventId,
      status: (fields.status as string | undefined) ?? 'confirmed',
      htmlLink: `https://www.google.com/calendar/event?eid=${Buffer.from(`${eventId} ${account.email}`).toString('base64url')}`,
      created: new Date(now).toISOString(),
      updated: new Date(now).toISOString(),
      ...fields,
      creator: { email: account.email, self: true },
      organizer: { email: account.email, self: true },
      iCalUID: typeof body.iCalUID === 'string' ? body.iCalUID : `${eventId}@google.com`,
      sequence: 0,
      reminders: fields.reminders ?? { useDefault: true },
      eventType: 'default',
    };
    if (checked.attendees) stored.resource.attendees = checked.attendees;

    // conferenceDataVersion=0 (the default): conference data in the body is silently ignored.
    if (cdv === 1 && isObject(body.conferenceData)) {
      const conference = this.applyConference(account, stored, body.conferenceData);
      if (conference) return conference;
    }
    account.events.set(eventId, stored);
    account.sentUpdates.push({ eventId, op: 'insert', sendUpdates });
    return { status: 200, body: this.render(stored, account.timeZone) };
  }

  private get(account: Account, eventId: string, query: Record<string, string>): Reply {
    const stored = account.events.get(eventId);
    if (!stored) return calendarError(404, 'notFound', 'Not Found');
    if (stored.pendingGets !== undefined) {
      stored.pendingGets -= 1;
      if (stored.pendingGets <= 0) this.completePendingConference(account, stored);
    }
    const zone = query.timeZone ?? account.timeZone;
    if (!isTimeZone(zone)) return calendarError(400, 'invalid', 'Invalid value for: timeZone');
    // A deleted event is still returned by get, with status 'cancelled'.
    return { status: 200, body: this.render(stored, zone) };
  }

  private patch(account: Account, eventId: string, query: Record<string, string>, bodyIn: unknown): Reply {
    const sendUpdates = checkSendUpdates(query);
    if (typeof sendUpdates === 'object') return sendUpdates;
    const cdv = checkConferenceDataVersion(query);
    if (typeof cdv === 'object') return cdv;
    if (!isObject(bodyIn)) return calendarError(400, 'badRequest', 'Bad Request');
    const stored = account.events.get(eventId);
    if (!stored) return calendarError(404, 'notFound', 'Not Found');

    // Patch semantics: given fields replace, nested objects merge, null clears.
    const current = pickWritable(stored.resource);
    const merged = mergePatch(current, pickWritable(bodyIn));
    const checked = validateEvent(merged, account.email);
    if ('status' in checked) return checked;

    const next: StoredEvent = { ...stored, resource: structuredClone(stored.resource) };
    for (const key of WRITABLE_FIELDS) delete next.resource[key];
    Object.assign(next.resource, merged);
    if (checked.attendees) next.resource.attendees = checked.attendees;
    if (!next.resource.status) next.resource.status = stored.resource.status;
    next.resource.reminders = merged.reminders ?? { useDefault: true };
    next.startMs = checked.startMs;
    next.endMs = checked.endMs;
    next.allDay = checked.allDay;
    if (checked.startMs !== stored.startMs || checked.endMs !== stored.endMs) {
      next.resource.sequence = Number(stored.resource.sequence ?? 0) + 1;
    }
    if (cdv === 1 && 'conferenceData' in bodyIn) {
      const requested = bodyIn.conferenceData;
      const existing = stored.resource.conferenceData as Json | undefined;
      const sameRequest =
        isObject(requested) &&
        isObject(requested.createRequest) &&
        isObject(existing?.createRequest) &&
        requested.createRequest.requestId === existing.createRequest.requestId;
      if (requested === null) {
        delete next.resource.conferenceData;
        delete next.resource.hangoutLink;
        delete next.pendingGets;
      } else if (isObject(requested) && !sameRequest) {
        const conference = this.applyConference(account, next, requested);
        if (conference) return conference;
      }
    }
    next.resource.etag = this.nextEtag();
    next.resource.updated = new Date().toISOString();
    account.events.set(eventId, next);
    account.sentUpdates.push({ eventId, op: 'patch', sendUpdates });
    return { status: 200, body: this.render(next, account.timeZone) };
  }

  private delete(account: Account, eventId: string, query: Record<string, string>): Reply {
    const sendUpdates = checkSendUpdates(query);
    if (typeof sendUpdates === 'object') return sendUpdates;
    const stored = account.events.get(eventId);
    if (!stored) return calendarError(404, 'notFound', 'Not Found');
    if (stored.resource.status === 'cancelled')
      return calendarError(410, 'deleted', 'Resource has been deleted');
    stored.resource.status = 'cancelled';
    stored.resource.etag = this.nextEtag();
    stored.resource.updated = new Date().toISOString();
    account.sentUpdates.push({ eventId, op: 'delete', sendUpdates });
    return { status: 204 };
  }

  private list(account: Account, query: Record<string, string>): Reply {
    const bounds: Record<string, number | undefined> = {};
    for (const name of ['timeMin', 'timeMax', 'updatedMin'] as const) {
      const raw = query[name];
      if (raw === undefined) continue;
      const ms = parseInstant(raw);
      if (ms === undefined) return calendarError(400, 'badRequest', 'Bad Request');
      bounds[name] = ms;
    }
    const { timeMin, timeMax, updatedMin } = bounds;
    if (timeMin !== undefined && timeMax !== undefined && timeMax <= timeMin) {
      return calendarError(400, 'timeRangeEmpty', 'The specified time range is empty.', {
        domain: 'calendar',
        location: 'timeMax',
      });
    }
    const singleEvents = query.singleEvents === 'true';
    if (query.orderBy === 'startTime' && !singleEvents) {
      return calendarError(
        400,
        'badRequest',
        'The requested ordering is not available for the particular query.',
      );
    }
    const zone = query.timeZone ?? account.timeZone;
    if (!isTimeZone(zone)) return calendarError(400, 'invalid', 'Invalid value for: timeZone');
    const showDeleted = query.showDeleted === 'true' || updatedMin !== undefined;
    const privateFilter = query.privateExtendedProperty?.split('=', 2);
    const text = query.q?.toLowerCase();

    let items = [...account.events.values()].filter((e) => {
      const r = e.resource;
      if (!showDeleted && r.status === 'cancelled') return false;
      const span = spanOf(e, account.timeZone);
      if (timeMin !== undefined && span.endMs <= timeMin) return false;
      if (timeMax !== undefined && span.startMs >= timeMax) return false;
      if (updatedMin !== undefined && Date.parse(String(r.updated)) < updatedMin) return false;
      if (privateFilter) {
        const props = (r.extendedProperties as Json | undefined)?.private as Json | undefined;
        if (props?.[privateFilter[0] ?? ''] !== privateFilter[1]) return false;
      }
      if (
        text &&
        ![r.summary, r.description, r.location].some((v) =>
          String(v ?? '')
            .toLowerCase()
            .includes(text),
        )
      ) {
        return false;
      }
      return true;
    });
    if (query.orderBy === 'startTime')
      items.sort((a, b) => spanOf(a, account.timeZone).startMs - spanOf(b, account.timeZone).startMs);
    if (query.orderBy === 'updated')
      items.sort((a, b) => String(a.resource.updated).localeCompare(String(b.resource.updated)));

    const maxResults = Math.min(Number(query.maxResults ?? 250) || 250, 2500, this.listPageSize ?? 2500);
    const offset = query.pageToken ? Number(Buffer.from(query.pageToken, 'base64url').toString()) : 0;
    if (!Number.isInteger(offset) || offset < 0) return calendarError(400, 'invalid', 'Invalid Value');
    const nextOffset = offset + maxResults;
    const hasMore = nextOffset < items.length;
    items = items.slice(offset, nextOffset);
    return {
      status: 200,
      body: {
        kind: 'calendar#events',
        etag: this.nextEtag(),
        summary: account.email,
        description: '',
        updated: new Date().toISOString(),
        timeZone: account.timeZone,
        accessRole: 'owner',
        defaultReminders: [{ method: 'popup', minutes: 10 }],
        ...(hasMore ? { nextPageToken: Buffer.from(String(nextOffset)).toString('base64url') } : {}),
        items: items.map((e) => this.render(e, zone)),
      },
    };
  }

  // ---- Calendar: conferences -------------------------------------------------------------------------

  /** Applies a conferenceData write (conferenceDataVersion=1). Returns an error reply, or undefined. */
  private applyConference(account: Account, stored: StoredEvent, data: Json): Reply | undefined {
    const request = data.createRequest;
    delete stored.pendingGets;
    delete stored.resource.hangoutLink;
    if (!isObject(request)) {
      // Attaching an existing conference (entry points given by the client): stored as sent.
      stored.resource.conferenceData = structuredClone(data);
      return undefined;
    }
    const key = isObject(request.conferenceSolutionKey) ? request.conferenceSolutionKey : {};
    // Only Meet can be created this way; deprecated Hangouts types and add-ons are refused.
    if (key.type !== 'hangoutsMeet') return calendarError(400, 'invalid', 'Invalid conference type value.');
    if (typeof request.requestId !== 'string' || request.requestId === '') {
      return calendarError(400, 'required', 'Required');
    }
    const createRequest = { requestId: request.requestId, conferenceSolutionKey: { type: 'hangoutsMeet' } };
    if (this.conferenceMode === 'success') {
      this.setConferenceSuccess(account, stored, createRequest);
    } else {
      // Creation is asynchronous: clients must poll events.get until statusCode is no longer 'pending'.
      stored.resource.conferenceData = {
        createRequest: { ...createRequest, status: { statusCode: this.conferenceMode } },
      };
      if (this.conferenceMode === 'pending') stored.pendingGets = this.pendingPolls;
    }
    return undefined;
  }

  private completePendingConference(account: Account, stored: StoredEvent): void {
    delete stored.pendingGets;
    const data = stored.resource.conferenceData as Json | undefined;
    const request = data?.createRequest as Json | undefined;
    if (!request) return;
    this.setConferenceSuccess(account, stored, {
      requestId: String(request.requestId),
      conferenceSolutionKey: { type: 'hangoutsMeet' },
    });
    stored.resource.etag = this.nextEtag();
    stored.resource.updated = new Date().toISOString();
  }

  private setConferenceSuccess(
    account: Account,
    stored: StoredEvent,
    createRequest: { requestId: string; conferenceSolutionKey: { type: string } },
  ): void {
    const code = this.meetCode(account, createRequest.requestId);
    stored.resource.conferenceData = {
      createRequest: { ...createRequest, status: { statusCode: 'success' } },
      entryPoints: [
        { entryPointType: 'video', uri: `https://meet.google.com/${code}`, label: `meet.google.com/${code}` },
      ],
      conferenceSolution: { key: { type: 'hangoutsMeet' }, name: 'Google Meet', iconUri: MEET_ICON },
      conferenceId: code,
    };
    stored.resource.hangoutLink = `https://meet.google.com/${code}`;
  }

  /** Same requestId on the same calendar -> same Meet code; otherwise a fresh, stable-looking one. */
  private meetCode(account: Account, requestId: string): string {
    const known = account.conferences.get(requestId);
    if (known) return known;
    for (let salt = 0; ; salt += 1) {
      const digest = createHash('sha256').update(`${account.email}\n${requestId}\n${salt}`).digest();
      const letters = [...digest.subarray(0, 10)].map((b) => String.fromCharCode(97 + (b % 26))).join('');
      const code = `${letters.slice(0, 3)}-${letters.slice(3, 7)}-${letters.slice(7, 10)}`;
      if (!this.meetCodes.has(code)) {
        this.meetCodes.add(code);
        account.conferences.set(requestId, code);
        return code;
      }
    }
  }

  // ---- Calendar: freeBusy ----------------------------------------------------------------------------

  private freeBusy(caller: Caller, bodyIn: unknown): Reply {
    const body = isObject(bodyIn) ? bodyIn : {};
    if (body.timeMin === undefined || body.timeMax === undefined) {
      return calendarError(400, 'required', 'Required');
    }
    const timeMin = typeof body.timeMin === 'string' ? parseInstant(body.timeMin) : undefined;
    const timeMax = typeof body.timeMax === 'string' ? parseInstant(body.timeMax) : undefined;
    if (timeMin === undefined || timeMax === undefined)
      return calendarError(400, 'badRequest', 'Bad Request');
    if (timeMax <= timeMin) {
      return calendarError(400, 'timeRangeEmpty', 'The specified time range is empty.', {
        domain: 'calendar',
        location: 'timeMax',
      });
    }
    const zone = typeof body.timeZone === 'string' ? body.timeZone : undefined;
    if (zone !== undefined && !isTimeZone(zone))
      return calendarError(400, 'invalid', 'Invalid value for: timeZone');
    const account = caller.account;
    const calendars: Record<string, unknown> = {};
    const items = Array.isArray(body.items) ? body.items : [];
    for (const item of items) {
      const id = isObject(item) && typeof item.id === 'string' ? item.id : '';
      if (id === 'primary' || id.toLowerCase() === account.email) {
        calendars[id] = {
          busy: this.busyBlocks(account, timeMin, timeMax).map((b) => ({
            start: formatInstant(b.startMs, zone ?? 'UTC'),
            end: formatInstant(b.endMs, zone ?? 'UTC'),
          })),
        };
      } else {
        // Calendars the caller cannot see are reported per item, not as a request error.
        calendars[id] = { errors: [{ domain: 'global', reason: 'notFound' }], busy: [] };
      }
    }
    return {
      status: 200,
      body: {
        kind: 'calendar#freeBusy',
        timeMin: new Date(timeMin).toISOString(),
        timeMax: new Date(timeMax).toISOString(),
        calendars,
      },
    };
  }

  /** Busy time inside [from, to): opaque non-cancelled events plus addBusy blocks, clipped and merged. */
  private busyBlocks(account: Account, from: number, to: number): Array<{ startMs: number; endMs: number }> {
    const blocks = [...account.busy];
    for (const e of account.events.values()) {
      if (e.resource.status === 'cancelled' || e.resource.transparency === 'transparent') continue;
      // An event the calendar's owner declined does not make them busy.
      const attendees = e.resource.attendees as Json[] | undefined;
      if (attendees?.some((a) => a.self === true && a.responseStatus === 'declined')) continue;
      blocks.push(spanOf(e, account.timeZone));
    }
    const clipped = blocks
      .filter((b) => b.startMs < to && b.endMs > from && b.endMs > b.startMs)
      .map((b) => ({ startMs: Math.max(b.startMs, from), endMs: Math.min(b.endMs, to) }))
      .sort((a, b) => a.startMs - b.startMs);
    const merged: Array<{ startMs: number; endMs: number }> = [];
    for (const b of clipped) {
      const last = merged[merged.length - 1];
      if (last && b.startMs <= last.endMs) last.endMs = Math.max(last.endMs, b.endMs);
      else merged.push({ ...b });
    }
    return merged;
  }

  // ---- rendering -------------------------------------------------------------------------------------

  /** The resource as Google returns it: timed start/end re-rendered in the calendar's (or asked) zone. */
  private render(stored: StoredEvent, zone: string): CalendarEventResource {
    const out = structuredClone(stored.resource);
    if (!stored.allDay) {
      out.start = { ...(out.start as Json), dateTime: formatInstant(stored.startMs, zone) };
      out.end = { ...(out.end as Json), dateTime: formatInstant(stored.endMs, zone) };
    }
    return out as CalendarEventResource;
  }

  private nextEtag(): string {
    this.lastEtag = Math.max(this.lastEtag + 1, Date.now() * 1000);
    return `"${this.lastEtag}"`;
  }
}

// ---------------------------------------------------------------------------------------------------
// Event validation

interface CheckedEvent {
  startMs: number;
  endMs: number;
  allDay: boolean;
  attendees?: Json[];
}

function pickWritable(source: Json): Json {
  const out: Json = {};
  for (const key of WRITABLE_FIELDS) if (source[key] !== undefined) out[key] = structuredClone(source[key]);
  return out;
}

function validateEvent(fields: Json, ownerEmail: string): CheckedEvent | Reply {
  // A bad time zone is reported for start and end together (one error item each, start first).
  const zoneErrors = (['start', 'end'] as const).flatMap((which) => {
    const zone = isObject(fields[which]) ? (fields[which] as Json).timeZone : undefined;
    return zone !== undefined && (typeof zone !== 'string' || !isTimeZone(zone))
      ? [{ domain: 'global', reason: 'invalid', message: `Invalid time zone definition for ${which} time.` }]
      : [];
  });
  const firstZoneError = zoneErrors[0];
  if (firstZoneError) {
    return {
      status: 400,
      body: { error: { errors: zoneErrors, code: 400, message: firstZoneError.message } },
    };
  }
  // Google reports a missing end before a missing start.
  const end = parseEventTime(fields.end, 'end');
  if ('status' in end) return end;
  const start = parseEventTime(fields.start, 'start');
  if ('status' in start) return start;
  if (start.allDay !== end.allDay) return calendarError(400, 'badRequest', 'Bad Request');
  if (end.ms < start.ms) {
    return calendarError(400, 'timeRangeEmpty', 'The specified time range is empty.', { domain: 'calendar' });
  }
  const status = fields.status;
  if (status !== undefined && !['confirmed', 'tentative', 'cancelled'].includes(String(status))) {
    return calendarError(400, 'invalid', 'Invalid value for: status');
  }
  const transparency = fields.transparency;
  if (transparency !== undefined && !['opaque', 'transparent'].includes(String(transparency))) {
    return calendarError(400, 'invalid', 'Invalid value for: transparency');
  }
  const reminders = fields.reminders;
  if (reminders !== undefined) {
    if (!isObject(reminders)) return calendarError(400, 'invalid', 'Invalid value for: reminders');
    const overrides = Array.isArray(reminders.overrides) ? reminders.overrides : [];
    if (reminders.useDefault === true && overrides.length > 0) {
      return calendarError(
        400,
        'cannotUseDefaultRemindersAndSpecifyOverride',
        'Cannot specify both default reminders and overrides at the same time.',
      );
    }
    if (overrides.length > 5) {
      return calendarError(400, 'invalid', 'The maximum number of override reminders is 5.');
    }
    for (const o of overrides) {
      const minutes = isObject(o) ? Number(o.minutes) : Number.NaN;
      const method = isObject(o) ? o.method : undefined;
      if (
        !(method === 'email' || method === 'popup') ||
        !Number.isInteger(minutes) ||
        minutes < 0 ||
        minutes > 40320
      ) {
        return calendarError(400, 'invalid', 'Invalid value for: reminders.overrides');
      }
    }
  }
  let attendees: Json[] | undefined;
  if (fields.attendees !== undefined) {
    if (!Array.isArray(fields.attendees))
      return calendarError(400, 'invalid', 'Invalid value for: attendees');
    attendees = [];
    for (const a of fields.attendees) {
      if (!isObject(a) || typeof a.email !== 'string' || a.email === '') {
        return calendarError(400, 'required', 'Missing attendee email.');
      }
      if (!EMAIL.test(a.email)) return calendarError(400, 'invalid', 'Invalid attendee email.');
      const attendee: Json = { ...a };
      if (a.email.toLowerCase() === ownerEmail) {
        attendee.organizer = true;
        attendee.self = true;
        attendee.responseStatus = a.responseStatus ?? 'accepted';
      } else {
        attendee.responseStatus = a.responseStatus ?? 'needsAction';
      }
      attendees.push(attendee);
    }
  }
  return { startMs: start.ms, endMs: end.ms, allDay: start.allDay, attendees };
}

/** An EventDateTime: `dateTime` with an offset, or wall time + IANA `timeZone`, or an all-day `date`. */
function parseEventTime(value: unknown, which: 'start' | 'end'): { ms: number; allDay: boolean } | Reply {
  if (!isObject(value) || (value.dateTime === undefined && value.date === undefined)) {
    return calendarError(400, 'required', `Missing ${which} time.`);
  }
  // Both at once is refused: a patch moving an all-day event to a time must clear `date` with null,
  // or the merged event keeps it beside the new `dateTime` (Google's answer on apps-api-issues #3110).
  if (value.dateTime !== undefined && value.date !== undefined) {
    return calendarError(400, 'badRequest', 'Bad Request');
  }
  const zone = value.timeZone;
  if (zone !== undefined && (typeof zone !== 'string' || !isTimeZone(zone))) {
    return calendarError(400, 'invalid', `Invalid time zone definition for ${which} time.`);
  }
  if (value.dateTime === undefined) {
    const m = typeof value.date === 'string' ? DATE_ONLY.exec(value.date) : null;
    if (!m) return calendarError(400, 'badRequest', 'Bad Request');
    const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
    if (new Date(ms).toISOString().slice(0, 10) !== value.date)
      return calendarError(400, 'badRequest', 'Bad Request');
    return { ms, allDay: true };
  }
  if (typeof value.dateTime !== 'string') return calendarError(400, 'badRequest', 'Bad Request');
  const m = RFC3339.exec(value.dateTime);
  if (!m) return calendarError(400, 'badRequest', 'Bad Request');
  const parts = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const millis = Number((m[7] ?? '0').padEnd(3, '0').slice(0, 3));
  if (m[8] === undefined) {
    if (typeof zone !== 'string') {
      return calendarError(400, 'required', `Missing time zone definition for ${which} time.`);
    }
    return { ms: wallTimeToUtc(parts, zone) + millis, allDay: false };
  }
  const ms = Date.parse(value.dateTime.toUpperCase());
  if (Number.isNaN(ms)) return calendarError(400, 'badRequest', 'Bad Request');
  return { ms, allDay: false };
}

function checkSendUpdates(query: Record<string, string>): string | undefined | Reply {
  const value = query.sendUpdates;
  if (value !== undefined && !SEND_UPDATES.includes(value)) {
    return calendarError(
      400,
      'invalidParameter',
      `Invalid value '${value}'. Values must match the following regular expression: '${SEND_UPDATES.join('|')}'`,
      { location: 'sendUpdates', locationType: 'parameter' },
    );
  }
  return value;
}

function checkConferenceDataVersion(query: Record<string, string>): 0 | 1 | Reply {
  const raw = query.conferenceDataVersion;
  if (raw === undefined) return 0;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 1) {
    return calendarError(400, 'invalid', 'Invalid value for: conferenceDataVersion', {
      location: 'conferenceDataVersion',
      locationType: 'parameter',
    });
  }
  return n as 0 | 1;
}

function mergePatch(base: Json, patch: Json): Json {
  const out = structuredClone(base);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else if (isObject(value) && isObject(out[key])) out[key] = mergePatch(out[key] as Json, value);
    else out[key] = structuredClone(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Time helpers (no dependencies: Intl does the zone maths)

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The IANA database's names, exactly as spelled there. */
const ZONE_NAMES = new Set(IANA_ZONE_NAMES);

function isTimeZone(name: string): boolean {
  // Google wants an IANA name ("UTC+05:30" or "+05:30" are not), spelled exactly: unlike Intl, it
  // refuses "america/new_york" (Cal.com's bug of storing names as typed, cal.com PR #15273).
  if (!/^[A-Za-z]/.test(name)) return false;
  if (!ZONE_NAMES.has(name)) return false;
  try {
    zoneFormatter(name);
    return true;
  } catch {
    return false;
  }
}

function zoneFormatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(zone, f);
  }
  return f;
}

/** Offset of `zone` from UTC at the instant `utcMs`, in ms (whole seconds). */
function zoneOffsetMs(zone: string, utcMs: number): number {
  const parts: Record<string, number> = {};
  for (const p of zoneFormatter(zone).formatToParts(new Date(utcMs))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  const asUtc = Date.UTC(
    parts.year ?? 1970,
    (parts.month ?? 1) - 1,
    parts.day ?? 1,
    parts.hour ?? 0,
    parts.minute ?? 0,
    parts.second ?? 0,
  );
  return asUtc - Math.floor(utcMs / 1000) * 1000;
}

/**
 * The instants an event covers: its own, or for an all-day event (stored as its dates at UTC
 * midnight) those dates from midnight to midnight in the calendar's time zone, as Google counts them.
 */
function spanOf(e: StoredEvent, zone: string): { startMs: number; endMs: number } {
  if (!e.allDay) return { startMs: e.startMs, endMs: e.endMs };
  const midnight = (ms: number) => {
    const d = new Date(ms);
    const at = wallTimeToUtc([d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), 0, 0, 0], zone);
    // A midnight the clocks skip (Santiago's spring): the day starts at the first instant it has, which
    // the conversion above put that gap early, on the day before.
    const localDay = new Date(at + zoneOffsetMs(zone, at)).getUTCDate();
    return localDay === d.getUTCDate()
      ? at
      : at + zoneOffsetMs(zone, at + 43_200_000) - zoneOffsetMs(zone, at);
  };
  return { startMs: midnight(e.startMs), endMs: midnight(e.endMs) };
}

function wallTimeToUtc(p: [number, number, number, number, number, number], zone: string): number {
  const guess = Date.UTC(p[0], p[1] - 1, p[2], p[3], p[4], p[5]);
  const first = guess - zoneOffsetMs(zone, guess);
  const second = guess - zoneOffsetMs(zone, first);
  return second;
}

/** RFC 3339 in `zone` with whole seconds; 'Z' for UTC, numeric offset otherwise. */
function formatInstant(ms: number, zone: string): string {
  const seconds = Math.floor(ms / 1000) * 1000;
  if (zone === 'UTC' || zone === 'Etc/UTC') return `${new Date(seconds).toISOString().slice(0, 19)}Z`;
  const offset = zoneOffsetMs(zone, seconds);
  const local = new Date(seconds + offset).toISOString().slice(0, 19);
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset) / 60000;
  return `${local}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** An RFC 3339 timestamp with a mandatory offset (query parameters and freeBusy bounds). */
function parseInstant(value: string): number | undefined {
  const m = RFC3339.exec(value);
  if (!m || m[8] === undefined) return undefined;
  const ms = Date.parse(value.toUpperCase());
  return Number.isNaN(ms) ? undefined : ms;
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

// ---------------------------------------------------------------------------------------------------
// HTTP helpers

function matchRoute(method: string, path: string): Route | null {
  if (path === '/token' && method === 'POST') return { op: 'token' };
  if (path === '/revoke' && method === 'POST') return { op: 'revoke' };
  if (path === '/calendar/v3/freeBusy' && method === 'POST') return { op: 'freebusy.query' };
  const m = /^\/calendar\/v3\/calendars\/([^/]+)\/events(?:\/([^/]+))?$/.exec(path);
  if (!m?.[1]) return null;
  const calendarId = safeDecode(m[1]);
  if (m[2] === undefined) {
    if (method === 'POST') return { op: 'events.insert', calendarId };
    if (method === 'GET') return { op: 'events.list', calendarId };
    return null;
  }
  const eventId = safeDecode(m[2]);
  if (method === 'GET') return { op: 'events.get', calendarId, eventId };
  if (method === 'PATCH') return { op: 'events.patch', calendarId, eventId };
  if (method === 'DELETE') return { op: 'events.delete', calendarId, eventId };
  return null;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(raw: string, contentType: string | undefined): { value: unknown; invalid: boolean } {
  if (raw === '') return { value: undefined, invalid: false };
  if ((contentType ?? '').includes('application/x-www-form-urlencoded')) {
    return { value: Object.fromEntries(new URLSearchParams(raw)), invalid: false };
  }
  try {
    return { value: JSON.parse(raw) as unknown, invalid: false };
  } catch {
    return { value: raw, invalid: true };
  }
}

function asForm(body: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(body))
    for (const [k, v] of Object.entries(body)) if (v !== undefined && v !== null) out[k] = String(v);
  return out;
}

function send(res: ServerResponse, reply: Reply): void {
  if (res.destroyed) return;
  const headers: Record<string, string> = { ...reply.headers };
  if (reply.body === undefined) {
    res.writeHead(reply.status, headers).end();
    return;
  }
  res
    .writeHead(reply.status, { 'content-type': JSON_TYPE, ...headers })
    .end(JSON.stringify(reply.body, null, 2));
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function token(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

/** A server-chosen event id: 26 base32hex characters, like the ones Google generates. */
function newEventId(existing: Map<string, unknown>): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuv';
  for (;;) {
    const id = [...randomBytes(26)].map((b) => alphabet[b % 32]).join('');
    if (!existing.has(id)) return id;
  }
}

// ---------------------------------------------------------------------------------------------------
// Error bodies

/** Calendar backend errors: `{error:{errors:[{domain,reason,message}],code,message}}` (no `status`). */
function calendarError(
  status: number,
  reason: string,
  message: string,
  extra: { domain?: string; location?: string; locationType?: string } = {},
): Reply {
  const item: Json = { domain: extra.domain ?? KNOWN_REASONS[reason]?.domain ?? 'global', reason, message };
  if (extra.location) {
    item.locationType = extra.locationType ?? 'parameter';
    item.location = extra.location;
  }
  return { status, body: { error: { errors: [item], code: status, message } } };
}

/** Errors from Google's front end (authentication): carry `status` and the item's location. */
function frontEndAuthError(message: string, itemMessage: string, reason: string): Reply {
  return {
    status: 401,
    // RFC 6750 §3: a missing token gets no error code, a bad one gets invalid_token.
    headers: {
      'www-authenticate':
        reason === 'required'
          ? 'Bearer realm="https://accounts.google.com/"'
          : 'Bearer realm="https://accounts.google.com/", error="invalid_token"',
    },
    body: {
      error: {
        code: 401,
        message,
        errors: [
          {
            message: itemMessage,
            domain: 'global',
            reason,
            location: 'Authorization',
            locationType: 'header',
          },
        ],
        status: 'UNAUTHENTICATED',
      },
    },
  };
}

/** OAuth token endpoint errors (RFC 6749 §5.2 shape). */
function oauthError(status: number, error: string, description: string): Reply {
  return { status, body: { error, error_description: description } };
}

function faultReply(
  op: RequestLogEntry['op'],
  fault: { status: number; reason?: string; message?: string },
): Reply {
  const { status } = fault;
  if (op === 'token' || op === 'revoke') {
    const error =
      fault.reason ??
      (status === 401
        ? 'invalid_client'
        : status === 429
          ? 'rate_limit_exceeded'
          : status >= 500
            ? 'internal_failure'
            : 'invalid_request');
    return oauthError(status, error, fault.message ?? (status >= 500 ? 'Backend Error' : 'Bad Request'));
  }
  if (status === 401) {
    return frontEndAuthError(
      fault.message ??
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
      'Invalid Credentials',
      fault.reason ?? 'authError',
    );
  }
  const reason =
    fault.reason ?? DEFAULT_REASON_BY_STATUS[status] ?? (status >= 500 ? 'backendError' : 'badRequest');
  const message = fault.message ?? KNOWN_REASONS[reason]?.message ?? 'Error';
  return calendarError(status, reason, message);
}
