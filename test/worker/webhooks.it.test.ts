/**
 * Owner webhooks (issue 8): signed JSON POSTs for meeting.booked / rescheduled / cancelled and
 * calendar.revoked, recorded in the change's transaction, delivered through pg-boss with retries,
 * visible at GET /api/users/:user_id/webhook/deliveries. A real HTTP receiver verifies signatures.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { meetingEventData } from '../../src/domain/owner-events.js';
import { bossSchemaFor } from '../../src/store/database.js';
import { WEBHOOK_QUEUE, type WebhookOptions } from '../../src/worker/webhooks.js';
import { type Stack, startStack } from '../helpers/stack.js';

interface Received {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: { id: string; type: string; created_at: string; data: Record<string, unknown> };
}

/**
 * The test stacks' delivery settings: retries a second apart, workers that look every half second,
 * and a receiver timeout no test waits out (a held receiver is released by the test itself).
 */
const hooks = (over: WebhookOptions = {}): WebhookOptions => ({
  pollSeconds: 0.5,
  timeoutMs: 60_000,
  retryLimit: 3,
  retryDelaySeconds: 1,
  relayIntervalMs: 200,
  sweepIntervalMs: 250,
  ...over,
});

let s: Stack;
let server: Server;
let base: string;
const received: Received[] = [];
/** Per path: how many more requests answer 500. */
const failures = new Map<string, number>();
/** While true, requests to /hang get no answer until released (kept here). */
let holding = false;
const held: Array<() => void> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const path = req.url ?? '/';
      const accept = () => {
        received.push({ path, headers: req.headers, body, json: JSON.parse(body) });
        res.writeHead(204).end();
      };
      if (path === '/hang' && holding) {
        held.push(accept);
        return;
      }
      const left = failures.get(path) ?? 0;
      if (left > 0) {
        failures.set(path, left - 1);
        res.writeHead(500).end('nope');
        return;
      }
      accept();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  s = await startStack({}, { webhooks: hooks() });
});
afterAll(async () => {
  await s?.close();
  await new Promise((r) => server?.close(r));
});
beforeEach(() => {
  s.openai.reset();
  s.google.reset();
});

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

function at(days: number, hourUtc: number): string {
  const d = new Date(Date.now() + days * 86_400_000);
  d.setUTCHours(hourUtc, 0, 0, 0);
  return d.toISOString().replace('.000Z', 'Z');
}

function verify(r: Received, secret: string): boolean {
  const ts = String(r.headers['x-signature-timestamp']);
  const expected = `sha256=${createHmac('sha256', secret).update(`${ts}.${r.body}`).digest('hex')}`;
  const got = String(r.headers['x-signature']);
  return got.length === expected.length && timingSafeEqual(Buffer.from(got), Buffer.from(expected));
}

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function putWebhook(userId: string, body: Record<string, unknown>) {
  return s.app.http.inject({
    method: 'PUT',
    url: `/api/users/${userId}/webhook`,
    headers: s.admin,
    payload: body,
  });
}

async function deliveries(userId: string) {
  const res = await s.app.http.inject({ url: `/api/users/${userId}/webhook/deliveries`, headers: s.admin });
  expect(res.statusCode).toBe(200);
  return res.json().deliveries as Array<Record<string, unknown>>;
}

async function ownerWithHook(path: string) {
  const userId = uid('wh');
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  const res = await putWebhook(userId, { url: `${base}${path}` });
  expect(res.statusCode).toBe(200);
  const secret = res.json().secret as string;
  return { userId, email: `${userId}@owner.test`, agentId: agent.agent_id, secret };
}

/**
 * A pending delivery of `userId`'s, enqueued, written `ageSeconds` ago: its id. A job for it
 * (`withJob`) is sent first, as the service commits a row and its job together: the sweep never
 * sees the row without it.
 */
async function pendingDelivery(
  userId: string,
  ageSeconds: number,
  withJob?: (id: string) => Promise<unknown>,
): Promise<string> {
  const id = `whd_${randomBytes(10).toString('hex')}`;
  await withJob?.(id);
  await sql`
    INSERT INTO webhook_deliveries (delivery_id, user_id, event_type, event_key, payload, enqueued, created_at)
    VALUES (${id}, ${userId}, 'meeting.booked', ${`test:${id}`}, '{}'::jsonb, true,
            now() - make_interval(secs => ${ageSeconds}))`.execute(s.app.database.db);
  return id;
}

