import { type Kysely, sql, type Transaction } from 'kysely';
import type { SyncedMeeting } from '../domain/calendar-sync.js';
import type { MeetingRow } from './meetings.js';
import type { DB } from './schema.js';

/** An owner claimed for a pass, and since when its calendar's changes are still to be read. */
export interface SyncClaim {
  userId: string;
  /** Null: never passed over (read the meetings' whole window). */
  syncedThrough: Date | null;
  /** The database's clock when the claim ran: the pass's changes are read as of then. */
  claimedAt: Date;
}

/**
 * A scheduled meeting is watched from its booking until it ends. The `meeting_time` bound lets the
 * (user_id, meeting_time) index do the work; a meeting longer than it is a day is not watched once
 * it has been running that long.
 */
const WATCHED = sql`m.status = 'scheduled'
  AND m.meeting_time > now() - interval '1 day'
  AND m.meeting_time + make_interval(mins => m.duration_minutes) > now()`;

/** Which owners are due a pass over their calendar, and what was last seen of it (migration 011). */
export class CalendarSyncStore {
  constructor(private readonly db: Kysely<DB>) {}

  /**
   * Claims owners due a pass among the next `limit` candidates after `after` in user order:
   * connected, with a watched meeting, not claimed within the last `everySeconds`. The claim itself
   * moves the owner's next pass out by `everySeconds`, in one statement, so concurrent processes
   * never claim the same owner (the upsert's row lock makes the second one see the first one's due
   * time: it claims fewer than its candidates, maybe none); a process that stops mid-pass leaves the
   * owner for the pass after. `last`: the last candidate looked at (the next call's `after`), null
   * when none was left; a round of calls from null to null looks at every owner once.
   */
  async claimDue(
    everySeconds: number,
    limit: number,
    after: string | null = null,
  ): Promise<{ claims: SyncClaim[]; last: string | null }> {
    const { rows } = await sql<{
      last: string | null;
      user_id: string | null;
      synced_through: Date | null;
      claimed_at: Date;
    }>`
      WITH candidates AS (
        SELECT c.user_id
          FROM google_calendar_tokens c
         WHERE c.status = 'connected'
           AND (${after}::text IS NULL OR c.user_id > ${after}::text)
           AND EXISTS (SELECT 1 FROM meetings m WHERE m.user_id = c.user_id AND ${WATCHED})
           AND NOT EXISTS (SELECT 1 FROM calendar_sync d WHERE d.user_id = c.user_id AND d.due_at > now())
         ORDER BY c.user_id
         LIMIT ${limit}
      ), claimed AS (
        INSERT INTO calendar_sync AS s (user_id, due_at)
        SELECT user_id, now() + make_interval(secs => ${everySeconds}) FROM candidates ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET due_at = excluded.due_at WHERE s.due_at <= now()
        RETURNING s.user_id, s.synced_through
      )
      SELECT (SELECT max(user_id) FROM candidates) AS last, claimed.user_id, claimed.synced_through,
             now() AS claimed_at
        FROM (SELECT 1) AS one LEFT JOIN claimed ON true`.execute(this.db);
    const claims = rows
      .filter((r) => r.user_id !== null)
      .map((r) => ({
        userId: r.user_id!,
        syncedThrough: r.synced_through,
        claimedAt: new Date(r.claimed_at),
      }));
    return { claims, last: rows[0]?.last ?? null };
  }

  /** The owner's watched meetings (see WATCHED). */
  async watched(userId: string): Promise<SyncedMeeting[]> {
    const { rows } = await sql<{
      meeting_id: string;
      google_event_id: string;
      meeting_time: Date;
      duration_minutes: number;
    }>`SELECT m.meeting_id, m.google_event_id, m.meeting_time, m.duration_minutes
         FROM meetings m WHERE m.user_id = ${userId} AND ${WATCHED}`.execute(this.db);
    return rows.map((r) => ({
      meetingId: r.meeting_id,
      googleEventId: r.google_event_id,
      meetingTime: new Date(r.meeting_time),
      durationMinutes: r.duration_minutes,
    }));
  }

  /**
   * Which of these conversations have a customer message not yet answered whose model output is
   * stored (claimed, or waiting for its retry): such a message's run may have acted at Google (the
   * output is stored before anything acts on it, see BookingService).
   */
  async conversationsInFlight(conversationIds: string[]): Promise<Set<string>> {
    if (conversationIds.length === 0) return new Set();
    const rows = await this.db
      .selectFrom('messages')
      .select('conversation_id')
      .distinct()
      .where('conversation_id', 'in', conversationIds)
      .where('role', '=', 'customer')
      .where('status', '=', 'pending')
      .where('model_output', 'is not', null)
      .execute();
    return new Set(rows.map((r) => r.conversation_id));
  }

  /**
   * Every change Google made before `through` has been seen by a pass that read from `from` (the
   * value its claim returned). Only while the row still has `from` (a pass overlapping it, or a reset
   * to a first pass, wins), and never backwards.
   */
  async markSynced(userId: string, from: Date | null, through: Date): Promise<void> {
    await sql`UPDATE calendar_sync
                 SET synced_through = greatest(coalesce(synced_through, ${through}), ${through})
               WHERE user_id = ${userId} AND synced_through IS NOT DISTINCT FROM ${from}`.execute(this.db);
  }

  /**
   * Moves a scheduled meeting to the times its event now has (the owner moved it in Google), in the
   * caller's transaction; undefined when the meeting is no longer scheduled.
   */
  async moveIn(
    trx: Transaction<DB>,
    meetingId: string,
    to: { meetingTime: Date; durationMinutes: number },
  ): Promise<MeetingRow | undefined> {
    const { rows } = await sql<MeetingRow>`
      UPDATE meetings
         SET previous_meeting_time = meeting_time,
             meeting_time = ${to.meetingTime},
             duration_minutes = ${to.durationMinutes},
             rescheduled_at = now(),
             reschedule_count = reschedule_count + 1,
             updated_at = now()
       WHERE meeting_id = ${meetingId} AND status = 'scheduled'
       RETURNING *`.execute(trx);
    return rows[0];
  }
}
