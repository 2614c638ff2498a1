import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import type { Kysely } from 'kysely';
import { Type } from 'typebox';
import { isStorableInstant, parseZonedDateTime } from '../../domain/calendar-connection.js';
import type { CalendarGateway } from '../../domain/calendar-gateway.js';
import { CalendarNotConnected, Conflict, InvalidInput, NotFound, Upstream } from '../../domain/errors.js';
import { meetingEventData } from '../../domain/owner-events.js';
import { WHOLE_OWNER } from '../../store/booking-leases.js';
import type { Meeting, MeetingStore } from '../../store/meetings.js';
import type { DB } from '../../store/schema.js';
import type { OwnerEventSink } from '../../worker/owner-events.js';
import type { OwnerBookingLock, OwnerLease } from '../../worker/owner-lock.js';
import { adminOnly } from '../auth.js';
import { errorResponses, IdString, UserIdParams } from '../schemas.js';

export interface MeetingRouteDeps {
  adminKey: string;
  meetings: MeetingStore;
  calendar: CalendarGateway;
  /** With both: the cancellation and its meeting.cancelled webhook commit together. */
  db?: Kysely<DB>;
  events?: OwnerEventSink;
  /**
   * The owner's booking lock: a cancel holds all of the owner's time around its delete, so it never
   * lands between a chat move's change at Google and its reply's commit (a chat move holds only its
   * new time, hence all of it here), which would confirm a move of a meeting just cancelled.
   */
  lock?: OwnerBookingLock;
}

const MeetingJson = Type.Object({
  meeting_id: Type.String(),
  user_id: Type.String(),
  agent_id: Type.Union([Type.String(), Type.Null()]),
  conversation_id: Type.String(),
  message_id: Type.Union([Type.String(), Type.Null()]),
  google_event_id: Type.String(),
  title: Type.String(),
  customer_name: Type.Union([Type.String(), Type.Null()]),
  customer_email: Type.Union([Type.String(), Type.Null()]),
  participants: Type.Array(Type.String()),
  meeting_time: Type.String(),
  duration_minutes: Type.Integer(),
  timezone: Type.Union([Type.String(), Type.Null()]),
  meet_link: Type.Union([Type.String(), Type.Null()]),
  html_link: Type.Union([Type.String(), Type.Null()]),
  status: Type.Union([Type.Literal('scheduled'), Type.Literal('cancelled')]),
  cancelled_at: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
  updated_at: Type.String(),
});

export function meetingJson(m: Meeting) {
  return {
    meeting_id: m.meeting_id,
    user_id: m.user_id,
    agent_id: m.agent_id,
    conversation_id: m.conversation_id,
    message_id: m.message_id,
    google_event_id: m.google_event_id,
    title: m.title,
    customer_name: m.customer_name,
    customer_email: m.customer_email,
    participants: m.participants,
    meeting_time: m.meeting_time.toISOString(),
    duration_minutes: m.duration_minutes,
    timezone: m.timezone,
    meet_link: m.meet_link,
    html_link: m.html_link,
    status: m.status,
    cancelled_at: m.cancelled_at?.toISOString() ?? null,
    created_at: m.created_at.toISOString(),
    updated_at: m.updated_at.toISOString(),
  };
}

const encodeCursor = (m: Meeting) =>
  Buffer.from(`${m.meeting_time.toISOString()}|${m.meeting_id}`).toString('base64url');
