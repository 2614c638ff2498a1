import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { type GoogleEmulator, startGoogleEmulator } from '../emulators/google.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../emulators/openai.js';
import { Cluster, type ServiceChild } from './cluster.js';
import { faultModel } from './model.js';
import { sleep, TimeoutError, waitUntil } from './util.js';

export const GOOGLE_CLIENT_ID = 'faults-client.apps.googleusercontent.com';
export const GOOGLE_CLIENT_SECRET = 'faults-client-secret';
export const OPENAI_KEY = 'sk-faults-0123456789abcdefghijklmnop';

/** Emulator latencies outside the scenarios that change them on purpose. */
export const DEFAULT_OPENAI_LATENCY_MS = 30;
export const DEFAULT_GOOGLE_LATENCY_MS = 20;

/**
 * What every child process gets. JOB_RETRY_LIMIT: a job's patience is a number of retries, not a
 * duration; with the queue's backoff (2 s doubling, jitter, capped at 60 s) the default 4 retries add
 * up to only 30-60 s, so a job that starts failing at the start of a 30 s model outage could spend
 * its last attempt inside it and be answered with the fallback text. 10 retries give 6+ minutes.
 */
export const SERVICE_SETTINGS = {
  WORKER_CONCURRENCY: 8,
  JOB_RETRY_LIMIT: 10,
  DATABASE_POOL_SIZE: 6,
  GOOGLE_TIMEOUT_MS: 3000,
  /** events.insert attempts inside one job run (GoogleCalendarGateway's default maxAttempts). */
  GOOGLE_ATTEMPTS_PER_RUN: 4,
} as const;

export interface HarnessConfig {
  databaseUrl: string;
  schema: string;
  logDir: string;
  workers: number;
}

export interface Chat {
  conversationId: string;
  token: string;
  agentId: string;
  userId: string;
}

export interface Reply {
  customerId: string;
  conversationId: string;
  customerSeq: bigint;
  customerContent: string;
  status: string | null;
  attempts: number;
  replies: number;
  replySeq: bigint | null;
  replyContent: string | null;
  replyAt: Date | null;
}

export interface Tally {
  /** Customer messages the API accepted (202). */
  messages: number;
  answered: number;
  duplicates: number;
  lost: number;
  /** Accepted (202) but not in the database. */
  notStored: number;
  /** Stored customer messages the suite did not get a 202 for (a retried POST that had committed). */
  extraStored: number;
  fallbacks: number;
  outOfOrder: number;
  mismatched: number;
  rows: Reply[];
}

/** What a scenario sent and found; the runner tallies from it even when the scenario throws. */
export class ScenarioContext {
  conversations: string[] = [];
  sent: string[] = [];
  notes: string[] = [];
  failures: string[] = [];
  /** Booking-level findings, added to the message counts in the table. */
  extraDuplicates = 0;
  extraLost = 0;
  /** Processes this scenario stopped on purpose (not crashes). */
  readonly stopped = new Set<ServiceChild>();
  /** Expected reply text for a customer message (undefined: any non-fallback reply). */
  expectReply: ((customer: string, reply: string) => boolean) | undefined;

  constructor(readonly name: string) {}

  note(text: string): void {
    this.notes.push(text);
  }
  fail(text: string): void {
    this.failures.push(text);
  }
}

export class Harness {
  readonly adminKey = `faults-admin-${randomBytes(16).toString('hex')}`;
  readonly encryptionKey = randomBytes(32).toString('base64');
  readonly cluster: Cluster;
  readonly pool: pg.Pool;
  /** HTTP calls retried after a network error or 5xx (e.g. while PostgreSQL restarts). */
  httpRetries = 0;

  private constructor(
    readonly config: HarnessConfig,
    readonly google: GoogleEmulator,
    readonly openai: OpenAIEmulator,
  ) {
    this.pool = new pg.Pool({
      connectionString: config.databaseUrl,
      max: 4,
      options: `-c search_path=${config.schema}`,
      connectionTimeoutMillis: 5000,
    });
    // A restart of the server breaks idle clients: drop them, the next query reconnects.
    this.pool.on('error', () => {});
    this.cluster = new Cluster(this.childEnv(), config.logDir, config.workers);
  }

