import { type Kysely, sql } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from './schema.js';
import type { SecretBox } from './secret-box.js';

/** Rows read per statement while re-sealing. */
const BATCH = 200;

/** Every sealed column: its table, key column, secret column and the SecretBox context's name. */
const SEALED = [
  { table: 'google_calendar_tokens', column: 'access_token_enc', context: 'access_token' },
  { table: 'google_calendar_tokens', column: 'refresh_token_enc', context: 'refresh_token' },
  { table: 'owner_webhooks', column: 'secret_enc', context: 'secret' },
] as const;

/**
 * Key rotation's second half: re-seals, under the first key of TOKEN_ENCRYPTION_KEY, every secret
 * sealed under another one. Listing a new key first makes new writes use it at once, but a refresh
 * token is written only at connect (Google rarely rotates it) and a webhook secret only when set,
 * so without this they would stay under the old key for good: a leaked old key would still open
 * them, and removing it would break every such owner. Each process runs this at start when several
 * keys are configured; once it logged that nothing is left, the old keys can be removed.
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
): Promise<{ resealed: number; unreadable: number }> {
  let resealed = 0;
  let unreadable = 0;
  const primary = box.primaryKeyId;
  for (const { table, column, context } of SEALED) {
    // Rows already looked at in this pass (unreadable ones are not rewritten, so not skipped by the
    // key filter): the scan resumes after the last user id.
    let after = '';
    for (;;) {
      const rows = await sql<{ user_id: string; value: string }>`
        SELECT user_id, ${sql.ref(column)} AS value
          FROM ${sql.table(table)}
         WHERE ${sql.ref(column)} IS NOT NULL
           AND split_part(${sql.ref(column)}, '.', 2) <> ${primary}
           AND user_id > ${after}
         ORDER BY user_id
         LIMIT ${BATCH}`.execute(db);
      for (const { user_id: userId, value } of rows.rows) {
        const ctx = `${table}:${userId}:${context}`;
        let plain: string;
        try {
          plain = box.decrypt(value, ctx);
        } catch (err) {
          unreadable += 1;
          logger.error({ err, table, user_id: userId }, 'a sealed secret no configured key opens');
          continue;
        }
        const r = await sql`
          UPDATE ${sql.table(table)} SET ${sql.ref(column)} = ${box.encrypt(plain, ctx)}
           WHERE user_id = ${userId} AND ${sql.ref(column)} = ${value}`.execute(db);
        resealed += Number(r.numAffectedRows ?? 0);
      }
      if (rows.rows.length < BATCH) break;
      after = rows.rows.at(-1)!.user_id;
    }
  }
  logger.info(
    { resealed, unreadable, key_id: primary },
    unreadable === 0
      ? 'secrets sealed under older keys re-sealed under the first key; the older keys are no longer needed'
      : 'secrets re-sealed under the first key; some could not be opened and still need their key',
  );
  return { resealed, unreadable };
}
