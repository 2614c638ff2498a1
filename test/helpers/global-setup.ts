import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgBoss } from 'pg-boss';
import { openDatabase } from '../../src/store/database.js';
import { loadMigrations, migrate } from '../../src/store/migrate.js';

/**
 * Builds once per run (and caches across runs) an embedded database with our migrations and
 * pg-boss's schema applied, dumped to a file. Each test then loads that dump (~1.5 s) instead of
 * running initdb (~5 s): the same real PostgreSQL, just not re-created from scratch.
 */
export default async function setup(): Promise<void> {
  const bossVersion = JSON.parse(readFileSync('node_modules/pg-boss/package.json', 'utf8')).version as string;
  const pgliteVersion = JSON.parse(readFileSync('node_modules/@electric-sql/pglite/package.json', 'utf8'))
    .version as string;
  const hash = createHash('sha256')
    .update(JSON.stringify([loadMigrations(), bossVersion, pgliteVersion]))
    .digest('hex')
    .slice(0, 16);
  const file = join(tmpdir(), `agent-meetings-template-${hash}.tar`);
  process.env.AGENT_MEETINGS_TEST_TEMPLATE = file;
  if (existsSync(file)) return;
  const database = await openDatabase({ dataDir: null });
  await migrate(database.db);
  const boss = new PgBoss({ ...database.bossOptions(), supervise: false, schedule: false });
  await boss.start();
  await boss.stop({ graceful: false, close: false });
  const dump = await database.dump!();
  const tmp = `${file}.${process.pid}`;
  writeFileSync(tmp, Buffer.from(await dump.arrayBuffer()));
  renameSync(tmp, file);
  await database.close();
}
