/**
 * Which owners a calendar pass claims (CalendarSyncStore, migration 011): connected owners with a
 * meeting not yet over, each at most once per interval whatever the concurrent claimers, and what
 * was last seen of their calendar.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CalendarSyncStore } from '../../src/store/calendar-sync.js';
import type { Database } from '../../src/store/database.js';
import { openTestDatabase } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let store: CalendarSyncStore;

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  store = new CalendarSyncStore(database.db);
});
afterAll(async () => {
  await close?.();
});

let n = 0;
const HOUR = 3_600_000;

async function owner(status: 'connected' | 'revoked' = 'connected'): Promise<string> {
  const userId = `sync-owner-${++n}`;
  await sql`INSERT INTO google_calendar_tokens (user_id, access_token_enc, token_expiry, scope, status)
            VALUES (${userId}, 'x', now() + interval '1 hour', 'calendar', ${status})`.execute(database.db);
  return userId;
}

async function meeting(
  userId: string,
  startsInMs: number,
  over: { durationMinutes?: number; status?: 'scheduled' | 'cancelled' } = {},
): Promise<string> {
  const id = `sync-meeting-${++n}`;
  await sql`INSERT INTO meetings (meeting_id, user_id, conversation_id, idempotency_key, google_event_id,
                                  title, meeting_time, duration_minutes, status)
            VALUES (${id}, ${userId}, 'c', ${id}, ${`ev${n}`}, 'Demo', ${new Date(Date.now() + startsInMs)},
                    ${over.durationMinutes ?? 30}, ${over.status ?? 'scheduled'})`.execute(database.db);
  return id;
}

/** `count` new connected owners, each with a meeting in an hour: due a pass. */
async function ownersDue(count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const u = await owner();
    await meeting(u, HOUR);
    ids.push(u);
  }
  return ids;
}

/** Every owner due now, claimed in one round of batches (as CalendarSync.runOnce claims them). */
async function claimAll(limit = 50): Promise<string[]> {
  const all: string[] = [];
  let after: string | null = null;
  for (;;) {
    const batch = await store.claimDue(300, limit, after);
    all.push(...batch.claims.map((c) => c.userId));
    if (batch.last === null) return all;
    after = batch.last;
  }
}

describe('claiming owners due a pass', () => {
  it('claims connected owners with a meeting not yet over, once per interval', async () => {
    await claimAll(); // earlier tests' owners out of the way
    const upcoming = await owner();
    await meeting(upcoming, 2 * HOUR);
    const running = await owner();
    await meeting(running, -10 * 60_000); // started 10 minutes ago, 30 long
    const over = await owner();
    await meeting(over, -HOUR);
    const cancelledOnly = await owner();
    await meeting(cancelledOnly, 2 * HOUR, { status: 'cancelled' });
    const revoked = await owner('revoked');
    await meeting(revoked, 2 * HOUR);
    const none = await owner();

    const claimed = await claimAll();
    expect(claimed.sort()).toEqual([upcoming, running].sort());
    expect(claimed).not.toContain(none);
    // Not again within the interval.
    expect(await claimAll()).toEqual([]);
    // Once due again, again, with what was last seen.
    await store.markSynced(upcoming, null, new Date('2026-01-02T00:00:00Z'));
    await sql`UPDATE calendar_sync SET due_at = now() - interval '1 second' WHERE user_id = ${upcoming}`.execute(
      database.db,
    );
    const again = await store.claimDue(300, 50);
    expect(again.claims).toEqual([
      { userId: upcoming, syncedThrough: new Date('2026-01-02T00:00:00Z'), claimedAt: expect.any(Date) },
    ]);
    // The database's clock, as of the claim.
    expect(Math.abs(again.claims[0]!.claimedAt.getTime() - Date.now())).toBeLessThan(60_000);
  });

  it('a round of small batches looks at each owner once, and ends when none is left', async () => {
    await claimAll();
    const ids = await ownersDue(7);
    const first = await store.claimDue(300, 3);
    expect(first.claims).toHaveLength(3);
    expect(first.last).toBe(
      first.claims
        .map((c) => c.userId)
        .sort()
        .at(-1),
    );
    // The rest (the first batch's owners are not due any more), in batches of three.
    const rest = await claimAll(3);
    expect([...first.claims.map((c) => c.userId), ...rest].sort()).toEqual(ids.sort());
    expect(await store.claimDue(300, 3)).toEqual({ claims: [], last: null });
  });

  it('never gives one owner to two concurrent claimers', async () => {
    await claimAll();
    const ids = await ownersDue(30);
    const batches = await Promise.all([1, 2, 3, 4].map(() => store.claimDue(300, 10)));
    const rest = await claimAll();
    const claimed = [...batches.flatMap((b) => b.claims.map((c) => c.userId)), ...rest];
    expect(claimed.sort()).toEqual(ids.sort());
  });

  it('what was last seen moves on only from what the pass read from, and never back', async () => {
    const u = await owner();
    await meeting(u, HOUR);
    expect(await claimAll()).toContain(u);
    const seen = async () =>
      (
        await sql<{
          synced_through: Date | null;
        }>`SELECT synced_through FROM calendar_sync WHERE user_id = ${u}`.execute(database.db)
      ).rows[0]?.synced_through;
    const march = new Date('2026-03-01T00:00:00Z');
    await store.markSynced(u, null, march);
    expect(await seen()).toEqual(march);
    // A pass that read from null too (overlapping the first) does not overwrite it.
    await store.markSynced(u, null, new Date('2026-04-01T00:00:00Z'));
    expect(await seen()).toEqual(march);
    // One that read from March: on, but never back.
    await store.markSynced(u, march, new Date('2026-02-01T00:00:00Z'));
    expect(await seen()).toEqual(march);
    await store.markSynced(u, march, new Date('2026-05-01T00:00:00Z'));
    expect(await seen()).toEqual(new Date('2026-05-01T00:00:00Z'));
  });
});

describe('watched meetings and moves', () => {
  it('lists the scheduled meetings not yet over, and moves only a scheduled one', async () => {
    const u = await owner();
    const soon = await meeting(u, HOUR, { durationMinutes: 45 });
    await meeting(u, -2 * HOUR);
    const gone = await meeting(u, HOUR, { status: 'cancelled' });
    const watched = await store.watched(u);
    expect(watched).toEqual([
      expect.objectContaining({ meetingId: soon, googleEventId: expect.any(String), durationMinutes: 45 }),
    ]);

    const to = new Date(Date.now() + 5 * HOUR);
    to.setUTCMilliseconds(0);
    const moved = await database.db
      .transaction()
      .execute((trx) => store.moveIn(trx, soon, { meetingTime: to, durationMinutes: 60 }));
    expect(moved).toMatchObject({ meeting_time: to, duration_minutes: 60, reschedule_count: 1 });
    expect(moved?.previous_meeting_time).toEqual(watched[0]?.meetingTime);
    const notMoved = await database.db
      .transaction()
      .execute((trx) => store.moveIn(trx, gone, { meetingTime: to, durationMinutes: 60 }));
    expect(notMoved).toBeUndefined();
  });
});
