/**
 * Key rotation: a process started with a new key listed first (TOKEN_ENCRYPTION_KEY="new,old")
 * re-seals every secret an older key sealed (tokens, refresh tokens, webhook secrets), so the old key
 * can then be removed: the service keeps working with the new key alone. Driven through the real
 * service's start, HTTP and database (the same database across three starts).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { CalendarConnectionStore } from '../../src/store/calendar-connections.js';
import type { DatabaseOptions } from '../../src/store/database.js';
import { resealSecrets } from '../../src/store/reseal.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { WebhookStore } from '../../src/store/webhooks.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { testDatabaseKind } from '../helpers/database.js';

const OLD = randomBytes(32).toString('base64');
const NEW = randomBytes(32).toString('base64');
const OTHER = randomBytes(32).toString('base64'); // never configured
const keyId = (key: string) => new SecretBox([Buffer.from(key, 'base64')]).primaryKeyId;

const dir = mkdtempSync(join(tmpdir(), 'am-reseal-'));
const schema = `t_reseal_${randomBytes(4).toString('hex')}`;
/** The same database for every start: a data directory (embedded) or one schema (server). */
const database = (): DatabaseOptions =>
  testDatabaseKind() === 'embedded'
    ? { dataDir: dir }
    : { url: process.env.TEST_DATABASE_URL!, schema, poolSize: 4 };

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (testDatabaseKind() === 'server') {
    const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.query(`DROP SCHEMA IF EXISTS "${schema}_pgboss" CASCADE`);
    await client.end();
  }
});

/** The key id of every sealed value, per column. */
async function keyIds(t: TestApp): Promise<Record<string, string[]>> {
  const r = await sql<{ access: string; refresh: string }>`
    SELECT split_part(access_token_enc, '.', 2) AS access, split_part(refresh_token_enc, '.', 2) AS refresh
      FROM google_calendar_tokens ORDER BY user_id`.execute(t.app.database.db);
  const w = await sql<{ secret: string }>`
    SELECT split_part(secret_enc, '.', 2) AS secret FROM owner_webhooks ORDER BY user_id`.execute(
    t.app.database.db,
  );
  return {
    access: r.rows.map((x) => x.access),
    refresh: r.rows.map((x) => x.refresh),
    secret: w.rows.map((x) => x.secret),
  };
}

it('re-seals what the old key sealed when a new key is listed first; then the old key can go', async () => {
  const access = `ya29.${randomBytes(20).toString('base64url')}`;
  const refresh = `1//0g${randomBytes(20).toString('base64url')}`;
  const hookSecret = `whsec_${randomBytes(24).toString('base64url')}`;

  // 1. Sealed under the old key, as before the rotation; one value under a key never configured.
  const first = await startTestApp({ TOKEN_ENCRYPTION_KEY: OLD }, { database: database() });
  try {
    for (const user of ['rot-a', 'rot-b']) {
      const res = await first.app.http.inject({
        method: 'POST',
        url: `/api/users/${user}/google-calendar/connect`,
        headers: first.admin,
        payload: {
          access_token: access,
          refresh_token: refresh,
          token_expiry: new Date(Date.now() + 3_600_000).toISOString(),
          scope: 'https://www.googleapis.com/auth/calendar',
        },
      });
      expect(res.statusCode).toBe(200);
      const hook = await first.app.http.inject({
        method: 'PUT',
        url: `/api/users/${user}/webhook`,
        headers: first.admin,
        payload: { url: 'http://127.0.0.1:9/hook', secret: hookSecret },
      });
      expect(hook.statusCode).toBe(200);
    }
    await new WebhookStore(first.app.database.db, new SecretBox([Buffer.from(OTHER, 'base64')])).put(
      'rot-z',
      'http://127.0.0.1:9/other',
      hookSecret,
    );
    expect(await keyIds(first)).toEqual({
      access: [keyId(OLD), keyId(OLD)],
      refresh: [keyId(OLD), keyId(OLD)],
      secret: [keyId(OLD), keyId(OLD), keyId(OTHER)],
    });
  } finally {
    await first.close();
  }

  // 2. The new key first, the old one still listed: everything the old key sealed is re-sealed.
  const second = await startTestApp({ TOKEN_ENCRYPTION_KEY: `${NEW},${OLD}` }, { database: database() });
  try {
    expect(await keyIds(second)).toEqual({
      access: [keyId(NEW), keyId(NEW)],
      refresh: [keyId(NEW), keyId(NEW)],
      // The value no configured key opens is left alone, and said so.
      secret: [keyId(NEW), keyId(NEW), keyId(OTHER)],
    });
    const done = second.logs.lines.map((l) => JSON.parse(l)).find((l) => l.resealed !== undefined);
    expect(done).toMatchObject({ resealed: 6, unreadable: 1, remaining: 0, key_id: keyId(NEW) });
    expect(second.logs.text).not.toContain(refresh);
  } finally {
    await second.close();
  }

  // 3. The new key alone: the owners' tokens and webhook secrets still open.
  const third = await startTestApp({ TOKEN_ENCRYPTION_KEY: NEW }, { database: database() });
  try {
    const got = await third.app.http.inject({ url: '/api/google-tokens/rot-a', headers: third.admin });
    expect(got.statusCode).toBe(200);
    const connection = await third.app.connections.get('rot-b');
    expect(connection).toMatchObject({ accessToken: access, refreshToken: refresh });
    const hook = await new WebhookStore(
      third.app.database.db,
      new SecretBox([Buffer.from(NEW, 'base64')]),
    ).get('rot-a');
    expect(hook?.secret).toBe(hookSecret);
  } finally {
    await third.close();
  }
});

