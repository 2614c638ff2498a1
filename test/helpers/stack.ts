import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, vi } from 'vitest';
import type { ApplicationOptions } from '../../src/app.js';
import { retryDelaySeconds } from '../../src/worker/queue.js';
import { type GoogleEmulator, startGoogleEmulator } from '../emulators/google.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../emulators/openai.js';
import { startTestApp, type TestApp } from './app.js';

export const GOOGLE_CLIENT_ID = 'test-client.apps.googleusercontent.com';
export const GOOGLE_CLIENT_SECRET = 'test-client-secret';
export const OPENAI_KEY = 'sk-test-0123456789abcdefghijklmnop';

export interface Stack extends TestApp {
  google: GoogleEmulator;
  openai: OpenAIEmulator;
  /** Connects an owner's calendar through the HTTP API with a fresh emulator grant. */
  connectOwner(
    userId: string,
    opts?: { accessTokenExpiresInSeconds?: number; scope?: string },
  ): Promise<{ refresh_token: string; access_token: string }>;
  createAgent(body: Record<string, unknown>): Promise<{ agent_id: string; [k: string]: unknown }>;
  openConversation(
    agentId: string,
    body?: Record<string, unknown>,
  ): Promise<{ conversation_id: string; customer_token: string }>;
  send(conversationId: string, token: string, content: string): Promise<string>;
  /** Polls GET messages until `count` assistant replies exist (or times out). */
  waitForReplies(
    conversationId: string,
    token: string,
    count: number,
    timeoutMs?: number,
  ): Promise<ChatMessage[]>;
  messages(conversationId: string, token: string): Promise<ChatMessage[]>;
  /**
   * While held, a failed attempt's retry waits an hour instead of ~0.1 s: a test that acts between a
   * message's attempts (on its row, say) does so without racing the retry, then moves it on itself
   * (`run_after = NULL`; the 250 ms poll finds it).
   */
  holdRetries(held: boolean): void;
  /** Resolves once the message's first attempt failed and gave its claim back (its retry waiting). */
  firstAttemptFailed(messageId: string, timeoutMs?: number): Promise<void>;
  /** Moves a held retry on: the message is claimable at once (the 250 ms poll finds it). */
  retryNow(messageId: string): Promise<void>;
}

export interface ChatMessage {
  message_id: string;
  role: 'customer' | 'assistant';
  content: string;
  created_at: string;
}

