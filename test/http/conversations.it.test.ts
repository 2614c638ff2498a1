import { once } from 'node:events';
import { STATUS_CODES } from 'node:http';
import { connect } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MAX_JSON_DEPTH } from '../../src/http/app.js';
import { SSE_STREAMS_PER_CONVERSATION } from '../../src/http/routes/conversations.js';
import { type Stack, startStack } from '../helpers/stack.js';

let s: Stack;
let base: string;
beforeAll(async () => {
  s = await startStack({ RATE_LIMIT_PER_CONVERSATION: '5', RATE_LIMIT_WINDOW_SECONDS: '60' });
  base = await s.app.listen();
  s.openai.responder = (req) => ({ content: `echo ${req.messages.length}` });
});
afterAll(async () => {
  await s?.close();
});

async function chat() {
  const a = await s.createAgent({ user_id: 'owner-conv', name: 'Helper' });
  return {
    agentId: a.agent_id,
    ...(await s.openConversation(a.agent_id, { customer_name: 'Ann', customer_email: 'ann@example.com' })),
  };
}

const post = (conversationId: string, headers: Record<string, string>, payload: unknown) =>
  s.app.http.inject({
    method: 'POST',
    url: `/api/conversations/${conversationId}/messages`,
    headers,
    payload: payload as object,
  });

