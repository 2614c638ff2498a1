import { type Kysely, type RawBuilder, type Selectable, sql, type Transaction } from 'kysely';
import type { Agent } from '../domain/agent.js';
import type { BookingSettings } from '../domain/availability.js';
import { toAgent } from './agents.js';
import { newId } from './ids.js';
import type { DB, MessageTable, StoredModelOutput } from './schema.js';
import { widen } from './schema-booking.js';

/** Channel on which a committed message announces itself (payload: conversation id). */
export const MESSAGE_CHANNEL = 'agent_meetings_messages';
/**
 * Channel on which a committed customer message (only) announces itself (payload: conversation id,
 * a space, message id): the queue tells a conversation's next message from its own reply's
 * announcement and from the message its job is answering (src/worker/queue.ts).
 */
export const CUSTOMER_MESSAGE_CHANNEL = 'agent_meetings_customer_messages';

export interface Message {
  messageId: string;
  conversationId: string;
  role: 'customer' | 'assistant';
  content: string;
  createdAt: Date;
}

/**
 * Who sends a customer message: a customer, by the SHA-256 hash of the conversation's token the
 * request carried (the statement compares it with the stored one), or the admin key's holder.
 */
export type MessageAccess = { customerTokenHash: string } | 'admin';

/** What the worker needs to answer one customer message. */
export interface MessageWork {
  message: Message & {
    seq: string;
    status: 'pending' | 'answered' | 'failed' | null;
    attempts: number;
    modelOutput: StoredModelOutput | null;
  };
  conversation: { conversationId: string; customerName: string | null; customerEmail: string | null };
  agent: Agent;
  /** The agent's booking settings, read in the same query (one round trip less per booking). */
  booking: BookingSettings;
  /** The last messages up to and including this one, oldest first (the model's history). */
  history: Message[];
  /** The conversation's scheduled meetings still ahead when the message was sent, newest booked first. */
  upcomingMeetings: UpcomingMeeting[];
  /** How many of the conversation's scheduled meetings are still ahead now (the per-conversation limit). */
  upcomingMeetingCount: number;
}

/** A meeting the customer may refer to (the prompt lists them for reschedule and cancel). */
export interface UpcomingMeeting {
  meetingId: string;
  title: string;
  meetingTime: Date;
  durationMinutes: number;
}

/**
 * Rows written in the reply's own statement (MessageStore.storeReply): named data-modifying CTEs,
 * which may read `reply` (the reply row inserted, empty when another attempt stored it first), and
 * one text value the statement returns (e.g. a webhook delivery's id).
 */
export interface ReplyRows {
  ctes: RawBuilder<unknown>[];
  result?: RawBuilder<string | null>;
}

export interface StoredReply {
  /** The reply, or undefined when another attempt stored it first. */
  message: Message | undefined;
  /** The conversation has another message waiting (JobOutcome.nextWaiting). */
  nextWaiting: boolean;
  /** ReplyRows.result's value. */
  result: string | undefined;
}

/** How many upcoming meetings of a conversation the prompt lists at most. */
const UPCOMING_LISTED = 20;

const toMessage = (
  r: Pick<Selectable<MessageTable>, 'message_id' | 'conversation_id' | 'role' | 'content' | 'created_at'>,
): Message => ({
  messageId: r.message_id,
  conversationId: r.conversation_id,
  role: r.role,
  content: r.content,
  createdAt: r.created_at,
});

/** The columns a stored message comes back with. */
type StoredRow = Pick<
  Selectable<MessageTable>,
  'message_id' | 'conversation_id' | 'role' | 'content' | 'created_at'
>;

/** A message as json_agg renders it. */
type JsonMessage = Omit<
  Pick<Selectable<MessageTable>, 'message_id' | 'conversation_id' | 'role' | 'content'>,
  never
> & {
  created_at: string;
};
/** An upcoming meeting as json_agg renders it. */
interface JsonUpcoming {
  meeting_id: string;
  title: string;
  meeting_time: string;
  duration_minutes: number;
}

/**
 * The data-modifying CTE `saved_output` storing a message's model output (every attempt then acts on
 * the same actions). Only the message's current claim may store it: the message is still pending,
 * `claimAttempts` is its claim number (`attempts`, a later claim of a lapsed one raised it) and no
 * output is stored yet, or this very output (stored once, and sent again identically by the same
 * claim: a lease statement that stored it and then timed out waiting, followed by the answer's next
 * action's lease statement). It joins the first statement that must come before
 * anything acts on the output outside the database: the owner's booking lease
 * (BookingLeaseStore.tryAcquire), taken before any booking, move or cancel. No row in
 * `saved_output`: this attempt is stale (another claim took the message over, or answered it) and
 * must act on nothing.
 */
