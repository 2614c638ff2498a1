import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { BOOKING_SETTING_LIMITS, leavesBookableTime } from './domain/availability.js';
import { WEBHOOK_URL_POLICIES, type WebhookUrlPolicy } from './webhook-target.js';

/** The seed's fallback text when a meeting cannot be booked. */
export const DEFAULT_MEETING_ERROR_MESSAGE =
  'Ohhh we having trouble scheduling the meeting. Please try again later.';
export const DEFAULT_LLM_ERROR_MESSAGE =
  "Sorry, I'm having trouble answering right now. Your message is saved; please try again in a moment.";

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL');

// Every setting, its default and its constraint. Empty strings count as "not set" so that an
// environment written from `.env.example` with blank values (a compose or systemd env file, say)
// behaves like no value at all.
const envSchema = z.object({
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  DATABASE_URL: z
    .string()
    .refine((u) => /^postgres(ql)?:\/\//.test(u), 'is not a postgres:// URL')
    .optional(),
  DATABASE_SCHEMA: z
    .string()
    // At most 43 characters: pg-boss's schema is this name plus `_pgboss`, and it refuses names over 50.
    // `pg_` names are PostgreSQL's own: CREATE SCHEMA refuses them.
    .regex(
      /^(?!pg_)[a-z_][a-z0-9_]{0,42}$/,
      'must be a lowercase SQL identifier of at most 43 characters, not starting with pg_',
    )
    .default('public'),
  DATABASE_POOL_SIZE: int(2, 500).default(10),
  DATABASE_PREPARED_STATEMENTS: z.enum(['on', 'off']).default('on'),
  DATA_DIR: z.string().min(1).default('./data'),
  ADMIN_API_KEY: z
    .string()
    .min(16, 'must be at least 16 characters')
    // It travels as a Bearer token, which has no spaces: a key with one could never be presented.
    .regex(/^\S+$/, 'must not contain spaces or line breaks')
    .optional(),
  TOKEN_ENCRYPTION_KEY: z.string().min(1).optional(),
  GOOGLE_CLIENT_ID: z.string().default(''),
  GOOGLE_CLIENT_SECRET: z.string().default(''),
  GOOGLE_API_ROOT_URL: httpUrl.default('https://www.googleapis.com/'),
  GOOGLE_OAUTH_TOKEN_URL: httpUrl.default('https://oauth2.googleapis.com/token'),
  GOOGLE_TIMEOUT_MS: int(100, 120_000).default(15_000),
  OPENAI_API_KEY: z.string().default(''),
  OPENAI_BASE_URL: httpUrl.optional(),
  OPENAI_MODEL: z.string().min(1).default('gpt-4o-mini'),
  OPENAI_TIMEOUT_MS: int(100, 600_000).default(60_000),
  LLM_MAX_OUTPUT_TOKENS: int(0, 1_000_000).default(4096),
  MEETING_ERROR_MESSAGE: z.string().min(1).default(DEFAULT_MEETING_ERROR_MESSAGE),
  LLM_ERROR_MESSAGE: z.string().min(1).default(DEFAULT_LLM_ERROR_MESSAGE),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  WORKER_CONCURRENCY: int(1, 1000).default(50),
  JOB_RETRY_LIMIT: int(0, 20).default(4),
  HISTORY_LIMIT: int(1, 200).default(20),
  CALENDAR_SYNC_SECONDS: int(0, 86_400).default(300),
  MAX_PARTICIPANTS: int(1, 100).default(10),
  MIN_NOTICE_MINUTES: int(0, 10_080).default(5),
  // At most a year, as an agent's horizon_days: the prompt's offset-change sentence looks a year ahead.
  BOOKING_HORIZON_DAYS: int(1, BOOKING_SETTING_LIMITS.horizonDays.max).default(90),
  MAX_BOOKINGS_PER_CONVERSATION: int(1, 1000).default(3),
  RATE_LIMIT_PER_IP: int(1, 1_000_000).default(300),
  RATE_LIMIT_PER_CONVERSATION: int(1, 1_000_000).default(30),
  RATE_LIMIT_WINDOW_SECONDS: int(1, 86_400).default(60),
  SSE_MAX_STREAMS: int(1, 1_000_000).default(2000),
  SSE_STREAMS_PER_IP: int(1, 1_000_000).default(100),
  SSE_MAX_STREAM_SECONDS: int(1, 86_400).default(1800),
  WEBHOOK_URLS: z.enum(WEBHOOK_URL_POLICIES).default('public-https'),
  TRUST_PROXY: z
    .string()
    .refine(
      (v) => v === 'off' || /^\d{1,2}$/.test(v) || v.split(',').every((a) => isAddressOrRange(a.trim())),
      'must be off, a number of proxy hops, or comma-separated proxy addresses/CIDR ranges',
    )
    .default('off'),
});

/** An IP address, or a CIDR range of them (`10.0.0.0/8`, `fd00::/8`). */
function isAddressOrRange(value: string): boolean {
  const [address = '', prefix, ...rest] = value.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Absent = embedded PGlite in `dataDir`. */
  readonly databaseUrl: string | undefined;
  readonly databaseSchema: string;
  readonly databasePoolSize: number;
  /** Server only: run our statements as named prepared statements (off behind transaction poolers). */
  readonly databasePreparedStatements: boolean;
  readonly dataDir: string;
  readonly adminApiKey: string;
  /** Base64 32-byte keys; the first encrypts, all decrypt. */
  readonly tokenEncryptionKeys: readonly Buffer[];
  readonly google: {
    readonly clientId: string;
    readonly clientSecret: string;
    readonly apiRootUrl: string;
    readonly oauthTokenUrl: string;
    readonly timeoutMs: number;
  };
  readonly openai: {
    readonly apiKey: string;
    readonly baseUrl: string | undefined;
    readonly model: string;
    readonly timeoutMs: number;
    /** `max_completion_tokens` per answer; 0: not sent (servers that refuse the field). */
    readonly maxOutputTokens: number;
  };
  readonly meetingErrorMessage: string;
  readonly llmErrorMessage: string;
  readonly logLevel: LogLevel;
  readonly workerConcurrency: number;
  readonly jobRetryLimit: number;
  readonly historyLimit: number;
  /** Seconds between two passes over an owner's calendar (src/worker/calendar-sync.ts); 0: off. */
  readonly calendarSyncSeconds: number;
  readonly booking: {
    readonly maxParticipants: number;
    readonly minNoticeMinutes: number;
    readonly horizonDays: number;
    readonly maxBookingsPerConversation: number;
  };
  readonly rateLimit: {
    readonly perIp: number;
    readonly perConversation: number;
    readonly windowSeconds: number;
  };
  /** Open live streams (SSE): per process, per address, and how long one lasts before it is ended. */
  readonly sse: {
    readonly maxStreams: number;
    readonly perIp: number;
    readonly maxStreamSeconds: number;
  };
  /**
   * Which peers' `X-Forwarded-For` names the client (Fastify's trustProxy): none (false, the default:
   * exposed directly, the header is anyone's to forge), the nearest N hops, or these addresses/ranges.
   * Behind a load balancer, every customer would otherwise share its address and one per-IP bucket.
   */
  readonly trustProxy: false | number | string;
  /** Where owner webhooks may be sent (src/webhook-target.ts): https to public addresses, or anywhere. */
  readonly webhookUrls: WebhookUrlPolicy;
  /** Notes for the operator printed once at start-up (e.g. where a generated key was written). */
  readonly startupNotes: readonly string[];
}

/** Parses one or more comma-separated base64 keys; each must decode to exactly 32 bytes. */
export function parseEncryptionKeys(value: string): Buffer[] {
  const parts = value
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new ConfigError('TOKEN_ENCRYPTION_KEY is empty');
  return parts.map((part, i) => {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(part)) {
      throw new ConfigError(
        `TOKEN_ENCRYPTION_KEY: key #${i + 1} is not valid base64 (standard alphabet A-Z a-z 0-9 + /); ` +
          'generate one with: openssl rand -base64 32',
      );
    }
    const key = Buffer.from(part, 'base64');
    if (key.length !== 32) {
      throw new ConfigError(
        `TOKEN_ENCRYPTION_KEY: key #${i + 1} must be base64 of exactly 32 bytes (got ${key.length} bytes); ` +
          'generate one with: openssl rand -base64 32',
      );
    }
    return key;
  });
}

