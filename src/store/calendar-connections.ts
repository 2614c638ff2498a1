import { type ExpressionBuilder, type Kysely, type Selectable, sql, type Transaction } from 'kysely';
import type { ValidConnection } from '../domain/calendar-connection.js';
import { InvalidInput } from '../domain/errors.js';
import type { CalendarConnectionTable, DB } from './schema.js';
import type { SecretBox } from './secret-box.js';

export interface CalendarConnection {
  userId: string;
  accessToken: string;
  refreshToken: string | null;
  tokenExpiry: Date;
  scope: string;
  status: 'connected' | 'revoked';
  revokedAt: Date | null;
  lastRefreshedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  /** Which stored tokens these are: pass it back to saveRefreshed / markRevoked. */
  revision: TokenRevision;
}

/**
 * The sealed token values as read: the connection's version. Every write of the tokens (connect,
 * reconnect, refresh) seals them again under a fresh random nonce, so the stored ciphertexts differ
 * after each write, even when a reconnect keeps the same refresh token; no counter column needed.
 */
export interface TokenRevision {
  readonly accessTokenEnc: string;
  readonly refreshTokenEnc: string | null;
}

export type CalendarConnectionSummary = Omit<
  CalendarConnection,
  'accessToken' | 'refreshToken' | 'revision'
> & {
  hasRefreshToken: boolean;
};

type Row = Selectable<CalendarConnectionTable>;

/** Calendar connections, with token values sealed by the SecretBox on the way in and out. */
export class CalendarConnectionStore {
  constructor(
    private readonly db: Kysely<DB>,
    private readonly box: SecretBox,
  ) {}

  private seal(userId: string, column: string, value: string): string {
    return this.box.encrypt(value, `google_calendar_tokens:${userId}:${column}`);
  }
  private open(userId: string, column: string, value: string): string {
    return this.box.decrypt(value, `google_calendar_tokens:${userId}:${column}`);
  }