async function say(
  agentId: string,
  conv: { conversation_id: string; customer_token: string } | undefined,
  reply: unknown,
) {
  const c = conv ?? (await s.openConversation(agentId));
  s.openai.responder = () => ({ content: JSON.stringify(reply) });
  const before = (await s.messages(c.conversation_id, c.customer_token)).filter(
    (m) => m.role === 'assistant',
  ).length;
  await s.send(c.conversation_id, c.customer_token, 'please');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, before + 1);
  return { conv: c, text: list.filter((m) => m.role === 'assistant').at(-1)!.content };
}

const booking = (time: string) => [
  {
    action: 'Time_to_121meet',
    name: 'Sid',
    email: 'sid@example.com',
    title: 'Demo',
    participants: [],
    meeting_time: time,
    friendly_time: null,
  },
];

describe('webhook settings', () => {
  it('validates the URL, generates a secret once, stores it encrypted, needs the admin key', async () => {
    const userId = uid('wh');
    expect((await putWebhook(userId, { url: 'ftp://example.com/x' })).statusCode).toBe(400);
    expect((await putWebhook(userId, { url: 'not a url' })).statusCode).toBe(400);
    expect((await putWebhook(userId, { url: `${base}/x`, secret: 'short' })).statusCode).toBe(400);
    const anon = await s.app.http.inject({
      method: 'PUT',
      url: `/api/users/${userId}/webhook`,
      payload: { url: `${base}/x` },
    });
    expect(anon.statusCode).toBe(401);

    const res = await putWebhook(userId, { url: `${base}/x` });
    expect(res.statusCode).toBe(200);
    const secret = res.json().secret as string;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{40,}$/);
    const read = await s.app.http.inject({ url: `/api/users/${userId}/webhook`, headers: s.admin });
    expect(read.json()).toMatchObject({ url: `${base}/x` });
    expect(read.body).not.toContain(secret);
    const stored = await sql<{
      secret_enc: string;
    }>`SELECT secret_enc FROM owner_webhooks WHERE user_id = ${userId}`.execute(s.app.database.db);
    expect(stored.rows[0]?.secret_enc).toMatch(/^v1\./);
    expect(stored.rows[0]?.secret_enc).not.toContain(secret);

    const own = await putWebhook(userId, { url: `${base}/y`, secret: 'my-own-secret-0123456789' });
    expect(own.json().secret).toBeUndefined();
  });
});

