import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import pg from 'pg';
import { sleep } from './util.js';

const run = promisify(execFile);

/** The Debian cluster to restart: FAULTS_PG_CLUSTER="<version> <name>", else the only one installed. */
function cluster(): [string, string] {
  const configured = process.env.FAULTS_PG_CLUSTER?.trim().split(/\s+/);
  if (configured?.length === 2) return [configured[0] as string, configured[1] as string];
  if (!existsSync('/etc/postgresql')) {
    throw new Error(
      'no /etc/postgresql: cannot restart PostgreSQL (set FAULTS_PG_CLUSTER="<version> <name>")',
    );
  }
  const versions = readdirSync('/etc/postgresql').sort();
  const version = versions.at(-1);
  if (!version) throw new Error('no cluster under /etc/postgresql');
  return [version, 'main'];
}

export function clusterName(): string {
  try {
    return cluster().join('/');
  } catch {
    return 'unknown';
  }
}

/** pg_ctlcluster --skip-systemctl-redirect <version> main restart (fast shutdown: sessions are cut). */
export async function restartPostgres(): Promise<void> {
  const [version, name] = cluster();
  await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, 'restart'], { timeout: 120_000 });
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Waits until PostgreSQL answers at `url`; if it does not within a few seconds and the cluster is
 * local, starts it (the suite must never leave it stopped). Throws after `timeoutMs`.
 */
export async function ensurePostgres(url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let started = false;
  for (let attempt = 0; ; attempt++) {
    if (await reachable(url)) return;
    if (!started && attempt >= 3) {
      started = true;
      try {
        const [version, name] = cluster();
        await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, 'start'], {
          timeout: 120_000,
        });
      } catch {
        // Already running (and just slow), or not a local cluster: keep probing until the deadline.
      }
    }
    if (Date.now() > deadline)
      throw new Error(`PostgreSQL at ${url} is not reachable after ${timeoutMs / 1000} s`);
    await sleep(1000);
  }
}

export async function dropSchemas(url: string, schemas: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  } finally {
    await client.end().catch(() => {});
  }
}
