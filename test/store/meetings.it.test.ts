/**
 * The owner's own scheduled meetings a booking reads beside Google's busy time
 * (MeetingStore.overlapping): what overlaps a window, what an exception leaves out, and the week
 * before the window the read looks back (its index scan stops there).
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/store/database.js';
import { MeetingStore } from '../../src/store/meetings.js';
import { openTestDatabase } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let meetings: MeetingStore;
let n = 0;

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  meetings = new MeetingStore(database.db);
});
afterAll(async () => {
  await close?.();
});

const hour = 3_600_000;
const day = 24 * hour;
const from = new Date(Date.UTC(2027, 0, 10, 9));
const to = new Date(from.getTime() + hour);

async function meeting(userId: string, start: Date, minutes: number, status = 'scheduled') {
  const id = `mtg-ovl-${++n}`;
  await sql`
    INSERT INTO meetings (meeting_id, user_id, conversation_id, idempotency_key, google_event_id, title,
                          meeting_time, duration_minutes, status)
    VALUES (${id}, ${userId}, 'conv-ovl', ${`key-${id}`}, ${`ev${id.replaceAll('-', '')}`}, 'Demo',
            ${start}, ${minutes}, ${status})`.execute(database.db);
  return id;
}

describe('MeetingStore.overlapping', () => {
  it('returns the scheduled meetings overlapping the window, however long ago they started within a week', async () => {
    const owner = 'owner-ovl-1';
    await meeting(owner, new Date(from.getTime() - 30 * 60_000), 45); // ends inside the window
    await meeting(owner, new Date(from.getTime() + 30 * 60_000), 480); // starts inside
    await meeting(owner, new Date(from.getTime() - 6 * day), 6 * 24 * 60 + 1); // an owner's 6-day block
    await meeting(owner, new Date(from.getTime() - 30 * 60_000), 30); // ends as the window starts
    await meeting(owner, to, 30); // starts as it ends
    await meeting(owner, from, 30, 'cancelled');
    await meeting('owner-ovl-other', from, 30);
    const found = await meetings.overlapping(owner, from, to);
    expect(found.map((m) => m.start.getTime() - from.getTime()).sort((a, b) => a - b)).toEqual([
      -6 * day,
      -30 * 60_000,
      30 * 60_000,
    ]);
  });

  it('looks back one week: a meeting that started earlier is left to Google’s busy time', async () => {
    const owner = 'owner-ovl-2';
    // Only an owner's change in Google makes one this long; Google's freeBusy shows it.
    await meeting(owner, new Date(from.getTime() - 8 * day), 9 * 24 * 60);
    for (let i = 1; i <= 50; i++) await meeting(owner, new Date(from.getTime() - i * day), 60);
    expect(await meetings.overlapping(owner, from, to)).toEqual([]);
  });

  it('leaves out the booking’s own retry, the meeting being moved and the ones cancelled before it', async () => {
    const owner = 'owner-ovl-3';
    const a = await meeting(owner, from, 30);
    const b = await meeting(owner, from, 30);
    const c = await meeting(owner, from, 30);
    expect(await meetings.overlapping(owner, from, to)).toHaveLength(3);
    expect(
      await meetings.overlapping(owner, from, to, { key: `key-${a}`, meetingId: b, cancelled: [c] }),
    ).toEqual([]);
  });
});
