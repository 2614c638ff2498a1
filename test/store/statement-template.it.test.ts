/**
 * StatementTemplate (src/store/statement-template.ts): a statement compiled once runs exactly what
 * Kysely would have built for each call's values, on the real database, and a template whose build
 * computes with a value instead of passing it on refuses to compile.
 */
import { type CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/store/database.js';
import { selectWork } from '../../src/store/messages.js';
import { StatementTemplate } from '../../src/store/statement-template.js';
import { openTestDatabase } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
});
afterAll(async () => {
  await close?.();
});

type Values = { name: string; n: number; maybe: string | null };

/** A build with a constant, a value used twice, a nested builder and a nested fragment. */
const build = (v: Values) => sql<{
  name: string;
  twice: number;
  maybe: string | null;
  channel: string;
  w: number;
}>`
  WITH x AS (SELECT ${v.name}::text AS name, ${v.n}::int * 2 AS twice)
  SELECT x.name, x.twice + ${v.n}::int - ${v.n}::int AS twice, ${sql`${v.maybe}::text`} AS maybe,
         ${'constant-channel'}::text AS channel,
         (SELECT count(*)::int FROM (${selectWork(database.db, 7)}) w WHERE false) AS w
    FROM x`;

/** Records what a template sends instead of running it. */
function recorder() {
  const sent: CompiledQuery[] = [];
  return {
    sent,
    executeQuery: async (q: CompiledQuery) => {
      sent.push(q);
      return { rows: [] };
    },
  };
}

describe('StatementTemplate', () => {
  it('sends the SQL and parameters Kysely builds for the same values, compiled once', async () => {
    const t = new StatementTemplate(database.db, build);
    const rec = recorder();
    for (const values of [
      { name: 'a', n: 1, maybe: null },
      { name: "o'brien", n: -5, maybe: 'set' },
    ]) {
      await t.execute(rec as never, values);
      const built = build(values).compile(database.db);
      expect(rec.sent.at(-1)!.sql).toBe(built.sql);
      expect(rec.sent.at(-1)!.parameters).toEqual(built.parameters);
    }
    expect(t.sql).toBe(rec.sent[0]!.sql);
  });

  it('runs on the database with each call its own values', async () => {
    const t = new StatementTemplate(database.db, build);
    const one = await t.execute(database.db, { name: 'first', n: 3, maybe: null });
    const two = await t.execute(database.db, { name: 'second', n: 10, maybe: 'x' });
    expect(one.rows).toEqual([{ name: 'first', twice: 6, maybe: null, channel: 'constant-channel', w: 0 }]);
    expect(two.rows).toEqual([{ name: 'second', twice: 20, maybe: 'x', channel: 'constant-channel', w: 0 }]);
  });

  it('refuses a build that computes with a value instead of passing it on', () => {
    const db = database.db;
    expect(() => new StatementTemplate(db, (v: { n: number }) => sql`SELECT ${v.n - 1}`)).toThrow(
      /value n was computed with/,
    );
    expect(() => new StatementTemplate(db, (v: { s: string }) => sql`SELECT ${`${v.s}%`}`)).toThrow(
      /value s was computed with/,
    );
    expect(() => new StatementTemplate(db, (v: { o: object }) => sql`SELECT ${JSON.stringify(v.o)}`)).toThrow(
      /value o was serialized/,
    );
    // Read, then dropped (a branch on it, say): the statement would ignore the call's value.
    expect(
      () => new StatementTemplate(db, (v: { flag: boolean }) => (v.flag ? sql`SELECT 1` : sql`SELECT 2`)),
    ).toThrow(/flag read but not passed/);
  });
});
