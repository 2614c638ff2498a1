import { randomBytes } from 'node:crypto';
import { type Kysely, type RawBuilder, type Selectable, sql, type Transaction } from 'kysely';
import type { OwnerEvent } from '../domain/owner-events.js';
import type { DB } from './schema.js';
import { type BookingDB, type WebhookDeliveryTable, widen } from './schema-booking.js';
import type { SecretBox } from './secret-box.js';

export type WebhookDelivery = Selectable<WebhookDeliveryTable>;

export interface OwnerWebhook {
  userId: string;
  url: string;
  secret: string;
  createdAt: Date;
  updatedAt: Date;
}

const deliveryId = () => `whd_${randomBytes(10).toString('hex')}`;

/**
 * The statement that records an event's delivery (see WebhookStore.record), for use as a part of a
 * larger statement: the row exists only if the owner has a webhook, once per event key, and, with
 * `onlyIfRowIn`, only if that CTE of the enclosing statement produced a row (the change happened).
 * Returns the new delivery's id through RETURNING. `enqueued: false` leaves its job to
 * WebhookDispatcher.relayOne after the commit, or to the periodic relay.
 */
export function deliveryInsert(
  e: OwnerEvent,
  onlyIfRowIn?: string,
  options: { enqueued: boolean } = { enqueued: true },
): RawBuilder<{ delivery_id: string }> {
  const also = onlyIfRowIn ? sql`AND EXISTS (SELECT 1 FROM ${sql.ref(onlyIfRowIn)})` : sql``;
  return sql<{ delivery_id: string }>`
      INSERT INTO webhook_deliveries (delivery_id, user_id, event_type, event_key, payload, enqueued)
      SELECT ${deliveryId()}, user_id, ${e.type}, ${e.key.slice(0, 200)}, ${JSON.stringify(e.data)}::jsonb,
             ${options.enqueued}::boolean
        FROM owner_webhooks
       WHERE user_id = ${e.userId} ${also}
      ON CONFLICT (event_key) DO NOTHING
      RETURNING delivery_id`;
}

/** Owner webhooks (secret sealed by the SecretBox, bound to the owner's row) and their deliveries. */
export class WebhookStore {
  private readonly db: Kysely<BookingDB>;
  constructor(
    db: Kysely<DB>,
    private readonly box: SecretBox,
  ) {
    this.db = widen(db);
  }

  async put(userId: string, url: string, secret: string): Promise<{ created: boolean }> {
    const secretEnc = this.box.encrypt(secret, `owner_webhooks:${userId}:secret`);
    const r = await this.db
      .insertInto('owner_webhooks')
      .values({ user_id: userId, url, secret_enc: secretEnc })
      .onConflict((oc) =>
        oc.column('user_id').doUpdateSet({ url, secret_enc: secretEnc, updated_at: sql`now()` }),
      )
      .returning(sql<boolean>`(xmax = 0)`.as('created'))
      .executeTakeFirstOrThrow();
    return { created: Boolean(r.created) };
  }

  async get(userId: string): Promise<OwnerWebhook | undefined> {
    const r = await this.db
      .selectFrom('owner_webhooks')
      .selectAll()
      .where('user_id', '=', userId)
      .executeTakeFirst();
    if (!r) return undefined;
    return {
      userId: r.user_id,
      url: r.url,
      secret: this.box.decrypt(r.secret_enc, `owner_webhooks:${userId}:secret`),
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    };
  }

