import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { notifyChannel } from '../src/store/database.js';
import { MESSAGE_CHANNEL } from '../src/store/messages.js';
import { type GoogleEmulator, startGoogleEmulator } from '../test/emulators/google.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../test/emulators/openai.js';
import { freePort, type ServiceProcess, startService } from '../test/helpers/process.js';

export interface BenchStack {
  /** The service under test: `node --import tsx src/main.ts` in its own process. */
  service: ServiceProcess;
  google: GoogleEmulator;
  openai: OpenAIEmulator;
  baseUrl: string;
  adminKey: string;
  database: 'embedded' | 'server';
  /** Worker processes (`--role=worker`) beside `service` (then `--role=api`), when asked for. */
  workers: ServiceProcess[];
  /** Every process of the service (for CPU figures). */
  pids(): number[];
  /** The service processes' peak resident memory so far (VmHWM, summed), in bytes. */
  peakRss(): number;
  /**
   * Server only: when each of a conversation's news notifications (the service's NOTIFY, delivered
   * when the customer message's and then the reply's transaction commits) reached this process, by
   * conversation id, in arrival order (bench clock). Absent on the embedded database, which no other
   * process can LISTEN to.
   */
  notices?: Map<string, number[]>;
  close(): Promise<void>;
}

/**
 * The whole service on a fresh database (embedded in a temp dir, or a fresh schema on the server),
 * started as its own process exactly as `npm start` does, so that it has an event loop (and a core)
 * of its own. The emulators and the load generator share this process.
 */
/** The booking horizon the bench's service runs with (BOOKING_HORIZON_DAYS' maximum). */
export const BENCH_HORIZON_DAYS = 365;

