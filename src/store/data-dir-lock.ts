import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
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

/** A lock file's holder, for a message: `process <pid> on <host>`, or what the file held. */
function describeHolder(text: string): string {
  const holder = parseLock(text);
  return holder ? `process ${holder.pid} on ${holder.host}` : JSON.stringify(text.slice(0, 100));
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

/** When the file at `path` was last written or touched (ms), or undefined when it is gone. */
function modifiedAt(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** A held lock: call it to release it (idempotent). */
export interface DataDirLock {
  (): void;
  /**
   * False once the lock is lost (onLost was called). Reads the file only when the heartbeat is
   * overdue: cheap enough to call before every database call.
   */
  check(): boolean;
}

/** How often a holder touches its lock file (its mtime is the heartbeat), by default. */
export const LOCK_HEARTBEAT_MS = 10_000;

/**
 * A lock held on another host is taken over once it has gone untouched this many heartbeats while we
 * watched it: its pid cannot be checked from here, and a container re-created on the same volume (a
 * new hostname) after a crash would otherwise find its own old lock live for good. Generous, so that
 * a holder whose event loop stalls for a while (a long synchronous step) is not taken for dead; a
 * start-up after such a crash waits that long (two minutes).
 */
const STALE_HEARTBEATS = 12;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * An exclusive lock on the embedded database directory: PGlite itself lets two processes open the
 * same files and corrupt them. The lock file holds our pid and host, and we touch it every
 * `heartbeatMs`. A lock whose pid is no longer running on this host (SIGKILL, power loss) is stale
 * and taken over, so a restart after a crash just works; so is one from another host (a container
 * re-created with a new hostname, a volume moved to another machine) not touched while we watch it
 * for STALE_HEARTBEATS heartbeats.
 *
 * A holder can still lose its lock: paused (a frozen container, a suspended VM) for longer than
 * that, it is taken for dead and another process takes over. Its next heartbeat then finds the file
 * no longer its own (another holder's, or gone) and calls `onLost` once, with what it found; the
 * heartbeat stops there. The caller must stop writing at once: two PGlite instances on the same
 * files corrupt them. A second lockDataDir of the same directory in this process takes the lock over
 * (our own pid is never another process), and the first one's holder is told it lost it.
 */
export function lockDataDir(
  dir: string,
  heartbeatMs = LOCK_HEARTBEAT_MS,
  onLost: (found: string) => void = () => {},
): DataDirLock {
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
  const staleMs = heartbeatMs * STALE_HEARTBEATS;
  const isLive = (holder: LockContent | undefined, file: string): holder is LockContent => {
    if (holder === undefined) return false;
    // On this host the pid tells (our own pid is a lock this process left, in-process twice or
    // before a restart that reused it).
    if (holder.host === mine.host) return holder.pid !== process.pid && isAlive(holder.pid);
    // Another host's pid means nothing here (a container's process is often pid 1, as ours may be):
    // only the heartbeat tells. Watched for up to staleMs: live as soon as it is touched (within a
    // heartbeat, for a live holder), stale if it never is. No clocks are compared: the holder's may
    // differ from ours.
    const touched = modifiedAt(file);
    if (touched === undefined) return false; // gone meanwhile: the caller looks again
    const until = Date.now() + staleMs;
    while (Date.now() < until) {
      sleepSync(Math.min(heartbeatMs, 1_000));
      if (modifiedAt(file) !== touched) return true;
    }
    return false;
  };

  for (let attempt = 0; attempt < 200; attempt++) {
    if (createExclusive(path, text)) {
      let released = false;
      let lost = false;
      /** When the file was last seen to be ours (a heartbeat, or a check). */
      let confirmedAt = Date.now();
      /** Looks at the lock file; true while it is ours (touching it), false once lost (told once). */
      const beat = (): boolean => {
        if (lost) return false;
        let found: string | undefined;
        try {
          found = readFileSync(path, 'utf8');
        } catch (err) {
          // Unreadable for a moment (I/O trouble): looked at again next beat. Gone: taken over
          // (a takeover deletes, then creates) or deleted by hand; either way no longer ours.
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return true;
        }
        if (found !== text) {
          // (Never once released: release stops the heartbeat, and check() no longer beats.)
          lost = true;
          clearInterval(heartbeat);
          onLost(found === undefined ? '(no lock file)' : describeHolder(found));
          return false;
        }
        confirmedAt = Date.now();
        try {
          const now = new Date();
          utimesSync(path, now, now);
        } catch {
          // Touched again at the next beat; a lock left untouched long enough is taken for dead.
        }
        return true;
      };
      const heartbeat = setInterval(beat, heartbeatMs);
      heartbeat.unref();
      const release = () => {
        if (released) return;
        released = true;
        clearInterval(heartbeat);
        if (readText(path) === text) rmSync(path, { force: true });
      };
      return Object.assign(release, {
        // A heartbeat overdue by a beat means this process was paused (or its event loop blocked):
        // the other timers that fire on waking may reach the database before the heartbeat does, so
        // the database calls this first (database.ts, guardedPGlite). Otherwise a clock read.
        check: (): boolean => {
          if (lost) return false;
          if (released || Date.now() - confirmedAt < 2 * heartbeatMs) return true;
          return beat();
        },
      });
    }
    const seen = readText(path);
    if (seen === undefined) continue; // released meanwhile
    const holder = parseLock(seen);
    if (isLive(holder, path)) {
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
      if (isLive(parseLock(other), marker)) sleepSync(5);
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
