import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OpenAIEmulator, startOpenAIEmulator } from './emulators/openai.js';
import { ADMIN_KEY, ENCRYPTION_KEY } from './helpers/app.js';
import { testDatabaseKind, testDatabaseOptions } from './helpers/database.js';
import { freePort, type ServiceProcess, startService } from './helpers/process.js';
import { OPENAI_KEY } from './helpers/stack.js';

/**
 * `npm start -- --role=api|worker|all`: API and worker processes sharing one PostgreSQL server.
 * Only meaningful on a server (the embedded database belongs to one process).
 */
describe.runIf(testDatabaseKind() === 'server')('separate API and worker processes', () => {
  let openai: OpenAIEmulator;
  const children: ServiceProcess[] = [];
  const db = testDatabaseOptions();
  beforeAll(async () => {
    openai = await startOpenAIEmulator({ apiKey: OPENAI_KEY });
    openai.responder = () => ({ content: 'answered by a worker process' });
  });
  afterAll(async () => {
    for (const c of children) c.kill();
    await openai?.close();
    await db.cleanup();
  });

  const env = () => ({
    DATABASE_URL: db.url!,
    DATABASE_SCHEMA: db.schema!,
    DATABASE_POOL_SIZE: '4',
    ADMIN_API_KEY: ADMIN_KEY,
    TOKEN_ENCRYPTION_KEY: ENCRYPTION_KEY,
    OPENAI_API_KEY: OPENAI_KEY,
    OPENAI_BASE_URL: openai.baseURL,
    LOG_LEVEL: 'warn',
  });

  it('an API process only accepts; worker processes answer', async () => {
    const api = startService(env(), await freePort(), ['--role=api']);
    children.push(api);
    await api.waitForHealthy();
    const admin = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
    const agent = (await (
      await api.fetch('/api/agents', {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ user_id: 'roles', name: 'R' }),
      })
    ).json()) as { agent_id: string };
    const conv = (await (
      await api.fetch(`/api/agents/${agent.agent_id}/conversations`, {
        method: 'POST',
        headers: admin,
        body: '{}',
      })
    ).json()) as {
      conversation_id: string;
      customer_token: string;
    };
    const auth = { authorization: `Bearer ${conv.customer_token}`, 'content-type': 'application/json' };
    const sent = await api.fetch(`/api/conversations/${conv.conversation_id}/messages`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ content: 'hello?' }),
    });
    expect(sent.status).toBe(202);
    const list = async () =>
      (
        (await (
          await api.fetch(`/api/conversations/${conv.conversation_id}/messages`, { headers: auth })
        ).json()) as {
          messages: Array<{ role: string; content: string }>;
        }
      ).messages;

    // No worker yet: the message waits.
    await new Promise((r) => setTimeout(r, 2500));
    expect((await list()).map((m) => m.role)).toEqual(['customer']);
    expect(openai.requests.length).toBe(0);

    // Two worker processes (no HTTP port) pick it up.
    const workerPort = await freePort();
    const w1 = startService(env(), workerPort, ['--role=worker']);
    const w2 = startService(env(), await freePort(), ['--role=worker']);
    children.push(w1, w2);
    const deadline = Date.now() + 60_000;
    let messages = await list();
    while (messages.length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      messages = await list();
    }
    expect(messages.map((m) => m.content)).toEqual(['hello?', 'answered by a worker process']);
    await expect(fetch(`http://127.0.0.1:${workerPort}/healthz`)).rejects.toThrow();
    expect((await w1.stop('SIGTERM')).code).toBe(0);
    expect((await w2.stop('SIGTERM')).code).toBe(0);
    expect((await api.stop('SIGTERM')).code).toBe(0);
  }, 120_000);
});

describe('role argument', () => {
  it('rejects an unknown role with exit code 2', async () => {
    const p = startService({ DATA_DIR: '/tmp/am-role-test-unused' }, await freePort(), ['--role=boss']);
    const exit = await p.waitForExit(30_000);
    expect(exit.code).toBe(2);
    expect(p.output).toContain('--role must be api, worker or all');
  }, 40_000);
});
