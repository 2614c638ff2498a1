import { type Kysely, sql } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from './schema.js';
import type { SecretBox } from './secret-box.js';

/**
 * A token whose refresh is in flight (its lease live) is left for the next pass: that refresh's save
 * only writes if the sealed values are still the ones it read, so re-sealing under it would drop its
 * answer (and a refresh token Google rotated in it).
 */
const REFRESHING = sql`refresh_lock_until IS NOT NULL AND refresh_lock_until >= now()`;

/** Every sealed column: its table, secret column, the SecretBox context's name, and rows to leave. */
const SEALED = [
  { table: 'google_calendar_tokens', column: 'access_token_enc', context: 'access_token', busy: REFRESHING },
  {
    table: 'google_calendar_tokens',
    column: 'refresh_token_enc',
    context: 'refresh_token',
    busy: REFRESHING,
  },
  { table: 'owner_webhooks', column: 'secret_enc', context: 'secret', busy: sql`false` },
] as const;

/** How often a process with several keys runs the pass again (see resealSecrets). */
export const RESEAL_EVERY_MS = 60 * 60_000;

/**
 * Key rotation's second half: re-seals, under the first key of TOKEN_ENCRYPTION_KEY, every secret
 * sealed under another one. Listing a new key first makes new writes use it at once, but a refresh
 * token is written only at connect (Google rarely rotates it) and a webhook secret only when set,
 * so without this they would stay under the old key for good: a leaked old key would still open
 * them, and removing it would break every such owner. Each process with several keys runs this at
 * start and then every RESEAL_EVERY_MS: during a rolling deploy, processes still on the old
 * configuration keep sealing under the old key, and a token mid-refresh is skipped; a later pass
 * takes those. The old key can go once every process runs with the new key first and a pass after
 * that logged `remaining: 0`. Before any process lists the new key first, every process must know
 * it (an `old,new` deploy, README "Secrets"): a process knowing only the old key cannot open what
 * this pass, or a token refresh, seals under the new one.
 *
 * Each value is replaced only if it is still the one read (a token refresh or a reconnect meanwhile
 * wrote a newer one, sealed under the first key already), so running it in several processes at
 * once, or beside live traffic, is safe. A value no configured key opens is left as it is (and
 * counted): it fails where it is read, as before. Returns how many values were re-sealed.
 */
export async function resealSecrets(
  db: Kysely<DB>,
  box: SecretBox,
  logger: Logger,
  batch = 200,
): Promise<{ resealed: number; unreadable: number; remaining: number }> {
  let resealed = 0;
  let unreadable = 0;
  let remaining = 0;
  const primary = box.primaryKeyId;
  for (const { table, column, context, busy } of SEALED) {
    // Rows already looked at in this pass (unreadable ones are not rewritten, so not skipped by the
    // key filter): the scan resumes after the last user id.
    let after = '';
    for (;;) {
      const rows = await sql<{ user_id: string; value: string; busy: boolean }>`
        SELECT user_id, ${sql.ref(column)} AS value, (${busy}) AS busy
          FROM ${sql.table(table)}
         WHERE ${sql.ref(column)} IS NOT NULL
           AND split_part(${sql.ref(column)}, '.', 2) <> ${primary}
           AND user_id > ${after}
         ORDER BY user_id
         LIMIT ${batch}`.execute(db);
      for (const { user_id: userId, value, busy: inFlight } of rows.rows) {
        if (inFlight) {
          remaining += 1;
          continue;
        }
        const ctx = `${table}:${userId}:${context}`;
        let plain: string;
        try {
          plain = box.decrypt(value, ctx);
        } catch (err) {
          unreadable += 1;
          logger.error({ err, table, user_id: userId }, 'a sealed secret no configured key opens');
          continue;
        }
        // Only if it is still the value read: a newer one (a refresh, a reconnect) is kept.
        // A refresh that took its lease since the read is left alone too (the next pass).
        const r = await sql`
          UPDATE ${sql.table(table)} SET ${sql.ref(column)} = ${box.encrypt(plain, ctx)}
           WHERE user_id = ${userId} AND ${sql.ref(column)} = ${value} AND NOT (${busy})`.execute(db);
        if (Number(r.numAffectedRows ?? 0) > 0) resealed += 1;
        else remaining += 1;
      }
      if (rows.rows.length < batch) break;
      after = rows.rows.at(-1)!.user_id;
    }
  }
  logger.info(
    { resealed, unreadable, remaining, key_id: primary },
    remaining + unreadable === 0
      ? 'no secret is left under an older key (processes still on an older configuration may seal more)'
      : 'secrets re-sealed under the first key; some are left (mid-refresh: the next pass; unreadable: need their key)',
  );
  return { resealed, unreadable, remaining };
}