  static async start(config: HarnessConfig): Promise<Harness> {
    const google = await startGoogleEmulator({
      clientId: GOOGLE_CLIENT_ID,
      clientSecret: GOOGLE_CLIENT_SECRET,
      host: '127.0.0.1',
      latencyMs: DEFAULT_GOOGLE_LATENCY_MS,
    });
    const openai = await startOpenAIEmulator({
      apiKey: OPENAI_KEY,
      host: '127.0.0.1',
      latencyMs: DEFAULT_OPENAI_LATENCY_MS,
    });
    openai.responder = faultModel;
    return new Harness(config, google, openai);
  }

  childEnv(): Record<string, string> {
    return {
      DATABASE_URL: this.config.databaseUrl,
      DATABASE_SCHEMA: this.config.schema,
      DATABASE_POOL_SIZE: String(SERVICE_SETTINGS.DATABASE_POOL_SIZE),
      DATA_DIR: this.config.logDir,
      ADMIN_API_KEY: this.adminKey,
      TOKEN_ENCRYPTION_KEY: this.encryptionKey,
      GOOGLE_CLIENT_ID,
      GOOGLE_CLIENT_SECRET,
      GOOGLE_API_ROOT_URL: this.google.rootUrl,
      GOOGLE_OAUTH_TOKEN_URL: this.google.tokenUrl,
      GOOGLE_TIMEOUT_MS: String(SERVICE_SETTINGS.GOOGLE_TIMEOUT_MS),
      OPENAI_API_KEY: OPENAI_KEY,
      OPENAI_BASE_URL: this.openai.baseURL,
      OPENAI_MODEL: 'gpt-4o-mini',
      OPENAI_TIMEOUT_MS: '10000',
      WORKER_CONCURRENCY: String(SERVICE_SETTINGS.WORKER_CONCURRENCY),
      JOB_RETRY_LIMIT: String(SERVICE_SETTINGS.JOB_RETRY_LIMIT),
      RATE_LIMIT_PER_IP: '1000000',
      RATE_LIMIT_PER_CONVERSATION: '1000',
      LOG_LEVEL: 'info',
    };
  }

  /** Emulators back to normal: no faults, default latencies, Meet links created at once. */
  resetEmulators(): void {
    this.google.reset();
    this.google.latencyMs = DEFAULT_GOOGLE_LATENCY_MS;
    this.google.conferenceMode = 'success';
    this.google.pendingPolls = 2;
    this.openai.reset();
    this.openai.responder = faultModel;
    this.openai.latencyMs = DEFAULT_OPENAI_LATENCY_MS;
  }

  /** Every worker slot running (restarts the ones an earlier scenario left dead). */
  async ensureWorkers(): Promise<void> {
    await this.cluster.restartDeadWorkers();
    if (!this.cluster.api?.running) await this.cluster.startApi();
  }

  // ---- HTTP (the API process) -------------------------------------------------------------------

  /**
   * One API call. Network errors and 5xx are retried for up to `retryForMs` (default 30 s): while
   * PostgreSQL restarts the API answers 500/503 for a moment, which a real client would retry too.
   */
  async api<T>(
    method: string,
    path: string,
    opts: { body?: unknown; token?: string; expect: number; retryForMs?: number },
  ): Promise<T> {
    const deadline = Date.now() + (opts.retryForMs ?? 30_000);
    let last = '';
    for (;;) {
      // Read on every attempt: a scenario may restart the API process (on another port), as a load
      // balancer would send a retry to the instance that replaced a dead one.
      const api = this.cluster.api;
      if (!api) throw new Error('the API process is not running');
      let res: Response | undefined;
      let text = '';
      try {
        res = await fetch(`${api.baseUrl}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${opts.token ?? this.adminKey}`,
            ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
          signal: AbortSignal.timeout(15_000),
        });
        text = await res.text();
      } catch (err) {
        res = undefined;
        last = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
      if (res) {
        if (res.status === opts.expect) return (text ? JSON.parse(text) : undefined) as T;
        last = `${res.status} ${text.slice(0, 300)}`;
        if (res.status < 500) throw new Error(`${method} ${path} answered ${last} (expected ${opts.expect})`);
      }
      if (Date.now() > deadline) throw new TimeoutError(`${method} ${path} kept failing: ${last}`);
      this.httpRetries++;
      await sleep(250);
    }
  }

