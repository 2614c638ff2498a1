import { type Kysely, type RawBuilder, type Selectable, sql, type Transaction } from 'kysely';
import { meetingEventData, type OwnerEventType } from '../domain/owner-events.js';
import { type LeaseKey, leaseReleaseCte } from './booking-leases.js';
import { newId } from './ids.js';
import type { DB, MeetingTable } from './schema.js';
import { type BookingDB, widen } from './schema-booking.js';
import { deliveryInsert } from './webhooks.js';

/**
 * How long before a window a meeting overlapping it may start: a week. Meetings booked by chat last at
 * most 8 hours; only an owner's change in Google makes one longer, and Google's freeBusy (read with
 * every booking) sees such an event; our own read is for bookings Google does not show yet.
 */
const LONGEST_OVERLAP_MS = 7 * 24 * 3_600_000;

/** Meetings `overlapping` leaves out (see there). */
export interface OverlapExcept {
  key?: string;
  meetingId?: string;
  cancelled?: readonly string[];
}

export type Meeting = Selectable<MeetingTable>;
/** A meeting with the reschedule columns of migration 005. */
export type MeetingRow = Selectable<BookingDB['meetings']>;

export interface NewMeeting {
  userId: string;
  agentId: string;
  conversationId: string;
  messageId: string;
  idempotencyKey: string;
  googleEventId: string;
  title: string;
  customerName: string | null;
  customerEmail: string;
  participants: string[];
  meetingTime: Date;
  durationMinutes: number;
  timezone: string | null;
  meetLink: string | null;
  htmlLink: string | null;
}

export interface MeetingFilter {
  userId: string;
  status?: 'scheduled' | 'cancelled' | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  limit: number;
  /** Keyset cursor: (meeting_time, meeting_id) of the last row of the previous page. */
  after?: { time: Date; id: string } | undefined;
}

export interface BookedRowsOptions {
  /** The owner's webhook event for the new meeting (its key from the meeting's id). */
  event?: { type: OwnerEventType; key: (meetingId: string) => string } | undefined;
  /** The owner's booking lease to give back (in every case: written or not). */
  lease?: LeaseKey | undefined;
  /** Write the meeting only if this CTE of the same statement has a row (the reply's). */
  onlyIfRowIn?: string | undefined;
  /**
   * The delivery's job is enqueued in the same transaction (true), or after the statement committed
   * (false: the webhook relay enqueues it if that never happens, see WebhookDispatcher.relayOne).
   */
  enqueued: boolean;
}

/**
 * A booking's rows as data-modifying CTEs of one statement: the meeting, once per idempotency key
 * (a second insert with the same key writes nothing); the owner's webhook delivery of `event`, only
 * when the meeting row is new and the owner has a webhook; and the owner's booking lease given back
 * (free when the statement's transaction commits, together with the meeting row). `result` is the
 * delivery's id, or NULL.
 *
 * The event's payload is built from the row as it is inserted (the id is chosen here), so it is
 * what meetingEventData would make of the stored row.
 */
export function bookedRows(
  m: NewMeeting,
  options: BookedRowsOptions,
): { ctes: RawBuilder<unknown>[]; result: RawBuilder<string | null> } {
  const meetingId = newId('mtg');
  const only = options.onlyIfRowIn;
  const ctes: RawBuilder<unknown>[] = [
    sql`ins AS (
        INSERT INTO meetings (meeting_id, user_id, agent_id, conversation_id, message_id, idempotency_key,
                              google_event_id, title, customer_name, customer_email, participants,
                              meeting_time, duration_minutes, timezone, meet_link, html_link, status)
        SELECT ${meetingId}, ${m.userId}, ${m.agentId}, ${m.conversationId}, ${m.messageId},
               ${m.idempotencyKey}, ${m.googleEventId}, ${m.title}, ${m.customerName}, ${m.customerEmail},
               ${m.participants}::text[], ${m.meetingTime}::timestamptz, ${m.durationMinutes}::int,
               ${m.timezone}::text, ${m.meetLink}::text, ${m.htmlLink}::text, 'scheduled'
         ${only ? sql`WHERE EXISTS (SELECT 1 FROM ${sql.ref(only)})` : sql``}
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING meeting_id)`,
  ];
  if (options.event) {
    const data = meetingEventData({
      meeting_id: meetingId,
      user_id: m.userId,
      agent_id: m.agentId,
      conversation_id: m.conversationId,
      google_event_id: m.googleEventId,
      title: m.title,
      customer_name: m.customerName,
      customer_email: m.customerEmail,
      participants: m.participants,
      meeting_time: m.meetingTime,
      duration_minutes: m.durationMinutes,
      timezone: m.timezone,
      meet_link: m.meetLink,
      html_link: m.htmlLink,
      status: 'scheduled',
    });
    const event = { userId: m.userId, type: options.event.type, key: options.event.key(meetingId), data };
    ctes.push(sql`delivered AS (${deliveryInsert(event, 'ins', { enqueued: options.enqueued })})`);
  }
  if (options.lease) ctes.push(leaseReleaseCte(options.lease));
  return {
    ctes,
    result: options.event ? sql`(SELECT delivery_id FROM delivered)` : sql`NULL::text`,
  };
}

