/**
 * The owner's meetings API (issue 4, item 11): list with filters and keyset pagination, read one,
 * cancel (Google delete with sendUpdates=all; 404/410 = already gone; idempotent), all behind the
 * admin key. Meetings are booked through the real path: customer message -> model -> Google emulator.
 */
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY } from '../helpers/app.js';
import { useStack } from '../helpers/stack.js';

const s = useStack();

type Meeting = Record<string, unknown> & { meeting_id: string; meeting_time: string; status: string };

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;
const ownerEmail = (userId: string) => `${userId}@owner.test`;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** 10:00 UTC, `days` from today. */
function dayAt(days: number): Date {
  const d = new Date(Date.now() + days * 86_400_000);
  d.setUTCHours(10, 0, 0, 0);
  return d;
}

function action(at: Date, title: string): Record<string, unknown> {
  return {
    action: 'Time_to_121meet',
    name: 'Siddhant',
    email: 'siddhant@gmail.com',
    title,
    participants: [],
    meeting_time: at.toISOString().replace('.000Z', 'Z'),
    friendly_time: title,
  };
}

interface Owner {
  userId: string;
  email: string;
  agentId: string;
  accessToken: string;
}

async function newOwner(): Promise<Owner> {
  const userId = uid('mt');
  const grant = await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme Assistant' });
  return { userId, email: ownerEmail(userId), agentId: agent.agent_id, accessToken: grant.access_token };
}

/** One customer message whose model answer books `bookings` in a new conversation. */
async function book(o: Owner, bookings: Array<[Date, string]>): Promise<void> {
  s.openai.responder = () => ({ content: JSON.stringify(bookings.map(([at, t]) => action(at, t))) });
  const c = await s.openConversation(o.agentId);
  await s.send(c.conversation_id, c.customer_token, 'book');
  const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1);
  const reply = list.at(-1)!.content;
  expect(reply.split('✅ Meeting confirmed!').length - 1).toBe(bookings.length);
}

function get(url: string, headers: Record<string, string> = s.admin) {
  return s.app.http.inject({ url, headers });
}
function cancel(meetingId: string, headers: Record<string, string> = s.admin) {
  return s.app.http.inject({ method: 'POST', url: `/api/meetings/${meetingId}/cancel`, headers });
}

async function list(
  userId: string,
  query = '',
): Promise<{ meetings: Meeting[]; next_cursor: string | null; count: number }> {
  const res = await get(`/api/users/${userId}/meetings${query}`);
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json();
  expect(body.success).toBe(true);
  return body;
}

async function bookOne(o: Owner, days = 1): Promise<Meeting> {
  await book(o, [[dayAt(days), 'Demo']]);
  const { meetings } = await list(o.userId);
  return meetings.at(-1)!;
}