  /** Creates or overwrites a connection; a reconnect clears a revoked state. */
  async connect(userId: string, c: ValidConnection): Promise<CalendarConnection> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('google_calendar_tokens')
        .select(['refresh_token_enc', 'status'])
        .where('user_id', '=', userId)
        .forUpdate()
        .executeTakeFirst();
      // Google returns a refresh token only on first consent, so a reconnect may omit it; not after
      // a revocation, though: the stored one is the token Google refused (invalid_grant), and the
      // connection would show "connected" until the access token expires, then be revoked again.
      if (!c.refreshToken && existing?.status === 'revoked') {
        throw new InvalidInput(
          'refresh_token is required: the stored one was revoked by Google (reconnect with prompt=consent to get a new one)',
        );
      }
      const refreshEnc = c.refreshToken
        ? this.seal(userId, 'refresh_token', c.refreshToken)
        : (existing?.refresh_token_enc ?? null);
      if (!refreshEnc) {
        throw new InvalidInput('refresh_token is required: no refresh token is stored for this user yet');
      }
      const values = {
        access_token_enc: this.seal(userId, 'access_token', c.accessToken),
        refresh_token_enc: refreshEnc,
        token_expiry: c.tokenExpiry,
        scope: c.scope,
        status: 'connected' as const,
        revoked_at: null,
      };
      const row = await trx
        .insertInto('google_calendar_tokens')
        .values({ user_id: userId, ...values })
        .onConflict((oc) => oc.column('user_id').doUpdateSet({ ...values, updated_at: sql`now()` }))
        .returningAll()
        .executeTakeFirstOrThrow();
      return this.toConnection(row);
    });
  }

  async get(userId: string, trx?: Transaction<DB>): Promise<CalendarConnection | undefined> {
    const row = await (trx ?? this.db)
      .selectFrom('google_calendar_tokens')
      .selectAll()
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return row ? this.toConnection(row) : undefined;
  }

  async list(limit: number, afterUserId?: string): Promise<CalendarConnectionSummary[]> {
    let q = this.db
      .selectFrom('google_calendar_tokens')
      .select([
        'user_id',
        'refresh_token_enc',
        'token_expiry',
        'scope',
        'status',
        'revoked_at',
        'last_refreshed_at',
        'created_at',
        'updated_at',
      ])
      .orderBy('user_id')
      .limit(limit);
    if (afterUserId !== undefined) q = q.where('user_id', '>', afterUserId);
    const rows = await q.execute();
    return rows.map((r) => ({
      userId: r.user_id,
      hasRefreshToken: r.refresh_token_enc !== null,
      tokenExpiry: r.token_expiry,
      scope: r.scope,
      status: r.status,
      revokedAt: r.revoked_at,
      lastRefreshedAt: r.last_refreshed_at,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    }));
  }

  async delete(userId: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom('google_calendar_tokens')
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /**
   * Stores a refreshed access token, and the refresh token when Google rotated it (else the stored
   * one stays). Only if the tokens are still those the refresh started from (`seen`): when the owner
   * reconnected meanwhile, the result of refreshing the old grant must not overwrite the new tokens.
   * False when nothing was stored.
   */
  async saveRefreshed(
    userId: string,
    seen: TokenRevision,
    refreshed: { accessToken: string; expiry: Date; refreshToken?: string | null | undefined },
    lease?: RefreshLease,
  ): Promise<boolean> {
    const r = await this.db
      .updateTable('google_calendar_tokens')
      .set({
        access_token_enc: this.seal(userId, 'access_token', refreshed.accessToken),
        ...(refreshed.refreshToken
          ? { refresh_token_enc: this.seal(userId, 'refresh_token', refreshed.refreshToken) }
          : {}),
        token_expiry: refreshed.expiry,
        last_refreshed_at: sql<Date>`now()`,
        refresh_lock_until: givenBack(lease),
        updated_at: sql<Date>`now()`,
      })
      .where('user_id', '=', userId)
      .where((eb) => unchanged(eb, seen))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * Takes this owner's refresh lease if nobody holds a live one, and returns the connection as it
   * stands under the lease (one round trip: the lease and the read), with the lease. Undefined when
   * someone else holds the lease, or there is no such connection. A lease, not a row lock held in a
   * transaction: the refresh is a network call, and no transaction may stay open across one.
   *
   * The lease is its own end (`refresh_lock_until`, to the millisecond so that it reads back exactly):
   * a later lease of the row can only be taken once this one has ended, so it ends later, and giving
   * a lease back (releaseRefreshLease, saveRefreshed, markRevoked) clears only that same value. A
   * holder that stalled past its lease cannot end the lease of the process that took over.
   */
  async leaseRefresh(
    userId: string,
    leaseMs: number,
  ): Promise<(CalendarConnection & { lease: RefreshLease }) | undefined> {
    const row = await this.db
      .updateTable('google_calendar_tokens')
      .set({
        refresh_lock_until: sql<Date>`date_trunc('milliseconds', now() + make_interval(secs => ${leaseMs / 1000}))`,
      })
      .where('user_id', '=', userId)
      .where((eb) =>
        eb.or([eb('refresh_lock_until', 'is', null), eb('refresh_lock_until', '<', sql<Date>`now()`)]),
      )
      .returningAll()
      .executeTakeFirst();
    return row ? { ...this.toConnection(row), lease: row.refresh_lock_until as RefreshLease } : undefined;
  }

  /** Gives `lease` back, if it is still the row's (saveRefreshed and markRevoked do so themselves). */
  async releaseRefreshLease(userId: string, lease: RefreshLease): Promise<void> {
    await this.db
      .updateTable('google_calendar_tokens')
      .set({ refresh_lock_until: null })
      .where('user_id', '=', userId)
      .where('refresh_lock_until', '=', lease)
      .execute();
  }

  /**
   * Marks the connection revoked. With `seen` (a refresh answered invalid_grant), only if the tokens
   * are still those that refresh used: Google refusing the old refresh token says nothing about the
   * tokens of a reconnect that landed meanwhile. Without it, unconditionally (an operator's call).
   * False when nothing changed.
   */
  async markRevoked(userId: string, seen?: TokenRevision, lease?: RefreshLease): Promise<boolean> {
    let q = this.db
      .updateTable('google_calendar_tokens')
      .set({
        status: 'revoked',
        revoked_at: sql<Date>`now()`,
        refresh_lock_until: givenBack(lease),
        updated_at: sql<Date>`now()`,
      })
      .where('user_id', '=', userId);
    if (seen) q = q.where((eb) => unchanged(eb, seen));
    const r = await q.executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  private toConnection(row: Row): CalendarConnection {
    return {
      userId: row.user_id,
      accessToken: this.open(row.user_id, 'access_token', row.access_token_enc),
      refreshToken: row.refresh_token_enc
        ? this.open(row.user_id, 'refresh_token', row.refresh_token_enc)
        : null,
      tokenExpiry: row.token_expiry,
      scope: row.scope,
      status: row.status,
      revokedAt: row.revoked_at,
      lastRefreshedAt: row.last_refreshed_at,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      revision: { accessTokenEnc: row.access_token_enc, refreshTokenEnc: row.refresh_token_enc },
    };
  }
}

/** A refresh lease, as leaseRefresh handed it out (its end); compared exactly, never computed. */
export type RefreshLease = Date & { readonly __refreshLease: unique symbol };

/**
 * `refresh_lock_until` after a write that gives `lease` back: cleared if it is still that lease,
 * else kept (another process's lease, taken after this one lapsed). No lease: cleared (an operator's
 * revocation).
 */
function givenBack(lease: RefreshLease | undefined) {
  return lease === undefined
    ? null
    : sql<Date | null>`CASE WHEN refresh_lock_until = ${lease} THEN NULL ELSE refresh_lock_until END`;
}

/** The row still holds the tokens as they were read (compare-and-set on the sealed values). */
function unchanged(eb: ExpressionBuilder<DB, 'google_calendar_tokens'>, seen: TokenRevision) {
  return eb.and([
    eb('access_token_enc', '=', seen.accessTokenEnc),
    seen.refreshTokenEnc === null
      ? eb('refresh_token_enc', 'is', null)
      : eb('refresh_token_enc', '=', seen.refreshTokenEnc),
  ]);
}
