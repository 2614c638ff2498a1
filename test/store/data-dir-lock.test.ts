import { type ChildProcess, spawn } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DataDirLockedError, lockDataDir } from '../../src/store/data-dir-lock.js';
import { openDatabase } from '../../src/store/database.js';

const LOCK = 'agent-meetings.lock';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let dir: string;
const children: ChildProcess[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'am-lock-'));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const lockPath = () => join(dir, LOCK);
const readLock = () => JSON.parse(readFileSync(lockPath(), 'utf8')) as { pid: number; host: string };
/** Replaces the lock file at once (a rename), as a taker's hard link does: never seen half-written. */
const writeLock = (content: unknown) => {
  writeFileSync(`${lockPath()}.test-tmp`, typeof content === 'string' ? content : JSON.stringify(content));
  renameSync(`${lockPath()}.test-tmp`, lockPath());
};

/** A pid that certainly ran and certainly is not running any more (exited and reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  const pid = child.pid!;
  await new Promise((resolve) => child.once('exit', resolve));
  expect(() => process.kill(pid, 0)).toThrow(); // ESRCH
  return pid;
}

function liveChild(): ChildProcess {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  expect(child.pid).toBeGreaterThan(0);
  return child;
}

describe('lockDataDir', () => {
  it('creates the directory and a lock file naming this process (mode 0600)', () => {
    const nested = join(dir, 'a', 'b');
    const release = lockDataDir(nested);
    const path = join(nested, LOCK);
    const content = JSON.parse(readFileSync(path, 'utf8'));
    expect(content).toMatchObject({ pid: process.pid, host: hostname() });
    expect(Number.isNaN(Date.parse(content.startedAt))).toBe(false);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(nested).mode & 0o777).toBe(0o700);
    // Nothing else is left behind (no temp files, no takeover marker).
    expect(readdirSync(nested)).toEqual([LOCK]);
    release();
    expect(readdirSync(nested)).toEqual([]);
  });

  it('in-process twice: our own pid is never "another process", the file keeps our pid', () => {
    // (After a container restart the new process often has the same pid as the dead one.)
    const first = lockDataDir(dir);
    const second = lockDataDir(dir);
    expect(readLock().pid).toBe(process.pid);
    // Releasing the superseded lock must not remove the lock the second call now holds.
    first();
    expect(readLock().pid).toBe(process.pid);
    second();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('release() removes the lock file, is idempotent, and the directory can be locked again', () => {
    const release = lockDataDir(dir);
    release();
    expect(() => statSync(lockPath())).toThrow();
    release();
    const again = lockDataDir(dir);
    expect(readLock().pid).toBe(process.pid);
    again();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('release() leaves alone a lock another process took meanwhile', () => {
    const release = lockDataDir(dir);
    const other = liveChild();
    writeLock({ pid: other.pid, host: hostname(), startedAt: new Date().toISOString() });
    release();
    expect(readLock().pid).toBe(other.pid);
  });

  it('refuses a directory locked by another live process, naming its pid', () => {
    const other = liveChild();
    const content = { pid: other.pid, host: hostname(), startedAt: '2030-01-01T00:00:00.000Z' };
    writeLock(content);
    let err: unknown;
    try {
      lockDataDir(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataDirLockedError);
    const message = (err as Error).message;
    expect(message).toContain(`process ${other.pid}`);
    expect(message).toContain('in use');
    expect(message).toContain(dir);
    expect(message).toContain('DATA_DIR');
    // The other process's lock is untouched.
    expect(readLock()).toEqual(content);
    expect(readdirSync(dir)).toEqual([LOCK]);
  });

  it('takes over a lock from another host that stays untouched while watched (a re-created container)', async () => {
    writeLock({ pid: 4242, host: 'old-container-id', startedAt: new Date().toISOString() });
    const release = lockDataDir(dir, 200); // watched 12 heartbeats: 2.4 s
    expect(readLock()).toMatchObject({ pid: process.pid, host: hostname() });
    release();
  });

  it('a lock from another host still being touched is live, whatever its pid or its clock', async () => {
    // Its pid is ours (a container's pid 1 would be), and its holder's clock is an hour behind.
    writeLock({ pid: process.pid, host: 'other-container-id', startedAt: new Date().toISOString() });
    const first = statSync(lockPath()).mtimeMs;
    const toucher = spawn(process.execPath, [
      '-e',
      `const fs = require('node:fs'); setInterval(() => { const t = new Date(Date.now() - 3600000); fs.utimesSync(${JSON.stringify(lockPath())}, t, t); }, 20);`,
    ]);
    children.push(toucher);
    await vi.waitFor(() => expect(statSync(lockPath()).mtimeMs).not.toBe(first), { timeout: 10_000 });
    let refused: unknown;
    try {
      lockDataDir(dir, 200);
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect((refused as Error).message).toContain('other-container-id');
  });

  it('the holder touches its lock file every heartbeat, and stops once released', async () => {
    const release = lockDataDir(dir, 50);
    const long = new Date(Date.now() - 3_600_000);
    utimesSync(lockPath(), long, long);
    await vi.waitFor(() => expect(Date.now() - statSync(lockPath()).mtimeMs).toBeLessThan(60_000), {
      timeout: 5_000,
    });
    release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a holder whose lock was taken over (or deleted) is told once, at its next heartbeat, and stops touching it', async () => {
    for (const takeOver of [
      () => writeLock({ pid: 4242, host: 'new-container-id', startedAt: new Date().toISOString() }),
      () => rmSync(lockPath()),
    ]) {
      const lost = vi.fn();
      const release = lockDataDir(dir, 50, lost);
      await new Promise((r) => setTimeout(r, 120));
      expect(lost).not.toHaveBeenCalled(); // its own heartbeats say nothing
      takeOver();
      await vi.waitFor(() => expect(lost).toHaveBeenCalledTimes(1), { timeout: 5_000 });
      const found = lost.mock.calls[0]?.[0] as string;
      const other = readdirSync(dir).includes(LOCK);
      expect(found).toBe(other ? 'process 4242 on new-container-id' : '(no lock file)');
      await new Promise((r) => setTimeout(r, 150));
      expect(lost).toHaveBeenCalledTimes(1);
      if (other) {
        // The new holder's file is left as it is, and released() does not remove it.
        const before = readFileSync(lockPath(), 'utf8');
        release();
        expect(readFileSync(lockPath(), 'utf8')).toBe(before);
        rmSync(lockPath());
      } else {
        release();
      }
    }
  });

  it('a database call made on waking from a pause finds the lock lost before the heartbeat does, and is refused', async () => {
    const lost = vi.fn();
    const database = await openDatabase({ dataDir: dir, lockHeartbeatMs: 100, onDataDirLost: lost });
    try {
      await database.ping();
      writeLock({ pid: 4242, host: 'new-container-id', startedAt: new Date().toISOString() });
      // Paused (as a frozen container is): no timer runs, so no heartbeat either.
      const until = Date.now() + 400;
      while (Date.now() < until) {
        // busy
      }
      await expect(database.ping()).rejects.toThrow(DataDirLockedError);
      expect(lost).toHaveBeenCalledTimes(1);
      expect(lost.mock.calls[0]?.[0]).toContain('was taken over by process 4242 on new-container-id');
      await expect(sql`SELECT 1`.execute(database.db)).rejects.toThrow(DataDirLockedError);
      expect(lost).toHaveBeenCalledTimes(1);
    } finally {
      await database.close();
    }
    expect(readLock()).toMatchObject({ pid: 4242, host: 'new-container-id' }); // theirs, left alone
  });

  it('inside a transaction too: its commit after the pause is refused, and it rolls back', async () => {
    const lost = vi.fn();
    const database = await openDatabase({ dataDir: dir, lockHeartbeatMs: 100, onDataDirLost: lost });
    try {
      await sql`CREATE TABLE written (x int)`.execute(database.db);
      await expect(
        database.db.transaction().execute(async (trx) => {
          await sql`INSERT INTO written VALUES (1)`.execute(trx);
          writeLock({ pid: 4242, host: 'new-container-id', startedAt: new Date().toISOString() });
          const until = Date.now() + 400;
          while (Date.now() < until) {
            // paused
          }
        }),
      ).rejects.toThrow(DataDirLockedError);
      expect(lost).toHaveBeenCalledTimes(1);
    } finally {
      await database.close();
    }
    // Nothing of it was committed (read through a fresh PGlite on the same files, lock-free).
    rmSync(lockPath());
    const reopened = await openDatabase({ dataDir: dir });
    try {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM written`.execute(reopened.db);
      expect(r.rows[0]?.n).toBe(0);
    } finally {
      await reopened.close();
    }
  });

  it('takes over a lock left by a process that died (SIGKILL, power loss)', async () => {
    const pid = await deadPid();
    writeLock({ pid, host: hostname(), startedAt: new Date().toISOString() });
    const release = lockDataDir(dir);
    expect(readLock().pid).toBe(process.pid);
    expect(readdirSync(dir)).toEqual([LOCK]);
    release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it.each([
    ['empty file', ''],
    ['not JSON', 'garbage \u0000\u00ff'],
    ['half-written JSON', '{"pid":12'],
    ['JSON null', 'null'],
    ['empty object', '{}'],
    ['array', '[1,2]'],
    ['a bare pid (classic pidfile)', '1'],
    ['a string', '"hello"'],
    ['pid 0 (would signal our own process group)', JSON.stringify({ pid: 0, host: hostname() })],
    ['negative pid (would signal every process)', JSON.stringify({ pid: -1, host: hostname() })],
    ['pid as a string', JSON.stringify({ pid: '1', host: hostname() })],
    ['no host', JSON.stringify({ pid: 1 })],
  ])('treats garbage as stale: %s', (_name, content) => {
    writeLock(content);
    const release = lockDataDir(dir);
    expect(readLock().pid).toBe(process.pid);
    release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('is not blocked by a takeover marker left by a process that crashed mid-takeover', async () => {
    const pid = await deadPid();
    writeLock({ pid, host: hostname(), startedAt: new Date().toISOString() });
    writeFileSync(`${lockPath()}.takeover`, JSON.stringify({ pid, host: hostname(), startedAt: 'x' }));
    const release = lockDataDir(dir);
    expect(readLock().pid).toBe(process.pid);
    release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('across processes racing for the same directories, exactly one wins each', async () => {
    // ROUNDS directories, half with a stale lock (the restart-after-crash case, where contenders
    // race to take it over) and half fresh. Every child tries round k at the same wall-clock instant
    // and keeps what it wins until all rounds are over.
    const ROUNDS = 40;
    const CHILDREN = 6;
    const stalePid = await deadPid();
    const dirs = Array.from({ length: ROUNDS }, (_, k) => {
      const d = join(dir, `r${k}`);
      mkdirSync(d);
      if (k % 2 === 0) {
        writeFileSync(join(d, LOCK), JSON.stringify({ pid: stalePid, host: hostname(), startedAt: 'x' }));
      }
      return d;
    });
    // A child reports "ready" once loaded, gets the common start time on stdin, and keeps every lock
    // it won (by staying alive) until we close its stdin: a slow child must not find the winners gone.
    const script = join(dir, 'racer.mjs');
    writeFileSync(
      script,
      `import { lockDataDir } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/store/data-dir-lock.ts')).href)};
const [dirs, step] = [JSON.parse(process.argv[2]), Number(process.argv[3])];
let input = '';
let started = false;
process.stdin.setEncoding('utf8').on('data', (chunk) => {
  if (started) return;
  input += chunk;
  if (!input.includes('\\n')) return;
  started = true;
  const start = Number(input.split('\\n')[0]);
  const won = [];
  for (let k = 0; k < dirs.length; k++) {
    while (Date.now() < start + k * step) {}
    try { lockDataDir(dirs[k]); won.push(k); } catch (e) { if (e.name !== 'DataDirLockedError') throw e; }
  }
  process.stdout.write(JSON.stringify(won) + '\\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdout.write('ready\\n');
`,
    );
    const racers = Array.from({ length: CHILDREN }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(dirs), '25'], {
        cwd: ROOT,
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(child);
      const lines: string[] = [];
      let buffered = '';
      const waiters: (() => void)[] = [];
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buffered += chunk;
        const parts = buffered.split('\n');
        buffered = parts.pop()!;
        lines.push(...parts);
        for (const w of waiters.splice(0)) w();
      });
      const line = async (n: number): Promise<string> => {
        while (lines.length <= n) {
          if (child.exitCode !== null) throw new Error(`racer exited with ${child.exitCode}`);
          await new Promise<void>((r) => waiters.push(r));
        }
        return lines[n]!;
      };
      return { child, line };
    });
    for (const r of racers) expect(await r.line(0)).toBe('ready');
    const start = Date.now() + 200;
    for (const r of racers) r.child.stdin!.write(`${start}\n`);
    const results = await Promise.all(racers.map(async (r) => JSON.parse(await r.line(1)) as number[]));
    for (const r of racers) r.child.stdin!.end();
    await Promise.all(racers.map((r) => new Promise((resolve) => r.child.once('exit', resolve))));
    const wins = new Map<number, number>();
    for (const won of results) for (const k of won) wins.set(k, (wins.get(k) ?? 0) + 1);
    const perRound = dirs.map((_, k) => wins.get(k) ?? 0);
    expect(perRound).toEqual(dirs.map(() => 1));
  });
});
