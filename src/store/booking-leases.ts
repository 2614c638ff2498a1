import { type Kysely, type RawBuilder, sql, type Transaction } from 'kysely';
import type { DB } from './schema.js';
import { type BookingDB, widen } from './schema-booking.js';

/** Who holds an owner's booking lease. */
export interface LeaseKey {
  userId: string;
  holder: string;
}

/**
 * A data-modifying CTE (`released`) giving the lease back within a larger statement (a booking's
 * reply, MeetingStore.bookedRows): free when that statement's transaction commits.
 */
export function leaseReleaseCte(key: LeaseKey): RawBuilder<unknown> {
  return sql`released AS (
        DELETE FROM owner_booking_leases WHERE user_id = ${key.userId} AND holder = ${key.holder})`;
}

/**
 * Per-owner booking leases (owner_booking_leases): one holder at a time may check availability and
 * book for an owner. Each statement is a single short query, so nothing holds a transaction (or the
 * embedded database's only connection) while the holder talks to Google.
 */
export class BookingLeaseStore {
  private readonly db: Kysely<BookingDB>;
  constructor(db: Kysely<DB>) {
    this.db = widen(db);
  }

  /**
   * Takes the lease when it is free, lapsed, or already ours. `also`: a data-modifying CTE named
   * `saved_output` to run in the same statement (MessageStore's modelOutputCte: the output the
   * booking acts on is stored by the lease's own commit); `alsoRows` counts its rows.
   */
  async tryAcquire(
    userId: string,
    holder: string,
    leaseMs: number,
    also?: RawBuilder<unknown>,
  ): Promise<{ acquired: boolean; alsoRows: number }> {
    const r = await sql<{ acquired: number; also_rows: number }>`
      WITH ${also ? sql`${also},` : sql``} lease AS (
        INSERT INTO owner_booking_leases (user_id, holder, lease_until)
        VALUES (${userId}, ${holder}, now() + make_interval(secs => ${leaseMs / 1000}))
        ON CONFLICT (user_id) DO UPDATE
           SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
         WHERE owner_booking_leases.lease_until < now() OR owner_booking_leases.holder = EXCLUDED.holder
        RETURNING user_id)
      SELECT (SELECT count(*) FROM lease)::int AS acquired,
             ${also ? sql`(SELECT count(*) FROM saved_output)::int` : sql`0`} AS also_rows`.execute(this.db);
    const row = r.rows[0];
    return { acquired: Number(row?.acquired ?? 0) > 0, alsoRows: Number(row?.also_rows ?? 0) };
  }

  /** Extends a lease we hold; false when it was lost (lapsed and taken by someone else). */
  async renew(userId: string, holder: string, leaseMs: number): Promise<boolean> {
    const r = await this.db
      .updateTable('owner_booking_leases')
      .set({ lease_until: sql<Date>`now() + make_interval(secs => ${leaseMs / 1000})` })
      .where('user_id', '=', userId)
      .where('holder', '=', holder)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Gives the lease back; in `trx`, it is free when that transaction commits. */
  async release(userId: string, holder: string, trx?: Transaction<DB>): Promise<void> {
    await (trx ? widen(trx) : this.db)
      .deleteFrom('owner_booking_leases')
      .where('user_id', '=', userId)
      .where('holder', '=', holder)
      .execute();
  }
}
