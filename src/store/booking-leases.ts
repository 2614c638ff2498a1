import { type Kysely, type RawBuilder, sql, type Transaction } from 'kysely';
import type { DB } from './schema.js';

/** Who holds an owner's booking lease. */
export interface LeaseKey {
  userId: string;
  holder: string;
}

/** The time an owner's lease covers, epoch ms, half-open [from, to). */
export interface LeaseRange {
  from: number;
  to: number;
}

/** Every time of the owner (a booking that cannot name its range, or several bookings at once). */
export const WHOLE_OWNER: LeaseRange = { from: -8.64e15, to: 8.64e15 };

/** The database clock in epoch ms (leases lapse by it, whichever process's clock is off). */
const NOW_MS = sql<number>`(extract(epoch FROM now()) * 1000)`;

/** `holds` without the holder's hold. */
const holdsWithout = (holder: string) => sql`(
        SELECT COALESCE(jsonb_agg(h), '[]'::jsonb) FROM jsonb_array_elements(owner_booking_leases.holds) h
         WHERE h->>'holder' <> ${holder})`;

/** Rows where the holder has a hold. */
const holding = (key: LeaseKey) =>
  sql`owner_booking_leases.user_id = ${key.userId}
         AND owner_booking_leases.holds @> jsonb_build_array(jsonb_build_object('holder', ${key.holder}::text))`;

/**
 * A data-modifying CTE (`released`) giving the hold back within a larger statement (a booking's
 * reply, MeetingStore.bookedRows): free when that statement's transaction commits.
 */
export function leaseReleaseCte(key: LeaseKey): RawBuilder<unknown> {
  return sql`released AS (
        UPDATE owner_booking_leases SET holds = ${holdsWithout(key.holder)}
         WHERE ${holding(key)})`;
}

/**
 * Per-owner booking leases by time range (owner_booking_leases, migration 009): a holder may check
 * availability and book in its range while no other live hold of the owner overlaps it. Each
 * statement is a single short query, so nothing holds a transaction (or the embedded database's only
 * connection) while the holder talks to Google.
 */
export class BookingLeaseStore {
  constructor(private readonly db: Kysely<DB>) {}

  /**
   * Takes a hold on `range` when no other live hold of the owner overlaps it (lapsed holds are
   * dropped on the way); a holder's own earlier hold is replaced. `also`: a data-modifying CTE named
   * `saved_output` to run in the same statement (MessageStore's modelOutputCte: the output the
   * booking acts on is stored by the lease's own commit); `alsoRows` counts its rows. `quietMs`
   * (when acquired): how long before this statement began, by the database's clock, a hold of the
   * owner last ended (given back, or dropped because it lapsed, by this statement too: then 0;
   * `released_at`, stamped by migration 010's trigger whenever a holder leaves `holds`); Infinity
   * when none ever did.
   *
   * `read`: a scalar subquery evaluated in the same statement; its value comes back as `read` only
   * when the hold was granted and no hold of the owner ended between this statement's snapshot and
   * the grant (the owner's row then still had the `released_at` the snapshot saw). Rows a previous
   * holder wrote with its release (a booking's meeting row, written by the statement that gives its
   * hold back) are then in the snapshot the read saw; otherwise `read` is undefined and the caller
   * reads on its own, after the grant.
   *
   * Race-free in one statement: every hold of the owner is in its one row, and ON CONFLICT DO UPDATE
   * evaluates its WHERE on that row's latest version, under the row's lock, whatever this statement's
   * snapshot saw.
   */
  async tryAcquire(
    userId: string,
    holder: string,
    range: LeaseRange,
    leaseMs: number,
    also?: RawBuilder<unknown>,
    read?: RawBuilder<unknown>,
  ): Promise<{ acquired: boolean; alsoRows: number; quietMs: number; read?: unknown }> {
    const mine = sql`jsonb_build_object('holder', ${holder}::text, 'from', ${range.from}::float8,
                                        'to', ${range.to}::float8, 'until', ${NOW_MS} + ${leaseMs}::float8)`;
    const r = await sql<{
      acquired: number;
      also_rows: number;
      quiet_ms: number | null;
      read_current?: boolean | null;
      read?: unknown;
    }>`
      WITH ${also ? sql`${also},` : sql``}
      ${read ? sql`seen AS (SELECT released_at FROM owner_booking_leases WHERE user_id = ${userId}),` : sql``}
      lease AS (
        INSERT INTO owner_booking_leases (user_id, holds) VALUES (${userId}, jsonb_build_array(${mine}))
        ON CONFLICT (user_id) DO UPDATE
           SET holds = (SELECT COALESCE(jsonb_agg(h), '[]'::jsonb)
                          FROM jsonb_array_elements(owner_booking_leases.holds) h
                         WHERE (h->>'until')::float8 > ${NOW_MS} AND h->>'holder' <> ${holder})
                       || jsonb_build_array(${mine})
         WHERE NOT EXISTS (
                 SELECT 1 FROM jsonb_array_elements(owner_booking_leases.holds) h
                  WHERE (h->>'until')::float8 > ${NOW_MS}
                    AND h->>'holder' <> ${holder}
                    AND (h->>'from')::float8 < ${range.to}::float8
                    AND ${range.from}::float8 < (h->>'to')::float8)
        RETURNING released_at)
      SELECT (SELECT count(*) FROM lease)::int AS acquired,
             ${also ? sql`(SELECT count(*) FROM saved_output)::int` : sql`0`} AS also_rows,
             (SELECT CASE WHEN released_at = 0 THEN NULL
                          ELSE greatest(${NOW_MS} - released_at, 0) END FROM lease) AS quiet_ms
             ${
               read
                 ? sql`, (SELECT COALESCE((SELECT released_at FROM seen), 0) = released_at FROM lease) AS read_current,
                       ${read} AS read`
                 : sql``
             }`.execute(this.db);
    const row = r.rows[0];
    const acquired = Number(row?.acquired ?? 0) > 0;
    return {
      acquired,
      alsoRows: Number(row?.also_rows ?? 0),
      quietMs: row?.quiet_ms == null ? Number.POSITIVE_INFINITY : Number(row.quiet_ms),
      ...(acquired && row?.read_current === true ? { read: row.read } : {}),
    };
  }

  /** Extends a hold we have; false when it was lost (lapsed and dropped by another holder). */
  async renew(userId: string, holder: string, leaseMs: number): Promise<boolean> {
    const r = await sql`
      UPDATE owner_booking_leases
         SET holds = (SELECT jsonb_agg(CASE WHEN h->>'holder' = ${holder}
                                            THEN jsonb_set(h, '{until}', to_jsonb(${NOW_MS} + ${leaseMs}::float8))
                                            ELSE h END)
                        FROM jsonb_array_elements(owner_booking_leases.holds) h)
       WHERE ${holding({ userId, holder })}`.execute(this.db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** Gives the hold back; in `trx`, it is free when that transaction commits. */
  async release(userId: string, holder: string, trx?: Transaction<DB>): Promise<void> {
    await sql`
      UPDATE owner_booking_leases SET holds = ${holdsWithout(holder)}
       WHERE ${holding({ userId, holder })}`.execute(trx ?? this.db);
  }
}