describe('webhook deliveries', () => {
  it('booked, rescheduled and cancelled by chat: each change POSTed once, signed', async () => {
    const o = await ownerWithHook('/chat');
    const first = await say(o.agentId, undefined, booking(at(2, 10)));
    expect(first.text.startsWith('✅ Meeting confirmed!')).toBe(true);
    const moved = await say(o.agentId, first.conv, [
      { action: 'reschedule_meeting', meeting_id: null, new_time: at(2, 12), friendly_time: null },
    ]);
    expect(moved.text.startsWith('✅ Meeting rescheduled!')).toBe(true);
    const cancelled = await say(o.agentId, first.conv, [{ action: 'cancel_meeting', meeting_id: null }]);
    expect(cancelled.text.startsWith('✅ Meeting cancelled.')).toBe(true);

    const mine = await waitFor('three deliveries', () => {
      const got = received.filter((r) => r.path === '/chat');
      return got.length >= 3 ? got : undefined;
    });
    expect(mine.map((r) => r.json.type).sort()).toEqual([
      'meeting.booked',
      'meeting.cancelled',
      'meeting.rescheduled',
    ]);
    for (const r of mine) {
      expect(verify(r, o.secret)).toBe(true);
      expect(verify(r, 'another-secret-0123456789')).toBe(false);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.json.id).toMatch(/^whd_/);
    }
    const byType = Object.fromEntries(
      mine.map((r) => [r.json.type, r.json.data.meeting as Record<string, unknown>]),
    );
    expect(byType['meeting.booked']?.meeting_time).toBe(new Date(at(2, 10)).toISOString());
    expect(byType['meeting.rescheduled']?.meeting_time).toBe(new Date(at(2, 12)).toISOString());
    expect(byType['meeting.rescheduled']?.previous_meeting_time).toBe(new Date(at(2, 10)).toISOString());
    expect(byType['meeting.cancelled']?.status).toBe('cancelled');

    await waitFor('delivered statuses', async () =>
      (await deliveries(o.userId)).every((d) => d.status === 'delivered') ? true : undefined,
    );
    const list = await deliveries(o.userId);
    expect(list).toHaveLength(3);
    for (const d of list)
      expect(d).toMatchObject({ status: 'delivered', attempts: 1, last_error: null, last_status_code: 204 });
  });

  it("a booking's reply, meeting row, delivery and lease release are one statement; the payload is the stored meeting", async () => {
    // Triggers log, per row written, the statement that wrote it (current_query(): the client's
    // statement text), so the test sees the real statements, whatever the code says it sends.
    await sql`
      CREATE TABLE booking_write_log (tbl text, user_id text, query text);
      CREATE FUNCTION log_booking_write() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' THEN
          INSERT INTO booking_write_log VALUES (TG_TABLE_NAME, OLD.user_id, current_query());
          RETURN OLD;
        END IF;
        INSERT INTO booking_write_log VALUES (TG_TABLE_NAME, NEW.user_id, current_query());
        RETURN NEW;
      END $$;
      CREATE FUNCTION log_reply_write() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO booking_write_log
          SELECT TG_TABLE_NAME, a.user_id, current_query()
            FROM conversations c JOIN agents a ON a.agent_id = c.agent_id
           WHERE c.conversation_id = NEW.conversation_id;
        RETURN NEW;
      END $$;
      CREATE TRIGGER log_reply AFTER INSERT ON messages
        FOR EACH ROW WHEN (NEW.role = 'assistant') EXECUTE FUNCTION log_reply_write();
      CREATE TRIGGER log_meeting AFTER INSERT ON meetings FOR EACH ROW EXECUTE FUNCTION log_booking_write();
      CREATE TRIGGER log_delivery AFTER INSERT ON webhook_deliveries
        FOR EACH ROW EXECUTE FUNCTION log_booking_write();
      CREATE TRIGGER log_lease AFTER UPDATE ON owner_booking_leases
        FOR EACH ROW WHEN (jsonb_array_length(NEW.holds) < jsonb_array_length(OLD.holds))
        EXECUTE FUNCTION log_booking_write();`.execute(s.app.database.db);
    try {
      const o = await ownerWithHook('/one-statement');
      const { text } = await say(o.agentId, undefined, booking(at(4, 10)));
      expect(text.startsWith('✅ Meeting confirmed!')).toBe(true);
      const writes = (
        await sql<{ tbl: string; query: string }>`
          SELECT tbl, query FROM booking_write_log WHERE user_id = ${o.userId}`.execute(s.app.database.db)
      ).rows;
      expect(writes.map((w) => w.tbl).sort()).toEqual([
        'meetings',
        'messages',
        'owner_booking_leases',
        'webhook_deliveries',
      ]);
      expect(new Set(writes.map((w) => w.query)).size).toBe(1);

      // The payload was built before the row existed: it must be what the stored row says.
      const got = await waitFor('the delivery', () => received.find((r) => r.path === '/one-statement'));
      const stored = await s.app.database.db
        .selectFrom('meetings')
        .selectAll()
        .where('user_id', '=', o.userId)
        .executeTakeFirstOrThrow();
      expect(got.json.type).toBe('meeting.booked');
      expect(got.json.data).toEqual(JSON.parse(JSON.stringify(meetingEventData(stored))));
      const [d] = await deliveries(o.userId);
      expect(d).toMatchObject({ event_type: 'meeting.booked' });
    } finally {
      await sql`
        DROP TRIGGER log_meeting ON meetings;
        DROP TRIGGER log_delivery ON webhook_deliveries;
        DROP TRIGGER log_lease ON owner_booking_leases;
        DROP TRIGGER log_reply ON messages;
        DROP FUNCTION log_booking_write();
        DROP FUNCTION log_reply_write();
        DROP TABLE booking_write_log;`.execute(s.app.database.db);
    }
  });

  it('a failing receiver gets retries with backoff until it accepts; the delivery shows the attempts', async () => {
    const o = await ownerWithHook('/flaky');
    failures.set('/flaky', 2);
    await say(o.agentId, undefined, booking(at(3, 9)));
    const got = await waitFor('the delivery after two failures', () =>
      received.find((r) => r.path === '/flaky'),
    );
    expect(got.json.type).toBe('meeting.booked');
    expect(verify(got, o.secret)).toBe(true);
    const [d] = await waitFor('delivered', async () => {
      const list = await deliveries(o.userId);
      return list[0]?.status === 'delivered' ? list : undefined;
    });
    expect(d).toMatchObject({
      event_type: 'meeting.booked',
      status: 'delivered',
      attempts: 3,
      last_error: null,
    });
  });

  it('a receiver that never accepts: the delivery ends failed with its last error', async () => {
    const o = await ownerWithHook('/down');
    failures.set('/down', 100);
    await say(o.agentId, undefined, booking(at(3, 11)));
    const [d] = await waitFor(
      'failed',
      async () => {
        const list = await deliveries(o.userId);
        return list[0]?.status === 'failed' ? list : undefined;
      },
      40_000,
    );
    expect(d).toMatchObject({
      status: 'failed',
      attempts: 4,
      last_status_code: 500,
      last_error: 'receiver answered 500',
    });
  });

  it('a receiver that does not answer holds back only its own owner’s deliveries', async () => {
    const slow = await ownerWithHook('/hang');
    const other = await ownerWithHook('/other');
    holding = true;
    try {
      await say(slow.agentId, undefined, booking(at(5, 9)));
      await say(slow.agentId, undefined, booking(at(5, 11)));
      await waitFor('the first delivery held', () => held.length === 1 || undefined);
      await say(other.agentId, undefined, booking(at(5, 13)));
      // Delivered while the slow receiver still holds the first attempt.
      await waitFor('the other owner’s delivery', () => received.find((r) => r.path === '/other'));
      // One delivery at a time per owner: the slow owner's second waits behind its first.
      expect(held).toHaveLength(1);
      expect((await deliveries(slow.userId)).map((d) => [d.status, d.attempts])).toEqual([
        ['pending', 0],
        ['pending', 0],
      ]);
    } finally {
      holding = false;
      for (const answer of held.splice(0)) answer();
    }
    await waitFor('the slow owner’s deliveries', async () => {
      const list = await deliveries(slow.userId);
      return list.every((d) => d.status === 'delivered') ? list : undefined;
    });
    expect(received.filter((r) => r.path === '/hang')).toHaveLength(2);
  });

  it('a pending delivery that no job will attempt again (sent before the dead-letter queue) is swept to failed', async () => {
    const userId = uid('sweep');
    const orphan = await pendingDelivery(userId, 120);
    // `waiting` still has a job: in backoff until an hour from now.
    const waiting = await pendingDelivery(userId, 120, (id) =>
      s.app.queue.boss.send(WEBHOOK_QUEUE, { deliveryId: id }, { singletonKey: id, startAfter: 3600 }),
    );
    const young = await pendingDelivery(userId, 0);
    const status = async (id: string) =>
      (
        await sql<{ status: string; last_error: string | null }>`
          SELECT status, last_error FROM webhook_deliveries WHERE delivery_id = ${id}`.execute(
          s.app.database.db,
        )
      ).rows[0];
    await waitFor('swept', async () => ((await status(orphan))?.status === 'failed' ? true : undefined));
    expect(await status(orphan)).toEqual({
      status: 'failed',
      last_error: 'no attempt of it is left: its job ended without recording an outcome',
    });
    await new Promise((r) => setTimeout(r, 600)); // two more sweeps
    expect((await status(waiting))?.status).toBe('pending');
    expect((await status(young))?.status).toBe('pending');
  });

  it('the owner API cancel and a revoked calendar are delivered too', async () => {
    const o = await ownerWithHook('/admin');
    await say(o.agentId, undefined, booking(at(4, 9)));
    const meetings = (
      await s.app.http.inject({ url: `/api/users/${o.userId}/meetings`, headers: s.admin })
    ).json().meetings;
    const cancel = await s.app.http.inject({
      method: 'POST',
      url: `/api/meetings/${meetings[0].meeting_id}/cancel`,
      headers: s.admin,
    });
    expect(cancel.statusCode).toBe(200);
    await waitFor('cancel delivery', () =>
      received.find((r) => r.path === '/admin' && r.json.type === 'meeting.cancelled'),
    );

    // Revocation happens inside the token refresh (invalid_grant): the trigger records it.
    await s.app.connections.markRevoked(o.userId);
    const revoked = await waitFor('revoked delivery', () =>
      received.find((r) => r.path === '/admin' && r.json.type === 'calendar.revoked'),
    );
    expect(verify(revoked, o.secret)).toBe(true);
    expect(revoked.json.data.user_id).toBe(o.userId);
  });
});