/** The whole service against both emulators, on a private database. */
export async function startStack(
  env: Record<string, string> = {},
  options: ApplicationOptions = {},
): Promise<Stack> {
  const google = await startGoogleEmulator({
    clientId: GOOGLE_CLIENT_ID,
    clientSecret: GOOGLE_CLIENT_SECRET,
  });
  const openai = await startOpenAIEmulator({ apiKey: OPENAI_KEY });
  let retriesHeld = false;
  const t = await startTestApp(
    {
      GOOGLE_CLIENT_ID,
      GOOGLE_CLIENT_SECRET,
      GOOGLE_API_ROOT_URL: google.rootUrl,
      GOOGLE_OAUTH_TOKEN_URL: google.tokenUrl,
      OPENAI_API_KEY: OPENAI_KEY,
      OPENAI_BASE_URL: openai.baseURL,
      OPENAI_MODEL: 'gpt-test',
      WORKER_CONCURRENCY: '10',
      RATE_LIMIT_PER_IP: '1000000',
      RATE_LIMIT_PER_CONVERSATION: '1000',
      ...env,
    },
    {
      google: { backoffBaseMs: 5, conferenceWaitMs: 3000 },
      ...options,
      // A failed attempt is retried after ~0.1 s instead of 1-2 s, and found by a 250 ms poll: tests
      // of retries wait for the outcome, not for the production backoff (see holdRetries).
      queue: {
        retryDelaySeconds: (attempt) => (retriesHeld ? 3_600 : retryDelaySeconds(attempt, 0.1)),
        pollIntervalMs: 250,
        ...options.queue,
      },
    },
  );
  const http = t.app.http;

  const stack: Stack = {
    ...t,
    google,
    openai,
    async connectOwner(userId, opts = {}) {
      const grant = google.grant({ email: `${userId}@owner.test`, ...opts });
      const res = await http.inject({
        method: 'POST',
        url: `/api/users/${userId}/google-calendar/connect`,
        headers: t.admin,
        payload: {
          access_token: grant.access_token,
          refresh_token: grant.refresh_token,
          token_expiry: grant.expiry.toISOString(),
          scope: `https://www.googleapis.com/auth/calendar ${grant.scope}`,
        },
      });
      if (res.statusCode !== 200) throw new Error(`connect failed: ${res.body}`);
      return grant;
    },
    async createAgent(body) {
      const res = await http.inject({ method: 'POST', url: '/api/agents', headers: t.admin, payload: body });
      if (res.statusCode !== 201) throw new Error(`create agent failed: ${res.body}`);
      return res.json();
    },
    async openConversation(agentId, body = {}) {
      const res = await http.inject({
        method: 'POST',
        url: `/api/agents/${agentId}/conversations`,
        payload: body,
      });
      if (res.statusCode !== 201) throw new Error(`open conversation failed: ${res.body}`);
      return res.json();
    },
    async send(conversationId, token, content) {
      const res = await http.inject({
        method: 'POST',
        url: `/api/conversations/${conversationId}/messages`,
        headers: { authorization: `Bearer ${token}` },
        payload: { content },
      });
      if (res.statusCode !== 202) throw new Error(`send failed: ${res.statusCode} ${res.body}`);
      return res.json().message_id;
    },
    async messages(conversationId, token) {
      const res = await http.inject({
        url: `/api/conversations/${conversationId}/messages`,
        headers: { authorization: `Bearer ${token}` },
      });
      return res.json().messages;
    },
    holdRetries(held) {
      retriesHeld = held;
    },
    async firstAttemptFailed(messageId, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const row = await t.app.database.db
          .selectFrom('messages')
          .select(['attempts', 'claimed_until', 'last_error'])
          .where('message_id', '=', messageId)
          .executeTakeFirst();
        if (row && row.attempts === 1 && row.claimed_until === null && row.last_error !== null) return;
        if (row && row.attempts > 1) throw new Error(`message ${messageId} was retried already`);
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${messageId}'s first attempt to fail`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async retryNow(messageId) {
      const moved = await t.app.database.db
        .updateTable('messages')
        .set({ run_after: null })
        .where('message_id', '=', messageId)
        .where('status', '=', 'pending')
        .where('claimed_until', 'is', null)
        .executeTakeFirst();
      if (Number(moved.numUpdatedRows) !== 1) throw new Error(`message ${messageId} has no retry waiting`);
    },
    async waitForReplies(conversationId, token, count, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const list = await stack.messages(conversationId, token);
        if (list.filter((m) => m.role === 'assistant').length >= count) return list;
        if (Date.now() > deadline) {
          throw new Error(`timed out waiting for ${count} replies; have ${JSON.stringify(list, null, 1)}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async close() {
      await t.close();
      await google.close();
      await openai.close();
    },
  };
  return stack;
}

/**
 * The stack of a test file: started before its first test, closed after its last, both emulators
 * reset (and retries no longer held) before each test. Use it from the file's top level; the returned object stands for the stack
 * once it started (reading it earlier throws).
 */
export function useStack(env: Record<string, string> = {}, options: ApplicationOptions = {}): Stack {
  let stack: Stack | undefined;
  beforeAll(async () => {
    stack = await startStack(env, options);
  });
  afterAll(async () => {
    await stack?.close();
  });
  beforeEach(() => {
    stack?.openai.reset();
    stack?.google.reset();
    stack?.holdRetries(false);
  });
  return new Proxy({} as Stack, {
    get(_target, key) {
      if (!stack) throw new Error('the stack starts in beforeAll: use it inside hooks and tests');
      return Reflect.get(stack, key);
    },
  });
}

/**
 * One /metrics snapshot of the process: `value(series)` is a series' number, the series named as
 * the exposition writes it, labels included (`queue_pickups_total{path="insert"}`,
 * `worker_slot_seconds_sum`); 0 when the process has not reported it.
 */
export async function metricsSnapshot(s: Stack): Promise<(series: string) => number> {
  const res = await s.app.http.inject({ method: 'GET', url: '/metrics', headers: s.admin });
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode}`);
  const values = new Map<string, number>();
  for (const line of res.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return (series) => values.get(series) ?? 0;
}

/**
 * queue_pickups_total by path, as the process's /metrics reports it: messages its worker took by
 * their own insert (`insert`) and by a claim statement (`claim`).
 */
export async function queuePickups(s: Stack): Promise<{ insert: number; claim: number }> {
  const value = await metricsSnapshot(s);
  return {
    insert: value('queue_pickups_total{path="insert"}'),
    claim: value('queue_pickups_total{path="claim"}'),
  };
}

/**
 * Waits until the message's failed attempt gave its claim back with a backoff (`run_after` set), and
 * returns its attempt count and the seconds until it may run again, on the database's clock.
 */
export async function retryScheduled(
  s: Stack,
  messageId: string,
  timeoutMs = 30_000,
): Promise<{ attempts: number; wait: number }> {
  return vi.waitFor(
    async () => {
      const r = await sql<{ attempts: number; wait: number }>`
        SELECT attempts, extract(epoch FROM run_after - now())::float8 AS wait
          FROM messages WHERE message_id = ${messageId} AND run_after IS NOT NULL`.execute(s.app.database.db);
      const row = r.rows[0];
      if (!row) throw new Error(`message ${messageId} has no retry scheduled yet`);
      return { attempts: Number(row.attempts), wait: Number(row.wait) };
    },
    { timeout: timeoutMs, interval: 100 },
  );
}