it('pages past values it cannot open, and leaves a token mid-refresh for the next pass', async () => {
  const t = await startTestApp({ TOKEN_ENCRYPTION_KEY: OLD });
  try {
    for (const user of ['pg-1', 'pg-2', 'pg-3']) {
      const res = await t.app.http.inject({
        method: 'POST',
        url: `/api/users/${user}/google-calendar/connect`,
        headers: t.admin,
        payload: {
          access_token: `ya29.${user}`,
          refresh_token: `1//0g${user}`,
          token_expiry: new Date(Date.now() + 3_600_000).toISOString(),
          scope: 'https://www.googleapis.com/auth/calendar',
        },
      });
      expect(res.statusCode).toBe(200);
      // Webhook secrets under a key never configured: each is looked at and stepped over.
      await new WebhookStore(t.app.database.db, new SecretBox([Buffer.from(OTHER, 'base64')])).put(
        user,
        'http://127.0.0.1:9/x',
        `whsec_${user}-0123456789abcdef`,
      );
    }
    // pg-2's token is being refreshed (its lease live): its save compares the sealed values.
    await sql`UPDATE google_calendar_tokens SET refresh_lock_until = now() + interval '1 minute'
               WHERE user_id = 'pg-2'`.execute(t.app.database.db);
    const rotated = new SecretBox([Buffer.from(NEW, 'base64'), Buffer.from(OLD, 'base64')]);
    // One row per statement: every page boundary is crossed, unreadable rows included.
    expect(await resealSecrets(t.app.database.db, rotated, t.app.logger, 1)).toEqual({
      resealed: 4,
      remaining: 2,
      unreadable: 3,
    });
    const ids = await keyIds(t);
    expect(ids.access).toEqual([keyId(NEW), keyId(OLD), keyId(NEW)]);
    expect(ids.refresh).toEqual([keyId(NEW), keyId(OLD), keyId(NEW)]);
    // The refresh over, the next pass takes it.
    await sql`UPDATE google_calendar_tokens SET refresh_lock_until = NULL`.execute(t.app.database.db);
    expect(await resealSecrets(t.app.database.db, rotated, t.app.logger, 1)).toEqual({
      resealed: 2,
      remaining: 0,
      unreadable: 3,
    });
    expect(await new CalendarConnectionStore(t.app.database.db, rotated).get('pg-2')).toMatchObject({
      accessToken: 'ya29.pg-2',
      refreshToken: '1//0gpg-2',
    });
  } finally {
    await t.close();
  }
});
