import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { type Database, type DatabaseOptions, openDatabase } from '../../src/store/database.js';
import { migrate } from '../../src/store/migrate.js';

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