export function modelOutputCte(
  messageId: string,
  claimAttempts: number,
  output: StoredModelOutput,
): RawBuilder<unknown> {
  const json = JSON.stringify(output);
  return sql`saved_output AS (
        UPDATE messages SET model_output = ${json}::jsonb
         WHERE message_id = ${messageId} AND status = 'pending' AND attempts = ${claimAttempts}
           AND (model_output IS NULL OR model_output = ${json}::jsonb)
        RETURNING message_id)`;
}

/**
 * Everything the worker needs to answer a customer message, as one select (one round trip before the
 * model call; the queue's claim runs it for the messages it claimed, src/store/message-queue.ts): the
 * message, its conversation and agent, the history the model sees (`historyLimit` messages up to
 * this one) and the conversation's upcoming meetings. Messages of a conversation are answered one at
 * a time, so its meetings do not change between this read and the booking that counts them. The
 * caller adds the WHERE.
 *
 * `from`: the messages table, or `inserted`, the rows of a CTE named `ins` that inserts the message in
 * the same statement (MessageQueueStore.insertClaimed). That row is not in the statement's snapshot of
 * the table, so the history is the message's own row (`m`) followed by the earlier ones read from the
 * table, whichever the source.
 */
export function selectWork(db: Kysely<DB>, historyLimit: number, from: 'messages' | 'inserted' = 'messages') {
  const wide = widen(db);
  const source =
    from === 'messages'
      ? wide.selectFrom('messages as m')
      : wide.withTables<{ ins: MessageTable }>().selectFrom('ins as m');
  return source
    .innerJoin('conversations as c', 'c.conversation_id', 'm.conversation_id')
    .innerJoin('agents as a', 'a.agent_id', 'c.agent_id')
    .select([
      'm.message_id',
      'm.conversation_id',
      'm.role',
      'm.content',
      'm.created_at',
      sql<string>`m.seq::text`.as('seq'),
      'm.status',
      'm.attempts',
      'm.model_output',
      'c.customer_name',
      'c.customer_email',
      'a.agent_id',
      'a.user_id',
      'a.name',
      'a.system_prompt',
      'a.timezone',
      'a.model',
      'a.meeting_duration_minutes',
      'a.created_at as agent_created_at',
      'a.updated_at as agent_updated_at',
      'a.working_hours',
      'a.buffer_minutes',
      'a.min_notice_minutes',
      'a.horizon_days',
      // JSON aggregates: timestamps come back as ISO text, turned into Dates below.
      sql<JsonMessage[]>`(
        SELECT coalesce(json_agg(h ORDER BY h.seq), '[]'::json)
          FROM (SELECT m.message_id, m.conversation_id, m.role, m.content, m.created_at, m.seq
                UNION ALL
                (SELECT message_id, conversation_id, role, content, created_at, seq
                   FROM messages
                  WHERE conversation_id = m.conversation_id AND seq < m.seq
                  ORDER BY seq DESC
                  LIMIT ${historyLimit - 1})) h)`.as('history'),
      sql<JsonUpcoming[]>`(
        SELECT coalesce(json_agg(u ORDER BY u.created_at DESC, u.meeting_id DESC), '[]'::json)
          FROM (SELECT meeting_id, title, meeting_time, duration_minutes, created_at
                  FROM meetings
                 WHERE conversation_id = m.conversation_id
                   AND status = 'scheduled'
                   AND meeting_time > m.created_at
                 ORDER BY created_at DESC, meeting_id DESC
                 LIMIT ${UPCOMING_LISTED}) u)`.as('upcoming'),
      sql<number>`(
        SELECT count(*)::int FROM meetings
         WHERE conversation_id = m.conversation_id
           AND status = 'scheduled'
           AND meeting_time > now())`.as('upcoming_count'),
    ]);
}

type WorkRow = Awaited<ReturnType<ReturnType<typeof selectWork>['executeTakeFirstOrThrow']>>;