describe('without the periodic relay', () => {
  // The helpers above use `s`: this block swaps in a stack whose relay runs once at start, then
  // hourly, so a booking's delivery arrives only if the worker enqueues it right after the reply's
  // statement (WebhookDispatcher.relayOne), as a delivery written in that statement must be.
  let main: Stack;
  beforeAll(async () => {
    main = s;
    s = await startStack({}, { webhooks: hooks({ relayIntervalMs: 3_600_000 }) });
  });
  afterAll(async () => {
    await s.close();
    s = main;
  });

  it("a booking's delivery is enqueued right after the reply's statement", async () => {
    const o = await ownerWithHook('/no-relay');
    const { text } = await say(o.agentId, undefined, booking(at(5, 11)));
    expect(text.startsWith('✅ Meeting confirmed!')).toBe(true);
    const got = await waitFor('the delivery', () => received.find((r) => r.path === '/no-relay'));
    expect(got.json.type).toBe('meeting.booked');
    expect(verify(got, o.secret)).toBe(true);
  });
});

describe('a last attempt that never finishes', () => {
  // One attempt only, which pg-boss gives up on after a second (as when its worker dies or stalls
  // mid-POST): the delivery must not stay pending for good.
  let main: Stack;
  beforeAll(async () => {
    main = s;
    s = await startStack({}, { webhooks: hooks({ retryLimit: 0, expireSeconds: 1 }) });
  });
  afterAll(async () => {
    await s.close();
    s = main;
  });

  it('a worker that died mid-attempt (its job left active): failed once pg-boss times the job out', async () => {
    const o = await ownerWithHook('/never-reached');
    const id = await pendingDelivery(o.userId, 0, (key) =>
      s.app.queue.boss.send(WEBHOOK_QUEUE, { deliveryId: key }, { singletonKey: key, startAfter: 3600 }),
    );
    // What a killed worker leaves: its job active, started long ago, and nobody to finish it.
    await sql`UPDATE ${sql.id(bossSchemaFor(s.app.database.schema), 'job')}
                 SET state = 'active', started_on = now() - interval '1 hour', start_after = now()
               WHERE name = ${WEBHOOK_QUEUE} AND singleton_key = ${id}`.execute(s.app.database.db);
    const [d] = await waitFor('failed', async () => {
      const list = await deliveries(o.userId);
      return list[0]?.status === 'failed' ? list : undefined;
    });
    expect(d).toMatchObject({ attempts: 0, last_error: 'the last attempt did not finish: job timed out' });
    expect(received.some((r) => r.path === '/never-reached')).toBe(false);
  });

  it('an accepted last attempt whose record failed is recorded delivered, not failed', async () => {
    const o = await ownerWithHook('/accepted');
    // The first write of a delivered outcome for this owner fails (a sequence is not rolled back).
    await sql`
      CREATE SEQUENCE record_fails_once;
      CREATE FUNCTION fail_first_record() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('record_fails_once') = 1 THEN RAISE EXCEPTION 'the database went away'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER fail_first_record BEFORE UPDATE ON webhook_deliveries FOR EACH ROW
        WHEN (NEW.status = 'delivered' AND NEW.user_id = ${sql.lit(o.userId)})
        EXECUTE FUNCTION fail_first_record();`.execute(s.app.database.db);
    try {
      await say(o.agentId, undefined, booking(at(6, 13)));
      const [d] = await waitFor('delivered', async () => {
        const list = await deliveries(o.userId);
        return list[0]?.status === 'delivered' ? list : undefined;
      });
      expect(d).toMatchObject({ attempts: 1, last_status_code: 204, last_error: null });
      expect(received.filter((r) => r.path === '/accepted')).toHaveLength(1);
      const tries = await sql<{ n: string }>`SELECT last_value AS n FROM record_fails_once`.execute(
        s.app.database.db,
      );
      expect(Number(tries.rows[0]?.n)).toBe(2);
    } finally {
      await sql`
        DROP TRIGGER fail_first_record ON webhook_deliveries;
        DROP FUNCTION fail_first_record();
        DROP SEQUENCE record_fails_once;`.execute(s.app.database.db);
    }
  });

  it('is marked failed (the dead-letter queue); a late 2xx from it still marks it delivered', async () => {
    const o = await ownerWithHook('/hang');
    holding = true;
    try {
      await say(o.agentId, undefined, booking(at(6, 9)));
      await waitFor('the attempt held', () => held.length === 1 || undefined);
      const [d] = await waitFor('failed', async () => {
        const list = await deliveries(o.userId);
        return list[0]?.status === 'failed' ? list : undefined;
      });
      expect(d).toMatchObject({ status: 'failed', attempts: 0, last_status_code: null });
      expect(String(d?.last_error)).toMatch(/^the last attempt did not finish: /);
      expect(held).toHaveLength(1); // no further attempt
    } finally {
      holding = false;
      for (const answer of held.splice(0)) answer();
    }
    const [d] = await waitFor('delivered after all', async () => {
      const list = await deliveries(o.userId);
      return list[0]?.status === 'delivered' ? list : undefined;
    });
    expect(d).toMatchObject({ status: 'delivered', attempts: 1, last_status_code: 204, last_error: null });
    expect(received.filter((r) => r.path === '/hang' && r.json.id === d?.delivery_id)).toHaveLength(1);
  });
});