describe('listing meetings', () => {
  let a: Owner;
  let all: Meeting[];
  const times = [1, 2, 3, 4, 5].map(dayAt);

  beforeAll(async () => {
    a = await newOwner();
    // Two conversations, interleaved times. B5 is half an hour after A5: one owner's slot cannot be
    // booked twice (issue 8), so ties of scheduled meetings no longer occur.
    await book(a, [
      [times[0]!, 'A1'],
      [times[2]!, 'A3'],
      [times[4]!, 'A5'],
    ]);
    await book(a, [
      [times[1]!, 'B2'],
      [times[3]!, 'B4'],
      [new Date(times[4]!.getTime() + 30 * 60_000), 'B5'],
    ]);
    all = (await list(a.userId)).meetings;
    const third = all.find((m) => m.title === 'A3')!;
    expect((await cancel(third.meeting_id)).statusCode).toBe(200);
    all = (await list(a.userId)).meetings;
  });

  it('lists every meeting of the owner in time order, with ISO times', async () => {
    const body = await list(a.userId);
    expect(body.count).toBe(6);
    expect(body.next_cursor).toBeNull();
    expect(body.meetings.map((m) => m.title).slice(0, 4)).toEqual(['A1', 'B2', 'A3', 'B4']);
    expect(body.meetings.slice(4).map((m) => m.title)).toEqual(['A5', 'B5']);
    expect(body.meetings.map((m) => m.meeting_time)).toEqual([
      ...[0, 1, 2, 3, 4].map((i) => times[i]!.toISOString()),
      new Date(times[4]!.getTime() + 30 * 60_000).toISOString(),
    ]);
    for (const m of body.meetings) {
      expect(m.user_id).toBe(a.userId);
      expect(m.meeting_time).toMatch(ISO);
      expect(m.created_at).toMatch(ISO);
      expect(m.updated_at).toMatch(ISO);
      expect(m.meet_link).toMatch(/^https:\/\/meet\.google\.com\//);
    }
  });

  it('reads one meeting', async () => {
    for (const m of all) {
      const res = await get(`/api/meetings/${m.meeting_id}`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ success: true, meeting: m });
    }
  });

  it('filters by status', async () => {
    const scheduled = await list(a.userId, '?status=scheduled');
    expect(scheduled.meetings.map((m) => m.title)).not.toContain('A3');
    expect(scheduled.count).toBe(5);
    const cancelled = await list(a.userId, '?status=cancelled');
    expect(cancelled.meetings.map((m) => m.title)).toEqual(['A3']);
    expect(cancelled.meetings[0]!.cancelled_at).toMatch(ISO);
  });

  it('filters by from (inclusive) and to (exclusive), with any offset', async () => {
    const from = encodeURIComponent(times[1]!.toISOString());
    const to = encodeURIComponent(times[3]!.toISOString());
    const body = await list(a.userId, `?from=${from}&to=${to}`);
    expect(body.meetings.map((m) => m.title)).toEqual(['B2', 'A3']);

    // The same instant written with +05:30.
    const local = new Date(times[1]!.getTime() + 330 * 60_000).toISOString().slice(0, 19);
    const fromIst = encodeURIComponent(`${local}+05:30`);
    expect((await list(a.userId, `?from=${fromIst}&to=${to}`)).meetings.map((m) => m.title)).toEqual([
      'B2',
      'A3',
    ]);
    expect((await list(a.userId, `?from=${encodeURIComponent(times[4]!.toISOString())}`)).count).toBe(2);
    expect((await list(a.userId, `?to=${from}`)).meetings.map((m) => m.title)).toEqual(['A1']);
    expect((await list(a.userId, `?to=${from}&status=cancelled`)).meetings).toEqual([]);
  });

  it.each([1, 2, 4])('pages through everything with limit=%i and the cursor', async (limit) => {
    const seen: Meeting[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = `?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const page = await list(a.userId, q);
      expect(page.meetings.length).toBeLessThanOrEqual(limit);
      expect(page.count).toBe(page.meetings.length);
      seen.push(...page.meetings);
      cursor = page.next_cursor;
      pages++;
    } while (cursor && pages < 20);
    expect(seen.map((m) => m.meeting_id)).toEqual(all.map((m) => m.meeting_id));
    expect(pages).toBe(Math.ceil(all.length / limit));
  });

  it('pages within a filter', async () => {
    const first = await list(a.userId, '?status=scheduled&limit=3');
    expect(first.meetings.map((m) => m.title)).toEqual(['A1', 'B2', 'B4']);
    const rest = await list(a.userId, `?status=scheduled&limit=3&cursor=${first.next_cursor}`);
    expect(rest.count).toBe(2);
    expect(rest.next_cursor).toBeNull();
  });

  it('shows only the owner’s own meetings', async () => {
    const other = await newOwner();
    expect((await list(other.userId)).meetings).toEqual([]);
  });

  it.each([
    ['a bad cursor', '?cursor=not-a-cursor', /cursor/],
    ['a forged cursor', `?cursor=${Buffer.from('2030-01-01T00:00:00Z|x').toString('base64url')}`, /cursor/],
    // A valid JavaScript date PostgreSQL cannot hold (a 500 from the query before).
    [
      'a cursor with a year out of range',
      `?cursor=${Buffer.from('-010000-01-01T00:00:00.000Z|mtg_a').toString('base64url')}`,
      /cursor is not a cursor returned by this endpoint/,
    ],
    // Year 0 is a JavaScript date too; PostgreSQL has no year 0 (PGlite is sent it as 0000).
    [
      'a cursor in year 0',
      `?cursor=${Buffer.from('0000-06-01T00:00:00.000Z|mtg_a').toString('base64url')}`,
      /cursor is not a cursor returned by this endpoint/,
    ],
    ['a from in year 0', '?from=0000-06-01T00:00:00Z', /from must be between the years 1 and 9999/],
    [
      'a from its offset moves into year 0',
      `?from=${encodeURIComponent('0001-01-01T00:00:00+14:00')}`,
      /from must be between the years 1 and 9999/,
    ],
    [
      'a to its offset moves past year 9999',
      `?to=${encodeURIComponent('9999-12-31T23:00:00-14:00')}`,
      /to must be between the years 1 and 9999/,
    ],
    [
      'a cursor in another date form',
      `?cursor=${Buffer.from('2030-01-01T00:00:00Z|mtg_a').toString('base64url')}`,
      /cursor is not a cursor returned by this endpoint/,
    ],
    ['a from without a zone', '?from=2030-01-01T00:00:00', /from/],
    ['a from that is not a date', '?from=tomorrow', /from/],
    ['a bad to', '?to=2030-13-45T00:00:00Z', /to/],
    ['from after to', '?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z', /from must be before to/],
    ['an unknown status', '?status=deleted', /status/],
    ['limit 0', '?limit=0', /limit/],
    ['limit 201', '?limit=201', /limit/],
  ])('rejects %s with 400', async (_label, query, message) => {
    const res = await get(`/api/users/${a.userId}/meetings${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.json().success).toBe(false);
    expect(res.json().error).toMatch(message);
  });
});

describe('cancelling a meeting', () => {
  it('deletes the Google event with sendUpdates=all and marks the meeting cancelled; a second cancel is a no-op', async () => {
    const o = await newOwner();
    const m = await bookOne(o);
    s.google.reset();

    const res = await cancel(m.meeting_id);
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.success).toBe(true);
    expect(body.meeting).toMatchObject({
      meeting_id: m.meeting_id,
      status: 'cancelled',
      cancelled_at: expect.stringMatching(ISO),
      google_event_id: m.google_event_id,
    });
    expect(Date.parse(body.meeting.updated_at)).toBeGreaterThanOrEqual(Date.parse(String(m.updated_at)));

    const deletes = s.google.requests.filter((r) => r.op === 'events.delete');
    expect(deletes).toHaveLength(1);
    expect(deletes[0]!.status).toBe(204);
    expect(deletes[0]!.query.sendUpdates).toBe('all');
    expect(deletes[0]!.path).toBe(`/calendar/v3/calendars/primary/events/${m.google_event_id}`);
    expect(s.google.sentUpdates(o.email)).toEqual([
      { eventId: m.google_event_id, op: 'delete', sendUpdates: 'all' },
    ]);
    expect(s.google.events(o.email)[0]!.status).toBe('cancelled');
    expect((await get(`/api/meetings/${m.meeting_id}`)).json().meeting).toEqual(body.meeting);

    s.google.reset();
    const again = await cancel(m.meeting_id);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual(body);
    expect(s.google.requests).toEqual([]);
  });

  it('treats 404 from Google as already gone', async () => {
    const o = await newOwner();
    const m = await bookOne(o);
    s.google.fail('events.delete', { kind: 'status', status: 404 }, 1);
    const res = await cancel(m.meeting_id);
    expect(res.statusCode).toBe(200);
    expect(res.json().meeting.status).toBe('cancelled');
    expect(s.google.requests.filter((r) => r.op === 'events.delete').map((r) => r.status)).toEqual([404]);
  });

  it('treats 410 from Google (the owner deleted the event already) as already gone', async () => {
    const o = await newOwner();
    const m = await bookOne(o);
    // The owner deletes the event in their own calendar.
    const gone = await fetch(`${s.google.rootUrl}calendar/v3/calendars/primary/events/${m.google_event_id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${o.accessToken}` },
    });
    expect(gone.status).toBe(204);
    s.google.reset();
    const res = await cancel(m.meeting_id);
    expect(res.statusCode).toBe(200);
    expect(res.json().meeting.status).toBe('cancelled');
    expect(s.google.requests.filter((r) => r.op === 'events.delete').map((r) => r.status)).toEqual([410]);
  });

  it('retries Google’s transient errors, and answers 502 (meeting unchanged) when they persist', async () => {
    const o = await newOwner();
    const m = await bookOne(o);
    s.google.fail('events.delete', { kind: 'status', status: 503 }, 1);
    const ok = await cancel(m.meeting_id);
    expect(ok.statusCode).toBe(200);
    expect(s.google.requests.filter((r) => r.op === 'events.delete').map((r) => r.status)).toEqual([
      503, 204,
    ]);

    const m2 = await bookOne(o, 2);
    s.google.reset();
    s.google.fail('events.delete', { kind: 'status', status: 503 }, 100);
    const failed = await cancel(m2.meeting_id);
    expect(failed.statusCode).toBe(502);
    expect(failed.json()).toEqual({
      success: false,
      error: 'Google Calendar did not accept the cancellation; try again',
    });
    expect(s.google.requests.filter((r) => r.op === 'events.delete').length).toBe(4);
    expect((await get(`/api/meetings/${m2.meeting_id}`)).json().meeting.status).toBe('scheduled');
    s.google.reset();
    expect((await cancel(m2.meeting_id)).statusCode).toBe(200);
    expect(s.google.events(o.email).map((e) => e.status)).toEqual(['cancelled', 'cancelled']);
  });

  it('answers 409 when the owner’s calendar is no longer connected', async () => {
    const o = await newOwner();
    const m = await bookOne(o);
    const del = await s.app.http.inject({
      method: 'DELETE',
      url: `/api/google-tokens/${o.userId}`,
      headers: s.admin,
    });
    expect(del.statusCode).toBe(200);
    const res = await cancel(m.meeting_id);
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatch(/not connected/);
    expect((await get(`/api/meetings/${m.meeting_id}`)).json().meeting.status).toBe('scheduled');
  });

  it('answers 404 for an unknown meeting', async () => {
    expect((await get('/api/meetings/mtg_doesnotexist')).statusCode).toBe(404);
    expect((await cancel('mtg_doesnotexist')).statusCode).toBe(404);
  });
});

describe('authentication', () => {
  const wrong = { authorization: 'Bearer not-the-admin-key-0123456789' };
  it.each([
    ['no credentials', {}],
    ['a wrong key', wrong],
    [
      'a non-bearer scheme',
      { authorization: `Basic ${Buffer.from(`admin:${ADMIN_KEY}`).toString('base64')}` },
    ],
  ])('refuses %s on every meetings endpoint with 401', async (_label, headers: Record<string, string>) => {
    const o = await newOwner();
    const m = await bookOne(o);
    const responses = [
      await get(`/api/users/${o.userId}/meetings`, headers),
      await get(`/api/meetings/${m.meeting_id}`, headers),
      await cancel(m.meeting_id, headers),
    ];
    for (const res of responses) {
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ success: false, error: expect.stringMatching(/admin key/) });
    }
    expect(s.google.requests.filter((r) => r.op === 'events.delete')).toEqual([]);
    expect((await get(`/api/meetings/${m.meeting_id}`)).json().meeting.status).toBe('scheduled');
  });
});