/** A selectWork row as the worker uses it. */
export function toWork(r: WorkRow): MessageWork {
  // The row carries the message's created_at; the agent's timestamps come aliased.
  const agent = toAgent({ ...r, created_at: r.agent_created_at, updated_at: r.agent_updated_at });
  return {
    message: {
      ...toMessage(r),
      seq: r.seq,
      status: r.status,
      attempts: r.attempts,
      modelOutput: r.model_output,
    },
    conversation: {
      conversationId: r.conversation_id,
      customerName: r.customer_name,
      customerEmail: r.customer_email,
    },
    agent,
    booking: agent.booking!, // toAgent always reads it
    history: r.history.map((h) => toMessage({ ...h, created_at: new Date(h.created_at) })),
    upcomingMeetings: r.upcoming.map((u) => ({
      meetingId: u.meeting_id,
      title: u.title,
      meetingTime: new Date(u.meeting_time),
      durationMinutes: u.duration_minutes,
    })),
    upcomingMeetingCount: r.upcoming_count,
  };
}

/**
 * A CTE (`order_lock`) that holds the conversation's message order until the statement's transaction
 * commits: every statement that inserts a message reads it before the row is formed, so before its
 * `seq` is drawn. Without it `seq` would follow insert order, not commit order: a customer message
 * stored while a reply's transaction was still open (a booking's reply waiting on the owner's lease,
 * say) took a later `seq` and committed first; a live feed or an `?after=` poll then moved its cursor
 * past it, and the reply, committed a moment later with the earlier `seq`, was never shown. With it,
 * the later insert waits for that commit (milliseconds) and draws its `seq` after the reply's.
 */
export function orderLock(conversationId: unknown): RawBuilder<unknown> {
  return sql`order_lock AS (
        SELECT pg_advisory_xact_lock(hashtextextended('agent-meetings:messages:' || ${conversationId}::text, 0)))`;
}

export class MessageStore {
  constructor(private readonly db: Kysely<DB>) {}

  /**
   * Stores a customer message, which is also its job (a pending message is what the queue claims,
   * src/store/message-queue.ts), and announces it (live feeds, and the queue's wake-up on
   * CUSTOMER_MESSAGE_CHANNEL), in one statement: stored and queued together, or not at all.
   */
  async insertCustomerMessage(
    conversationId: string,
    content: string,
    access: MessageAccess,
  ): Promise<Message | undefined> {
    // The conversation's check is this statement's own: the message is stored only into a
    // conversation that exists and, for a customer, whose token hash matches (a comparison of
    // SHA-256 hashes: its timing says nothing usable about the token). No row: refused.
    const hash = access === 'admin' ? null : access.customerTokenHash;
    const r = await sql<StoredRow>`
      WITH ${orderLock(conversationId)}, ins AS (
        INSERT INTO messages (message_id, conversation_id, role, content, status)
        SELECT ${newId('msg')}, c.conversation_id, 'customer', ${content}, 'pending'
          FROM conversations c CROSS JOIN order_lock
         WHERE c.conversation_id = ${conversationId}
           AND (${hash}::text IS NULL OR c.customer_token_hash = ${hash}::text)
        RETURNING message_id, conversation_id, role, content, created_at
      ), announced AS (
        SELECT pg_notify(agent_meetings_channel(${MESSAGE_CHANNEL}), conversation_id),
               pg_notify(agent_meetings_channel(${CUSTOMER_MESSAGE_CHANNEL}), conversation_id || ' ' || message_id)
          FROM ins
      )
      SELECT ins.*, (SELECT count(*) FROM announced) AS announced FROM ins`.execute(this.db);
    const row = r.rows[0];
    return row ? toMessage(row) : undefined;
  }

  /** Messages of a conversation in order, after a given message (exclusive) when set. */
  async list(
    conversationId: string,
    options: { afterMessageId?: string | undefined; limit: number },
  ): Promise<Message[] | undefined> {
    let q = this.db
      .selectFrom('messages')
      .select(['message_id', 'conversation_id', 'role', 'content', 'created_at'])
      .where('conversation_id', '=', conversationId)
      .orderBy('seq')
      .limit(options.limit);
    if (options.afterMessageId !== undefined) {
      const after = await this.db
        .selectFrom('messages')
        .select('seq')
        .where('message_id', '=', options.afterMessageId)
        .where('conversation_id', '=', conversationId)
        .executeTakeFirst();
      if (!after) return undefined;
      q = q.where('seq', '>', after.seq);
    }
    return (await q.execute()).map(toMessage);
  }

  /** Customer messages not answered yet, and how long the oldest has waited (metrics). */
  async backlog(): Promise<{ depth: number; oldestSeconds: number }> {
    const r = await sql<{ depth: number; oldest: number | null }>`
      SELECT count(*)::int AS depth,
             extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest
        FROM messages
       WHERE status = 'pending'`.execute(this.db);
    const row = r.rows[0];
    return { depth: row?.depth ?? 0, oldestSeconds: row?.oldest ?? 0 };
  }

