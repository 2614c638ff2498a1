import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
}

interface LockContent {
  pid: number;
  host: string;
  startedAt: string;
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

/**
 * An exclusive lock on the embedded database directory: PGlite itself lets two processes open the
 * same files and corrupt them. The lock file holds our pid; a lock whose pid is no longer running on
 * this host (SIGKILL, power loss) is stale and taken over, so a restart after a crash just works.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'agent-meetings.lock');
  const mine: LockContent = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, JSON.stringify(mine), { flag: 'wx', mode: 0o600 });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          const current = JSON.parse(readFileSync(path, 'utf8')) as LockContent;
          if (current.pid === mine.pid) rmSync(path, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: LockContent | undefined;
    try {
      holder = JSON.parse(readFileSync(path, 'utf8')) as LockContent;
    } catch {
      holder = undefined; // unreadable or half-written: treat as stale
    }
    const live = holder && holder.pid !== process.pid && (holder.host !== mine.host || isAlive(holder.pid));
    if (live) {
      throw new DataDirLockedError(
        `The data directory ${dir} is in use by process ${holder!.pid} on ${holder!.host} (since ${holder!.startedAt}). ` +
          'Stop that process, or give this one another DATA_DIR, or use a PostgreSQL server (DATABASE_URL) to run several processes.',
      );
    }
    rmSync(path, { force: true });
  }
  throw new DataDirLockedError(`Could not take the lock on ${path}`);
}
