import { spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { REPO_ROOT } from '../test/helpers/process.js';
import { type BenchStack, createOwner, openConversation } from './setup.js';
import { cpuSeconds, round, summarize } from './stats.js';

export interface ApiResult {
  endpoint: string;
  concurrency: number;
  requests: number;
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  /** The server process's CPU time per request (user + system), in microseconds. */
  server_cpu_us_per_req: number;
  ratio_to_bare: string;
}

interface Call {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

/**
 * `concurrency` keep-alive loops sending `call(i)` for `durationS`; latency per request. Uses
 * node:http with a keep-alive agent (cheaper per request than fetch), so the load generator spends
 * as little as it can of the machine the server runs on.
 */
async function hammer(
  name: string,
  serverPid: number,
  baseUrl: string,
  concurrency: number,
  durationS: number,
  call: (i: number) => Call,
): Promise<Omit<ApiResult, 'ratio_to_bare'>> {
  const url = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const send = (c: Call) =>
    new Promise<number>((resolve, reject) => {
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          method: c.method,
          path: c.path,
          headers: c.body ? { ...c.headers, 'content-length': String(Buffer.byteLength(c.body)) } : c.headers,
          agent,
        },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(c.body);
    });
  // Warm-up: connections open, code paths compiled.
  for (let i = 0; i < concurrency * 4; i++) await send(call(i)).catch(() => 0);

  const latencies: number[] = [];
  let errors = 0;
  let counter = 0;
  const cpu0 = cpuSeconds(serverPid);
  const started = performance.now();
  const end = started + durationS * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          if ((await send(call(counter++))) >= 400) errors++;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(serverPid) - cpu0;
  agent.destroy();
  const s = summarize(latencies);
  return {
    endpoint: name,
    concurrency,
    requests: latencies.length,
    req_per_s: round(latencies.length / elapsed, 0),
    p50_ms: round(s.p50, 2),
    p99_ms: round(s.p99, 2),
    errors,
    server_cpu_us_per_req: round((cpu * 1e6) / Math.max(1, latencies.length), 0),
  };
}

/** The bare route in its own process, like the service. */
async function startBare(body: string): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/bare-server.ts'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BARE_BODY: body, PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)));
  });
  return {
    url,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * The API's own cost: POST a customer message (validate, authorize, insert + enqueue in one
 * transaction) and GET a calendar connection (read, mask), next to a bare Fastify route that returns
 * the same JSON, each server in its own process, measured in the same run on the same machine.
 */
export async function runApi(
  stack: BenchStack,
  opts: { concurrency: number; durationS: number },
): Promise<ApiResult[]> {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
  const owner = await createOwner(stack, 'api-bench');
  const chats: Array<{ id: string; auth: Record<string, string> }> = [];
  for (let i = 0; i < 200; i++) {
    const c = await openConversation(stack, owner.agentId);
    chats.push({
      id: c.conversation_id,
      auth: { authorization: `Bearer ${c.customer_token}`, 'content-type': 'application/json' },
    });
  }
  const tokenBody = await (
    await fetch(`${stack.baseUrl}/api/google-tokens/api-bench`, { headers: admin })
  ).text();

  const bare = await startBare(tokenBody);
  const results: Array<Omit<ApiResult, 'ratio_to_bare'>> = [];
  try {
    results.push(
      await hammer('bare Fastify (same JSON)', bare.pid, bare.url, opts.concurrency, opts.durationS, () => ({
        method: 'GET',
        path: '/bare',
        headers: {},
      })),
    );
  } finally {
    await bare.stop();
  }
  results.push(
    await hammer(
      'GET /api/google-tokens/:user_id',
      stack.service.pid,
      stack.baseUrl,
      opts.concurrency,
      opts.durationS,
      () => ({
        method: 'GET',
        path: '/api/google-tokens/api-bench',
        headers: { authorization: admin.authorization },
      }),
    ),
  );
  results.push(
    await hammer(
      'POST /api/conversations/:id/messages',
      stack.service.pid,
      stack.baseUrl,
      opts.concurrency,
      opts.durationS,
      (i) => {
        const chat = chats[i % chats.length]!;
        return {
          method: 'POST',
          path: `/api/conversations/${chat.id}/messages`,
          headers: chat.auth,
          body: '{"content":"hello there"}',
        };
      },
    ),
  );
  const bareRate = results[0]!.req_per_s;
  return results.map((r) => ({ ...r, ratio_to_bare: `${Math.round((100 * r.req_per_s) / bareRate)}%` }));
}