  /** Connects an owner's Google Calendar with a fresh emulator grant (as the dashboard would). */
  async connectOwner(userId: string): Promise<string> {
    const email = `${userId}@owner.test`;
    const grant = this.google.grant({ email });
    await this.api('POST', `/api/users/${userId}/google-calendar/connect`, {
      expect: 200,
      body: {
        access_token: grant.access_token,
        refresh_token: grant.refresh_token,
        token_expiry: grant.expiry.toISOString(),
        scope: `https://www.googleapis.com/auth/calendar ${grant.scope}`,
      },
    });
    return email;
  }

  async createAgent(userId: string, name: string): Promise<string> {
    const agent = await this.api<{ agent_id: string }>('POST', '/api/agents', {
      expect: 201,
      body: { user_id: userId, name },
    });
    return agent.agent_id;
  }

  async openConversation(agentId: string, userId: string, customerName: string): Promise<Chat> {
    const c = await this.api<{ conversation_id: string; customer_token: string }>(
      'POST',
      `/api/agents/${agentId}/conversations`,
      { expect: 201, body: { customer_name: customerName } },
    );
    return { conversationId: c.conversation_id, token: c.customer_token, agentId, userId };
  }

  /** Sends a customer message; the id is recorded in `ctx.sent` once the API accepted it. */
  async send(ctx: ScenarioContext, chat: Chat, content: string, retryForMs?: number): Promise<string> {
    const res = await this.api<{ message_id: string }>(
      'POST',
      `/api/conversations/${chat.conversationId}/messages`,
      { expect: 202, token: chat.token, body: { content }, retryForMs },
    );
    ctx.sent.push(res.message_id);
    return res.message_id;
  }

  // ---- the database, read directly ----------------------------------------------------------------

