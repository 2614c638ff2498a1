import Fastify from 'fastify';
import { type BenchStack, json } from './setup.js';
import { round, summarize } from './stats.js';

export interface ApiResult {
  endpoint: string;
  concurrency: number;
  requests: number;
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
}

/** `concurrency` keep-alive loops hitting one request for `durationS`; latency per request. */
async function hammer(
  name: string,
  concurrency: number,
  durationS: number,
  request: (i: number) => Promise<Response>,
): Promise<ApiResult> {
  const latencies: number[] = [];
  let errors = 0;
  let counter = 0;
  const end = performance.now() + durationS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          const res = await request(counter++);
          await res.arrayBuffer();
          if (res.status >= 400) errors++;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const s = summarize(latencies);
  return {
    endpoint: name,
    concurrency,
    requests: latencies.length,
    req_per_s: round(latencies.length / elapsed, 0),
    p50_ms: round(s.p50, 2),
    p99_ms: round(s.p99, 2),
    errors,
  };
}

/**
 * The API's own cost: POST a customer message (validate, authorize, insert + enqueue in one
 * transaction) and GET a calendar connection (decrypt, mask), next to a bare Fastify route that
 * returns the same JSON, measured in the same run on the same machine.
 */
export async function runApi(
  stack: BenchStack,
  opts: { concurrency: number; durationS: number },
): Promise<ApiResult[]> {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
  const grant = stack.google.grant({ email: 'api-bench@bench.test' });
  await json(
    await fetch(`${stack.baseUrl}/api/users/api-bench/google-calendar/connect`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({
        access_token: grant.access_token,
        refresh_token: grant.refresh_token,
        token_expiry: grant.expiry.toISOString(),
        scope: 'https://www.googleapis.com/auth/calendar',
      }),
    }),
  );
  const agent = await json<{ agent_id: string }>(
    await fetch(`${stack.baseUrl}/api/agents`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ user_id: 'api-bench', name: 'A' }),
    }),
  );
  const chats: Array<{ id: string; auth: Record<string, string> }> = [];
  for (let i = 0; i < 200; i++) {
    const c = await json<{ conversation_id: string; customer_token: string }>(
      await fetch(`${stack.baseUrl}/api/agents/${agent.agent_id}/conversations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    chats.push({
      id: c.conversation_id,
      auth: { authorization: `Bearer ${c.customer_token}`, 'content-type': 'application/json' },
    });
  }
  const tokenBody = await (
    await fetch(`${stack.baseUrl}/api/google-tokens/api-bench`, { headers: admin })
  ).text();

  const bare = Fastify({ logger: false });
  bare.get('/bare', async (_req, reply) =>
    reply.header('content-type', 'application/json; charset=utf-8').send(tokenBody),
  );
  const bareUrl = await bare.listen({ port: 0, host: '127.0.0.1' });

  const results: ApiResult[] = [];
  results.push(
    await hammer('bare Fastify (same JSON)', opts.concurrency, opts.durationS, () =>
      fetch(`${bareUrl}/bare`),
    ),
  );
  results.push(
    await hammer('GET /api/google-tokens/:user_id', opts.concurrency, opts.durationS, () =>
      fetch(`${stack.baseUrl}/api/google-tokens/api-bench`, { headers: admin }),
    ),
  );
  results.push(
    await hammer('POST /api/conversations/:id/messages', opts.concurrency, opts.durationS, (i) => {
      const chat = chats[i % chats.length]!;
      return fetch(`${stack.baseUrl}/api/conversations/${chat.id}/messages`, {
        method: 'POST',
        headers: chat.auth,
        body: '{"content":"hello there"}',
      });
    }),
  );
  await bare.close();
  return results;
}
