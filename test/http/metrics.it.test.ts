import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { metricsSnapshot, type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
beforeAll(async () => {
  s = await startStack({ LOG_LEVEL: 'debug' });
});
afterAll(async () => {
  await s?.close();
});

describe('observability', () => {
  it('exposes Prometheus metrics behind the admin key', async () => {
    s.openai.responder = () => ({ content: 'hi!' });
    const a = await s.createAgent({ user_id: 'owner-metrics', name: 'M' });
    const c = await s.openConversation(a.agent_id);
    await s.send(c.conversation_id, c.customer_token, 'hello');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);

    expect((await s.app.http.inject({ url: '/metrics' })).statusCode).toBe(401);
    // The reply is visible to other connections the moment it commits, a moment before the worker
    // hears back from its statement and counts the outcome.
    const res = await vi.waitFor(async () => {
      const r = await s.app.http.inject({ url: '/metrics', headers: s.admin });
      expect(r.body).toMatch(/message_jobs_total\{outcome="answered"\} 1/);
      return r;
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    const text = res.body;
    expect(text).toMatch(
      /http_request_duration_seconds_bucket\{.*route="\/api\/conversations\/:conversation_id\/messages".*\}/,
    );
    expect(text).toMatch(/message_jobs_total\{outcome="answered"\} 1/);
    expect(text).toMatch(
      /upstream_request_duration_seconds_count\{service="openai",op="chat.completions",status="ok"\} 1/,
    );
    expect(text).toMatch(/^queue_depth 0$/m);
    expect(text).toMatch(/^queue_oldest_age_seconds 0$/m);
    expect(text).toMatch(/process_resident_memory_bytes/);
  });

  it('times how long each job holds its worker slot (worker_slot_seconds)', async () => {
    const slot = async () => {
      const value = await metricsSnapshot(s);
      return { count: value('worker_slot_seconds_count'), sum: value('worker_slot_seconds_sum') };
    };
    const before = await slot();
    // The model answers after 150 ms: the job holds its slot at least that long.
    s.openai.responder = async () => {
      await new Promise((r) => setTimeout(r, 150));
      return { content: 'timed' };
    };
    const a = await s.createAgent({ user_id: 'owner-metrics', name: 'Slots' });
    const c = await s.openConversation(a.agent_id);
    await s.send(c.conversation_id, c.customer_token, 'time my slot');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    // The slot is given back just after the reply commits.
    const after = await vi.waitFor(async () => {
      const now = await slot();
      expect(now.count).toBe(before.count + 1);
      return now;
    });
    expect(after.sum - before.sum).toBeGreaterThanOrEqual(0.15);
    expect(after.sum - before.sum).toBeLessThan(30);
  });

  it('counts waiting messages in queue_depth', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    s.openai.responder = async () => {
      await gate;
      return { content: 'late' };
    };
    const a = await s.createAgent({ user_id: 'owner-metrics', name: 'M2' });
    const c = await s.openConversation(a.agent_id);
    await s.send(c.conversation_id, c.customer_token, 'one');
    await s.send(c.conversation_id, c.customer_token, 'two');
    const text = (await s.app.http.inject({ url: '/metrics', headers: s.admin })).body;
    expect(Number(/^queue_depth (\d+)$/m.exec(text)?.[1])).toBe(2);
    expect(Number(/^queue_oldest_age_seconds ([\d.e-]+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    release();
    await s.waitForReplies(c.conversation_id, c.customer_token, 2);
  });

  it('tags every log line of a message’s processing with message, conversation and agent ids', async () => {
    s.openai.responder = () => ({ content: 'logged' });
    const a = await s.createAgent({ user_id: 'owner-metrics', name: 'Logs' });
    const c = await s.openConversation(a.agent_id);
    const id = await s.send(c.conversation_id, c.customer_token, 'trace me');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    const lines = s.logs.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.message_id === id);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) {
      expect(l.conversation_id).toBe(c.conversation_id);
    }
    expect(lines.some((l) => l.agent_id === a.agent_id && l.msg === 'message answered')).toBe(true);
  });
});