export class MeetingStore {
  constructor(private readonly db: Kysely<DB>) {}

  /**
   * A booking's rows in one statement of the reply's transaction (one round trip where a meeting
   * insert, WebhookStore.record and BookingLeaseStore.release took three; bookedRows says which
   * rows). Returns the delivery's id when one was written: its job is the caller's to enqueue, in
   * `trx`. The reply's own statement can carry the same rows (bookedRows with `onlyIfRowIn`).
   */
  async insertBooked(
    trx: Transaction<DB>,
    m: NewMeeting,
    options: Omit<BookedRowsOptions, 'onlyIfRowIn' | 'enqueued'>,
  ): Promise<string | undefined> {
    const rows = bookedRows(m, { ...options, enqueued: true });
    const r = await sql<{ delivery_id: string | null }>`
      WITH ${sql.join(rows.ctes)}
      SELECT ${rows.result} AS delivery_id`.execute(trx);
    return r.rows[0]?.delivery_id ?? undefined;
  }

  /**
   * The owner's scheduled meetings that overlap [from, to) (callers widen it by the buffer), except
   * one booking (its own retry), one meeting (the one being moved) and the meetings an answer
   * cancelled before this action (their rows are closed with its reply).
   */
  async overlapping(
    userId: string,
    from: Date,
    to: Date,
    except: OverlapExcept = {},
  ): Promise<Array<{ start: Date; end: Date }>> {
    const { rows } = await this.#overlappingQuery(userId, from, to, except).execute(this.db);
    return rows.map((r) => ({
      start: r.meeting_time,
      end: new Date(r.meeting_time.getTime() + r.duration_minutes * 60_000),
    }));
  }

  /**
   * `overlapping` as one value inside another statement (the owner lease's, see
   * BookingLeaseStore.tryAcquire `read`): `sql` is a scalar subquery, `parse` turns its value into
   * the intervals.
   */
  overlappingRead(
    userId: string,
    from: Date,
    to: Date,
    except: OverlapExcept = {},
  ): { sql: RawBuilder<unknown>; parse: (value: unknown) => Array<{ start: Date; end: Date }> } {
    const q = this.#overlappingQuery(userId, from, to, except);
    return {
      sql: sql`(SELECT COALESCE(json_agg(json_build_array(
                  extract(epoch FROM o.meeting_time) * 1000, o.duration_minutes)), '[]'::json)
                  FROM (${q}) o)`,
      parse: (value) => {
        const pairs = (typeof value === 'string' ? JSON.parse(value) : value) as Array<[number, number]>;
        return pairs.map(([start, minutes]) => ({
          start: new Date(Number(start)),
          end: new Date(Number(start) + Number(minutes) * 60_000),
        }));
      },
    };
  }

