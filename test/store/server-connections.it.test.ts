/**
 * Server connection settings: our parameterized statements run as named prepared statements (parsed
 * once per connection) unless DATABASE_PREPARED_STATEMENTS=off (for transaction-pooling proxies);
 * pg-boss's connections prepare its single statements too (its constants are in the text), and
 * commit without waiting for the WAL flush, ours wait.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { openDatabase, sessionOptions } from '../../src/store/database.js';
import { testDatabaseKind, testDatabaseOptions } from '../helpers/database.js';

async function preparedAfterTwoRuns(preparedStatements: boolean) {
  const options = testDatabaseOptions({ fresh: true });
  const database = await openDatabase({ ...options, preparedStatements });
  try {
    // One transaction = one connection: what it prepared is visible in its own session.
    return await database.db.transaction().execute(async (trx) => {
      for (const n of [1, 2]) {
        const r = await sql<{ n: number }>`SELECT ${n}::int + 40 AS n`.execute(trx);
        expect(r.rows[0]?.n).toBe(n + 40);
      }
      const r = await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`.execute(trx);
      return r.rows.map((row) => row.statement);
    });
  } finally {
    await database.close();
    await options.cleanup();
  }
}

describe.runIf(testDatabaseKind() === 'server')('prepared statements (server)', () => {
  it('prepares a parameterized statement once per connection and reuses it', async () => {
    const statements = await preparedAfterTwoRuns(true);
    expect(statements.filter((s) => s.includes('+ 40 AS n'))).toHaveLength(1);
    // Statements without parameters (this one, BEGIN) are not kept.
    expect(statements.some((s) => s.includes('pg_prepared_statements'))).toBe(false);
  });

  it('prepares nothing when turned off', async () => {
    expect(await preparedAfterTwoRuns(false)).toEqual([]);
  });
});

describe.runIf(testDatabaseKind() === 'server')("pg-boss's prepared statements (server)", () => {
  async function bossPool(preparedStatements: boolean) {
    const options = testDatabaseOptions({ fresh: true });
    const database = await openDatabase({ ...options, preparedStatements });
    const pool = new pg.Pool({ ...(database.bossOptions() as pg.PoolConfig), max: 1 });
    return {
      pool,
      async close() {
        await pool.end();
        await database.close();
        await options.cleanup();
      },
    };
  }
  const prepared = async (client: pg.PoolClient) =>
    (await client.query('SELECT statement FROM pg_prepared_statements')).rows
      .map((r: { statement: string }) => r.statement)
      .filter((text: string) => !text.includes('pg_prepared_statements'));

  it('prepares single statements without parameters; multi-statement texts stay plain; names are bounded', async () => {
    const { pool, close } = await bossPool(true);
    try {
      // pg-boss runs most statements through pool.query (node-postgres's callback form).
      for (let i = 0; i < 2; i++) expect((await pool.query('SELECT 43 AS n')).rows).toEqual([{ n: 43 }]);
      const client = await pool.connect();
      try {
        for (let i = 0; i < 2; i++) expect((await client.query('SELECT 41 AS n')).rows).toEqual([{ n: 41 }]);
        expect((await client.query('SELECT $1::int AS n', [42])).rows).toEqual([{ n: 42 }]);
        const multi = (await client.query('SELECT 1 AS a; SELECT 2 AS b')) as unknown as pg.QueryResult[];
        expect(multi.map((r) => r.rows[0])).toEqual([{ a: 1 }, { b: 2 }]);
        expect(await prepared(client)).toEqual(
          expect.arrayContaining(['SELECT 41 AS n', 'SELECT $1::int AS n']),
        );
        expect((await prepared(client)).some((t) => t.includes('SELECT 2 AS b'))).toBe(false);
        // Texts that differ in a constant (pg-boss's batch size) take a name each, up to a bound.
        for (let i = 0; i < 100; i++)
          expect((await client.query(`SELECT ${i} AS v`)).rows).toEqual([{ v: i }]);
        const names = await prepared(client);
        expect(names.length).toBeLessThanOrEqual(64);
        expect(names.length).toBeGreaterThan(32);
      } finally {
        client.release();
      }
    } finally {
      await close();
    }
  });

  it('prepares nothing when turned off', async () => {
    const { pool, close } = await bossPool(false);
    try {
      const client = await pool.connect();
      try {
        await client.query('SELECT 41 AS n');
        await client.query('SELECT $1::int AS n', [42]);
        expect(await prepared(client)).toEqual([]);
      } finally {
        client.release();
      }
    } finally {
      await close();
    }
  });
});

describe.runIf(testDatabaseKind() === 'server')('commit durability (server)', () => {
  it('pg-boss connections commit asynchronously, ours synchronously', async () => {
    const options = testDatabaseOptions({ fresh: true });
    const database = await openDatabase(options);
    try {
      const boss = database.bossOptions() as pg.ClientConfig;
      const client = new pg.Client(boss);
      await client.connect();
      try {
        expect((await client.query('SHOW synchronous_commit')).rows[0].synchronous_commit).toBe('off');
      } finally {
        await client.end();
      }
      const ours = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(database.db);
      expect(ours.rows[0]?.synchronous_commit).toBe('on');
    } finally {
      await database.close();
      await options.cleanup();
    }
  });
});

describe.runIf(testDatabaseKind() === 'server')('prepared statements and schema changes (server)', () => {
  it('a prepared SELECT * whose table changed fails once, then is prepared afresh', async () => {
    const options = testDatabaseOptions({ fresh: true });
    const database = await openDatabase({ ...options, poolSize: 1 });
    try {
      await sql`CREATE TABLE widgets (id int PRIMARY KEY)`.execute(database.db);
      await sql`INSERT INTO widgets VALUES (1)`.execute(database.db);
      const read = () =>
        sql<Record<string, unknown>>`SELECT * FROM widgets WHERE id = ${1}`.execute(database.db);
      expect((await read()).rows).toEqual([{ id: 1 }]);
      // Another process migrates (here: the same pool's only connection, outside the statement).
      await sql`ALTER TABLE widgets ADD COLUMN label text`.execute(database.db);
      const outcomes: string[] = [];
      for (let i = 0; i < 3; i++) {
        try {
          const r = await read();
          outcomes.push(JSON.stringify(r.rows));
        } catch (err) {
          outcomes.push(String((err as { code?: string }).code));
        }
      }
      // PostgreSQL refuses the old statement ("cached plan must not change result type") once;
      // the next execution prepares the text afresh (without that, every later one failed too).
      expect(outcomes).toEqual(['0A000', '[{"id":1,"label":null}]', '[{"id":1,"label":null}]']);
    } finally {
      await database.close();
      await options.cleanup();
    }
  });
});

describe('session options in DATABASE_URL', () => {
  it('ours come after the URL’s own, which stay; a URL without them is passed as it is', () => {
    const url =
      'postgres://u:p%40ss@db.example:5432/app?sslmode=require&options=-c%20statement_timeout%3D5000';
    expect(sessionOptions(url, '-c search_path=s1')).toEqual({
      connectionString: 'postgres://u:p%40ss@db.example:5432/app?sslmode=require',
      options: '-c statement_timeout=5000 -c search_path=s1',
    });
    // A URL only pg reads (credentials before an empty host) cannot have its options merged: refused.
    expect(() =>
      sessionOptions('postgres://u:p@/app?host=/var/run/postgresql&options=-c%20x%3D1', '-c search_path=s1'),
    ).toThrow('options');
    const plain = 'postgres://u@127.0.0.1/test';
    expect(sessionOptions(plain, '-c search_path=s1')).toEqual({
      connectionString: plain,
      options: '-c search_path=s1',
    });
  });

  it.runIf(testDatabaseKind() === 'server')(
    'an `options` parameter in the URL keeps our schema, and its own settings (server)',
    async () => {
      const options = testDatabaseOptions({ fresh: true });
      const url = `${options.url}${options.url!.includes('?') ? '&' : '?'}options=${encodeURIComponent('-c statement_timeout=54321')}`;
      const database = await openDatabase({ ...options, url });
      try {
        const r = await sql<{ schema: string; timeout: string }>`
          SELECT current_schema() AS schema, current_setting('statement_timeout') AS timeout`.execute(
          database.db,
        );
        expect(r.rows[0]).toEqual({ schema: options.schema, timeout: '54321ms' });
      } finally {
        await database.close();
        await options.cleanup();
      }
    },
  );
});
