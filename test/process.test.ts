import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type ServiceProcess, startService } from './helpers/process.js';

// The real service, as an operator runs it: `node --import tsx src/main.ts` with an empty DATA_DIR
// (embedded PostgreSQL, generated keys). The steps build on each other and run in order.

const ACCESS = `ya29.a0Af-${randomBytes(24).toString('base64url')}`;
const REFRESH = `1//0g-${randomBytes(24).toString('base64url')}`;
const USER = `owner-${randomBytes(6).toString('hex')}`;
const SCOPE = 'https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/calendar.events';
const EXPIRY = '2031-05-06T07:08:09.000Z';
const LOCK = 'agent-meetings.lock';

let dir: string;
let badDir: string;
let adminKey: string;
const all: ServiceProcess[] = [];
let first: ServiceProcess; // killed with SIGKILL
let second: ServiceProcess; // restarted on the same DATA_DIR, stopped with SIGTERM
let bad: ServiceProcess; // PORT=abc
let workerOnly: ServiceProcess; // --role=worker on the embedded database

function track(p: ServiceProcess): ServiceProcess {
  all.push(p);
  return p;
}

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const lockPid = () => (JSON.parse(readFileSync(join(dir, LOCK), 'utf8')) as { pid: number }).pid;

/** Every regular file under `root`, recursively. */
function filesUnder(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: 'utf8' })
    .map((f) => join(root, f))
    .filter((f) => statSync(f).isFile());
}

/** Files under `root` whose raw bytes contain `needle`. */
function filesContaining(root: string, needle: string): string[] {
  const bytes = Buffer.from(needle, 'utf8');
  return filesUnder(root).filter((f) => readFileSync(f).includes(bytes));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'am-process-'));
  badDir = join(mkdtempSync(join(tmpdir(), 'am-process-bad-')), 'data');
  // Both start at once: the failing one does not need to wait for the slow first start.
  first = track(startService({ DATA_DIR: dir, LOG_LEVEL: 'info' }, await freePort()));
  bad = track(startService({ DATA_DIR: badDir, PORT: 'abc' }));
  workerOnly = track(startService({ DATA_DIR: badDir }, 0, ['--role=worker']));
});

afterAll(() => {
  for (const p of all) p.kill();
  rmSync(dir, { recursive: true, force: true });
  rmSync(join(badDir, '..'), { recursive: true, force: true });
});

