import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApplication } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { DatabaseOptions } from '../../src/store/database.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../emulators/openai.js';
import { ADMIN_KEY, ENCRYPTION_KEY, LogCapture } from '../helpers/app.js';
import { testDatabaseKind, testDatabaseOptions } from '../helpers/database.js';
import { freePort, startService } from '../helpers/process.js';
import { OPENAI_KEY } from '../helpers/stack.js';

/**
 * The queue's promises across process lifetimes, with the real service as a child process:
 * a message accepted before a stop is answered after the restart; a job held by a process that
 * was SIGKILLed mid-call is picked up again within 60 s (heartbeats) and answered exactly once.
 */

let openai: OpenAIEmulator;
beforeAll(async () => {
  openai = await startOpenAIEmulator({ apiKey: OPENAI_KEY });
});
afterAll(async () => {
  await openai?.close();
});

/** One database both the child and the in-process app use: a data dir, or a schema on the server. */
function sharedDatabase(): {
  env: Record<string, string>;
  options: DatabaseOptions;
  cleanup: () => Promise<void>;
} {
  if (testDatabaseKind() === 'embedded') {
    const dir = mkdtempSync(join(tmpdir(), 'am-durability-'));
    return {
      env: { DATA_DIR: dir },
      options: { dataDir: dir },
      cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const db = testDatabaseOptions();
  return {
    env: { DATABASE_URL: db.url!, DATABASE_SCHEMA: db.schema!, DATABASE_POOL_SIZE: '4' },
    options: db,
    cleanup: db.cleanup,
  };
}

const baseEnv = () => ({
  ADMIN_API_KEY: ADMIN_KEY,
  TOKEN_ENCRYPTION_KEY: ENCRYPTION_KEY,
  OPENAI_API_KEY: OPENAI_KEY,
  OPENAI_BASE_URL: openai.baseURL,
  OPENAI_MODEL: 'gpt-test',
  LOG_LEVEL: 'warn',
  JOB_RETRY_LIMIT: '10',
});

async function inProcessApp(options: DatabaseOptions, dataDir?: string) {
  const config = loadConfig({
    ...baseEnv(),
    PORT: '0',
    HOST: '127.0.0.1',
    ...(dataDir ? { DATA_DIR: dataDir } : {}),
  });
  return createApplication(config, { logger: createLogger('warn', new LogCapture()), database: options });
}

async function openChat(baseUrl: string): Promise<{ conversationId: string; token: string }> {
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
  const agentRes = await fetch(`${baseUrl}/api/agents`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ user_id: 'owner-dur', name: 'Dur' }),
  });
  const agent = (await agentRes.json()) as { agent_id: string };
  const convRes = await fetch(`${baseUrl}/api/agents/${agent.agent_id}/conversations`, {
    method: 'POST',
    headers,
    body: '{}',
  });
  const c = (await convRes.json()) as { conversation_id: string; customer_token: string };
  return { conversationId: c.conversation_id, token: c.customer_token };
}

async function sendOver(
  baseUrl: string,
  chat: { conversationId: string; token: string },
  content: string,
): Promise<string> {
  const res = await fetch(`${baseUrl}/api/conversations/${chat.conversationId}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${chat.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ content }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { message_id: string }).message_id;
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('durability across processes', () => {
  it('answers, after a restart, a message accepted just before a graceful stop', async () => {
    const shared = sharedDatabase();
    const port = await freePort();
    // The model is down while the first process runs: the job is accepted and waits in the queue.
    openai.reset();
    openai.failFor({ kind: 'status', status: 503 }, 600_000);
    const child = startService({ ...baseEnv(), ...shared.env }, port);
    try {
      await child.waitForHealthy();
      const chat = await openChat(child.baseUrl);
      const messageId = await sendOver(child.baseUrl, chat, 'are you there?');
      await waitFor(async () => (openai.requests.length > 0 ? true : undefined), 20_000);
      const exit = await child.stop('SIGTERM');
      expect(exit.code).toBe(0);

      openai.reset();
      openai.responder = () => ({ content: 'back again' });
      const app = await inProcessApp(shared.options, shared.env.DATA_DIR);
      try {
        const reply = await waitFor(
          () =>
            app.database.db
              .selectFrom('messages')
              .select(['content'])
              .where('reply_to', '=', messageId)
              .executeTakeFirst(),
          60_000,
        );
        expect(reply.content).toBe('back again');
      } finally {
        await app.stop();
      }
    } finally {
      child.kill();
      await shared.cleanup();
    }
  }, 120_000);

  it('re-runs within 60 s a job whose process was SIGKILLed mid-call, and answers it once', async () => {
    const shared = sharedDatabase();
    const port = await freePort();
    openai.reset();
    // The first call never returns: the child holds the job when it dies.
    let calls = 0;
    openai.responder = async () => {
      calls++;
      if (calls === 1) await new Promise(() => {});
      return { content: 'answered after the crash' };
    };
    const child = startService({ ...baseEnv(), ...shared.env }, port);
    try {
      await child.waitForHealthy();
      const chat = await openChat(child.baseUrl);
      const messageId = await sendOver(child.baseUrl, chat, 'hello?');
      await waitFor(async () => (calls > 0 ? true : undefined), 20_000);
      child.child.kill('SIGKILL');
      await child.waitForExit(10_000);
      const killedAt = Date.now();

      const app = await inProcessApp(shared.options, shared.env.DATA_DIR);
      try {
        const reply = await waitFor(
          () =>
            app.database.db
              .selectFrom('messages')
              .select(['content'])
              .where('reply_to', '=', messageId)
              .executeTakeFirst(),
          60_000,
        );
        expect(Date.now() - killedAt).toBeLessThan(60_000);
        expect(reply.content).toBe('answered after the crash');
        // Exactly one reply, and the customer message closed.
        await new Promise((r) => setTimeout(r, 500));
        const rows = await app.database.db
          .selectFrom('messages')
          .select(['role', 'status'])
          .where('conversation_id', '=', chat.conversationId)
          .orderBy('seq')
          .execute();
        expect(rows).toEqual([
          { role: 'customer', status: 'answered' },
          { role: 'assistant', status: null },
        ]);
      } finally {
        await app.stop();
      }
    } finally {
      child.kill();
      await shared.cleanup();
    }
  }, 120_000);
});