describe('WEBHOOK_URLS=public-https (the default): https to public addresses only', () => {
  // A stack with the production default (the others allow the test receiver on 127.0.0.1 over
  // http). A bare TCP listener stands where an internal service would: no delivery may reach it.
  let main: Stack;
  let internal: Server;
  let internalPort: number;
  let connections = 0;
  beforeAll(async () => {
    main = s;
    s = await startStack({ WEBHOOK_URLS: 'public-https' }, { webhooks: hooks({ retryLimit: 1 }) });
    internal = createServer((_req, res) => res.writeHead(204).end());
    internal.on('connection', () => {
      connections += 1;
    });
    await new Promise<void>((r) => internal.listen(0, '127.0.0.1', r));
    internalPort = (internal.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await s.close();
    s = main;
    await new Promise((r) => internal?.close(r));
  });

  it.each([
    ['plain http', 'http://hooks.example.com/x', /^url must be https:\/\//],
    ['loopback', 'https://127.0.0.1/x', /not 127\.0\.0\.1/],
    ['IPv6 loopback', 'https://[::1]/x', /not ::1/],
    ['cloud metadata (link-local)', 'https://169.254.169.254/latest/meta-data', /not 169\.254\.169\.254/],
    ['a private network', 'https://10.1.2.3:8443/x', /not 10\.1\.2\.3/],
    ['an IPv4-mapped loopback', 'https://[::ffff:127.0.0.1]/x', /not ::ffff:7f00:1/],
    [
      'a name resolving to loopback',
      'https://localhost/x',
      /host localhost resolves to a non-public address/,
    ],
  ])('refuses %s with 400, storing nothing', async (_label, url, message) => {
    const userId = uid('wp');
    const res = await putWebhook(userId, { url });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ success: false, error: expect.stringMatching(message) });
    expect(
      (await s.app.http.inject({ url: `/api/users/${userId}/webhook`, headers: s.admin })).statusCode,
    ).toBe(404);
  });

  it('accepts https to a public address', async () => {
    const res = await putWebhook(uid('wp'), { url: 'https://8.8.8.8/hooks/meetings' });
    expect(res.statusCode).toBe(200);
  });

  it.each([
    // A name that resolved to a public address when saved and to an internal one now (rebinding):
    // refused at connect time, on the very address the socket would use.
    [
      'a name now resolving to loopback',
      () => `https://localhost:${internalPort}/hook`,
      /resolves to a non-public address/,
      2,
    ],
    // Saved under WEBHOOK_URLS=any: refused for good, with no attempt.
    ['an http URL saved before', () => `http://127.0.0.1:${internalPort}/hook`, /^url must be https:\/\//, 1],
  ])('a delivery to %s is refused and never connects', async (_label, url, error, attempts) => {
    const userId = uid('wp');
    await s.connectOwner(userId);
    expect((await putWebhook(userId, { url: 'https://8.8.8.8/hook' })).statusCode).toBe(200);
    await sql`UPDATE owner_webhooks SET url = ${url()} WHERE user_id = ${userId}`.execute(s.app.database.db);
    await s.app.connections.markRevoked(userId); // its trigger records calendar.revoked
    const [d] = await waitFor(
      'the delivery to end failed',
      async () => {
        const list = await deliveries(userId);
        return list[0]?.status === 'failed' ? list : undefined;
      },
      30_000,
    );
    expect(d).toMatchObject({ event_type: 'calendar.revoked', attempts, last_status_code: null });
    expect(String(d?.last_error)).toMatch(error);
    expect(connections).toBe(0);
  });
});
