import { type Kysely, sql } from 'kysely';
import { newId } from './ids.js';
import {
  CUSTOMER_MESSAGE_CHANNEL,
  MESSAGE_CHANNEL,
  type Message,
  type MessageWork,
  orderLock,
  selectWork,
  toWork,
} from './messages.js';
import type { DB, StoredModelOutput } from './schema.js';
import { StatementTemplate } from './statement-template.js';

/**
 * The message queue's SQL (migration 007). A pending customer message is its own job: no second row
 * to insert with it, and its reply's statement, which closes it, is the job's completion.
 *
 * - A conversation's messages are answered one at a time, in order: only a conversation's oldest
 *   pending message (its head) is claimed, and only while no other message of the conversation is
 *   claimed. The partial unique index `messages_one_claim` makes that hold whatever concurrent claims
 *   do (two statements whose snapshots disagree on a conversation's head: the second claim fails as
 *   a whole, `isClaimConflict`, and its worker fetches again).
 * - A claim holds the message until `claimed_until`; the worker extends it while it works (`extend`),
 *   so a claim whose process died lapses and the message is claimed again (at-least-once).
 * - `attempts` counts claims; it is also the claim's fence: `extend` and `release` act only on the
 *   claim they name, never on a later one.
 * - A failed attempt gives its claim back with a backoff (`run_after`); the conversation waits.
 */
export interface Claim {
  messageId: string;
  /** The message's `attempts` after this claim: 1 on the first. */
  attempts: number;
}

export interface ClaimedWork {
  claim: Claim;
  conversationId: string;
  /** What answering it needs; absent when its row could not be read (`error`, e.g. corrupt settings). */
  work?: MessageWork;
  error?: unknown;
}

export class MessageQueueStore {
  readonly #claimTemplates = new Map<number, ClaimTemplate>();
  readonly #insertClaimedTemplates = new Map<number, InsertClaimedTemplate>();

  constructor(private readonly db: Kysely<DB>) {}

  /**
   * Claims up to `limit` ready messages, each its conversation's next, oldest first, for
   * `leaseSeconds`, and returns what answering each needs (the
   * message, its conversation and agent, history, meetings): one statement per fetch, not a fetch
   * then a read per job. Rows locked by a concurrent claim are skipped, not waited for.
   */
  async claim(limit: number, leaseSeconds: number, historyLimit: number): Promise<ClaimedWork[]> {
    // The claim commits without waiting for the WAL flush (SET LOCAL, as set_config(..., true)): a
    // PostgreSQL crash can lose it, which only makes the message claimable again (at-least-once), and
    // the pickup path saves a flush (~1.6 ms on the bench machine). The reply, which records the
    // outcome, commits synchronously, and WAL is sequential: that flush makes the claim durable too.
    const r = await this.#claimTemplate(historyLimit).execute(this.db, { limit, leaseSeconds });
    // Each row on its own: one that cannot be read (its agent's stored settings corrupt, say) must not
    // leave the others of its batch claimed and never run.
    return r.rows.map((row) => {
      const claim = { messageId: row.message_id, attempts: row.claim_attempts };
      try {
        return {
          claim,
          conversationId: row.conversation_id,
          // The claim's own view of the row, not the statement's snapshot (what the main query reads
          // `m` from): a run whose claim lapsed may have stored its model output (and be acting on it)
          // after that snapshot was taken and before this claim locked the row. Read from the
          // snapshot, this run would see no output and ask the model again, and answer from another.
          work: toWork({ ...row, attempts: row.claim_attempts, model_output: row.claim_model_output }),
        };
      } catch (error) {
        return { claim, conversationId: row.conversation_id, error };
      }
    });
  }

