import { OAuth2Client } from 'google-auth-library';
import type { Logger } from 'pino';
import { CalendarNotConnected, Upstream } from '../domain/errors.js';
import { retryAfterOf } from '../domain/retry-after.js';
import { endedBy } from '../lean-fetch.js';
import type {
  CalendarConnection,
  CalendarConnectionStore,
  RefreshLease,
} from '../store/calendar-connections.js';

export interface TokenProviderOptions {
  clientId: string;
  clientSecret: string;
  tokenUrl: string;
  timeoutMs: number;
  /** Refresh this long before expiry (default 5 minutes). */
  refreshMarginMs?: number;
  /**
   * Inside the refresh margin, a token with more than this left (default 1 minute) is still handed
   * out while the refresh runs in the background; with less, or one Google rejected, callers wait for
   * the refresh.
   */
  waitMarginMs?: number;
  /**
   * After a failed refresh, how long callers whose token still has more than the wait margin left
   * use it without trying again (default 15 s); callers that must wait always try.
   */
  refreshCooldownMs?: number;
  /** How long a refresh lease lasts if its holder dies mid-refresh. */
  leaseMs?: number;
  /** How long a waiter waits for another process's refresh before giving up (retryable). */
  waitMs?: number;
  now?: () => Date;
  onRefresh?: (outcome: 'refreshed' | 'revoked' | 'failed') => void;
  /**
   * A cached read of the connection (src/store/connection-cache.ts, evicted by NOTIFY on every
   * change) for the common case, a token that is still fresh: no database round trip per Google
   * call. Everything that decides a refresh re-reads the row from the database.
   */
  cached?: (userId: string) => Promise<CalendarConnection | undefined>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The lifetime assumed for a refreshed token whose response carried no `expires_in` (RFC 6749 makes
 * it optional; Google sends it): 55 minutes, under Google's hour. A token that dies sooner is
 * refreshed at its first 401 (GoogleCalendarGateway).
 */
const ASSUMED_LIFETIME_MS = 55 * 60_000;

interface Flight {
  promise: Promise<string>;
  /** A caller waits for it (and reports its failure). */
  awaited: boolean;
}

/** The connection, if there is one and it is not revoked. */
function usable(userId: string, c: CalendarConnection | undefined): CalendarConnection {
  if (!c) throw new CalendarNotConnected(`user ${userId} has no Google Calendar connection`, 'missing');
  if (c.status === 'revoked')
    throw new CalendarNotConnected(`user ${userId}'s Google access was revoked`, 'revoked');
  return c;
}

/**
 * Hands out a valid access token per owner, refreshing it through Google's token endpoint when it
 * is expired or about to be.
 *
 * Refresh ahead: a token inside the refresh margin (5 minutes) that still has more than the wait
 * margin (1 minute) left is handed out at once, and its refresh runs in the background, so the
 * booking that finds it there does not wait for Google's token endpoint; a booking's calls take
 * seconds, and one that meets a 401 anyway refreshes and retries once (GoogleCalendarGateway). A
 * token with less left than the wait margin, or one Google rejected, is refreshed while its callers
 * wait. A background refresh that fails is logged and counted; callers whose token still has time
 * do not try again before `refreshCooldownMs` (15 s), callers that must wait always try. A token Google
 * refused is not handed out again, even where a cache still holds it.
 *
 * One refresh per owner at a time, across every worker and process:
 * - in this process, concurrent callers share one in-flight promise (single flight);
 * - across processes, a lease on the owner's row (`refresh_lock_until`) elects one refresher; the
 *   others poll the row until the new token is stored, then use it.
 * A refresh that answers `invalid_grant` marks the connection revoked and stops there: no loop.
 *
 * The owner may reconnect (new tokens through the API) while a refresh is in flight: its outcome is
 * stored, or the connection revoked, only if the tokens are still those it started from; otherwise
 * the refresh's result is dropped and the reconnected tokens are used (refreshed if need be).
 */
export class GoogleTokenProvider {
  /** Each owner's refresh in flight in this process. */
  readonly #inFlight = new Map<string, Flight>();
  /** The last token Google refused per owner (a 401), until a different one is read. */
  readonly #rejected = new Map<string, string>();
  /** When an owner's last refresh failed (cleared by one that succeeds). */
  readonly #failedAt = new Map<string, number>();
  #stopping = false;
  readonly #margin: number;
  readonly #waitMargin: number;
  readonly #cooldown: number;
  readonly #leaseMs: number;
  readonly #waitMs: number;
  readonly #now: () => Date;

  constructor(
    private readonly connections: CalendarConnectionStore,
    private readonly options: TokenProviderOptions,
    private readonly logger: Logger,
  ) {
    this.#margin = options.refreshMarginMs ?? 5 * 60_000;
    this.#waitMargin = Math.min(options.waitMarginMs ?? 60_000, this.#margin);
    this.#cooldown = options.refreshCooldownMs ?? 15_000;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#waitMs = options.waitMs ?? 20_000;
    this.#now = options.now ?? (() => new Date());
  }