  async latest(conversationId: string): Promise<Message | undefined> {
    const r = await this.db
      .selectFrom('messages')
      .select(['message_id', 'conversation_id', 'role', 'content', 'created_at'])
      .where('conversation_id', '=', conversationId)
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r ? toMessage(r) : undefined;
  }

  /**
   * Stores the assistant's answer to a customer message and closes that message, in one statement:
   * on its own (autocommit: the reply is visible once this resolves) or in the caller's transaction.
   * The unique index on reply_to makes this at-most-once: a second call (a retried job that raced a
   * slow commit) inserts nothing and `message` is undefined.
   *
   * `also` adds rows to the same statement (ReplyRows): a booking's meeting row, its webhook
   * delivery and the owner's lease release, so a booking's reply costs one round trip and one commit.
   */
  async storeReply(
    e: Kysely<DB> | Transaction<DB>,
    input: {
      conversationId: string;
      replyTo: string;
      content: string;
      outcome: 'answered' | 'failed';
      error?: string;
      /**
       * The claim the answering run holds (`attempts` of its claim): the reply is stored only while
       * that claim is still the message's. A run whose claim lapsed and was taken over (its process
       * stalled) then stores nothing, even a fallback: the current claim answers. Undefined: unfenced.
       */
      claim?: number;
    },
    also?: ReplyRows,
  ): Promise<StoredReply> {
    // Insert the reply, close the customer message and announce the conversation (the last two only
    // when the reply was inserted), and tell whether a next message waits. The UPDATE touches another
    // row than the INSERT, so both data-modifying parts run on one snapshot without seeing each other,
    // as PostgreSQL requires; on that snapshot the message being answered is still pending, hence
    // `<>`. A plain (SELECT) CTE runs only if the statement reads it, so the final SELECT reads the
    // NOTIFY count; data-modifying CTEs (`closed`, `also`'s) run once, whether read or not. The final
    // SELECT returns one row (the reply's columns are null when another attempt stored it first).
    const extra = also?.ctes.length ? sql`, ${sql.join(also.ctes)}` : sql``;
    // FOR UPDATE: the row is read at its latest version (a claim that committed after this statement's
    // snapshot is seen) and stays locked until this commits, so a new claim waits and then finds the
    // message answered.
    const fence =
      input.claim === undefined
        ? sql``
        : sql`mine AS (
        SELECT message_id FROM messages
         WHERE message_id = ${input.replyTo} AND attempts = ${input.claim} AND status = 'pending'
           FOR UPDATE
      ), `;
    const fenced = input.claim === undefined ? sql`` : sql`WHERE EXISTS (SELECT 1 FROM mine)`;
    const result = also?.result ?? sql`NULL::text`;
    const r = await sql<
      (StoredRow | { [K in keyof StoredRow]: null }) & { next: boolean; also: string | null }
    >`
      WITH ${fence}${orderLock(input.conversationId)}, reply AS (
        INSERT INTO messages (message_id, conversation_id, role, content, reply_to)
        SELECT ${newId('msg')}, ${input.conversationId}, 'assistant', ${input.content}, ${input.replyTo}
          FROM order_lock
        ${fenced}
        ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING
        RETURNING message_id, conversation_id, role, content, created_at
      ), closed AS (
        UPDATE messages
           SET status = ${input.outcome},
               processed_at = clock_timestamp(),
               last_error = COALESCE(${input.error?.slice(0, 2000) ?? null}::text, last_error)
         WHERE message_id = ${input.replyTo}
           AND EXISTS (SELECT 1 FROM reply)
      ), announced AS (
        SELECT pg_notify(agent_meetings_channel(${MESSAGE_CHANNEL}), conversation_id) FROM reply
      )${extra}
      SELECT reply.*,
             (SELECT count(*) FROM announced) AS notified,
             EXISTS (SELECT 1 FROM messages
                      WHERE conversation_id = ${input.conversationId}
                        AND status = 'pending'
                        AND message_id <> ${input.replyTo}) AS next,
             ${result} AS also
        FROM (SELECT 1) AS one LEFT JOIN reply ON true`.execute(e);
    const row = r.rows[0];
    return {
      message: row?.message_id ? toMessage(row as StoredRow) : undefined,
      nextWaiting: row?.next === true,
      result: row?.also ?? undefined,
    };
  }
}