describe('the service as a process', () => {
  it('starts on an empty DATA_DIR: generates its keys, takes the lock, answers /healthz', async () => {
    await first.waitForHealthy(90_000);
    adminKey = readFileSync(join(dir, 'admin-api-key'), 'utf8').trim();
    expect(adminKey.length).toBeGreaterThanOrEqual(16);
    for (const f of ['admin-api-key', 'token-encryption-key', LOCK]) {
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    }
    expect(lockPid()).toBe(first.pid);
    // The operator is told where the key is, never the key itself.
    expect(first.stdout).toContain(join(dir, 'admin-api-key'));
    expect(first.output).not.toContain(adminKey);
    const ready = await first.fetch('/readyz');
    expect(ready.status).toBe(200);
  }, 120_000);

  it('accepts the generated admin key and rejects a wrong one', async () => {
    const ok = await first.fetch('/api/google-tokens', { headers: auth(adminKey) });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { tokens: unknown[] }).tokens).toEqual([]);

    const wrong = await first.fetch('/api/google-tokens', { headers: auth(`${adminKey}x`) });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ success: false });
    expect((await first.fetch('/api/google-tokens')).status).toBe(401);
  });

  it('stores a connection, survives SIGKILL, and a restart takes over the stale lock', async () => {
    const res = await first.fetch(`/api/users/${USER}/google-calendar/connect`, {
      method: 'POST',
      headers: { ...auth(adminKey), 'content-type': 'application/json' },
      body: JSON.stringify({
        access_token: ACCESS,
        refresh_token: REFRESH,
        token_expiry: EXPIRY,
        scope: SCOPE,
      }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ success: true, user_id: USER });

    const killed = await first.stop('SIGKILL');
    expect(killed.signal).toBe('SIGKILL');
    // The crash left its lock behind, naming a dead process.
    expect(lockPid()).toBe(first.pid);
    expect(() => process.kill(first.pid, 0)).toThrow();
    // Even straight after the crash (no checkpoint, data only in the WAL), no plaintext on disk.
    expect(filesContaining(join(dir, 'pgdata'), ACCESS)).toEqual([]);
    expect(filesContaining(join(dir, 'pgdata'), REFRESH)).toEqual([]);

    second = track(startService({ DATA_DIR: dir, LOG_LEVEL: 'info' }, await freePort()));
    await second.waitForHealthy(60_000);
    expect(lockPid()).toBe(second.pid);

    const got = await second.fetch(`/api/google-tokens/${USER}`, { headers: auth(adminKey) });
    expect(got.status).toBe(200);
    const text = await got.text();
    expect(text).not.toContain(ACCESS);
    expect(text).not.toContain(REFRESH);
    expect(JSON.parse(text).token_info).toMatchObject({
      access_token: `${ACCESS.slice(0, 6)}…${ACCESS.slice(-4)}`,
      refresh_token: `${REFRESH.slice(0, 6)}…${REFRESH.slice(-4)}`,
      token_expiry: EXPIRY,
      scope: SCOPE,
      status: 'connected',
      is_expired: false,
    });
    // The same generated admin key still works after the restart.
    expect((await second.fetch('/api/google-tokens', { headers: auth(adminKey) })).status).toBe(200);
    expect((await second.fetch('/api/google-tokens', { headers: auth('wrong-key-wrong-key') })).status).toBe(
      401,
    );
  }, 90_000);

  it('refuses a second process on the same DATA_DIR: it exits non-zero quickly, saying "in use"', async () => {
    const intruder = track(startService({ DATA_DIR: dir }, await freePort()));
    const exit = await intruder.waitForExit(30_000);
    expect(exit.code).toBe(2);
    expect(intruder.stderr).toContain('in use');
    expect(intruder.stderr).toContain(`process ${second.pid}`);
    expect(intruder.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    // The running one is undisturbed.
    expect(lockPid()).toBe(second.pid);
    expect((await second.fetch('/healthz')).status).toBe(200);
    const still = await second.fetch(`/api/google-tokens/${USER}`, { headers: auth(adminKey) });
    expect(still.status).toBe(200);
  });

  it('SIGTERM with a chat stream open: ends the stream, exits 0 within a few seconds, removes its lock', async () => {
    // An open SSE stream (any chat tab) is an active connection: the server's close waits for it,
    // so the service must end it itself (the browser's EventSource reconnects elsewhere).
    const agent = await second.fetch('/api/agents', {
      method: 'POST',
      headers: { ...auth(adminKey), 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: USER, name: 'Front desk' }),
    });
    expect(agent.status, await agent.clone().text()).toBe(201);
    const { agent_id } = (await agent.json()) as { agent_id: string };
    const opened = await second.fetch(`/api/agents/${agent_id}/conversations`, { method: 'POST' });
    expect(opened.status, await opened.clone().text()).toBe(201);
    const c = (await opened.json()) as { conversation_id: string; customer_token: string };
    const stream = await second.fetch(
      `/api/conversations/${c.conversation_id}/events?token=${c.customer_token}`,
    );
    expect(stream.status).toBe(200);
    const reader = stream.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('retry:');
    const ended = (async () => {
      while (!(await reader.read()).done);
      return true;
    })().catch(() => true);

    const signalledAt = Date.now();
    const exit = await second.stop('SIGTERM', 15_000);
    expect(await ended).toBe(true);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    expect(existsSync(join(dir, LOCK))).toBe(false);
    expect(readdirSync(dir).sort()).toEqual(['admin-api-key', 'pgdata', 'token-encryption-key']);
  });

  it('never writes the plaintext tokens to the database files or the logs', () => {
    const pgdata = join(dir, 'pgdata');
    expect(filesUnder(pgdata).length).toBeGreaterThan(10);
    // Control: the row really is in these files (its plaintext columns are found)...
    expect(filesContaining(pgdata, USER).length).toBeGreaterThan(0);
    expect(filesContaining(pgdata, 'auth/calendar.events').length).toBeGreaterThan(0);
    // ...but its tokens, or any long piece of them, are not.
    for (const secret of [ACCESS, REFRESH, ACCESS.slice(10, 30), REFRESH.slice(10, 30)]) {
      expect(filesContaining(pgdata, secret)).toEqual([]);
    }
    for (const p of all) {
      expect(p.output).not.toContain(ACCESS);
      expect(p.output).not.toContain(REFRESH);
      expect(p.output).not.toContain(adminKey);
    }
  });

  it('a bad environment variable: exits with code 2 and a message naming it', async () => {
    const exit = await bad.waitForExit(30_000);
    expect(exit.code).toBe(2);
    expect(bad.stderr).toContain('PORT');
    expect(bad.stderr).toMatch(/^agent-meetings: Invalid configuration/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    // It stopped before touching the data directory.
    expect(existsSync(badDir)).toBe(false);
  });
});

