/**
 * Owner booking leases by time range (BookingLeaseStore, migrations 009 and 010): what a hold
 * excludes, how it lapses, is renewed and given back, how long ago one last ended, and that concurrent
 * takers of overlapping ranges never both win.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BookingLeaseStore,
  type LeaseRange,
  leaseReleaseCte,
  WHOLE_OWNER,
} from '../../src/store/booking-leases.js';
import type { Database } from '../../src/store/database.js';
import { openTestDatabase, transactionId, waitForWaiterOn } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let leases: BookingLeaseStore;
const server = process.env.TEST_DB === 'server';

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  leases = new BookingLeaseStore(database.db);
});
afterAll(async () => {
  await close?.();
});

const hour = 3_600_000;
const at = (h: number, m = 0) => Date.UTC(2031, 0, 6, h, m);
const range = (from: number, to: number): LeaseRange => ({ from, to });
let owners = 0;
const newOwner = () => `lease-owner-${++owners}`;
const take = async (userId: string, holder: string, r: LeaseRange, leaseMs = 30_000) =>
  (await leases.tryAcquire(userId, holder, r, leaseMs)).acquired;
const holders = async (userId: string) =>
  (
    await sql<{ holder: string }>`
      SELECT h->>'holder' AS holder FROM owner_booking_leases, jsonb_array_elements(holds) h
       WHERE user_id = ${userId} ORDER BY 1`.execute(database.db)
  ).rows.map((r) => r.holder);

describe('owner booking leases by time range', () => {
  it('refuses a range overlapping a live hold; grants ranges that do not overlap, touching included', async () => {
    const u = newOwner();
    expect(await take(u, 'a', range(at(10), at(11)))).toBe(true);
    expect(await take(u, 'b', range(at(10, 30), at(11, 30)))).toBe(false);
    expect(await take(u, 'c', range(at(9), at(10, 1)))).toBe(false);
    expect(await take(u, 'd', range(at(11), at(12)))).toBe(true); // [10, 11) and [11, 12) do not overlap
    expect(await take(u, 'e', range(at(8), at(10)))).toBe(true);
    expect(await take(u, 'f', WHOLE_OWNER)).toBe(false);
    expect(await holders(u)).toEqual(['a', 'd', 'e']);
    // Another owner's time is its own.
    expect(await take(newOwner(), 'b', range(at(10, 30), at(11, 30)))).toBe(true);
  });

  it('a whole-owner hold excludes every other hold of that owner, and waits for all of them', async () => {
    const u = newOwner();
    expect(await take(u, 'all', WHOLE_OWNER)).toBe(true);
    expect(await take(u, 'x', range(at(3), at(4)))).toBe(false);
    await leases.release(u, 'all');
    expect(await take(u, 'x', range(at(3), at(4)))).toBe(true);
    expect(await take(u, 'all', WHOLE_OWNER)).toBe(false);
  });

  it('gives back only its own hold; a holder taking again replaces its hold', async () => {
    const u = newOwner();
    expect(await take(u, 'a', range(at(10), at(11)))).toBe(true);
    expect(await take(u, 'b', range(at(12), at(13)))).toBe(true);
    expect(await take(u, 'a', range(at(14), at(15)))).toBe(true); // a's 10:00 hold is replaced
    expect(await take(u, 'c', range(at(10), at(11)))).toBe(true);
    await leases.release(u, 'b');
    expect(await holders(u)).toEqual(['a', 'c']);
    expect(await take(u, 'd', range(at(12), at(13)))).toBe(true);
  });

  it('a lapsed hold excludes nothing and is dropped; renewing keeps a hold live, a lost one says so', async () => {
    const u = newOwner();
    expect(await take(u, 'old', range(at(10), at(11)), 1)).toBe(true);
    expect(await take(u, 'kept', range(at(12), at(13)), 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(await leases.renew(u, 'kept', 30_000)).toBe(true);
    expect(await take(u, 'new', range(at(10), at(11)))).toBe(true);
    expect(await holders(u)).toEqual(['kept', 'new']); // the lapsed hold was dropped
    expect(await take(u, 'other', range(at(12), at(13)))).toBe(false); // renewed: still live
    expect(await leases.renew(u, 'old', 30_000)).toBe(false);
  });

  it('says how long ago a hold of the owner ended: given back alone or with a reply, or dropped after lapsing', async () => {
    const u = newOwner();
    const quiet = async (holder: string, r: LeaseRange, leaseMs = 30_000) => {
      const got = await leases.tryAcquire(u, holder, r, leaseMs);
      expect(got.acquired).toBe(true);
      return got.quietMs;
    };
    const releasedAt = async () =>
      (
        await sql<{
          at: number;
        }>`SELECT released_at AS at FROM owner_booking_leases WHERE user_id = ${u}`.execute(database.db)
      ).rows[0]!.at;
    // Nothing has ended yet; taking, replacing and renewing end nothing.
    expect(await quiet('a', range(at(10), at(11)))).toBe(Number.POSITIVE_INFINITY);
    expect(await quiet('b', range(at(12), at(13)))).toBe(Number.POSITIVE_INFINITY);
    expect(await quiet('b', range(at(12), at(14)))).toBe(Number.POSITIVE_INFINITY);
    expect(await leases.renew(u, 'b', 30_000)).toBe(true);
    expect(await quiet('c', range(at(15), at(16)))).toBe(Number.POSITIVE_INFINITY);
    // Given back on its own: counted from then, by the database's clock.
    await leases.release(u, 'a');
    await new Promise((r) => setTimeout(r, 40));
    const sinceA = await quiet('d', range(at(10), at(11)));
    expect(sinceA).toBeGreaterThanOrEqual(30);
    expect(sinceA).toBeLessThan(60_000);
    // Given back by a reply's statement (leaseReleaseCte).
    const before = await releasedAt();
    await sql`WITH ${leaseReleaseCte({ userId: u, holder: 'b' })} SELECT 1`.execute(database.db);
    expect(await releasedAt()).toBeGreaterThan(before);
    // Whatever statement removes a holder stamps the row (migration 010's trigger), e.g. one of a
    // process still running the previous version; nothing moves the stamp back.
    const beforeOld = await releasedAt();
    await sql`UPDATE owner_booking_leases
                 SET holds = (SELECT COALESCE(jsonb_agg(h), '[]'::jsonb) FROM jsonb_array_elements(holds) h
                               WHERE h->>'holder' <> 'c')
               WHERE user_id = ${u}`.execute(database.db);
    const stamped = await releasedAt();
    expect(stamped).toBeGreaterThan(beforeOld);
    await sql`UPDATE owner_booking_leases SET released_at = 0 WHERE user_id = ${u}`.execute(database.db);
    expect(await releasedAt()).toBe(stamped);
    // (A few ms after that stamp, so the next statement does not fall in its millisecond: quietMs
    // counts whole milliseconds since the last end, and would read 0.)
    await new Promise((r) => setTimeout(r, 5));
    // A lapsed hold of another holder, dropped by the taking statement itself: it ended just now.
    expect(await quiet('short', range(at(20), at(21)), 1)).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(await quiet('e', range(at(22), at(23)))).toBe(0);
    expect(await holders(u)).not.toContain('short');
  });

  it('returns a read of the taking statement only when the grant came with no hold ended since its snapshot', async () => {
    const u = newOwner();
    await sql`CREATE TABLE IF NOT EXISTS lease_probe (user_id text)`.execute(database.db);
    const read = sql`(SELECT count(*)::int FROM lease_probe WHERE user_id = ${u})`;
    const takeReading = (holder: string) =>
      leases.tryAcquire(u, holder, range(at(10), at(11)), 30_000, undefined, read);
    expect(await takeReading('a')).toMatchObject({ acquired: true, read: 0 });
    const refused = await takeReading('b');
    expect(refused.acquired).toBe(false);
    expect(refused).not.toHaveProperty('read');
    if (!server) return; // the rest needs two connections at once
    // The holder gives its hold back in a transaction that also writes a row, while another taker's
    // statement (snapshot taken, the row not in it) waits for the owner's row: no read comes back.
    let taking: ReturnType<typeof takeReading> | undefined;
    await database.db.transaction().execute(async (trx) => {
      await sql`INSERT INTO lease_probe VALUES (${u})`.execute(trx);
      await leases.release(u, 'a', trx);
      const xid = await transactionId(trx);
      taking = takeReading('c');
      // Until that statement waits for this transaction (for the row's lock; its snapshot taken).
      await waitForWaiterOn(database.db, xid);
    });
    const granted = await taking!;
    expect(granted.acquired).toBe(true);
    expect(granted).not.toHaveProperty('read');
    // A later taker's snapshot has the row.
    await leases.release(u, 'c');
    expect(await takeReading('d')).toMatchObject({ acquired: true, read: 1 });
  });

  it('stores the output CTE in the same statement, whether or not the hold is granted', async () => {
    const u = newOwner();
    await sql`CREATE TABLE IF NOT EXISTS lease_side (n int)`.execute(database.db);
    const also = sql`saved_output AS (INSERT INTO lease_side VALUES (1) RETURNING n)`;
    expect(await leases.tryAcquire(u, 'a', range(at(10), at(11)), 30_000, also)).toMatchObject({
      acquired: true,
      alsoRows: 1,
    });
    expect(await leases.tryAcquire(u, 'b', range(at(10), at(11)), 30_000, also)).toMatchObject({
      acquired: false,
      alsoRows: 1,
    });
    const side = await sql<{ n: number }>`SELECT count(*)::int AS n FROM lease_side`.execute(database.db);
    expect(side.rows[0]!.n).toBe(2);
  });

  it('concurrent takers of overlapping ranges: exactly one wins each round', async () => {
    // On a server the takers run on different connections at once; embedded, they queue.
    for (let round = 0; round < 5; round++) {
      const u = newOwner();
      const won = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          take(u, `t${i}`, range(at(10) + i * 60_000, at(10) + hour + i * 60_000)),
        ),
      );
      expect(won.filter(Boolean)).toHaveLength(1);
      expect(await holders(u)).toHaveLength(1);
    }
  });
});