/**
 * Reads a secret from `DATA_DIR/<file>` or creates it there (mode 0600). Only used on the embedded
 * database, so that `npm start` works on a fresh machine with no configuration at all.
 */
function generatedSecret(
  dataDir: string,
  file: string,
  make: () => string,
): { value: string; path: string; created: boolean } {
  const path = join(dataDir, file);
  if (existsSync(path)) return { value: readFileSync(path, 'utf8').trim(), path, created: false };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const value = make();
  // `wx` fails if another process created it in the meantime; then read theirs.
  try {
    writeFileSync(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
    return { value, path, created: true };
  } catch {
    return { value: readFileSync(path, 'utf8').trim(), path, created: false };
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([k, v]) => k in envSchema.shape && v !== undefined && v.trim() !== ''),
  );
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  if (!leavesBookableTime(e.MIN_NOTICE_MINUTES, e.BOOKING_HORIZON_DAYS)) {
    throw new ConfigError(
      'Invalid configuration:\n  MIN_NOTICE_MINUTES must be shorter than BOOKING_HORIZON_DAYS, or no time could be booked',
    );
  }
  const dataDir = resolve(e.DATA_DIR);
  const notes: string[] = [];

  let adminApiKey = e.ADMIN_API_KEY;
  let encryptionKey = e.TOKEN_ENCRYPTION_KEY;
  if (e.DATABASE_URL) {
    const missing = [!adminApiKey && 'ADMIN_API_KEY', !encryptionKey && 'TOKEN_ENCRYPTION_KEY'].filter(
      Boolean,
    );
    if (missing.length > 0) {
      throw new ConfigError(`${missing.join(' and ')} must be set when DATABASE_URL is set`);
    }
    // Not required (an API-only process never asks the model, and a deployment may start before its
    // Google client exists), but a deployment without them fails every booking: said at start.
    if (!e.OPENAI_API_KEY && !e.OPENAI_BASE_URL) {
      notes.push(
        'OPENAI_API_KEY is not set (nor OPENAI_BASE_URL): every model call will fail, and customers get LLM_ERROR_MESSAGE',
      );
    }
    if (!e.GOOGLE_CLIENT_ID || !e.GOOGLE_CLIENT_SECRET) {
      notes.push(
        'GOOGLE_CLIENT_ID or GOOGLE_CLIENT_SECRET is not set: no access token can be refreshed, so bookings fail once a connection’s token expires',
      );
    }
  } else {
    if (!adminApiKey) {
      const s = generatedSecret(dataDir, 'admin-api-key', () => randomBytes(24).toString('base64url'));
      // The file may have been edited: held to the variable's own rule (an empty key matches nothing,
      // but "admin" would be guessable).
      if (s.value.length < 16 || /\s/.test(s.value)) {
        throw new ConfigError(`${s.path}: the admin key must be at least 16 characters, with no spaces`);
      }
      adminApiKey = s.value;
      notes.push(
        `ADMIN_API_KEY not set: using the key stored in ${s.path}${s.created ? ' (just generated)' : ''}`,
      );
    }
    if (!encryptionKey) {
      const s = generatedSecret(dataDir, 'token-encryption-key', () => randomBytes(32).toString('base64'));
      encryptionKey = s.value;
      notes.push(`TOKEN_ENCRYPTION_KEY not set: using the key stored in ${s.path}`);
    }
  }

  // Frozen all the way down: one module cannot change a setting under another's feet.
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    databaseSchema: e.DATABASE_SCHEMA,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS === 'on',
    dataDir,
    adminApiKey: adminApiKey!,
    tokenEncryptionKeys: Object.freeze(parseEncryptionKeys(encryptionKey!)),
    google: Object.freeze({
      clientId: e.GOOGLE_CLIENT_ID,
      clientSecret: e.GOOGLE_CLIENT_SECRET,
      apiRootUrl: e.GOOGLE_API_ROOT_URL.endsWith('/') ? e.GOOGLE_API_ROOT_URL : `${e.GOOGLE_API_ROOT_URL}/`,
      oauthTokenUrl: e.GOOGLE_OAUTH_TOKEN_URL,
      timeoutMs: e.GOOGLE_TIMEOUT_MS,
    }),
    openai: Object.freeze({
      apiKey: e.OPENAI_API_KEY,
      baseUrl: e.OPENAI_BASE_URL,
      model: e.OPENAI_MODEL,
      timeoutMs: e.OPENAI_TIMEOUT_MS,
      maxOutputTokens: e.LLM_MAX_OUTPUT_TOKENS,
    }),
    meetingErrorMessage: e.MEETING_ERROR_MESSAGE,
    llmErrorMessage: e.LLM_ERROR_MESSAGE,
    logLevel: e.LOG_LEVEL,
    workerConcurrency: e.WORKER_CONCURRENCY,
    jobRetryLimit: e.JOB_RETRY_LIMIT,
    historyLimit: e.HISTORY_LIMIT,
    calendarSyncSeconds: e.CALENDAR_SYNC_SECONDS,
    booking: Object.freeze({
      maxParticipants: e.MAX_PARTICIPANTS,
      minNoticeMinutes: e.MIN_NOTICE_MINUTES,
      horizonDays: e.BOOKING_HORIZON_DAYS,
      maxBookingsPerConversation: e.MAX_BOOKINGS_PER_CONVERSATION,
    }),
    rateLimit: Object.freeze({
      perIp: e.RATE_LIMIT_PER_IP,
      perConversation: e.RATE_LIMIT_PER_CONVERSATION,
      windowSeconds: e.RATE_LIMIT_WINDOW_SECONDS,
    }),
    sse: Object.freeze({
      maxStreams: e.SSE_MAX_STREAMS,
      perIp: e.SSE_STREAMS_PER_IP,
      maxStreamSeconds: e.SSE_MAX_STREAM_SECONDS,
    }),
    trustProxy:
      e.TRUST_PROXY === 'off'
        ? false
        : /^\d+$/.test(e.TRUST_PROXY)
          ? Number(e.TRUST_PROXY)
          : e.TRUST_PROXY.split(',')
              .map((a) => a.trim())
              .join(','),
    webhookUrls: e.WEBHOOK_URLS,
    startupNotes: Object.freeze(notes),
  });
}
