import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
}

interface LockContent {
  pid: number;
  host: string;
  startedAt: string;
  /** Unique per lock taken, so a release never removes a lock someone else took over. */
  token?: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The holder described by a lock file's text; anything else (garbage, `{}`, a bare pid, pid 0) is stale. */
function parseLock(text: string | undefined): LockContent | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as Partial<LockContent> | null;
    if (typeof v !== 'object' || v === null) return undefined;
    if (!Number.isSafeInteger(v.pid) || (v.pid as number) <= 0 || typeof v.host !== 'string')
      return undefined;
    return { pid: v.pid as number, host: v.host, startedAt: String(v.startedAt ?? 'unknown') };
  } catch {
    return undefined;
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Creates `path` holding `text`, atomically: the file never exists half-written (which a contender
 * would take for stale). Returns false when it already exists.
 */
function createExclusive(path: string, text: string): boolean {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { flag: 'wx', mode: 0o600 });
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
  // A file system without hard links: fall back to O_EXCL (a tiny half-written window).
  try {
    writeFileSync(path, text, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * An exclusive lock on the embedded database directory: PGlite itself lets two processes open the
 * same files and corrupt them. The lock file holds our pid; a lock whose pid is no longer running on
 * this host (SIGKILL, power loss) is stale and taken over, so a restart after a crash just works.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'agent-meetings.lock');
  const marker = `${path}.takeover`;
  const mine: LockContent = {
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    token: randomBytes(8).toString('hex'),
  };
  const text = JSON.stringify(mine);
  const isLive = (holder: LockContent | undefined): holder is LockContent =>
    holder !== undefined && holder.pid !== process.pid && (holder.host !== mine.host || isAlive(holder.pid));

  for (let attempt = 0; attempt < 200; attempt++) {
    if (createExclusive(path, text)) {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (readText(path) === text) rmSync(path, { force: true });
      };
    }
    const seen = readText(path);
    if (seen === undefined) continue; // released meanwhile
    const holder = parseLock(seen);
    if (isLive(holder)) {
      throw new DataDirLockedError(
        `The data directory ${dir} is in use by process ${holder.pid} on ${holder.host} (since ${holder.startedAt}). ` +
          'Stop that process, or give this one another DATA_DIR, or use a PostgreSQL server (DATABASE_URL) to run several processes.',
      );
    }
    // Stale. Several processes may judge it stale at once (two restarts after a crash): only the one
    // holding the takeover marker deletes it, and only if it is still the very file judged stale, so
    // nobody deletes the fresh lock another one just took.
    if (!createExclusive(marker, text)) {
      const other = readText(marker);
      if (other === undefined) continue; // just finished
      if (isLive(parseLock(other))) sleepSync(5);
      else rmSync(marker, { force: true }); // left by a process that crashed mid-takeover
      continue;
    }
    try {
      if (readText(path) === seen) rmSync(path, { force: true });
    } finally {
      rmSync(marker, { force: true });
    }
  }
  throw new DataDirLockedError(`Could not take the lock on ${path}`);
}