  /**
   * Stores a customer message for a process that took its POST and holds a free worker slot
   * (JobQueue.accept), in one statement, and claims it there when it can: no claim statement and no
   * wake-up hop before that slot runs it.
   *
   * - The conversation idle (no pending message in the statement's snapshot, so this message is its
   *   head and none of its messages is claimed): stored claimed for `leaseSeconds` (attempts 1), and
   *   `work` is what answering it needs. Announced on the feed's channel only: no worker needs waking
   *   (no job of its conversation is running that would have to fetch again).
   * - A message of it pending: stored unclaimed and announced to the workers, as
   *   MessageStore.insertCustomerMessage does; `work` is absent and the queue claims it in turn.
   * - A concurrent insert of the same conversation claimed first (both snapshots saw it idle): this
   *   row conflicts on `messages_one_claim` (ON CONFLICT DO NOTHING waits for that insert's commit)
   *   and nothing is stored; `message` is absent and the caller stores it unclaimed.
   *
   * The conversation's check is the statement's own, as in insertCustomerMessage: undefined when it
   * does not exist or, for a customer, its token hash differs.
   *
   * Order within a conversation stays one at a time (the unique index), and answers follow `seq`
   * except for messages sent at once: a message stored unclaimed behind a pending one, whose statement
   * commits after this one's snapshot saw that pending one answered, has the lower `seq` but is
   * answered after this one. Its history, like any message's, is the conversation as stored before
   * it (`seq`), so it does not show this one's exchange: the customer sent it first.
   */
  async insertClaimed(
    conversationId: string,
    content: string,
    customerTokenHash: string | null,
    leaseSeconds: number,
    historyLimit: number,
  ): Promise<{ message?: Message; work?: ClaimedWork } | undefined> {
    const r = await this.#insertClaimedTemplate(historyLimit).execute(this.db, {
      conversationId,
      customerTokenHash,
      messageId: newId('msg'),
      content,
      leaseSeconds,
    });
    const row = r.rows[0];
    if (!row) return undefined;
    if (row.queued_id) {
      return {
        message: {
          messageId: row.queued_id,
          conversationId,
          role: 'customer',
          content,
          createdAt: row.queued_at!,
        },
      };
    }
    if (!row.message_id) return {};
    const claim = { messageId: row.message_id, attempts: 1 };
    const message: Message = {
      messageId: row.message_id,
      conversationId: row.conversation_id,
      role: row.role,
      content: row.content,
      createdAt: row.created_at,
    };
    try {
      return { message, work: { claim, conversationId, work: toWork(row) } };
    } catch (error) {
      // Stored and claimed, but its agent's settings cannot be read: the queue retries it like any
      // claimed message it cannot read (JobQueue's UnreadableHandler).
      return { message, work: { claim, conversationId, error } };
    }
  }

  /** claim's statement, compiled once per history length. */
  #claimTemplate(historyLimit: number): ClaimTemplate {
    let t = this.#claimTemplates.get(historyLimit);
    if (!t) {
      const work = selectWork(this.db, historyLimit)
        .innerJoin(
          sql<{ message_id: string; attempts: number; model_output: StoredModelOutput | null }>`claimed`.as(
            'q',
          ),
          'q.message_id',
          'm.message_id',
        )
        .select([
          sql<number>`q.attempts`.as('claim_attempts'),
          sql<StoredModelOutput | null>`q.model_output`.as('claim_model_output'),
        ]);
      // The claim commits synchronously, as everything its number guards does. A claim a crash lost
      // would leave `attempts` one lower, the next claim would get the same number as the run still
      // holding it, and every check by claim number (the model output's, the reply's, the
      // heartbeat's) would pass for both runs: one could book while the other answers.
      //
      // Pending messages in storage order (an index scan that stops once `limit` rows are locked; the
      // pending rows it passes over on the way, claimed, waiting out a backoff or behind their
      // conversation's head, are read too, so an outage's backlog of retries costs every claim until
      // it drains). A message is claimable when it is ready (no live claim; past its backoff) and
      // either holds a lapsed claim (its conversation is its own) or is its conversation's head: no
      // earlier pending message, and no other message of the conversation claimed. The statement
      // reads one snapshot; a row claimed or answered meanwhile is re-checked when locked
      // (PostgreSQL re-evaluates the WHERE on its latest version) and dropped. Rows another claim
      // has locked are skipped, not waited for.
      t = new StatementTemplate<ClaimValues, ClaimRow>(
        this.db,
        (v) => sql`
        WITH picked AS (
          SELECT m.message_id
            FROM messages m
           WHERE m.status = 'pending'
             AND (m.claimed_until IS NULL OR m.claimed_until < now())
             AND (m.run_after IS NULL OR m.run_after <= now())
             AND (m.claimed_until IS NOT NULL
                  OR NOT EXISTS (SELECT 1 FROM messages e
                                  WHERE e.conversation_id = m.conversation_id
                                    AND e.status = 'pending'
                                    AND e.message_id <> m.message_id
                                    AND (e.seq < m.seq OR e.claimed_until IS NOT NULL)))
           ORDER BY m.seq
           LIMIT ${v.limit}
             FOR UPDATE SKIP LOCKED
        ), claimed AS (
          UPDATE messages m
             SET claimed_until = now() + make_interval(secs => ${v.leaseSeconds}),
                 attempts = m.attempts + 1
           WHERE m.message_id IN (SELECT message_id FROM picked)
          RETURNING m.message_id, m.attempts, m.model_output
        )
        ${work}`,
      );
      this.#claimTemplates.set(historyLimit, t);
    }
    return t;
  }

  /** insertClaimed's statement, compiled once per history length (it is on every POST's path). */
  #insertClaimedTemplate(historyLimit: number): InsertClaimedTemplate {
    let t = this.#insertClaimedTemplates.get(historyLimit);
    if (!t) {
      const work = selectWork(this.db, historyLimit, 'inserted');
      t = new StatementTemplate<InsertClaimedValues, InsertClaimedRow>(
        this.db,
        (v) => sql`
          WITH ${orderLock(v.conversationId)}, conv AS (
            SELECT c.conversation_id,
                   NOT EXISTS (SELECT 1 FROM messages e
                                WHERE e.conversation_id = c.conversation_id AND e.status = 'pending') AS free
              FROM conversations c CROSS JOIN order_lock
             WHERE c.conversation_id = ${v.conversationId}
               AND (${v.customerTokenHash}::text IS NULL OR c.customer_token_hash = ${v.customerTokenHash}::text)
          ), ins AS (
            INSERT INTO messages (message_id, conversation_id, role, content, status, claimed_until, attempts)
            SELECT ${v.messageId}, conversation_id, 'customer', ${v.content}, 'pending',
                   now() + make_interval(secs => ${v.leaseSeconds}), 1
              FROM conv
             WHERE free
            ON CONFLICT (conversation_id) WHERE status = 'pending' AND claimed_until IS NOT NULL DO NOTHING
            RETURNING *
          ), queued AS (
            INSERT INTO messages (message_id, conversation_id, role, content, status)
            SELECT ${v.messageId}, conversation_id, 'customer', ${v.content}, 'pending'
              FROM conv
             WHERE NOT free
            RETURNING message_id, conversation_id, created_at
          ), announced AS (
            SELECT pg_notify(agent_meetings_channel(${MESSAGE_CHANNEL}), conversation_id) FROM ins
            UNION ALL
            SELECT pg_notify(agent_meetings_channel(${MESSAGE_CHANNEL}), conversation_id) FROM queued
            UNION ALL
            SELECT pg_notify(agent_meetings_channel(${CUSTOMER_MESSAGE_CHANNEL}), conversation_id || ' ' || message_id)
              FROM queued
          )
          SELECT (SELECT count(*) FROM announced)::int AS announced,
                 queued.message_id AS queued_id, queued.created_at AS queued_at, w.*
            FROM conv
            LEFT JOIN (${work}) AS w ON true
            LEFT JOIN queued ON true`,
      );
      this.#insertClaimedTemplates.set(historyLimit, t);
    }
    return t;
  }

  /**
   * Extends these claims (the worker's heartbeat); a claim since replaced, given back or closed is left
   * alone (a heartbeat that reaches the database after its claim's release must not hold the message).
   * Returns the claims it extended: the others are no longer held (taken over, answered, given back).
   */
  async extend(claims: Claim[], leaseSeconds: number): Promise<Claim[]> {
    if (claims.length === 0) return [];
    const r = await sql<{ message_id: string; attempts: number }>`
      UPDATE messages m
         SET claimed_until = now() + make_interval(secs => ${leaseSeconds})
        FROM json_to_recordset(${JSON.stringify(claims)}::json) AS c("messageId" text, attempts int)
       WHERE m.message_id = c."messageId"
         AND m.attempts = c.attempts
         AND m.claimed_until IS NOT NULL
         AND m.status = 'pending'
   RETURNING m.message_id, m.attempts`.execute(this.db);
    return r.rows.map((row) => ({ messageId: row.message_id, attempts: row.attempts }));
  }

  /**
   * Gives a claim back: the message is claimed again after `delaySeconds` (0: at once), with the
   * attempt's error kept. A no-op if the claim was replaced or the message answered meanwhile.
   */
  async release(claim: Claim, delaySeconds: number, error?: string): Promise<boolean> {
    const r = await sql`
      UPDATE messages
         SET claimed_until = NULL,
             run_after = CASE WHEN ${delaySeconds}::float8 > 0
                              THEN now() + make_interval(secs => ${delaySeconds}::float8) END,
             last_error = COALESCE(${error?.slice(0, 2000) ?? null}::text, last_error)
       WHERE message_id = ${claim.messageId}
         AND attempts = ${claim.attempts}
         AND status = 'pending'`.execute(this.db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }
}

type ClaimValues = { limit: number; leaseSeconds: number };
type ClaimRow = Parameters<typeof toWork>[0] & {
  claim_attempts: number;
  claim_model_output: StoredModelOutput | null;
};
type ClaimTemplate = StatementTemplate<ClaimValues, ClaimRow>;

type InsertClaimedValues = {
  conversationId: string;
  customerTokenHash: string | null;
  messageId: string;
  content: string;
  leaseSeconds: number;
};
type InsertClaimedRow = Parameters<typeof toWork>[0] & {
  announced: number;
  queued_id: string | null;
  queued_at: Date | null;
};
type InsertClaimedTemplate = StatementTemplate<InsertClaimedValues, InsertClaimedRow>;

/** A claim that failed because a concurrent one took another message of the same conversation. */
export function isClaimConflict(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return e?.code === '23505' && (e.constraint === undefined || e.constraint === 'messages_one_claim');
}