  // Plain SQL rather than a query builder: it is on every booking's path (inside the lease statement),
  // and Kysely builds and compiles a raw fragment ~5x faster than the equivalent builder chain.
  // The lower bound on meeting_time keeps the index scan near the window: without it the scan read
  // every past meeting of the owner, as they stay `scheduled` (bench/README.md has the figures).
  #overlappingQuery(userId: string, from: Date, to: Date, except: OverlapExcept) {
    return sql<{ meeting_time: Date; duration_minutes: number }>`
      SELECT meeting_time, duration_minutes
        FROM meetings
       WHERE user_id = ${userId}
         AND status = 'scheduled'
         AND meeting_time < ${to}
         AND meeting_time > ${new Date(from.getTime() - LONGEST_OVERLAP_MS)}
         AND meeting_time + make_interval(mins => duration_minutes) > ${from}
         ${except.key ? sql`AND idempotency_key <> ${except.key}` : sql``}
         ${except.meetingId ? sql`AND meeting_id <> ${except.meetingId}` : sql``}
         ${
           except.cancelled?.length
             ? sql`AND meeting_id NOT IN (${sql.join(except.cancelled.map((id) => sql`${id}`))})`
             : sql``
         }`;
  }

  /** Upcoming scheduled meetings of one conversation, most recently booked first. */
  async upcomingInConversation(conversationId: string, now: Date): Promise<MeetingRow[]> {
    return widen(this.db)
      .selectFrom('meetings')
      .selectAll()
      .where('conversation_id', '=', conversationId)
      .where('status', '=', 'scheduled')
      .where('meeting_time', '>', now)
      .orderBy('created_at', 'desc')
      .orderBy('meeting_id', 'desc')
      .limit(20)
      .execute();
  }

  /** Records a reschedule (in the reply's transaction); only a scheduled meeting moves. */
  async reschedule(
    trx: Transaction<DB>,
    meetingId: string,
    to: { meetingTime: Date; timezone: string | null; durationMinutes?: number },
  ): Promise<MeetingRow | undefined> {
    return widen(trx)
      .updateTable('meetings')
      .set((eb) => ({
        previous_meeting_time: eb.ref('meeting_time'),
        meeting_time: to.meetingTime,
        timezone: to.timezone,
        ...(to.durationMinutes === undefined ? {} : { duration_minutes: to.durationMinutes }),
        rescheduled_at: sql<Date>`now()`,
        reschedule_count: sql<number>`reschedule_count + 1`,
        updated_at: sql<Date>`now()`,
      }))
      .where('meeting_id', '=', meetingId)
      .where('status', '=', 'scheduled')
      .returningAll()
      .executeTakeFirst();
  }

  /** Cancels in the caller's transaction; undefined when it was not scheduled (already cancelled). */
  async cancelIn(trx: Transaction<DB>, meetingId: string): Promise<MeetingRow | undefined> {
    return widen(trx)
      .updateTable('meetings')
      .set({ status: 'cancelled', cancelled_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('meeting_id', '=', meetingId)
      .where('status', '=', 'scheduled')
      .returningAll()
      .executeTakeFirst();
  }

  async byKey(key: string): Promise<Meeting | undefined> {
    return this.db.selectFrom('meetings').selectAll().where('idempotency_key', '=', key).executeTakeFirst();
  }

  async get(meetingId: string): Promise<Meeting | undefined> {
    return this.db.selectFrom('meetings').selectAll().where('meeting_id', '=', meetingId).executeTakeFirst();
  }

  /** These meetings (those that exist), in one statement. */
  async getMany(meetingIds: readonly string[]): Promise<Meeting[]> {
    if (meetingIds.length === 0) return [];
    return this.db.selectFrom('meetings').selectAll().where('meeting_id', 'in', meetingIds).execute();
  }

  async list(f: MeetingFilter): Promise<Meeting[]> {
    let q = this.db
      .selectFrom('meetings')
      .selectAll()
      .where('user_id', '=', f.userId)
      .orderBy('meeting_time')
      .orderBy('meeting_id')
      .limit(f.limit);
    if (f.status) q = q.where('status', '=', f.status);
    if (f.from) q = q.where('meeting_time', '>=', f.from);
    if (f.to) q = q.where('meeting_time', '<', f.to);
    if (f.after) {
      const { time, id } = f.after;
      q = q.where((eb) =>
        eb.or([
          eb('meeting_time', '>', time),
          eb.and([eb('meeting_time', '=', time), eb('meeting_id', '>', id)]),
        ]),
      );
    }
    return q.execute();
  }

  async markCancelled(meetingId: string): Promise<Meeting | undefined> {
    return this.db
      .updateTable('meetings')
      .set({ status: 'cancelled', cancelled_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('meeting_id', '=', meetingId)
      .returningAll()
      .executeTakeFirst();
  }
}
