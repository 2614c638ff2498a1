import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';

const ACCESS = 'ya29.a0AfB_byD-access-token-plaintext-0001';
const REFRESH = '1//0g-refresh-token-plaintext-0001';
const SCOPE = 'https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/calendar.events';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

function connect(userId: string, body: unknown, headers: Record<string, string> = t.admin) {
  return t.app.http.inject({
    method: 'POST',
    url: `/api/users/${userId}/google-calendar/connect`,
    headers,
    payload: body as object,
  });
}

const validBody = (over: Record<string, unknown> = {}) => ({
  access_token: ACCESS,
  refresh_token: REFRESH,
  token_expiry: new Date(Date.now() + 58.5 * 60_000).toISOString(),
  scope: SCOPE,
  ...over,
});

async function countRows(userId: string): Promise<number> {
  const r = await sql<{
    n: number;
  }>`SELECT count(*)::int AS n FROM google_calendar_tokens WHERE user_id = ${userId}`.execute(
    t.app.database.db,
  );
  return r.rows[0]!.n;
}

describe('calendar connection API', () => {
  it('connects, reads back masked, lists and deletes (the seed flow, with the admin key)', async () => {
    const res = await connect('abc-123', validBody());
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({
      success: true,
      message: 'Google Calendar connected successfully',
      user_id: 'abc-123',
    });
    expect(new Date(body.token_expiry).getTime()).toBeGreaterThan(Date.now());

    const got = await t.app.http.inject({ url: '/api/google-tokens/abc-123', headers: t.admin });
    expect(got.statusCode).toBe(200);
    const info = got.json().token_info;
    expect(info.access_token).toBe('ya29.a…0001');
    expect(info.refresh_token).toBe('1//0g-…0001');
    expect(info.is_expired).toBe(false);
    expect(info.expires_in_minutes).toBe(58);
    expect(info.status).toBe('connected');
    expect(info.scope).toBe(SCOPE);
    expect(got.body).not.toContain(ACCESS);
    expect(got.body).not.toContain(REFRESH);

    const list = await t.app.http.inject({ url: '/api/google-tokens', headers: t.admin });
    expect(list.statusCode).toBe(200);
    expect(list.json().tokens.map((x: { user_id: string }) => x.user_id)).toContain('abc-123');
    expect(list.body).not.toContain('ya29');
    expect(list.body).not.toContain('1//0g');

    const del = await t.app.http.inject({
      method: 'DELETE',
      url: '/api/google-tokens/abc-123',
      headers: t.admin,
    });
    expect(del.statusCode).toBe(200);
    expect(del.json()).toMatchObject({ success: true, user_id: 'abc-123' });
    const gone = await t.app.http.inject({ url: '/api/google-tokens/abc-123', headers: t.admin });
    expect(gone.statusCode).toBe(404);
    expect(gone.json()).toEqual({ success: false, error: expect.stringContaining('abc-123') });
    const delAgain = await t.app.http.inject({
      method: 'DELETE',
      url: '/api/google-tokens/abc-123',
      headers: t.admin,
    });
    expect(delAgain.statusCode).toBe(404);
  });

  it('computes is_expired and expires_in_minutes at request time', async () => {
    await connect('expired-user', validBody({ token_expiry: '2020-01-01T00:00:00Z' }));
    const info = (
      await t.app.http.inject({ url: '/api/google-tokens/expired-user', headers: t.admin })
    ).json().token_info;
    expect(info).toMatchObject({
      is_expired: true,
      expires_in_minutes: 0,
      token_expiry: '2020-01-01T00:00:00.000Z',
    });
    await connect('offset-user', validBody({ token_expiry: '2030-10-06T21:00:00+05:30' }));
    const info2 = (
      await t.app.http.inject({ url: '/api/google-tokens/offset-user', headers: t.admin })
    ).json().token_info;
    expect(info2.token_expiry).toBe('2030-10-06T15:30:00.000Z');
  });

  it.each([
    ['no header', {}],
    ['wrong key', { authorization: 'Bearer not-the-admin-key-at-all' }],
    ['wrong scheme', { authorization: 'Basic dGVzdDp0ZXN0' }],
  ])('rejects every endpoint with 401 JSON: %s', async (_name, headers) => {
    const calls = [
      connect('u-auth', validBody(), headers as Record<string, string>),
      t.app.http.inject({ url: '/api/google-tokens/u-auth', headers }),
      t.app.http.inject({ url: '/api/google-tokens', headers }),
      t.app.http.inject({ method: 'DELETE', url: '/api/google-tokens/u-auth', headers }),
    ];
    for (const res of await Promise.all(calls)) {
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ success: false, error: expect.stringContaining('admin key') });
    }
    expect(await countRows('u-auth')).toBe(0);
  });

  it.each([
    ['missing access_token', { access_token: undefined }, /access_token is required/],
    ['empty access_token', { access_token: '' }, /access_token/],
    ['blank access_token', { access_token: '   ' }, /access_token must be a non-empty string/],
    ['access_token not a string', { access_token: 42 }, /access_token/],
    ['empty refresh_token', { refresh_token: '' }, /refresh_token/],
    ['missing token_expiry', { token_expiry: undefined }, /token_expiry is required/],
    [
      'token_expiry without a zone',
      { token_expiry: '2030-10-06T15:30:00' },
      /token_expiry must be an ISO 8601/,
    ],
    ['token_expiry not a date', { token_expiry: 'tomorrow' }, /token_expiry must be an ISO 8601/],
    ['token_expiry impossible date', { token_expiry: '2030-13-45T15:30:00Z' }, /token_expiry/],
    [
      'token_expiry in year 0',
      { token_expiry: '0000-06-01T00:00:00Z' },
      /token_expiry must be between the years 1 and 9999/,
    ],
    ['missing scope', { scope: undefined }, /scope is required/],
    [
      'scope without calendar',
      { scope: 'openid email https://www.googleapis.com/auth/calendar.readonly' },
      /scope must include/,
    ],
  ])('400 with a clear message and nothing stored: %s', async (_name, over, message) => {
    const userId = `bad-${_name.replace(/[^a-z]/g, '')}`.slice(0, 50);
    const res = await connect(userId, validBody(over));
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect(body.success).toBe(false);
    expect(body.error).toMatch(message);
    expect(await countRows(userId)).toBe(0);
  });

  it('requires a refresh token on first connect, keeps the stored one on reconnect', async () => {
    const first = await connect('reconnect-user', validBody({ refresh_token: undefined }));
    expect(first.statusCode).toBe(400);
    expect(first.json().error).toMatch(/refresh_token is required/);
    expect(await countRows('reconnect-user')).toBe(0);

    expect((await connect('reconnect-user', validBody())).statusCode).toBe(200);
    const again = await connect(
      'reconnect-user',
      validBody({ refresh_token: undefined, access_token: 'ya29.second-access-token-9999' }),
    );
    expect(again.statusCode).toBe(200);
    const stored = await t.app.connections.get('reconnect-user');
    expect(stored?.accessToken).toBe('ya29.second-access-token-9999');
    expect(stored?.refreshToken).toBe(REFRESH);
  });

  it('reconnecting clears a revoked state', async () => {
    await connect('revoked-user', validBody());
    await t.app.connections.markRevoked('revoked-user');
    const revoked = (
      await t.app.http.inject({ url: '/api/google-tokens/revoked-user', headers: t.admin })
    ).json();
    expect(revoked.token_info.status).toBe('revoked');
    expect(revoked.token_info.revoked_at).toEqual(expect.any(String));
    // Not without a new refresh token: the stored one is the one Google refused.
    const withoutRefresh = await connect('revoked-user', validBody({ refresh_token: undefined }));
    expect(withoutRefresh.statusCode).toBe(400);
    expect(withoutRefresh.json().error).toMatch(/^refresh_token is required: the stored one was revoked/);
    const still = (
      await t.app.http.inject({ url: '/api/google-tokens/revoked-user', headers: t.admin })
    ).json();
    expect(still.token_info).toMatchObject({ status: 'revoked', revoked_at: revoked.token_info.revoked_at });
    await connect('revoked-user', validBody());
    const back = (
      await t.app.http.inject({ url: '/api/google-tokens/revoked-user', headers: t.admin })
    ).json();
    expect(back.token_info).toMatchObject({ status: 'connected', revoked_at: null });
  });

  it.each([
    ['too long', 'x'.repeat(51)],
    ['bad characters', 'user%20name'],
    ['slash-like', 'a$b'],
  ])('validates user_id (%s) on every endpoint', async (_name, userId) => {
    const res = await connect(userId, validBody());
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ success: false, error: expect.stringMatching(/user_id/) });
    const get = await t.app.http.inject({ url: `/api/google-tokens/${userId}`, headers: t.admin });
    expect(get.statusCode).toBe(400);
    const del = await t.app.http.inject({
      method: 'DELETE',
      url: `/api/google-tokens/${userId}`,
      headers: t.admin,
    });
    expect(del.statusCode).toBe(400);
  });

  it('GET reads its own writes at once and sees other writers’ changes (cached, evicted on NOTIFY)', async () => {
    const get = async () =>
      (await t.app.http.inject({ url: '/api/google-tokens/cached-1', headers: t.admin })).json();
    expect((await connect('cached-1', validBody())).statusCode).toBe(200);
    expect((await get()).token_info.access_token).toBe('ya29.a…0001');
    expect((await get()).token_info.access_token).toBe('ya29.a…0001'); // now from memory
    // Reconnect through this API: the very next GET has the new token.
    expect(
      (await connect('cached-1', validBody({ access_token: 'ya29.second-token-9999' }))).statusCode,
    ).toBe(200);
    expect((await get()).token_info.access_token).toBe('ya29.s…9999');
    // A change made elsewhere (a worker process, an operator): seen once its notification arrives.
    await sql`UPDATE google_calendar_tokens SET status = 'revoked', revoked_at = now() WHERE user_id = 'cached-1'`.execute(
      t.app.database.db,
    );
    await vi.waitFor(async () => expect((await get()).token_info.status).toBe('revoked'));
    // Disconnect through this API: gone at once.
    const del = await t.app.http.inject({
      method: 'DELETE',
      url: '/api/google-tokens/cached-1',
      headers: t.admin,
    });
    expect(del.statusCode).toBe(200);
    expect(
      (await t.app.http.inject({ url: '/api/google-tokens/cached-1', headers: t.admin })).statusCode,
    ).toBe(404);
  });

  it('accepts user ids with letters, digits and -_.@', async () => {
    const res = await connect('Owner_1.test@example-co', validBody());
    expect(res.statusCode).toBe(200);
  });

  it('answers malformed JSON and wrong content types with 4xx JSON', async () => {
    const bad = await t.app.http.inject({
      method: 'POST',
      url: '/api/users/json-user/google-calendar/connect',
      headers: { ...t.admin, 'content-type': 'application/json' },
      payload: '{"access_token": ',
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().success).toBe(false);
    const text = await t.app.http.inject({
      method: 'POST',
      url: '/api/users/json-user/google-calendar/connect',
      headers: { ...t.admin, 'content-type': 'application/xml' },
      payload: '<access_token>x</access_token>',
    });
    expect(text.statusCode).toBe(415);
    expect(text.json().success).toBe(false);
    expect(await countRows('json-user')).toBe(0);
  });

  it('paginates the list by user_id with a cursor', async () => {
    const ids = ['page-a', 'page-b', 'page-c', 'page-d', 'page-e'];
    for (const id of ids) await connect(id, validBody());
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = cursor ? `?limit=2&cursor=${cursor}` : '?limit=2';
      const res = await t.app.http.inject({ url: `/api/google-tokens${q}`, headers: t.admin });
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body.count).toBe(body.tokens.length);
      expect(body.count).toBeLessThanOrEqual(2);
      seen.push(...body.tokens.map((x: { user_id: string }) => x.user_id));
      cursor = body.next_cursor;
      pages++;
    } while (cursor && pages < 50);
    const pageIds = seen.filter((id) => id.startsWith('page-'));
    expect(pageIds).toEqual(ids);
    expect([...seen].sort()).toEqual(seen);

    for (const q of ['?limit=0', '?limit=201', '?limit=abc', '?cursor=%25%25%25']) {
      const res = await t.app.http.inject({ url: `/api/google-tokens${q}`, headers: t.admin });
      expect(res.statusCode, q).toBe(400);
      expect(res.json().success).toBe(false);
    }
  });

  it('never stores or logs a token in plaintext', async () => {
    await connect('secret-user', validBody());
    const raw = await sql<Record<string, unknown>>`SELECT * FROM google_calendar_tokens`.execute(
      t.app.database.db,
    );
    const dump = JSON.stringify(raw.rows);
    expect(dump).not.toContain(ACCESS);
    expect(dump).not.toContain(REFRESH);
    expect(dump).not.toContain('access-token-plaintext');
    expect(dump).toMatch(/v1\.[0-9a-f]{8}\./);
    expect(t.logs.text.length).toBeGreaterThan(0);
    expect(t.logs.text).not.toContain('plaintext-0001');
    expect(t.logs.text).not.toContain('test-admin-key');
  });

  it('serves health, readiness, the OpenAPI document (with the credentials each operation needs) and its viewer', async () => {
    expect((await t.app.http.inject({ url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await t.app.http.inject({ url: '/readyz' })).json()).toEqual({ status: 'ready' });
    const doc = (await t.app.http.inject({ url: '/openapi.json' })).json();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/api/users/{user_id}/google-calendar/connect',
        '/api/google-tokens/{user_id}',
        '/api/google-tokens',
      ]),
    );
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual([
      'admin',
      'customer',
      'customerQuery',
    ]);
    expect(doc.paths['/api/google-tokens'].get.security).toEqual([{ admin: [] }]);
    // Every operation but opening a conversation says what it needs, and refuses a request without it.
    const open = 'post /api/agents/{agent_id}/conversations';
    const checked: string[] = [];
    for (const [path, operations] of Object.entries<Record<string, { security?: unknown }>>(doc.paths)) {
      if (!path.startsWith('/api/') && path !== '/metrics') continue;
      for (const [method, operation] of Object.entries(operations)) {
        const name = `${method} ${path}`;
        if (name === open) {
          expect(operation.security, name).toBeUndefined();
          continue;
        }
        expect(operation.security, name).toEqual(expect.arrayContaining([{ admin: [] }]));
        const res = await t.app.http.inject({
          method: method.toUpperCase() as 'GET',
          url: path.replace(/\{[^}]+\}/g, 'id_1'),
          ...(method === 'get' || method === 'delete' ? {} : { payload: { content: 'hi' } }),
        });
        expect(res.statusCode, name).toBe(401);
        checked.push(name);
      }
    }
    expect(checked.length).toBeGreaterThan(15);
    const docs = await t.app.http.inject({ url: '/docs/' });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-type']).toMatch(/text\/html/);
    const unknown = await t.app.http.inject({ url: '/api/nope' });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().success).toBe(false);
  });
});
