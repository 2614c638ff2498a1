import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { expect, vi } from 'vitest';
import { type Database, type DatabaseOptions, openDatabase } from '../../src/store/database.js';
import { migrate } from '../../src/store/migrate.js';
import type { DB } from '../../src/store/schema.js';

/**
 * Where a test's database lives: a fresh in-memory PGlite (project "embedded"), or a private schema
 * on the real server at TEST_DATABASE_URL (project "server"), so test files run in parallel.
 */
export function testDatabaseKind(): 'embedded' | 'server' {
  return process.env.TEST_DB === 'server' ? 'server' : 'embedded';
}

/** `fresh`: never from the migrated template (tests of the migrations themselves). */
export function testDatabaseOptions(
  opts: { fresh?: boolean } = {},
): DatabaseOptions & { cleanup: () => Promise<void> } {
  if (testDatabaseKind() === 'embedded') {
    const template = opts.fresh ? undefined : process.env.AGENT_MEETINGS_TEST_TEMPLATE;
    const embeddedSeed = template && existsSync(template) ? new Blob([readFileSync(template)]) : undefined;
    return { dataDir: null, embeddedSeed, cleanup: async () => {} };
  }
  const url = process.env.TEST_DATABASE_URL;
  if (!url) throw new Error('TEST_DB=server needs TEST_DATABASE_URL');
  const schema = `t_${randomBytes(6).toString('hex')}`;
  return {
    url,
    schema,
    poolSize: 6,
    cleanup: async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await client.query(`DROP SCHEMA IF EXISTS "${schema}_pgboss" CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

/** A migrated database of the test's kind; `close` also drops its schema on the server. */
export async function openTestDatabase(): Promise<{ database: Database; close(): Promise<void> }> {
  const options = testDatabaseOptions();
  const database = await openDatabase(options);
  try {
    await migrate(database.db);
  } catch (err) {
    await database.close();
    await options.cleanup();
    throw err;
  }
  return {
    database,
    async close() {
      await database.close();
      await options.cleanup();
    },
  };
}

/** The id of the transaction `trx` runs in (server), as pg_locks shows it. */
export async function transactionId(trx: Kysely<DB>): Promise<string> {
  const r = await sql<{ x: string }>`SELECT (txid_current() % 4294967296)::text AS x`.execute(trx);
  return r.rows[0]!.x;
}

/**
 * Until a statement waits for the conversation's message order (orderLock in src/store/messages.ts:
 * another transaction that inserted a message of it has not committed yet).
 */
export async function waitForOrderWaiter(db: Kysely<DB>, conversationId: string): Promise<void> {
  await vi.waitFor(
    async () => {
      const waiting = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'advisory' AND NOT granted
           AND ((classid::bigint << 32) | objid::bigint)
               = hashtextextended('agent-meetings:messages:' || ${conversationId}::text, 0)`.execute(db);
      expect(waiting.rows[0]!.n).toBeGreaterThan(0);
    },
    { timeout: 10_000, interval: 10 },
  );
}

/**
 * Resolves once a statement waits for transaction `xid` (for a row or index entry it wrote): its
 * snapshot is taken, so what that transaction commits next is not in it. Server only.
 */
export async function waitForWaiterOn(db: Kysely<DB>, xid: string): Promise<void> {
  await vi.waitFor(
    async () => {
      const waiting = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text = ${xid}`.execute(db);
      expect(waiting.rows[0]!.n).toBeGreaterThan(0);
    },
    { timeout: 10_000, interval: 10 },
  );
}