describe('refused configurations', () => {
  it('--role=worker on the embedded database: exits with code 2 and says it needs DATABASE_URL', async () => {
    const exit = await workerOnly.waitForExit(30_000);
    expect(exit.code).toBe(2);
    expect(workerOnly.stderr).toMatch(/^agent-meetings: --role=worker needs DATABASE_URL/);
    expect(existsSync(badDir)).toBe(false);
  });

  it('a port already taken: it stops what it started (its lock removed) and exits non-zero', async () => {
    const takenDir = mkdtempSync(join(tmpdir(), 'am-process-taken-'));
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    const p = track(startService({ DATA_DIR: takenDir }, port));
    try {
      const exit = await p.waitForExit(60_000);
      expect(exit.code).not.toBe(0);
      expect(p.output).toContain('EADDRINUSE');
      expect(p.output).toContain('could not listen; stopping');
      expect(existsSync(join(takenDir, LOCK))).toBe(false);
    } finally {
      await new Promise((r) => taken.close(r));
      rmSync(takenDir, { recursive: true, force: true });
    }
  });
});

describe('a signal while starting', () => {
  it('SIGTERM during startup (relayed twice): startup finishes, then it stops cleanly (exit 0, lock removed)', async () => {
    const startingDir = mkdtempSync(join(tmpdir(), 'am-process-starting-'));
    const p = track(startService({ DATA_DIR: startingDir }, await freePort()));
    try {
      // The generated-key notes come right after the configuration is read, before the embedded
      // database and the queue start (seconds on this machine).
      await p.waitForOutput('TOKEN_ENCRYPTION_KEY not set', 60_000);
      expect(p.output).not.toContain('agent-meetings listening on');
      // Twice, as `npm start` (or tsx, or systemd signalling every process of the unit) relays one
      // SIGTERM: the repeat must not force the exit past the graceful stop.
      p.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      const exit = await p.stop('SIGTERM', 60_000);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(existsSync(join(startingDir, LOCK))).toBe(false);
    } finally {
      rmSync(startingDir, { recursive: true, force: true });
    }
  });
});

describe('a lock taken over while running', () => {
  it('another process took the DATA_DIR lock (this one was paused): it exits 1 at its next heartbeat, leaving that lock', async () => {
    const lostDir = mkdtempSync(join(tmpdir(), 'am-process-lost-'));
    const p = track(startService({ DATA_DIR: lostDir, LOG_LEVEL: 'info' }, await freePort()));
    try {
      await p.waitForHealthy(60_000);
      // What a process on a re-created container writes when it takes a lock it found untouched.
      const theirs = JSON.stringify({
        pid: 4242,
        host: 'new-container-id',
        startedAt: new Date().toISOString(),
      });
      // Replaced at once (a rename), as the taker's hard link makes it: never read half-written.
      writeFileSync(join(lostDir, 'theirs.tmp'), theirs);
      renameSync(join(lostDir, 'theirs.tmp'), join(lostDir, LOCK));
      const exit = await p.waitForExit(30_000); // heartbeats are 10 s apart
      expect(exit).toMatchObject({ code: 1, signal: null });
      const fatal = p.stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { level: number; msg: string })
        .find((line) => line.level === 60);
      expect(fatal?.msg).toContain('was taken over by process 4242 on new-container-id');
      expect(readFileSync(join(lostDir, LOCK), 'utf8')).toBe(theirs);
    } finally {
      rmSync(lostDir, { recursive: true, force: true });
    }
  });
});
