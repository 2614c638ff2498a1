import { type Kysely, type Selectable, sql, type Transaction } from 'kysely';
import type { Agent } from '../domain/agent.js';
import type { BookingSettings } from '../domain/availability.js';
import { bookingOf } from './agents.js';
import { newId } from './ids.js';
import type { DB, MessageTable, StoredModelOutput } from './schema.js';
import { widen } from './schema-booking.js';

/** Channel on which a committed message announces itself (payload: conversation id). */
export const MESSAGE_CHANNEL = 'agent_meetings_messages';

export interface Message {
  messageId: string;
  conversationId: string;
  role: 'customer' | 'assistant';
  content: string;
  createdAt: Date;
}

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
}

const toMessage = (
  r: Pick<Selectable<MessageTable>, 'message_id' | 'conversation_id' | 'role' | 'content' | 'created_at'>,
): Message => ({
  messageId: r.message_id,
  conversationId: r.conversation_id,
  role: r.role,
  content: r.content,
  createdAt: r.created_at,
});

type Executor = Kysely<DB> | Transaction<DB>;

export class MessageStore {
  constructor(private readonly db: Kysely<DB>) {}

  async insertCustomerMessage(
    trx: Transaction<DB>,
    conversationId: string,
    content: string,
  ): Promise<Message> {
    const row = await trx
      .insertInto('messages')
      .values({
        message_id: newId('msg'),
        conversation_id: conversationId,
        role: 'customer',
        content,
        status: 'pending',
      })
      .returning(['message_id', 'conversation_id', 'role', 'content', 'created_at'])
      .executeTakeFirstOrThrow();
    await this.announce(trx, conversationId);
    return toMessage(row);
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

  async loadWork(messageId: string): Promise<MessageWork | undefined> {
    const r = await widen(this.db)
      .selectFrom('messages as m')
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
      ])
      .where('m.message_id', '=', messageId)
      .executeTakeFirst();
    if (!r) return undefined;
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
      agent: {
        agentId: r.agent_id,
        userId: r.user_id,
        name: r.name,
        systemPrompt: r.system_prompt,
        timezone: r.timezone,
        model: r.model,
        meetingDurationMinutes: r.meeting_duration_minutes,
        createdAt: r.agent_created_at,
        updatedAt: r.agent_updated_at,
      },
      booking: bookingOf(r),
    };
  }

  /** The last `limit` messages up to and including the one with `uptoSeq`, oldest first. */
  async history(conversationId: string, uptoSeq: string, limit: number): Promise<Message[]> {
    const rows = await this.db
      .selectFrom('messages')
      .select(['message_id', 'conversation_id', 'role', 'content', 'created_at'])
      .where('conversation_id', '=', conversationId)
      .where('seq', '<=', uptoSeq)
      .orderBy('seq', 'desc')
      .limit(limit)
      .execute();
    return rows.reverse().map(toMessage);
  }

  async recordAttempt(messageId: string, error?: string): Promise<void> {
    await this.db
      .updateTable('messages')
      .set({
        attempts: sql<number>`attempts + 1`,
        ...(error !== undefined ? { last_error: error.slice(0, 2000) } : {}),
      })
      .where('message_id', '=', messageId)
      .execute();
  }

  /**
   * Keeps the first model output stored for a message and returns the one that is stored: ours, or
   * that of a concurrent attempt that saved first (everyone then acts on the same output).
   */
  async saveModelOutput(messageId: string, output: StoredModelOutput): Promise<StoredModelOutput> {
    const saved = await this.db
      .updateTable('messages')
      .set({ model_output: JSON.stringify(output) })
      .where('message_id', '=', messageId)
      .where('model_output', 'is', null)
      .returning('model_output')
      .executeTakeFirst();
    if (saved?.model_output) return saved.model_output;
    const existing = await this.db
      .selectFrom('messages')
      .select('model_output')
      .where('message_id', '=', messageId)
      .executeTakeFirst();
    return existing?.model_output ?? output;
  }

  /**
   * Stores the assistant's answer to a customer message and closes that message, in the caller's
   * transaction. The unique index on reply_to makes this at-most-once: a second call (a retried job
   * that raced a slow commit) inserts nothing and returns undefined.
   */
  async storeReply(
    trx: Transaction<DB>,
    input: {
      conversationId: string;
      replyTo: string;
      content: string;
      outcome: 'answered' | 'failed';
      error?: string;
    },
  ): Promise<Message | undefined> {
    const row = await trx
      .insertInto('messages')
      .values({
        message_id: newId('msg'),
        conversation_id: input.conversationId,
        role: 'assistant',
        content: input.content,
        reply_to: input.replyTo,
      })
      .onConflict((oc) => oc.column('reply_to').where('reply_to', 'is not', null).doNothing())
      .returning(['message_id', 'conversation_id', 'role', 'content', 'created_at'])
      .executeTakeFirst();
    if (!row) return undefined;
    await trx
      .updateTable('messages')
      .set({
        status: input.outcome,
        processed_at: sql<Date>`clock_timestamp()`,
        ...(input.error !== undefined ? { last_error: input.error.slice(0, 2000) } : {}),
      })
      .where('message_id', '=', input.replyTo)
      .execute();
    await this.announce(trx, input.conversationId);
    return toMessage(row);
  }

  /** Wakes SSE listeners in every process once the transaction commits. */
  private async announce(trx: Executor, conversationId: string): Promise<void> {
    await sql`SELECT pg_notify(${MESSAGE_CHANNEL}, ${conversationId})`.execute(trx);
  }
}