  async delete(userId: string): Promise<boolean> {
    const r = await this.db.deleteFrom('owner_webhooks').where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /**
   * Records a delivery in the caller's transaction when the owner has a webhook; once per event key
   * (a retried job records nothing new). Returns the new delivery's id.
   */
  async record(trx: Transaction<DB>, e: OwnerEvent): Promise<string | undefined> {
    // One statement: the delivery row exists only if the owner has a webhook (no separate lookup).
    const r = await deliveryInsert(e).execute(trx);
    return r.rows[0]?.delivery_id;
  }

  async delivery(id: string): Promise<WebhookDelivery | undefined> {
    return this.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('delivery_id', '=', id)
      .executeTakeFirst();
  }

  async recordAttempt(
    id: string,
    outcome: { ok: boolean; statusCode: number | null; error: string | null; final: boolean },
  ): Promise<void> {
    await this.db
      .updateTable('webhook_deliveries')
      .set({
        attempts: sql<number>`attempts + 1`,
        last_attempt_at: sql<Date>`now()`,
        last_status_code: outcome.statusCode,
        last_error: outcome.ok ? null : (outcome.error?.slice(0, 500) ?? null),
        ...(outcome.ok
          ? { status: 'delivered' as const, delivered_at: sql<Date>`now()` }
          : outcome.final
            ? { status: 'failed' as const }
            : {}),
      })
      .where('delivery_id', '=', id)
      // A 2xx is recorded even on a delivery already failed: the attempt that pg-boss gave up on
      // (markUnfinished) did reach the receiver in the end. A failure never overwrites an outcome.
      .where('status', 'in', outcome.ok ? ['pending', 'failed'] : ['pending'])
      .execute();
  }

  /**
   * Marks a still-pending delivery failed because its last attempt never recorded an outcome
   * (WebhookDispatcher's dead-letter queue). `attempts` and `last_attempt_at` stay those of the
   * attempts that recorded an outcome (a late 2xx from this one is recorded as one). True when this
   * call marked it.
   */
  async markUnfinished(id: string, error: string): Promise<boolean> {
    const r = await this.db
      .updateTable('webhook_deliveries')
      .set({
        status: 'failed',
        last_status_code: null,
        last_error: error.slice(0, 500),
      })
      .where('delivery_id', '=', id)
      .where('status', '=', 'pending')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async list(userId: string, limit: number, before?: string): Promise<WebhookDelivery[]> {
    let q = this.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('created_at', 'desc')
      .orderBy('delivery_id', 'desc')
      .limit(limit);
    if (before) {
      q = q.where((eb) =>
        eb(
          eb.refTuple('created_at', 'delivery_id'),
          '<',
          eb.tuple(
            eb.selectFrom('webhook_deliveries').select('created_at').where('delivery_id', '=', before),
            eb.val(before),
          ),
        ),
      );
    }
    return q.execute();
  }

  /**
   * Marks failed the pending deliveries (up to `limit`, oldest first) that no job will attempt again:
   * none of `queues`' jobs keyed by the delivery id is waiting, in backoff or running (pg-boss's
   * `job` table in `jobsSchema`; a job's `singleton_key` is its delivery id, WebhookDispatcher).
   * Such a row's job ended without recording an outcome and without reaching the dead-letter queue:
   * sent by a version without that queue, or the dead-letter job's own retries spent. A row is
   * enqueued in the transaction that sends its job, and pg-boss moves a job between states (a retry,
   * a dead letter) in one statement, so one snapshot never shows a live delivery without its job;
   * rows younger than a minute are left alone all the same. Returns the ids marked.
   */
  async failOrphaned(jobsSchema: string, queues: readonly string[], limit: number): Promise<string[]> {
    const job = sql.id(jobsSchema, 'job');
    const names = sql.join(queues.map((q) => sql`${q}`));
    const r = await sql<{ delivery_id: string }>`
      UPDATE webhook_deliveries d
         SET status = 'failed', last_status_code = NULL,
             last_error = 'no attempt of it is left: its job ended without recording an outcome'
       WHERE d.delivery_id IN (
               SELECT w.delivery_id FROM webhook_deliveries w
                WHERE w.status = 'pending' AND w.enqueued AND w.created_at < now() - interval '1 minute'
                  -- Two lookups, not one on state <= 'active': this one matches the predicate of
                  -- pg-boss's index on (name, singleton_key) for waiting jobs; running ones are few.
                  AND NOT EXISTS (SELECT 1 FROM ${job} j
                                   WHERE j.name IN (${names}) AND j.singleton_key = w.delivery_id
                                     AND j.state < 'active')
                  AND NOT EXISTS (SELECT 1 FROM ${job} j
                                   WHERE j.name IN (${names}) AND j.state = 'active'
                                     AND j.singleton_key = w.delivery_id)
                ORDER BY w.created_at
                LIMIT ${limit}
                  FOR UPDATE SKIP LOCKED)
         AND d.status = 'pending'
      RETURNING d.delivery_id`.execute(this.db);
    return r.rows.map((x) => x.delivery_id);
  }

  /**
   * Marks one delivery written with `enqueued = false` as enqueued. Its owner's user id when this
   * call marked it (it had no job yet), else undefined.
   */
  async claimOne(trx: Transaction<DB>, deliveryId: string): Promise<string | undefined> {
    const r = await sql<{ user_id: string }>`
      UPDATE webhook_deliveries SET enqueued = true
       WHERE delivery_id = ${deliveryId} AND NOT enqueued
      RETURNING user_id`.execute(trx);
    return r.rows[0]?.user_id;
  }

  /**
   * Deliveries that still need a job (written by SQL, the revocation trigger, or by a reply whose
   * relayOne did not run); marked in `trx`.
   */
  async claimUnenqueued(
    trx: Transaction<DB>,
    limit: number,
  ): Promise<Array<{ deliveryId: string; userId: string }>> {
    const r = await sql<{ delivery_id: string; user_id: string }>`
      UPDATE webhook_deliveries SET enqueued = true
      WHERE delivery_id IN (
        SELECT delivery_id FROM webhook_deliveries WHERE NOT enqueued
        ORDER BY created_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
      RETURNING delivery_id, user_id`.execute(trx);
    return r.rows.map((x) => ({ deliveryId: x.delivery_id, userId: x.user_id }));
  }
}
