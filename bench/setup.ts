import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { type Application, createApplication } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { type GoogleEmulator, startGoogleEmulator } from '../test/emulators/google.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../test/emulators/openai.js';

export interface BenchStack {
  app: Application;
  google: GoogleEmulator;
  openai: OpenAIEmulator;
  baseUrl: string;
  adminKey: string;
  database: 'embedded' | 'server';
  close(): Promise<void>;
}

/** The whole service on a fresh database (embedded in a temp dir, or a fresh schema on the server). */
export async function startBenchStack(opts: {
  databaseUrl?: string | undefined;
  modelLatencyMs: number;
  googleLatencyMs: number;
  workerConcurrency: number;
  role?: 'api' | 'all';
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
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_API_KEY: adminKey,
    TOKEN_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    DATA_DIR: dir ?? '/nonexistent',
    ...(opts.databaseUrl
      ? { DATABASE_URL: opts.databaseUrl, DATABASE_SCHEMA: schema, DATABASE_POOL_SIZE: '20' }
      : {}),
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
    LOG_LEVEL: 'silent',
  });
  const app = await createApplication(config, { logger: createLogger('silent'), role: opts.role ?? 'all' });
  const baseUrl = await app.listen();
  return {
    app,
    google,
    openai,
    baseUrl,
    adminKey,
    database: opts.databaseUrl ? 'server' : 'embedded',
    async close() {
      await app.stop();
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