  /**
   * A usable access token. With `rejected`, the caller says Google refused that token (401): it is
   * refreshed even if not yet expired, unless someone already replaced it.
   */
  async accessToken(userId: string, rejected?: string): Promise<string> {
    if (rejected !== undefined) this.#rejected.set(userId, rejected);
    const c = await this.#load(userId, this.options.cached);
    // The token Google refused, still read (from the cache, say) after its replacement was stored,
    // is never handed out again; once a different one is read, the memo has done its job.
    const refused = this.#rejected.get(userId);
    if (refused !== undefined && refused !== c.accessToken) this.#rejected.delete(userId);
    if (this.#fresh(c, refused)) return c.accessToken;

    const usableMeanwhile =
      c.accessToken !== refused && !this.#stopping && this.#remainingMs(c) > this.#waitMargin;
    let flight = this.#inFlight.get(userId);
    if (!flight) {
      // In the background, a refresh that just failed is not tried again at once: the token still
      // has time, and every Google call would otherwise start one during a token-endpoint outage.
      const failedAt = this.#failedAt.get(userId);
      if (usableMeanwhile && failedAt !== undefined && this.#now().getTime() - failedAt < this.#cooldown)
        return c.accessToken;
      flight = this.#startRefresh(userId, refused);
    }
    if (usableMeanwhile) return c.accessToken;
    flight.awaited = true;
    return flight.promise;
  }

  #startRefresh(userId: string, rejected: string | undefined): Flight {
    const promise = this.#refreshOnce(userId, rejected).finally(() => this.#inFlight.delete(userId));
    const flight: Flight = { promise, awaited: false };
    this.#inFlight.set(userId, flight);
    promise.then(
      () => this.#failedAt.delete(userId),
      (err: unknown) => {
        this.#failedAt.set(userId, this.#now().getTime());
        // A caller that waited for it reports its failure; one that ran only in the background is
        // logged here (a revoked connection was logged when it was marked).
        if (!flight.awaited && !(err instanceof CalendarNotConnected))
          this.logger.warn({ err, user_id: userId }, 'Google access token refresh failed in the background');
      },
    );
    return flight;
  }

  /**
   * Resolves once every refresh in flight here has ended (those started meanwhile too), or after
   * `timeoutMs` (by default the token request's own timeout and a little more).
   */
  async drain(timeoutMs = this.options.timeoutMs + 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inFlight.size > 0 && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight.values()].map((f) => f.promise)),
        new Promise<void>((r) => {
          timer = setTimeout(r, Math.max(0, deadline - Date.now()));
        }),
      ]);
      clearTimeout(timer);
    }
  }

  /**
   * The app's shutdown, before the database closes: no refresh runs in the background any more
   * (callers wait for theirs), and the ones in flight may end (drain), so that a refresh can store its
   * token and give its lease back; one that takes longer loses its result, and its lease lapses.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.drain();
  }

  async #load(
    userId: string,
    read: (userId: string) => Promise<CalendarConnection | undefined> = (id) => this.connections.get(id),
  ) {
    return usable(userId, await read(userId));
  }

  #fresh(c: CalendarConnection, rejected: string | undefined): boolean {
    return this.#remainingMs(c) > this.#margin && c.accessToken !== rejected;
  }

  #remainingMs(c: CalendarConnection): number {
    return c.tokenExpiry.getTime() - this.#now().getTime();
  }

  async #refreshOnce(userId: string, rejected: string | undefined): Promise<string> {
    const deadline = Date.now() + this.#waitMs;
    for (;;) {
      // The lease and the row in one round trip. The row is read under the lease, so it is current:
      // a previous holder may have stored a new token just now, and then it is used as it is.
      const leased = await this.connections.leaseRefresh(userId, this.#leaseMs);
      if (leased) {
        let stored = false;
        try {
          const current = usable(userId, leased);
          if (this.#fresh(current, rejected)) return current.accessToken;
          const token = await this.#refresh(current, leased.lease);
          if (token !== undefined) {
            // Storing the new token gave the lease back in the same statement.
            stored = true;
            return token;
          }
          // Replaced while we refreshed (a reconnect): go round again and use what is stored now.
        } finally {
          if (!stored) await this.connections.releaseRefreshLease(userId, leased.lease).catch(() => {});
        }
        continue;
      }
      // Another process holds the lease (or there is no connection, which #load reports): wait for
      // its token, polling the row.
      const c = await this.#load(userId);
      if (this.#fresh(c, rejected)) return c.accessToken;
      if (Date.now() > deadline) {
        throw new Upstream(`timed out waiting for another process to refresh ${userId}'s Google token`, true);
      }
      await sleep(100);
    }
  }

  /**
   * Refreshes `c` through Google's token endpoint and stores the result. Undefined when the stored
   * tokens were replaced meanwhile (the owner reconnected): nothing was stored or revoked then.
   */
  async #refresh(c: CalendarConnection, lease: RefreshLease): Promise<string | undefined> {
    const userId = c.userId;
    if (!c.refreshToken) {
      if (!(await this.connections.markRevoked(userId, c.revision, lease))) return undefined;
      this.options.onRefresh?.('revoked');
      this.logger.warn(
        { user_id: userId },
        'no refresh token to renew the access token: connection marked revoked',
      );
      throw new CalendarNotConnected(`user ${userId} has no refresh token`, 'revoked');
    }
    // The refresh runs under the owner's refresh lease (leaseMs): it must end before the lease
    // lapses, or another process would lease and refresh beside it (a lease given back late ends
    // only itself: see CalendarConnectionStore.leaseRefresh). The library retries a timed-out request by itself, so per-request
    // timeouts alone can outlast the lease; this deadline ends the whole refresh, retries included,
    // with room left to store its result. Not a TimeoutError: the library must not retry it.
    const deadline = new AbortController();
    const deadlineTimer = setTimeout(
      () => deadline.abort(new Error('Google token refresh outlasted its lease')),
      Math.max(1, this.#leaseMs - Math.min(5000, this.#leaseMs / 5)),
    );
    const client = new OAuth2Client({
      clientId: this.options.clientId,
      clientSecret: this.options.clientSecret,
      endpoints: { oauth2TokenUrl: this.options.tokenUrl },
      // Without a timeout a hung token endpoint would hold this owner's refresh (and every booking
      // waiting on it) until the deadline; the library retries a timed-out refresh by itself.
      // The deadline ends the request through the transport, not as gaxios's `signal` (see endedBy:
      // joined with the timeout, the timeout could be lost).
      transporterOptions: {
        timeout: this.options.timeoutMs,
        fetchImplementation: endedBy(deadline.signal, (input, init) => fetch(input, init)),
      },
    });
    client.setCredentials({ refresh_token: c.refreshToken });
    // A token response may carry a new (rotated) refresh token, but the library then overwrites it
    // with the one it sent, in its credentials and in the response data alike. Its 'tokens' event
    // sees the response before that: keep the rotated one from there.
    // https://developers.google.com/identity/protocols/oauth2/web-server#offline
    let rotated: string | undefined;
    client.on('tokens', (t) => {
      if (t.refresh_token && t.refresh_token !== c.refreshToken) rotated = t.refresh_token;
    });
    let token: string | null | undefined;
    try {
      token = (await client.getAccessToken()).token;
    } catch (err) {
      const data = (err as { response?: { data?: { error?: string } }; status?: number }).response?.data;
      if (data?.error === 'invalid_grant') {
        // Google refused the refresh token we sent; a reconnect that landed meanwhile brought another.
        if (!(await this.connections.markRevoked(userId, c.revision, lease))) {
          this.logger.info(
            { user_id: userId },
            'old refresh token refused (invalid_grant) after a reconnect; using the new tokens',
          );
          return undefined;
        }
        this.options.onRefresh?.('revoked');
        this.logger.warn(
          { user_id: userId },
          'Google refused the refresh token (invalid_grant): connection marked revoked',
        );
        throw new CalendarNotConnected(`user ${userId}'s Google access was revoked`, 'revoked');
      }
      this.options.onRefresh?.('failed');
      const response = (err as { response?: { status?: number; headers?: unknown } }).response;
      const status = response?.status;
      // invalid_client and other 4xx are configuration problems: retrying will not help.
      const retryable = status === undefined || status === 429 || status >= 500;
      throw new Upstream(`Google token refresh failed (${status ?? 'network'})`, retryable, {
        cause: err,
        // A rate-limited token endpoint's wait, for the job's retry (JobQueue).
        retryAfterMs: retryAfterOf(response?.headers),
      });
    } finally {
      // Once the token request has settled, the deadline has nothing left to end.
      clearTimeout(deadlineTimer);
    }
    if (!token) throw new Upstream('Google token refresh returned no access token', true);
    // The library sets expiry_date only from `expires_in`. Without it the token is still good: it is
    // stored with the assumed lifetime rather than discarded and refreshed again in a loop.
    const expiry = client.credentials.expiry_date
      ? new Date(client.credentials.expiry_date)
      : new Date(this.#now().getTime() + ASSUMED_LIFETIME_MS);
    const saved = await this.connections.saveRefreshed(
      userId,
      c.revision,
      {
        accessToken: token,
        expiry,
        // Usually none: Google keeps the refresh token, and so does the stored row then.
        refreshToken: rotated,
      },
      lease,
    );
    if (!saved) {
      this.logger.info(
        { user_id: userId, rotated: rotated !== undefined },
        'connection replaced during the token refresh; its result is dropped for the new tokens',
      );
      return undefined;
    }
    this.options.onRefresh?.('refreshed');
    this.logger.info({ user_id: userId, rotated: rotated !== undefined }, 'Google access token refreshed');
    return token;
  }
}
