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

  /** Takes the lease when it is free, lapsed, or already ours. */
  async tryAcquire(userId: string, holder: string, leaseMs: number): Promise<boolean> {
    const until = sql<Date>`now() + make_interval(secs => ${leaseMs / 1000})`;
    const r = await this.db
      .insertInto('owner_booking_leases')
      .values({ user_id: userId, holder, lease_until: until })
      .onConflict((oc) =>
        oc
          .column('user_id')
          .doUpdateSet({ holder, lease_until: until })
          .where((eb) =>
            eb.or([
              eb('owner_booking_leases.lease_until', '<', sql<Date>`now()`),
              eb('owner_booking_leases.holder', '=', holder),
            ]),
          ),
      )
      .returning('user_id')
      .executeTakeFirst();
    return r !== undefined;
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
