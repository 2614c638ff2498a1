import { sql } from 'kysely';
import { messageText } from '../test/emulators/openai.js';
import { type BenchStack, json } from './setup.js';
import { round, rssSampler, summarize } from './stats.js';

export interface PipelineResult {
  offered_per_s: number;
  bookings: number;
  confirmed: number;
  bookings_per_s: number;
  e2e_p50_ms: number;
  e2e_p99_ms: number;
  overhead_p50_ms: number;
  overhead_p99_ms: number;
  pickup_p50_ms: number;
  pickup_p99_ms: number;
  peak_rss_mb: number;
  owners: number;
  refreshes_per_owner: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Open-loop load: `rate` customer messages per second for `durationS`, each asking the (emulated)
 * model to book; measures from the HTTP send to the committed confirmation (database clock).
 */
export async function runPipeline(
  stack: BenchStack,
  opts: { rate: number; durationS: number; owners: number; modelLatencyMs: number; googleLatencyMs: number },
): Promise<PipelineResult> {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
  const tag = Math.random().toString(36).slice(2, 8);
  // Owners whose access tokens expire in 2 minutes (inside the 5-minute margin): each must be
  // refreshed exactly once, however many bookings race for it.
  const owners: Array<{ userId: string; agentId: string; refreshToken: string }> = [];
  for (let i = 0; i < opts.owners; i++) {
    const userId = `bench-${tag}-${i}`;
    const grant = stack.google.grant({ email: `${userId}@bench.test`, accessTokenExpiresInSeconds: 120 });
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
    owners.push({ userId, agentId: agent.agent_id, refreshToken: grant.refresh_token });
  }

  const total = Math.max(1, Math.round(opts.rate * opts.durationS));
  const chats: Array<{ id: string; token: string }> = [];
  for (let i = 0; i < total; i++) {
    const c = await json<{ conversation_id: string; customer_token: string }>(
      await fetch(`${stack.baseUrl}/api/agents/${owners[i % owners.length]!.agentId}/conversations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    chats.push({ id: c.conversation_id, token: c.customer_token });
  }

  // The emulated model answers every message with a booking action; the time the request reached
  // it (minus its fixed latency) is when the worker started on that message.
  const modelArrival = new Map<number, number>();
  const base = Date.now() + 86_400_000;
  stack.openai.responder = (req) => {
    const arrived = Date.now() - opts.modelLatencyMs;
    const last = [...req.messages].reverse().find((m) => m.role === 'user');
    const idx = Number(/#(\d+)/.exec(messageText(last?.content))?.[1]);
    if (!modelArrival.has(idx)) modelArrival.set(idx, arrived);
    // One hour apart: no two bookings of an owner overlap (availability would refuse them).
    const when = new Date(base + idx * 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    return {
      content: `Booking it.\n[{"action":"Time_to_121meet","name":"Bench ${idx}","email":"c${idx}@bench.test","title":"Bench","participants":[],"meeting_time":"${when}","friendly_time":"soon"}]`,
    };
  };

  const rss = rssSampler();
  const sentAt = new Map<string, number>();
  const messageIds: string[] = [];
  const started = Date.now();
  const sends: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = started + (i * 1000) / opts.rate;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    const chat = chats[i]!;
    const t0 = Date.now();
    sends.push(
      fetch(`${stack.baseUrl}/api/conversations/${chat.id}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${chat.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ content: `please book #${i}` }),
      })
        .then((r) => json<{ message_id: string }>(r))
        .then((r) => {
          sentAt.set(r.message_id, t0);
          messageIds.push(r.message_id);
        }),
    );
  }
  await Promise.all(sends);

  const db = stack.app.database.db;
  const deadline = Date.now() + 120_000 + total * 50;
  for (;;) {
    const r = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM messages WHERE reply_to = ANY(${messageIds})`.execute(db);
    if (r.rows[0]!.n >= total) break;
    if (Date.now() > deadline) throw new Error(`only ${r.rows[0]!.n}/${total} replies after the deadline`);
    await sleep(50);
  }
  rss.stop();
  const rows = await sql<{
    message_id: string;
    question: string;
    content: string;
    asked: Date;
    answered: Date;
  }>`
    SELECT c.message_id, c.content AS question, a.content, c.created_at AS asked, a.created_at AS answered
      FROM messages c JOIN messages a ON a.reply_to = c.message_id
     WHERE c.message_id = ANY(${messageIds})`.execute(db);
  const e2e: number[] = [];
  const pickup: number[] = [];
  let lastAnswer = 0;
  let confirmed = 0;
  for (const row of rows.rows) {
    const answered = new Date(row.answered).getTime();
    lastAnswer = Math.max(lastAnswer, answered);
    e2e.push(answered - sentAt.get(row.message_id)!);
    if (row.content.includes('✅ Meeting confirmed!')) confirmed++;
    else if (process.env.BENCH_DEBUG)
      process.stderr.write(`not confirmed: ${JSON.stringify(row.content.slice(0, 300))}\n`);
    // Pickup: the model request's arrival minus the moment the message was stored.
    const arrived = modelArrival.get(Number(/#(\d+)/.exec(row.question)?.[1]));
    if (arrived !== undefined) pickup.push(arrived - new Date(row.asked).getTime());
  }
  const emulatorMs = opts.modelLatencyMs + opts.googleLatencyMs;
  const e = summarize(e2e);
  const p = summarize(pickup);
  const refreshCounts = owners.map((o) => stack.google.refreshCount(o.refreshToken));
  return {
    offered_per_s: opts.rate,
    bookings: total,
    confirmed,
    bookings_per_s: round(total / ((lastAnswer - started) / 1000)),
    e2e_p50_ms: round(e.p50),
    e2e_p99_ms: round(e.p99),
    overhead_p50_ms: round(e.p50 - emulatorMs),
    overhead_p99_ms: round(e.p99 - emulatorMs),
    pickup_p50_ms: round(p.p50),
    pickup_p99_ms: round(p.p99),
    peak_rss_mb: round(rss.peak() / 1024 / 1024, 0),
    owners: owners.length,
    refreshes_per_owner: [...new Set(refreshCounts)].join('/'),
  };
}