export async function startBenchStack(opts: {
  databaseUrl?: string | undefined;
  modelLatencyMs: number;
  googleLatencyMs: number;
  workerConcurrency: number;
  role?: 'api' | 'all';
  /** Server only: this many `--role=worker` processes, and the main process runs `--role=api`. */
  workers?: number;
  /** Directory for the service's `--cpu-prof` output; no profiling without it. */
  cpuProfDir?: string | undefined;
  extraEnv?: Record<string, string>;
}): Promise<BenchStack> {
  const google = await startGoogleEmulator({
    clientId: 'bench',
    clientSecret: 'bench-secret',
    latencyMs: opts.googleLatencyMs,
  });
  const openai = await startOpenAIEmulator({ apiKey: 'sk-bench', latencyMs: opts.modelLatencyMs });
  const adminKey = randomBytes(24).toString('base64url');
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const dir = opts.databaseUrl ? undefined : mkdtempSync(join(tmpdir(), 'am-bench-'));
  const env: Record<string, string> = {
    ADMIN_API_KEY: adminKey,
    TOKEN_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    ...(opts.databaseUrl
      ? { DATABASE_URL: opts.databaseUrl, DATABASE_SCHEMA: schema, DATABASE_POOL_SIZE: '20' }
      : { DATA_DIR: dir! }),
    GOOGLE_CLIENT_ID: 'bench',
    GOOGLE_CLIENT_SECRET: 'bench-secret',
    GOOGLE_API_ROOT_URL: google.rootUrl,
    GOOGLE_OAUTH_TOKEN_URL: google.tokenUrl,
    OPENAI_API_KEY: 'sk-bench',
    OPENAI_BASE_URL: openai.baseURL,
    WORKER_CONCURRENCY: String(opts.workerConcurrency),
    RATE_LIMIT_PER_IP: '1000000',
    RATE_LIMIT_PER_CONVERSATION: '1000000',
    MAX_BOOKINGS_PER_CONVERSATION: '1000',
    // The bench books one hour apart per booking (bench/pipeline.ts): 200/s for 10 s reaches 83 days
    // ahead, past the 90-day default for longer runs. The most the service accepts; runPipeline
    // refuses a load that would ask for times past it.
    BOOKING_HORIZON_DAYS: String(BENCH_HORIZON_DAYS),
    // No passes over the owners' calendars (src/worker/calendar-sync.ts): each load's process starts
    // with every owner new, so its first tick (30 s in) would read every owner's window at once, inside
    // a longer run's measured load. In steady state a pass is one events.list per owner per interval,
    // off the booking path. See bench/README.md.
    CALENDAR_SYNC_SECONDS: '0',
    LOG_LEVEL: 'warn',
    ...opts.extraEnv,
  };
  const nodeArgs = [
    ...(opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
    ...(process.env.BENCH_SERVICE_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
  ];
  const split = (opts.workers ?? 0) > 0;
  if (split && !opts.databaseUrl) throw new Error('--workers needs the server database');
  const service = startService(
    env,
    await freePort(),
    [`--role=${split ? 'api' : (opts.role ?? 'all')}`],
    nodeArgs,
  );
  const workers: ServiceProcess[] = [];
  try {
    await service.waitForHealthy(120_000);
    for (let i = 0; i < (opts.workers ?? 0); i++) {
      // A worker serves no HTTP: it is ready when it says so, which it does at level info (and then
      // logs one line per answered message, which the single-process figures do not pay).
      const worker = startService({ ...env, LOG_LEVEL: 'info' }, 0, ['--role=worker'], nodeArgs);
      workers.push(worker);
      await worker.waitForOutput('agent-meetings listening on', 120_000);
    }
  } catch (err) {
    service.kill();
    for (const w of workers) w.kill();
    await google.close();
    await openai.close();
    throw err;
  }
  // A passive LISTEN on the channel the service announces new replies on (in the reply's statement,
  // so PostgreSQL delivers it when that transaction commits): the moment a reply became visible to
  // any client, without reading the service's tables while the load runs.
  let listener: pg.Client | undefined;
  const notices = new Map<string, number[]>();
  const replyChannel = notifyChannel(schema, MESSAGE_CHANNEL);
  if (opts.databaseUrl) {
    listener = new pg.Client({ connectionString: opts.databaseUrl });
    await listener.connect();
    listener.on('notification', (n) => {
      if (n.channel !== replyChannel || !n.payload) return;
      const seen = notices.get(n.payload);
      if (seen) seen.push(Date.now());
      else notices.set(n.payload, [Date.now()]);
    });
    await listener.query(`LISTEN ${replyChannel}`);
  }
  const all = [service, ...workers];
  const peaks = new Map<number, number>();
  const peakRss = () => {
    for (const p of all) {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'));
        if (m) peaks.set(p.pid, Math.max(peaks.get(p.pid) ?? 0, Number(m[1]) * 1024));
      } catch {
        // exited, or no /proc: keep the last reading
      }
    }
    return [...peaks.values()].reduce((a, b) => a + b, 0);
  };
  return {
    service,
    workers,
    pids: () => all.map((p) => p.pid),
    google,
    openai,
    baseUrl: service.baseUrl,
    adminKey,
    database: opts.databaseUrl ? 'server' : 'embedded',
    peakRss,
    ...(listener ? { notices } : {}),
    async close() {
      peakRss();
      await listener?.end();
      for (const p of all) {
        const exit = await p.stop('SIGTERM', 60_000);
        if (exit.code !== 0)
          process.stderr.write(`service exited with ${JSON.stringify(exit)}\n${p.stderr}\n`);
      }
      await google.close();
      await openai.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (opts.databaseUrl) {
        const c = new pg.Client({ connectionString: opts.databaseUrl });
        await c.connect();
        await c.query(
          `DROP SCHEMA IF EXISTS "${schema}" CASCADE; DROP SCHEMA IF EXISTS "${schema}_pgboss" CASCADE`,
        );
        await c.end();
      }
    },
  };
}

export async function json<T>(res: Response): Promise<T> {
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function eachLimited<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

export interface BenchOwner {
  userId: string;
  email: string;
  agentId: string;
  refreshToken: string;
}

/**
 * An owner as the dashboard makes one, through the admin API: a Google connection (a grant of the
 * emulator, for `<userId>@bench.test`) and an agent.
 */
export async function createOwner(
  stack: BenchStack,
  userId: string,
  grantOptions: { accessTokenExpiresInSeconds?: number } = {},
): Promise<BenchOwner> {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
  const email = `${userId}@bench.test`;
  const grant = stack.google.grant({ email, ...grantOptions });
  await json(
    await fetch(`${stack.baseUrl}/api/users/${userId}/google-calendar/connect`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({
        access_token: grant.access_token,
        refresh_token: grant.refresh_token,
        token_expiry: grant.expiry.toISOString(),
        scope: `https://www.googleapis.com/auth/calendar ${grant.scope}`,
      }),
    }),
  );
  const agent = await json<{ agent_id: string }>(
    await fetch(`${stack.baseUrl}/api/agents`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ user_id: userId, name: 'Bench' }),
    }),
  );
  return { userId, email, agentId: agent.agent_id, refreshToken: grant.refresh_token };
}

/** A customer conversation with the agent: its id and the customer's token. */
export async function openConversation(
  stack: BenchStack,
  agentId: string,
): Promise<{ conversation_id: string; customer_token: string }> {
  return json(
    await fetch(`${stack.baseUrl}/api/agents/${agentId}/conversations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    }),
  );
}