/** Customer messages stored in a conversation (read from the database, not the API). */
async function customerMessages(conversationId: string): Promise<number> {
  const r = await s.app.database.db
    .selectFrom('messages')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('conversation_id', '=', conversationId)
    .where('role', '=', 'customer')
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

describe('customer API', () => {
  it('opens a conversation without the admin key and stores only a hash of the token', async () => {
    const c = await chat();
    expect(c.conversation_id).toMatch(/^cnv_/);
    expect(c.customer_token.length).toBeGreaterThan(30);
    const row = await s.app.database.db
      .selectFrom('conversations')
      .selectAll()
      .where('conversation_id', '=', c.conversation_id)
      .executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain(c.customer_token);
    expect(row.customer_token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row).toMatchObject({ customer_name: 'Ann', customer_email: 'ann@example.com' });
  });

  it('rejects opening a conversation with an unknown agent or bad body', async () => {
    const unknown = await s.app.http.inject({
      method: 'POST',
      url: '/api/agents/agt_missing/conversations',
      payload: {},
    });
    expect(unknown.statusCode).toBe(404);
    const a = await s.createAgent({ user_id: 'owner-conv', name: 'H' });
    const bad = await s.app.http.inject({
      method: 'POST',
      url: `/api/agents/${a.agent_id}/conversations`,
      payload: { customer_email: 'not-an-email' },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatch(/customer_email/);
    // PostgreSQL cannot store U+0000: a clear 400 naming the field, not a 500 from the insert.
    const conversationsBefore = await s.app.database.db
      .selectFrom('conversations')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    const nul = await s.app.http.inject({
      method: 'POST',
      url: `/api/agents/${a.agent_id}/conversations`,
      payload: { customer_name: 'Ann\u0000' },
    });
    expect(nul.statusCode).toBe(400);
    expect(nul.json()).toEqual({
      success: false,
      error: 'customer_name must not contain the NUL character (\\u0000)',
    });
    const conversationsAfter = await s.app.database.db
      .selectFrom('conversations')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(conversationsAfter.n)).toBe(Number(conversationsBefore.n));
  });

  it('opens a conversation from a POST without a body (both fields are optional)', async () => {
    const a = await s.createAgent({ user_id: 'owner-conv', name: 'Helper' });
    const res = await fetch(`${base}/api/agents/${a.agent_id}/conversations`, { method: 'POST' });
    expect(res.status).toBe(201);
    const c = (await res.json()) as { conversation_id: string; customer_token: string };
    expect(c.customer_token).toMatch(/^ct_/);
    expect(await s.messages(c.conversation_id, c.customer_token)).toEqual([]);
  });

  it('a body nested thousands of levels deep: a 400 before any auth, not a 500 (nothing stored)', async () => {
    const c = await chat();
    // ~40 KB, far under the body limit; a recursive scan of it overflowed the stack.
    const deep = `{"content":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    for (const url of [
      `/api/agents/${c.agentId}/conversations`,
      `/api/conversations/${c.conversation_id}/messages`,
    ]) {
      const res = await s.app.http.inject({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json' },
        payload: deep,
      });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({
        success: false,
        error: `The body is nested too deeply (at most ${MAX_JSON_DEPTH} levels)`,
      });
    }
    // Exactly at the limit, it is the schema's to judge (content must be a string).
    const atLimit = await post(
      c.conversation_id,
      { authorization: `Bearer ${c.customer_token}` },
      { content: JSON.parse(`${'['.repeat(MAX_JSON_DEPTH - 1)}${']'.repeat(MAX_JSON_DEPTH - 1)}`) },
    );
    expect(atLimit.statusCode).toBe(400);
    expect(atLimit.json().error).toMatch(/^content /);
    expect(await customerMessages(c.conversation_id)).toBe(0);
  });

  it('authorizes messages by the conversation’s token (or the admin key)', async () => {
    const c1 = await chat();
    const c2 = await chat();
    const none = await post(c1.conversation_id, {}, { content: 'hi' });
    expect(none.statusCode).toBe(401);
    expect(none.json().success).toBe(false);
    const other = await post(
      c1.conversation_id,
      { authorization: `Bearer ${c2.customer_token}` },
      { content: 'hi' },
    );
    expect(other.statusCode).toBe(403);
    const missing = await post(
      'cnv_doesnotexist',
      { authorization: `Bearer ${c2.customer_token}` },
      { content: 'hi' },
    );
    expect(missing.statusCode).toBe(403);
    const read = await s.app.http.inject({
      url: `/api/conversations/${c1.conversation_id}/messages`,
      headers: { authorization: `Bearer ${c2.customer_token}` },
    });
    expect(read.statusCode).toBe(403);
    const admin = await post(c1.conversation_id, s.admin, { content: 'from the owner' });
    expect(admin.statusCode).toBe(202);
    const adminMissing = await post('cnv_doesnotexist', s.admin, { content: 'hi' });
    expect(adminMissing.statusCode).toBe(404);
    expect(await customerMessages(c1.conversation_id)).toBe(1);
  });

  it.each([
    ['empty', { content: '' }],
    ['blank', { content: '   ' }],
    ['too long', { content: 'x'.repeat(4001) }],
    ['not a string', { content: 42 }],
    ['missing', {}],
    ['extra field', { content: 'hi', role: 'assistant' }],
    ['NUL-holding', { content: 'hi\u0000there' }],
  ])('400 for a %s message, nothing stored or queued', async (_n, payload) => {
    const c = await chat();
    const res = await post(c.conversation_id, { authorization: `Bearer ${c.customer_token}` }, payload);
    expect(res.statusCode).toBe(400);
    expect(res.json().success).toBe(false);
    expect(await s.messages(c.conversation_id, c.customer_token)).toEqual([]);
  });

  it('accepts 4000 characters', async () => {
    const c = await chat();
    const res = await post(
      c.conversation_id,
      { authorization: `Bearer ${c.customer_token}` },
      { content: 'y'.repeat(4000) },
    );
    expect(res.statusCode).toBe(202);
  });

  it('lists messages in order, and after a given message', async () => {
    const c = await chat();
    const first = await s.send(c.conversation_id, c.customer_token, 'one');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    await s.send(c.conversation_id, c.customer_token, 'two');
    const all = await s.waitForReplies(c.conversation_id, c.customer_token, 2);
    expect(all.map((m) => m.role)).toEqual(['customer', 'assistant', 'customer', 'assistant']);
    expect(all[0]!.message_id).toBe(first);
    const after = await s.app.http.inject({
      url: `/api/conversations/${c.conversation_id}/messages?after=${first}`,
      headers: { authorization: `Bearer ${c.customer_token}` },
    });
    expect(after.json().messages.map((m: { message_id: string }) => m.message_id)).toEqual(
      all.slice(1).map((m) => m.message_id),
    );
    const unknownAfter = await s.app.http.inject({
      url: `/api/conversations/${c.conversation_id}/messages?after=msg_unknown`,
      headers: { authorization: `Bearer ${c.customer_token}` },
    });
    expect(unknownAfter.statusCode).toBe(400);
  });

  it('limits messages per conversation with 429 JSON and Retry-After', async () => {
    const c = await chat();
    const auth = { authorization: `Bearer ${c.customer_token}` };
    const codes: number[] = [];
    let limited: Awaited<ReturnType<typeof post>> | undefined;
    for (let i = 0; i < 7; i++) {
      const res = await post(c.conversation_id, auth, { content: `m${i}` });
      codes.push(res.statusCode);
      if (res.statusCode === 429) limited = res;
    }
    expect(codes).toEqual([202, 202, 202, 202, 202, 429, 429]);
    expect(limited!.headers['retry-after']).toMatch(/^\d+$/);
    expect(limited!.json()).toEqual({ success: false, error: expect.stringContaining('Too many messages') });
    // another conversation is not affected
    const other = await chat();
    expect(
      (
        await post(
          other.conversation_id,
          { authorization: `Bearer ${other.customer_token}` },
          { content: 'hi' },
        )
      ).statusCode,
    ).toBe(202);
  });

  it('requests with a wrong token still in flight cannot push the holder over the limit (server)', async () => {
    if (process.env.TEST_DB !== 'server') return; // needs statements held on another connection's lock
    const c = await chat();
    const other = await chat();
    const auth = { authorization: `Bearer ${c.customer_token}` };
    for (let i = 0; i < 4; i++)
      expect((await post(c.conversation_id, auth, { content: `m${i}` })).statusCode).toBe(202);
    await s.waitForReplies(c.conversation_id, c.customer_token, 4);
    const wrong = { authorization: `Bearer ${other.customer_token}` };
    const db = s.app.database.db;
    // Requests' statements waiting for the lock below (not the queue's claims, which wait for it too).
    const held = async (n: number) =>
      vi.waitFor(
        async () => {
          const r = await sql<{ n: number }>`
            SELECT count(*)::int AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query NOT LIKE '%SKIP LOCKED%' AND query NOT LIKE '%LOCK TABLE%'`.execute(db);
          expect(r.rows[0]!.n).toBeGreaterThanOrEqual(n);
        },
        { timeout: 10_000, interval: 10 },
      );
    let answers: Promise<Array<{ statusCode: number }>> | undefined;
    // Every statement that reads conversations waits for this transaction: a refused request is held
    // between its hit and its answer while the holder's fifth message (the limit is 5) comes.
    await db.transaction().execute(async (trx) => {
      await sql`LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE`.execute(trx);
      const refused = post(c.conversation_id, wrong, { content: 'x' });
      await held(1);
      const holder = post(c.conversation_id, auth, { content: 'm4' });
      await held(2);
      answers = Promise.all([refused, holder]);
    });
    expect((await answers!).map((r) => r.statusCode)).toEqual([403, 202]);
    expect((await post(c.conversation_id, auth, { content: 'm5' })).statusCode).toBe(429);
  });

  it('counts only accepted messages against the limit: refused callers cannot use it up', async () => {
    const c = await chat();
    const other = await chat();
    const wrong = { authorization: `Bearer ${other.customer_token}` };
    for (let i = 0; i < 8; i++) {
      expect((await post(c.conversation_id, wrong, { content: `x${i}` })).statusCode).toBe(403);
    }
    const auth = { authorization: `Bearer ${c.customer_token}` };
    const codes: number[] = [];
    for (let i = 0; i < 6; i++)
      codes.push((await post(c.conversation_id, auth, { content: `m${i}` })).statusCode);
    expect(codes).toEqual([202, 202, 202, 202, 202, 429]);
    // Over the limit, a caller without the token still learns nothing but 403 (no 429 for it).
    expect((await post(c.conversation_id, wrong, { content: 'again' })).statusCode).toBe(403);
    expect((await post(c.conversation_id, auth, { content: 'again' })).statusCode).toBe(429);
    expect(await customerMessages(c.conversation_id)).toBe(5);
  });

  it('streams new messages over SSE and resumes after Last-Event-ID', async () => {
    const c = await chat();
    const controller = new AbortController();
    const res = await fetch(
      `${base}/api/conversations/${c.conversation_id}/events?token=${c.customer_token}`,
      {
        signal: controller.signal,
      },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    const events: Array<{ id: string; data: { role: string; content: string; message_id: string } }> = [];
    const readUntil = async (n: number) => {
      const deadline = Date.now() + 10_000;
      while (events.length < n && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let idx = buffer.indexOf('\n\n');
        while (idx >= 0) {
          const block = buffer.slice(0, idx);
          buffer = buffer.slice(idx + 2);
          const id = /^id: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (id && data && /^event: message$/m.test(block)) events.push({ id, data: JSON.parse(data) });
          idx = buffer.indexOf('\n\n');
        }
      }
    };
    await s.send(c.conversation_id, c.customer_token, 'live?');
    await readUntil(2);
    controller.abort();
    expect(events.map((e) => e.data.role)).toEqual(['customer', 'assistant']);
    expect(events[0]!.data.content).toBe('live?');
    expect(events[0]!.id).toBe(events[0]!.data.message_id);

    // Resume: with Last-Event-ID = the customer message, the reply is replayed.
    const resumed = await fetch(`${base}/api/conversations/${c.conversation_id}/events`, {
      headers: { authorization: `Bearer ${c.customer_token}`, 'last-event-id': events[0]!.id },
    });
    const r2 = resumed.body!.getReader();
    let text = '';
    const deadline = Date.now() + 5000;
    while (!text.includes(events[1]!.id) && Date.now() < deadline) {
      const { value } = await r2.read();
      text += decoder.decode(value);
    }
    await r2.cancel();
    expect(text).toContain(`id: ${events[1]!.id}`);
    expect(text).not.toContain(`id: ${events[0]!.id}\n`);
  });

  it('caps the open SSE streams of one conversation with a 429 JSON; closing one makes room', async () => {
    const c = await chat();
    const other = await chat();
    const url = (id: string, token: string) => `${base}/api/conversations/${id}/events?token=${token}`;
    const open: AbortController[] = [];
    try {
      for (let i = 0; i < SSE_STREAMS_PER_CONVERSATION; i++) {
        const ctrl = new AbortController();
        open.push(ctrl);
        expect((await fetch(url(c.conversation_id, c.customer_token), { signal: ctrl.signal })).status).toBe(
          200,
        );
      }
      const refused = await fetch(url(c.conversation_id, c.customer_token));
      expect(refused.status).toBe(429);
      expect(await refused.json()).toEqual({
        success: false,
        error: expect.stringMatching(/Too many open streams/),
      });
      // Another conversation is not affected.
      const ctrl = new AbortController();
      open.push(ctrl);
      expect(
        (await fetch(url(other.conversation_id, other.customer_token), { signal: ctrl.signal })).status,
      ).toBe(200);
      open.shift()!.abort();
      await vi.waitFor(async () => {
        const again = new AbortController();
        const res = await fetch(url(c.conversation_id, c.customer_token), { signal: again.signal });
        open.push(again);
        expect(res.status).toBe(200);
      });
    } finally {
      for (const ctrl of open) ctrl.abort();
    }
  });

  it('refuses SSE without a valid token', async () => {
    const c = await chat();
    const other = await chat();
    expect((await fetch(`${base}/api/conversations/${c.conversation_id}/events`)).status).toBe(401);
    const wrong = await fetch(
      `${base}/api/conversations/${c.conversation_id}/events?token=${other.customer_token}`,
    );
    expect(wrong.status).toBe(403);
    expect(await wrong.json()).toEqual({ success: false, error: expect.any(String) });
    // The admin key never in a URL (proxies and browser history keep URLs); in the header it works.
    const adminKey = s.admin.authorization.replace(/^Bearer /, '');
    const inUrl = await fetch(
      `${base}/api/conversations/${c.conversation_id}/events?token=${encodeURIComponent(adminKey)}`,
    );
    expect(inUrl.status).toBe(401);
    expect(await inUrl.json()).toEqual({
      success: false,
      error: 'The admin key is accepted only in the Authorization header, never in a URL',
    });
    const ctrl = new AbortController();
    try {
      const inHeader = await fetch(`${base}/api/conversations/${c.conversation_id}/events`, {
        headers: s.admin,
        signal: ctrl.signal,
      });
      expect(inHeader.status).toBe(200);
    } finally {
      ctrl.abort();
    }
  });

  it('keeps customer tokens out of the logs, even when sent in the query string', async () => {
    const c = await chat();
    const ctrl = new AbortController();
    const res = await fetch(
      `${base}/api/conversations/${c.conversation_id}/events?token=${c.customer_token}`,
      { signal: ctrl.signal },
    );
    expect(res.status).toBe(200);
    ctrl.abort();
    // A percent-encoded name is `token` to the query parser, so it authenticates: scrubbed as well.
    const encodedCtrl = new AbortController();
    const encoded = await fetch(
      `${base}/api/conversations/${c.conversation_id}/events?%74oken=${c.customer_token}`,
      { signal: encodedCtrl.signal },
    );
    expect(encoded.status).toBe(200);
    encodedCtrl.abort();
    await s.send(c.conversation_id, c.customer_token, 'hello');
    await s.waitForReplies(c.conversation_id, c.customer_token, 1);
    expect(s.logs.text).not.toContain(c.customer_token);
    expect(s.logs.text).not.toContain(c.customer_token.slice(3, 20));
  });
});

describe('requests Node’s HTTP parser refuses', () => {
  /** Writes `raw` to the listening service and reads until it closes the connection. */
  function exchange(raw: string): Promise<string> {
    const { hostname, port } = new URL(base);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => socket.write(raw));
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk) => {
        text += chunk;
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
  }

  it.each([
    ['headers over 16 KB', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ['a malformed request line', 'NOT A REQUEST\r\n\r\n', 400],
    ['a malformed header', 'GET /healthz HTTP/1.1\r\nHost x\r\n\r\n', 400],
  ])('answers %s in the API’s error shape, then closes', async (_what, raw, status) => {
    const answer = await exchange(raw);
    expect(answer.split('\r\n')[0]).toBe(`HTTP/1.1 ${status} ${STATUS_CODES[status]}`);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    expect(body).toEqual({ success: false, error: expect.any(String) });
  });
});

describe('a request that reaches a route once the server is closing', () => {
  it('is answered 503 in the API’s error shape, after the request in flight is answered, then closed', async () => {
    const { startTestApp } = await import('../helpers/app.js');
    const t = await startTestApp();
    const server = t.app.http.server;
    let stopping: Promise<void> | undefined;
    try {
      const { hostname, port } = new URL(await t.app.listen());
      const socket = connect(Number(port), hostname);
      await once(socket, 'connect');
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk) => {
        text += chunk;
      });
      const socketClosed = once(socket, 'close');
      // The first request is routed (its hooks ran) before the close begins; its body is held back,
      // so its connection is busy, not idle, when the close begins and stays open.
      const routed = once(server, 'request');
      socket.write(
        'POST /api/agents/agt_missing/conversations HTTP/1.1\r\nHost: x\r\n' +
          'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n',
      );
      await routed;
      stopping = t.close();
      await vi.waitFor(() => expect(server.listening).toBe(false));
      // The rest of the first body, then a second request on the same connection.
      socket.write('{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await socketClosed;
      await stopping;
      const [first, second] = text.split(/(?=HTTP\/1\.1 )/);
      expect(first!.split('\r\n')[0]).toBe('HTTP/1.1 404 Not Found');
      expect(second!.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
      expect(second!.toLowerCase()).toContain('connection: close');
      expect(JSON.parse(second!.slice(second!.indexOf('\r\n\r\n') + 4))).toEqual({
        success: false,
        error: 'The server is shutting down; retry the request',
      });
    } finally {
      await (stopping ?? t.close());
    }
  });
});

describe('per-IP rate limit', () => {
  it('answers 429 JSON with Retry-After past RATE_LIMIT_PER_IP', async () => {
    const { startTestApp } = await import('../helpers/app.js');
    const t = await startTestApp({ RATE_LIMIT_PER_IP: '3', RATE_LIMIT_WINDOW_SECONDS: '60' });
    try {
      const codes: number[] = [];
      let last: Awaited<ReturnType<typeof t.app.http.inject>> | undefined;
      for (let i = 0; i < 5; i++) {
        last = await t.app.http.inject({
          method: 'POST',
          url: '/api/agents/agt_x/conversations',
          payload: {},
        });
        codes.push(last.statusCode);
      }
      expect(codes).toEqual([404, 404, 404, 429, 429]);
      expect(last!.headers['retry-after']).toMatch(/^\d+$/);
      expect(last!.json()).toEqual({ success: false, error: expect.stringContaining('Too many requests') });
      // The owner's admin key is not limited.
      const admin = await t.app.http.inject({ url: '/api/google-tokens', headers: t.admin });
      expect(admin.statusCode).toBe(200);
    } finally {
      await t.close();
    }
  });

  it('counts requests refused for a wrong admin key, so guessing the key is throttled too', async () => {
    const { startTestApp } = await import('../helpers/app.js');
    const t = await startTestApp({ RATE_LIMIT_PER_IP: '3', RATE_LIMIT_WINDOW_SECONDS: '60' });
    try {
      const guesses: number[] = [];
      for (const [i, url] of [
        '/api/google-tokens',
        '/api/google-tokens/u1',
        '/api/users/u1/meetings',
        '/metrics',
        '/api/google-tokens',
      ].entries()) {
        const res = await t.app.http.inject({ url, headers: { authorization: `Bearer guess-${i}` } });
        guesses.push(res.statusCode);
        if (res.statusCode === 429) {
          expect(res.json()).toEqual({ success: false, error: expect.stringContaining('Too many requests') });
        }
      }
      expect(guesses).toEqual([401, 401, 401, 429, 429]);
      // The real key still gets through from the same address.
      expect((await t.app.http.inject({ url: '/api/google-tokens', headers: t.admin })).statusCode).toBe(200);
    } finally {
      await t.close();
    }
  });

  /** The statuses of POSTs from 127.0.0.1 carrying these X-Forwarded-For values, under TRUST_PROXY. */
  async function statusesBehind(trust: string, forwardedFor: string[]): Promise<number[]> {
    const { startTestApp } = await import('../helpers/app.js');
    const t = await startTestApp({
      RATE_LIMIT_PER_IP: '2',
      RATE_LIMIT_WINDOW_SECONDS: '60',
      TRUST_PROXY: trust,
    });
    try {
      const codes: number[] = [];
      for (const value of forwardedFor) {
        const res = await t.app.http.inject({
          method: 'POST',
          url: '/api/agents/agt_x/conversations',
          headers: { 'x-forwarded-for': value },
          remoteAddress: '127.0.0.1',
          payload: {},
        });
        codes.push(res.statusCode);
      }
      return codes;
    } finally {
      await t.close();
    }
  }

  it.each([
    // Off (the default): X-Forwarded-For is anyone's to forge, so every caller is the peer's address.
    ['off', [404, 404, 429]],
    // Behind a proxy: each client its own bucket, by the address the trusted proxy reports.
    ['127.0.0.1', [404, 404, 404]],
    ['1', [404, 404, 404]],
  ])('TRUST_PROXY=%s: the per-IP limit counts the clients a proxy reports', async (trust, expected) => {
    expect(await statusesBehind(trust, ['203.0.113.7', '203.0.113.7', '198.51.100.9'])).toEqual(expected);
  });

  it('TRUST_PROXY=1: the client is the address the proxy appended, not what the client forged before it', async () => {
    // One client, a different forged first entry each time: still one bucket.
    const forged = ['10.9.9.1', '10.9.9.2', '10.9.9.3'].map((f) => `${f}, 203.0.113.7`);
    expect(await statusesBehind('1', forged)).toEqual([404, 404, 429]);
  });
});

describe('open stream limits', () => {
  let t: Stack;
  let tBase: string;
  beforeAll(async () => {
    // TRUST_PROXY: each request's X-Forwarded-For names its client, so one test can be several addresses.
    t = await startStack({ SSE_MAX_STREAMS: '4', SSE_STREAMS_PER_IP: '2', TRUST_PROXY: '127.0.0.1' });
    tBase = await t.app.listen();
  });
  afterAll(async () => {
    await t?.close();
  });

  async function conversation() {
    const a = await t.createAgent({ user_id: 'owner-caps', name: 'Caps' });
    return t.openConversation(a.agent_id);
  }
  const ctrls: AbortController[] = [];
  function open(c: { conversation_id: string; customer_token: string }, ip: string) {
    const ctrl = new AbortController();
    ctrls.push(ctrl);
    return fetch(`${tBase}/api/conversations/${c.conversation_id}/events?token=${c.customer_token}`, {
      signal: ctrl.signal,
      headers: { 'x-forwarded-for': ip },
    });
  }

  it('per address (429) and per process (503, Retry-After); a stream that closes makes room', async () => {
    try {
      const cs = await Promise.all([1, 2, 3, 4, 5].map(() => conversation()));
      expect((await open(cs[0]!, '10.0.0.1')).status).toBe(200);
      expect((await open(cs[1]!, '10.0.0.1')).status).toBe(200);
      const third = await open(cs[2]!, '10.0.0.1');
      expect(third.status).toBe(429);
      expect(await third.json()).toEqual({
        success: false,
        error: 'Too many open streams from this address (at most 2); close one first',
      });
      expect((await open(cs[2]!, '10.0.0.2')).status).toBe(200);
      expect((await open(cs[3]!, '10.0.0.2')).status).toBe(200);
      const full = await open(cs[4]!, '10.0.0.3');
      expect(full.status).toBe(503);
      expect(full.headers.get('retry-after')).toBe('10');
      expect(await full.json()).toEqual({
        success: false,
        error: 'Too many open streams on this server; reconnect shortly',
      });
      ctrls[0]!.abort(); // one of 10.0.0.1's
      await vi.waitFor(async () => expect((await open(cs[4]!, '10.0.0.1')).status).toBe(200), {
        timeout: 10_000,
      });
    } finally {
      for (const c of ctrls.splice(0)) c.abort();
    }
  });

  it('a client that does not read is dropped once 1 MiB waits for it, not buffered without end', async () => {
    const c = await conversation();
    const socket = connect(Number(new URL(tBase).port), '127.0.0.1');
    // Dropped, the connection may be reset (ECONNRESET) while this side still does not read.
    const closed = once(socket, 'close');
    socket.on('error', () => {});
    let received = 0;
    socket.on('data', (b: Buffer) => {
      received += b.length;
    });
    await once(socket, 'connect');
    socket.pause();
    socket.write(
      `GET /api/conversations/${c.conversation_id}/events?token=${c.customer_token} HTTP/1.1\r\n` +
        'Host: localhost\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n',
    );
    try {
      // Its address's limit is 2: with a second stream open, a third is refused while the paused
      // one is open (so it was counted), and accepted once the server has dropped it.
      expect((await open(await conversation(), '10.0.0.9')).status).toBe(200);
      const spare = await conversation();
      await vi.waitFor(async () => expect((await open(spare, '10.0.0.9')).status).toBe(429), {
        timeout: 10_000,
        interval: 100,
      });
      // 24 MB for it to send (far more than the sockets' own buffers hold), announced by a message.
      await sql`
        INSERT INTO messages (message_id, conversation_id, role, content)
        SELECT 'msg_bp' || lpad(g::text, 5, '0'), ${c.conversation_id}, 'assistant', repeat('x', 8000)
          FROM generate_series(1, 3000) g`.execute(t.app.database.db);
      await t.send(c.conversation_id, c.customer_token, 'wake up');
      await vi.waitFor(async () => expect((await open(spare, '10.0.0.9')).status).toBe(200), {
        timeout: 30_000,
        interval: 200,
      });
      socket.resume();
      await closed;
      expect(received).toBeLessThan(3000 * 8000);
    } finally {
      socket.destroy();
      for (const ctrl of ctrls.splice(0)) ctrl.abort();
    }
  });

  it('a client that leaves while its stream is being authorized is not counted', async () => {
    const c = await conversation();
    for (let i = 0; i < 3; i++) {
      const socket = connect(Number(new URL(tBase).port), '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
      // The request and the hang-up arrive together: the handler runs after the client has gone.
      socket.write(
        `GET /api/conversations/${c.conversation_id}/events?token=${c.customer_token} HTTP/1.1\r\n` +
          'Host: localhost\r\nX-Forwarded-For: 10.0.0.8\r\n\r\n',
      );
      socket.destroy();
    }
    try {
      // Its address's two streams are free again once the server has seen them go.
      const first = await conversation();
      await vi.waitFor(async () => expect((await open(first, '10.0.0.8')).status).toBe(200), {
        timeout: 10_000,
        interval: 200,
      });
      expect((await open(await conversation(), '10.0.0.8')).status).toBe(200);
    } finally {
      for (const ctrl of ctrls.splice(0)) ctrl.abort();
    }
  });

  it('Last-Event-ID is checked as `after` is, and not echoed', async () => {
    const c = await conversation();
    const events = (lastEventId: string) =>
      t.app.http.inject({
        url: `/api/conversations/${c.conversation_id}/events`,
        headers: { authorization: `Bearer ${c.customer_token}`, 'last-event-id': lastEventId },
      });
    const long = await events(`msg_${'a'.repeat(5000)}`);
    expect(long.statusCode).toBe(400);
    expect(long.json()).toEqual({ success: false, error: 'Last-Event-ID is not a message id' });
    const unknown = await events('msg_unknown');
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json()).toEqual({
      success: false,
      error: 'Last-Event-ID: no such message in this conversation',
    });
  });

  it('a malformed request sent on a connection carrying a stream does not write into the stream', async () => {
    const c = await conversation();
    const socket = connect(Number(new URL(tBase).port), '127.0.0.1');
    await once(socket, 'connect');
    let text = '';
    socket.on('data', (b: Buffer) => {
      text += b.toString('utf8');
    });
    socket.write(
      `GET /api/conversations/${c.conversation_id}/events?token=${c.customer_token} HTTP/1.1\r\n` +
        'Host: localhost\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n',
    );
    await vi.waitFor(() => expect(text).toContain('retry: 2000'), { timeout: 10_000 });
    const closed = once(socket, 'close');
    socket.write('NOT HTTP AT ALL\r\n\r\n');
    await closed;
    expect(text.startsWith('HTTP/1.1 200 OK')).toBe(true);
    expect(text).not.toContain('Malformed HTTP request');

    // A kept-alive connection whose earlier response is over still gets the error answered.
    const again = connect(Number(new URL(tBase).port), '127.0.0.1');
    await once(again, 'connect');
    let answered = '';
    again.on('data', (b: Buffer) => {
      answered += b.toString('utf8');
    });
    again.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await vi.waitFor(() => expect(answered).toContain('"status"'), { timeout: 10_000 });
    const done = once(again, 'close');
    again.write('NOT HTTP AT ALL\r\n\r\n');
    await done;
    expect(answered).toContain('HTTP/1.1 400 Bad Request');
    expect(answered).toContain('Malformed HTTP request');
  });
});

describe("a stream's lifetime", () => {
  let t: Stack;
  beforeAll(async () => {
    t = await startStack({ SSE_MAX_STREAM_SECONDS: '1' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('ends after SSE_MAX_STREAM_SECONDS (the client reconnects from its Last-Event-ID)', async () => {
    const a = await t.createAgent({ user_id: 'owner-life', name: 'Life' });
    const c = await t.openConversation(a.agent_id);
    const started = Date.now();
    const res = await fetch(
      `${await t.app.listen()}/api/conversations/${c.conversation_id}/events?token=${c.customer_token}`,
    );
    expect(res.status).toBe(200);
    const text = await res.text(); // resolves once the server ends the stream
    expect(text).toContain('retry: 2000');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });
});