  async query<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query<T>(text, params)).rows;
  }

  /** Customer messages of these conversations still waiting for their reply. */
  async pendingCount(conversations: string[]): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM messages
        WHERE conversation_id = ANY($1) AND role = 'customer' AND status = 'pending'`,
      [conversations],
    );
    return rows[0]?.n ?? 0;
  }

  async replyCount(conversations: string[]): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM messages WHERE conversation_id = ANY($1) AND role = 'assistant'`,
      [conversations],
    );
    return rows[0]?.n ?? 0;
  }

  /**
   * Waits until every message `ctx` sent has its reply. On timeout it records a failure (the tally
   * then shows what is lost) and returns false.
   */
  async waitAllAnswered(ctx: ScenarioContext, timeoutMs: number): Promise<boolean> {
    let state = '';
    try {
      await waitUntil(
        `${ctx.sent.length} replies in ${ctx.name}`,
        async () => {
          const pending = await this.pendingCount(ctx.conversations);
          const replies = await this.replyCount(ctx.conversations);
          state = `; ${replies} replies, ${pending} messages pending`;
          return pending === 0 && replies >= ctx.sent.length ? true : undefined;
        },
        { timeoutMs, intervalMs: 250, describe: () => state },
      );
      return true;
    } catch (err) {
      ctx.fail(err instanceof Error ? err.message : String(err));
      return false;
    }
  }

  /**
   * The customer messages (the queue's jobs) of these conversations by state — `active` (claimed),
   * `queued` (pending, not claimed), `completed` (answered, with the reply or the fallback) — and how
   * many were claimed more than once.
   */
  async jobStates(conversations: string[]): Promise<{ states: Record<string, number>; retried: number }> {
    const rows = await this.query<{ state: string; n: number; retried: number }>(
      `SELECT CASE WHEN status <> 'pending' THEN 'completed'
                   WHEN claimed_until >= now() THEN 'active'
                   ELSE 'queued' END AS state,
              count(*)::int AS n, count(*) FILTER (WHERE attempts > 1)::int AS retried
         FROM messages
        WHERE role = 'customer' AND conversation_id = ANY($1)
        GROUP BY 1`,
      [conversations],
    );
    const states: Record<string, number> = {};
    let retried = 0;
    for (const r of rows) {
      states[r.state] = r.n;
      retried += r.retried;
    }
    return { states, retried };
  }

  /** Every customer message of the scenario with its replies, checked for loss, doubles and order. */
  async tally(ctx: ScenarioContext): Promise<Tally> {
    const raw = await this.query<{
      message_id: string;
      conversation_id: string;
      seq: string;
      content: string;
      status: string | null;
      attempts: number;
      replies: number;
      reply_seq: string | null;
      reply_content: string | null;
      reply_at: Date | null;
    }>(
      `SELECT c.message_id, c.conversation_id, c.seq::text AS seq, c.content, c.status, c.attempts,
              count(r.message_id)::int AS replies, min(r.seq)::text AS reply_seq,
              min(r.content) AS reply_content, min(r.created_at) AS reply_at
         FROM messages c
         LEFT JOIN messages r ON r.reply_to = c.message_id
        WHERE c.conversation_id = ANY($1) AND c.role = 'customer'
        GROUP BY c.message_id
        ORDER BY c.conversation_id, c.seq`,
      [ctx.conversations],
    );
    const orphans = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM messages
        WHERE conversation_id = ANY($1) AND role = 'assistant' AND reply_to IS NULL`,
      [ctx.conversations],
    );
    const rows: Reply[] = raw.map((r) => ({
      customerId: r.message_id,
      conversationId: r.conversation_id,
      customerSeq: BigInt(r.seq),
      customerContent: r.content,
      status: r.status,
      attempts: r.attempts,
      replies: r.replies,
      replySeq: r.reply_seq === null ? null : BigInt(r.reply_seq),
      replyContent: r.reply_content,
      replyAt: r.reply_at,
    }));
    const stored = new Set(rows.map((r) => r.customerId));
    const sent = new Set(ctx.sent);
    const notStored = ctx.sent.filter((id) => !stored.has(id)).length;
    const extraStored = rows.filter((r) => !sent.has(r.customerId)).length;
    const answeredRows = rows.filter((r) => r.replies > 0 && sent.has(r.customerId));
    const duplicates = rows.reduce((n, r) => n + Math.max(0, r.replies - 1), 0) + (orphans[0]?.n ?? 0);
    const unanswered = rows.filter((r) => r.replies === 0).length;

    // Order: in each conversation, replies come in the order of the messages they answer, each
    // after its message.
    let outOfOrder = 0;
    let previous: Reply | undefined;
    for (const r of rows) {
      if (r.replySeq !== null) {
        if (r.replySeq <= r.customerSeq) outOfOrder++;
        else if (
          previous &&
          previous.conversationId === r.conversationId &&
          previous.replySeq !== null &&
          previous.replySeq > r.replySeq
        )
          outOfOrder++;
      }
      previous = r;
    }
    const fallbacks = rows.filter((r) => r.status === 'failed').length;
    const mismatched = ctx.expectReply
      ? rows.filter((r) => r.replyContent !== null && !ctx.expectReply?.(r.customerContent, r.replyContent))
          .length
      : 0;
    return {
      messages: ctx.sent.length,
      answered: answeredRows.length,
      duplicates,
      lost: notStored + unanswered,
      notStored,
      extraStored,
      fallbacks,
      outOfOrder,
      mismatched,
      rows,
    };
  }

  // ---- shutdown ---------------------------------------------------------------------------------

  async close(): Promise<void> {
    await this.cluster.stopAll().catch(() => {});
    await this.google.close().catch(() => {});
    await this.openai.close().catch(() => {});
    await this.pool.end().catch(() => {});
  }
}
