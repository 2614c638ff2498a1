import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Bad input never breaks the service: random bodies and path parameters on every public endpoint
 * never produce a 5xx, always produce a JSON error, and a rejected request never leaves a row behind.
 */

let s: Stack;
let agentId: string;
let conversation: { conversation_id: string; customer_token: string };

beforeAll(async () => {
  s = await startStack();
  s.openai.responder = () => ({ content: 'ok' });
  await s.connectOwner('fuzz-owner');
  agentId = (await s.createAgent({ user_id: 'fuzz-owner', name: 'Fuzz' })).agent_id;
  conversation = await s.openConversation(agentId);
});
afterAll(async () => {
  await s?.close();
});

const TABLES = ['google_calendar_tokens', 'agents', 'conversations', 'messages', 'meetings'] as const;

async function rowCounts(): Promise<string> {
  const parts = TABLES.map((t) => `(SELECT count(*) FROM ${t})`).join(', ');
  const r = await sql<{ c: string }>`SELECT ARRAY[${sql.raw(parts)}]::text AS c`.execute(s.app.database.db);
  return r.rows[0]!.c;
}

/** Path segments a client could send: valid-looking ids, junk, unicode, encodings, traversal. */
const pathParam = fc
  .oneof(
    fc.string({ minLength: 0, maxLength: 80 }),
    fc.string({ unit: 'grapheme', maxLength: 30 }),
    fc.constantFrom(
      '..',
      '%2e%2e',
      'a%2Fb',
      '%00',
      'null',
      'undefined',
      ' ',
      'x'.repeat(300),
      'agt_',
      'cnv_',
      'mtg_',
    ),
    fc.stringMatching(/^[a-z]{3}_[a-z0-9]{1,30}$/),
  )
  .map((p) => encodeURIComponent(p));

/** Bodies: arbitrary JSON, near-valid shapes with wrong types, and the valid fields with junk values. */
const jsonValue = fc.jsonValue({ maxDepth: 3 });
const nearValid = fc.record(
  {
    access_token: jsonValue,
    refresh_token: jsonValue,
    token_expiry: fc.oneof(
      jsonValue,
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.string(),
    ),
    scope: fc.oneof(jsonValue, fc.constant('https://www.googleapis.com/auth/calendar')),
    user_id: jsonValue,
    name: jsonValue,
    timezone: fc.oneof(jsonValue, fc.constantFrom('UTC', 'Mars/Base', 'UTC+05:30', '')),
    meeting_duration_minutes: jsonValue,
    content: fc.oneof(jsonValue, fc.string({ maxLength: 5000 })),
    customer_email: jsonValue,
  },
  { requiredKeys: [] },
);
const body = fc.oneof(jsonValue, nearValid);

interface Endpoint {
  name: string;
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  url: (p: string) => string;
  auth: 'admin' | 'customer' | 'none';
  body?: boolean;
}

const endpoints: Endpoint[] = [
  {
    name: 'connect',
    method: 'POST',
    url: (p) => `/api/users/${p}/google-calendar/connect`,
    auth: 'admin',
    body: true,
  },
  { name: 'get token', method: 'GET', url: (p) => `/api/google-tokens/${p}`, auth: 'admin' },
  {
    name: 'list tokens',
    method: 'GET',
    url: (p) => `/api/google-tokens?limit=${p}&cursor=${p}`,
    auth: 'admin',
  },
  { name: 'delete token', method: 'DELETE', url: (p) => `/api/google-tokens/${p}x`, auth: 'admin' },
  { name: 'create agent', method: 'POST', url: () => '/api/agents', auth: 'admin', body: true },
  { name: 'get agent', method: 'GET', url: (p) => `/api/agents/${p}`, auth: 'admin' },
  { name: 'patch agent', method: 'PATCH', url: (p) => `/api/agents/${p}`, auth: 'admin', body: true },
  {
    name: 'patch real agent',
    method: 'PATCH',
    url: () => `/api/agents/${agentId}`,
    auth: 'admin',
    body: true,
  },
  { name: 'owner agents', method: 'GET', url: (p) => `/api/users/${p}/agents?limit=${p}`, auth: 'admin' },
  {
    name: 'open conversation',
    method: 'POST',
    url: (p) => `/api/agents/${p}/conversations`,
    auth: 'none',
    body: true,
  },
  {
    name: 'send message',
    method: 'POST',
    url: (p) => `/api/conversations/${p}/messages`,
    auth: 'customer',
    body: true,
  },
  {
    name: 'send to real conversation',
    method: 'POST',
    url: () => `/api/conversations/${conversation.conversation_id}/messages`,
    auth: 'customer',
    body: true,
  },
  {
    name: 'read messages',
    method: 'GET',
    url: (p) => `/api/conversations/${conversation.conversation_id}/messages?after=${p}&limit=${p}`,
    auth: 'customer',
  },
  {
    name: 'events (bad auth)',
    method: 'GET',
    url: (p) => `/api/conversations/${p}/events?token=${p}`,
    auth: 'none',
  },
  {
    name: 'owner meetings',
    method: 'GET',
    url: (p) => `/api/users/fuzz-owner/meetings?status=${p}&from=${p}&to=${p}&cursor=${p}`,
    auth: 'admin',
  },
  { name: 'get meeting', method: 'GET', url: (p) => `/api/meetings/${p}`, auth: 'admin' },
  {
    name: 'cancel meeting',
    method: 'POST',
    url: (p) => `/api/meetings/${p}/cancel`,
    auth: 'admin',
    body: true,
  },
];

describe('fuzzing every public endpoint', () => {
  for (const ep of endpoints) {
    it(`${ep.method} ${ep.name}: no 5xx, JSON errors, nothing stored when rejected`, async () => {
      await fc.assert(
        fc.asyncProperty(pathParam, body, fc.boolean(), async (param, payload, withAuth) => {
          const headers: Record<string, string> = {};
          if (withAuth && ep.auth === 'admin') headers.authorization = s.admin.authorization;
          if (withAuth && ep.auth === 'customer')
            headers.authorization = `Bearer ${conversation.customer_token}`;
          const before = await rowCounts();
          const res = await s.app.http.inject({
            method: ep.method,
            url: ep.url(param),
            headers,
            ...(ep.body
              ? {
                  payload: JSON.stringify(payload),
                  headers: { ...headers, 'content-type': 'application/json' },
                }
              : {}),
          });
          expect(res.statusCode, `${ep.method} ${ep.url(param)} -> ${res.body}`).toBeLessThan(500);
          if (res.statusCode >= 400) {
            const json = res.json();
            expect(json.success).toBe(false);
            expect(typeof json.error).toBe('string');
            expect(await rowCounts()).toBe(before);
          }
        }),
        { numRuns: 60 },
      );
    });
  }
});