function decodeCursor(cursor: string): { time: Date; id: string } {
  const [time, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const date = new Date(time ?? '');
  // Exactly the form encodeCursor writes: a forged time the database cannot hold (year -10000, year
  // 0) is a 400 here rather than a 500 from the query.
  if (
    !id ||
    !/^mtg_[a-z0-9]+$/.test(id) ||
    !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(time ?? '') ||
    Number.isNaN(date.getTime()) ||
    !isStorableInstant(date) ||
    date.toISOString() !== time
  ) {
    throw new InvalidInput('cursor is not a cursor returned by this endpoint');
  }
  return { time: date, id };
}

/** Owner API for meetings (admin key). */
export const meetingRoutes: FastifyPluginAsyncTypebox<MeetingRouteDeps> = async (app, deps) => {
  // onRequest: credentials are checked before any validation, so a caller without the key learns
  // nothing about the routes' schemas.
  adminOnly(app, deps.adminKey);

  app.get(
    '/api/users/:user_id/meetings',
    {
      schema: {
        tags: ['meetings'],
        summary: 'An owner’s meetings by time, filterable and paginated',
        params: UserIdParams,
        querystring: Type.Object({
          status: Type.Optional(Type.Union([Type.Literal('scheduled'), Type.Literal('cancelled')])),
          from: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 with zone, inclusive' })),
          to: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 with zone, exclusive' })),
          limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
          cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        }),
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            count: Type.Integer(),
            meetings: Type.Array(MeetingJson),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const q = req.query;
      const from = q.from === undefined ? undefined : parseZonedDateTime(q.from, 'from');
      const to = q.to === undefined ? undefined : parseZonedDateTime(q.to, 'to');
      if (from && to && from >= to) throw new InvalidInput('from must be before to');
      const rows = await deps.meetings.list({
        userId: req.params.user_id,
        status: q.status,
        from,
        to,
        limit: q.limit + 1,
        after: q.cursor === undefined ? undefined : decodeCursor(q.cursor),
      });
      const page = rows.slice(0, q.limit);
      const last = page.at(-1);
      return {
        success: true as const,
        count: page.length,
        meetings: page.map(meetingJson),
        next_cursor: rows.length > q.limit && last ? encodeCursor(last) : null,
      };
    },
  );

  const MeetingParams = Type.Object({ meeting_id: IdString });

  app.get(
    '/api/meetings/:meeting_id',
    {
      schema: {
        tags: ['meetings'],
        summary: 'One meeting',
        params: MeetingParams,
        response: {
          200: Type.Object({ success: Type.Literal(true), meeting: MeetingJson }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const m = await deps.meetings.get(req.params.meeting_id);
      if (!m) throw new NotFound(`No meeting ${req.params.meeting_id}`);
      return { success: true as const, meeting: meetingJson(m) };
    },
  );

  app.post(
    '/api/meetings/:meeting_id/cancel',
    {
      schema: {
        tags: ['meetings'],
        summary: 'Cancel: deletes the Google event (attendees are notified) and marks the meeting cancelled',
        params: MeetingParams,
        response: {
          200: Type.Object({ success: Type.Literal(true), meeting: MeetingJson }),
          502: { $ref: 'ErrorBody#' },
          503: { $ref: 'ErrorBody#' },
          ...errorResponses,
        },
      },
    },
    async (req, reply) => {
      const found = await deps.meetings.get(req.params.meeting_id);
      if (!found) throw new NotFound(`No meeting ${req.params.meeting_id}`);
      if (found.status === 'cancelled') return { success: true as const, meeting: meetingJson(found) };
      let lease: OwnerLease | undefined;
      try {
        lease = await deps.lock?.acquire(found.user_id, WHOLE_OWNER);
      } catch (err) {
        if (!(err instanceof Upstream)) throw err;
        req.log.warn({ err, meeting_id: found.meeting_id }, 'the owner’s time stayed taken');
        return busy(reply);
      }
      try {
        return await cancel(req.params.meeting_id, req.log, reply, lease);
      } finally {
        await lease?.release();
      }
    },
  );

  const busy = (reply: FastifyReply) =>
    reply.code(503).send({
      success: false,
      error: 'A booking of this owner is in progress and did not finish in time; try again',
    });

  /** The cancel itself, holding the owner's time when there is a lock. */
  async function cancel(meetingId: string, log: FastifyBaseLogger, reply: FastifyReply, lease?: OwnerLease) {
    // Read again under the hold: a chat cancel or move may have committed while this waited.
    const m = await deps.meetings.get(meetingId);
    if (!m) throw new NotFound(`No meeting ${meetingId}`);
    if (m.status === 'cancelled') return { success: true as const, meeting: meetingJson(m) };
    try {
      // This process may have stalled since it took the hold: still ours, or no change is made.
      await lease?.confirm();
    } catch {
      return busy(reply);
    }
    try {
      await deps.calendar.deleteEvent(m.user_id, m.google_event_id);
    } catch (err) {
      if (err instanceof CalendarNotConnected) {
        throw new Conflict(
          `Cannot cancel: the owner's Google Calendar is ${err.reason === 'revoked' ? 'revoked' : 'not connected'}; reconnect it first`,
        );
      }
      if (err instanceof Upstream) {
        log.error({ err, meeting_id: m.meeting_id }, 'Google delete failed');
        return reply
          .code(502)
          .send({ success: false, error: 'Google Calendar did not accept the cancellation; try again' });
      }
      throw err;
    }
    const { db, events } = deps;
    const cancelled =
      db && events
        ? await db.transaction().execute(async (trx) => {
            const row = await deps.meetings.cancelIn(trx, m.meeting_id);
            if (row) {
              await events.emit(trx, {
                userId: row.user_id,
                type: 'meeting.cancelled',
                key: `meeting.cancelled:${row.meeting_id}`,
                data: meetingEventData(row),
              });
            }
            return row;
          })
        : await deps.meetings.markCancelled(m.meeting_id);
    return { success: true as const, meeting: meetingJson(cancelled ?? m) };
  }
};
