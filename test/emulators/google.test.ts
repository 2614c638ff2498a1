// The Google emulator, driven through the real clients the service uses (@googleapis/calendar and
// google-auth-library), so what passes here is what those clients see from Google.
import { calendar, type calendar_v3 } from '@googleapis/calendar';
import { gaxios, OAuth2Client } from 'google-auth-library';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CALENDAR_SCOPES, type GoogleEmulator, startGoogleEmulator } from './google.js';

const clientId = 'emulator-client.apps.googleusercontent.com';
const clientSecret = 'emulator-secret';
type GaxiosError = gaxios.GaxiosError;
const { GaxiosError } = gaxios;
const MEET_LINK = /^https:\/\/meet\.google\.com\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/;

let emu: GoogleEmulator;
let seq = 0;

beforeAll(async () => {
  emu = await startGoogleEmulator({ clientId, clientSecret });
});
afterAll(async () => {
  await emu.close();
});
beforeEach(() => {
  emu.reset();
  emu.conferenceMode = 'success';
  emu.pendingPolls = 2;
  emu.latencyMs = 0;
});

function newEmail(): string {
  seq += 1;
  return `owner${seq}@example.com`;
}

function oauthClient(): OAuth2Client {
  return new OAuth2Client({ clientId, clientSecret, endpoints: { oauth2TokenUrl: emu.tokenUrl } });
}

/** A connected owner: OAuth client carrying the grant and a Calendar client on top of it. */
function connect(opts: { scope?: string; expiresIn?: number; timeZone?: string } = {}) {
  const email = newEmail();
  const grant = emu.grant({
    email,
    scope: opts.scope,
    accessTokenExpiresInSeconds: opts.expiresIn,
    timeZone: opts.timeZone,
  });
  const auth = oauthClient();
  auth.setCredentials({
    access_token: grant.access_token,
    refresh_token: grant.refresh_token,
    expiry_date: grant.expiry.getTime(),
  });
  const cal = calendar({ version: 'v3', auth, rootUrl: emu.rootUrl });
  return { email, grant, auth, cal };
}

function slot(
  hoursFromNow: number,
  minutes = 30,
): { start: { dateTime: string }; end: { dateTime: string } } {
  const start = new Date(Date.UTC(2030, 0, 7, 9) + hoursFromNow * 3_600_000);
  const end = new Date(start.getTime() + minutes * 60_000);
  const rfc3339 = (d: Date) => d.toISOString().replace('.000Z', 'Z');
  return { start: { dateTime: rfc3339(start) }, end: { dateTime: rfc3339(end) } };
}

function meetRequest(requestId: string): calendar_v3.Schema$ConferenceData {
  return { createRequest: { requestId, conferenceSolutionKey: { type: 'hangoutsMeet' } } };
}

/** Runs `fn`, expects a GaxiosError and returns it. */
async function gaxiosError(fn: () => Promise<unknown>): Promise<GaxiosError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GaxiosError);
    return err as GaxiosError;
  }
  throw new Error('expected the call to fail');
}

interface GoogleErrorBody {
  error: { code: number; message: string; status?: string; errors: Array<Record<string, string>> };
}
const googleError = (err: GaxiosError) =>
  (err.response?.data as GoogleErrorBody | undefined)?.error ?? fail(err);
const fail = (err: unknown): never => {
  throw new Error(`no Google error body: ${String(err)}`);
};

async function postForm(url: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('OAuth token endpoint', () => {
  it('refreshes an access token without returning a new refresh token', async () => {
    const email = newEmail();
    const grant = emu.grant({ email });
    const auth = oauthClient();
    const seen: Array<Record<string, unknown>> = [];
    // Copied at once: the library adds the old refresh_token to this object after emitting it.
    auth.on('tokens', (t) => seen.push({ ...t }));
    auth.setCredentials({ refresh_token: grant.refresh_token });

    const { token } = await auth.getAccessToken();

    expect(token).toMatch(/^ya29\./);
    expect(token).not.toBe(grant.access_token);
    expect(seen).toHaveLength(1);
    expect(seen[0]).not.toHaveProperty('refresh_token');
    expect(seen[0]).toMatchObject({ token_type: 'Bearer', scope: grant.scope });
    expect(emu.refreshCount(grant.refresh_token)).toBe(1);
    const tokenCall = emu.requests.find((r) => r.op === 'token');
    expect(tokenCall?.body).toMatchObject({ grant_type: 'refresh_token', client_id: clientId });

    // Both the old and the new access token work until they expire.
    const cal = calendar({ version: 'v3', auth, rootUrl: emu.rootUrl });
    await expect(cal.events.list({ calendarId: 'primary' })).resolves.toMatchObject({ status: 200 });
    const old = oauthClient();
    old.setCredentials({ access_token: grant.access_token, expiry_date: grant.expiry.getTime() });
    const oldCal = calendar({ version: 'v3', auth: old, rootUrl: emu.rootUrl });
    await expect(oldCal.events.list({ calendarId: 'primary' })).resolves.toMatchObject({ status: 200 });
  });

  it('refreshes before an API call when the stored expiry is past', async () => {
    const { cal, grant } = connect({ expiresIn: -60 });

    const res = await cal.events.list({ calendarId: 'primary' });

    expect(res.data.kind).toBe('calendar#events');
    expect(emu.refreshCount(grant.refresh_token)).toBe(1);
    expect(emu.requests.map((r) => r.op)).toEqual(['token', 'events.list']);
  });

  it('answers a revoked refresh token with invalid_grant', async () => {
    const { auth, grant } = connect({ expiresIn: -60 });
    emu.revokeRefreshToken(grant.refresh_token);

    const err = await gaxiosError(() => auth.getAccessToken());

    expect(err.status).toBe(400);
    expect(err.response?.data).toEqual({
      error: 'invalid_grant',
      error_description: 'Token has been expired or revoked.',
    });
    expect(emu.refreshCount(grant.refresh_token)).toBe(0);
  });

  it('rejects an unknown client and a wrong secret with 401 invalid_client', async () => {
    const { grant } = connect();
    const wrongId = new OAuth2Client({
      clientId: 'someone-else',
      clientSecret,
      endpoints: { oauth2TokenUrl: emu.tokenUrl },
    });
    wrongId.setCredentials({ refresh_token: grant.refresh_token });
    const e1 = await gaxiosError(() => wrongId.getAccessToken());
    expect(e1.status).toBe(401);
    expect(e1.response?.data).toEqual({
      error: 'invalid_client',
      error_description: 'The OAuth client was not found.',
    });

    const r = await postForm(emu.tokenUrl, {
      grant_type: 'refresh_token',
      refresh_token: grant.refresh_token,
      client_id: clientId,
      client_secret: 'wrong',
    });
    expect(r).toEqual({ status: 401, body: { error: 'invalid_client', error_description: 'Unauthorized' } });
  });

  it('validates the request shape and accepts HTTP Basic client authentication', async () => {
    const { grant } = connect();
    const client = { client_id: clientId, client_secret: clientSecret };
    expect(await postForm(emu.tokenUrl, { ...client, refresh_token: grant.refresh_token })).toMatchObject({
      status: 400,
      body: { error: 'invalid_request' },
    });
    expect(await postForm(emu.tokenUrl, { ...client, grant_type: 'password' })).toMatchObject({
      status: 400,
      body: { error: 'unsupported_grant_type' },
    });
    expect(await postForm(emu.tokenUrl, { ...client, grant_type: 'refresh_token' })).toMatchObject({
      status: 400,
      body: { error: 'invalid_request', error_description: 'Missing required parameter: refresh_token' },
    });
    expect(await postForm(emu.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'x' })).toMatchObject({
      status: 400,
      body: { error: 'invalid_request', error_description: 'Could not determine client ID from request.' },
    });
    expect(
      await postForm(emu.tokenUrl, { ...client, grant_type: 'refresh_token', refresh_token: '1//unknown' }),
    ).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });

    const basic = Buffer.from(`${clientId}:${clientSecret}`).toString('base64');
    const ok = await postForm(
      emu.tokenUrl,
      { grant_type: 'refresh_token', refresh_token: grant.refresh_token },
      { authorization: `Basic ${basic}` },
    );
    expect(ok.status).toBe(200);
    expect(Object.keys(ok.body).sort()).toEqual(['access_token', 'expires_in', 'scope', 'token_type']);
    expect(ok.body.expires_in).toBe(3600);
  });

  it('exchanges an authorization code once, returning a refresh token', async () => {
    const email = newEmail();
    const redirectUri = 'http://localhost:3000/oauth/callback';
    const code = emu.authorizationCode({ email, redirectUri });
    const auth = new OAuth2Client({
      clientId,
      clientSecret,
      redirectUri,
      endpoints: { oauth2TokenUrl: emu.tokenUrl },
    });

    const { tokens } = await auth.getToken(code);

    expect(tokens.refresh_token).toMatch(/^1\/\//);
    expect(tokens.access_token).toMatch(/^ya29\./);
    const again = await gaxiosError(() => auth.getToken(code));
    expect(again.response?.data).toMatchObject({ error: 'invalid_grant' });
  });

  it('revokes a refresh token and its access tokens at /revoke', async () => {
    const { cal, grant } = connect();
    const res = await fetch(`${emu.rootUrl}revoke?token=${encodeURIComponent(grant.refresh_token)}`, {
      method: 'POST',
    });
    expect(res.status).toBe(200);
    const err = await gaxiosError(() => cal.events.list({ calendarId: 'primary' }));
    expect(err.status).toBe(401);
  });
});

describe('Calendar authentication', () => {
  it('answers an expired access token with 401 authError and does not refresh by itself', async () => {
    const { cal, grant } = connect();
    emu.expireAccessToken(grant.access_token);

    const err = await gaxiosError(() => cal.events.list({ calendarId: 'primary' }));

    expect(err.status).toBe(401);
    expect(err.response?.headers.get('content-type')).toBe('application/json; charset=UTF-8');
    expect(googleError(err)).toEqual({
      code: 401,
      message: expect.stringMatching(/^Request had invalid authentication credentials\. Expected OAuth 2/),
      errors: [
        {
          message: 'Invalid Credentials',
          domain: 'global',
          reason: 'authError',
          location: 'Authorization',
          locationType: 'header',
        },
      ],
      status: 'UNAUTHENTICATED',
    });
    // With a future expiry_date in its credentials, the client does not refresh on a 401 (stack.md).
    expect(emu.refreshCount(grant.refresh_token)).toBe(0);
  });

  it('answers a request without credentials with 401 required', async () => {
    const res = await fetch(`${emu.rootUrl}calendar/v3/calendars/primary/events`);
    expect(res.status).toBe(401);
    const body = (await res.json()) as GoogleErrorBody;
    expect(body.error.errors[0]).toMatchObject({ reason: 'required', message: 'Login Required.' });
  });

  it('refuses freeBusy to a token that only has calendar.events', async () => {
    const { cal, email } = connect({ scope: CALENDAR_SCOPES.events });
    const err = await gaxiosError(() =>
      cal.freebusy.query({
        requestBody: {
          timeMin: '2030-01-07T00:00:00Z',
          timeMax: '2030-01-08T00:00:00Z',
          items: [{ id: email }],
        },
      }),
    );
    expect(err.status).toBe(403);
    expect(googleError(err)).toMatchObject({
      status: 'PERMISSION_DENIED',
      errors: [{ reason: 'insufficientPermissions' }],
    });
    // ...while events.insert works with it.
    await expect(cal.events.insert({ calendarId: 'primary', requestBody: slot(1) })).resolves.toMatchObject({
      status: 200,
    });
  });

  it('answers unknown routes and other calendars with a Google-shaped 404', async () => {
    const { cal, grant } = connect();
    const res = await fetch(`${emu.rootUrl}calendar/v3/users/me/calendarList`, {
      headers: { authorization: `Bearer ${grant.access_token}` },
    });
    expect(res.status).toBe(404);
    expect(((await res.json()) as GoogleErrorBody).error.errors[0]?.reason).toBe('notFound');

    const err = await gaxiosError(() => cal.events.list({ calendarId: 'someone@else.example' }));
    expect(err.status).toBe(404);
  });
});

describe('events.insert', () => {
  it('stores and returns a Google-shaped event, recording sendUpdates', async () => {
    const { cal, email } = connect();
    const res = await cal.events.insert({
      calendarId: 'primary',
      sendUpdates: 'all',
      requestBody: {
        ...slot(2),
        summary: 'Intro call',
        description: 'Booked by the assistant',
        attendees: [{ email: 'customer@example.org' }, { email }],
        reminders: { useDefault: false, overrides: [{ method: 'popup', minutes: 10 }] },
      },
    });

    const event = res.data;
    expect(res.status).toBe(200);
    expect(event).toMatchObject({
      kind: 'calendar#event',
      status: 'confirmed',
      summary: 'Intro call',
      description: 'Booked by the assistant',
      creator: { email, self: true },
      organizer: { email, self: true },
      start: slot(2).start,
      reminders: { useDefault: false, overrides: [{ method: 'popup', minutes: 10 }] },
      sequence: 0,
    });
    expect(event.id).toMatch(/^[a-v0-9]{26}$/);
    expect(event.iCalUID).toBe(`${event.id}@google.com`);
    expect(event.htmlLink).toMatch(/^https:\/\/www\.google\.com\/calendar\/event\?eid=/);
    expect(event.etag).toMatch(/^"\d+"$/);
    expect(event.attendees).toEqual([
      { email: 'customer@example.org', responseStatus: 'needsAction' },
      { email, organizer: true, self: true, responseStatus: 'accepted' },
    ]);
    expect(event.hangoutLink).toBeUndefined();
    expect(emu.events(email)).toEqual([event]);
    expect(emu.sentUpdates(email)).toEqual([{ eventId: event.id, op: 'insert', sendUpdates: 'all' }]);
    expect(emu.requests.at(-1)).toMatchObject({
      method: 'POST',
      path: '/calendar/v3/calendars/primary/events',
      query: { sendUpdates: 'all' },
      status: 200,
    });
  });

  it('accepts the owner email as calendarId and renders times in the calendar time zone', async () => {
    const { cal, email } = connect({ timeZone: 'Europe/Berlin' });
    const res = await cal.events.insert({
      calendarId: email,
      requestBody: {
        start: { dateTime: '2030-01-07T10:00:00', timeZone: 'Asia/Kolkata' },
        end: { dateTime: '2030-01-07T10:30:00Z' },
      },
    });
    // 10:00 in Kolkata (+05:30) is 04:30Z, shown in Berlin (+01:00) as 05:30.
    expect(res.data.start).toEqual({ dateTime: '2030-01-07T05:30:00+01:00', timeZone: 'Asia/Kolkata' });
    expect(res.data.end).toEqual({ dateTime: '2030-01-07T11:30:00+01:00' });
    expect(emu.sentUpdates(email)[0]?.sendUpdates).toBeUndefined();
  });

  it('rejects invalid times like Google does', async () => {
    const { cal } = connect();
    const cases: Array<[calendar_v3.Schema$Event, string]> = [
      [
        {
          start: { dateTime: '2030-01-07T10:00:00', timeZone: 'UTC+05:30' },
          end: { dateTime: '2030-01-07T11:00:00', timeZone: 'UTC+05:30' },
        },
        'Invalid time zone definition for start time.',
      ],
      // An IANA name in the wrong case: Intl takes it, Google does not.
      [
        {
          start: { dateTime: '2030-01-07T10:00:00', timeZone: 'asia/kolkata' },
          end: { dateTime: '2030-01-07T11:00:00', timeZone: 'asia/kolkata' },
        },
        'Invalid time zone definition for start time.',
      ],
      [
        { start: { dateTime: '2030-01-07T10:00:00' }, end: { dateTime: '2030-01-07T11:00:00Z' } },
        'Missing time zone definition for start time.',
      ],
      [{ start: { dateTime: '2030-01-07T10:00:00Z' } }, 'Missing end time.'],
      [
        { start: { dateTime: '2030-01-07T11:00:00Z' }, end: { dateTime: '2030-01-07T10:00:00Z' } },
        'The specified time range is empty.',
      ],
    ];
    for (const [requestBody, message] of cases) {
      const err = await gaxiosError(() => cal.events.insert({ calendarId: 'primary', requestBody }));
      expect(err.status).toBe(400);
      expect(googleError(err).message).toBe(message);
    }
  });

  it('takes a client-chosen base32hex id once: 409 duplicate the second time', async () => {
    const { cal, email } = connect();
    const id = crypto.randomUUID().replaceAll('-', '');
    const first = await cal.events.insert({ calendarId: 'primary', requestBody: { id, ...slot(3) } });
    expect(first.data.id).toBe(id);

    const err = await gaxiosError(() =>
      cal.events.insert({ calendarId: 'primary', requestBody: { id, ...slot(3) } }, { retry: false }),
    );

    expect(err.status).toBe(409);
    expect(googleError(err)).toEqual({
      errors: [
        { domain: 'global', reason: 'duplicate', message: 'The requested identifier already exists.' },
      ],
      code: 409,
      message: 'The requested identifier already exists.',
    });
    expect(emu.events(email)).toHaveLength(1);

    for (const bad of ['abc', 'has-dash-1234', 'wxyz12345']) {
      const e = await gaxiosError(() =>
        cal.events.insert({ calendarId: 'primary', requestBody: { id: bad, ...slot(3) } }),
      );
      expect(googleError(e).message).toBe('Invalid resource id value.');
    }
  });

  it('creates a Meet conference with conferenceDataVersion=1; same requestId, same link', async () => {
    const { cal, email } = connect();
    const insert = (requestId: string, conferenceDataVersion = 1) =>
      cal.events.insert({
        calendarId: 'primary',
        conferenceDataVersion,
        requestBody: { ...slot(4), conferenceData: meetRequest(requestId) },
      });

    const a = (await insert('booking-1')).data;
    expect(a.hangoutLink).toMatch(MEET_LINK);
    const code = a.hangoutLink?.slice('https://meet.google.com/'.length);
    expect(a.conferenceData).toEqual({
      createRequest: {
        requestId: 'booking-1',
        conferenceSolutionKey: { type: 'hangoutsMeet' },
        status: { statusCode: 'success' },
      },
      entryPoints: [{ entryPointType: 'video', uri: a.hangoutLink, label: `meet.google.com/${code}` }],
      conferenceSolution: { key: { type: 'hangoutsMeet' }, name: 'Google Meet', iconUri: expect.any(String) },
      conferenceId: code,
    });

    expect((await insert('booking-1')).data.hangoutLink).toBe(a.hangoutLink);
    const other = (await insert('booking-2')).data.hangoutLink;
    expect(other).toMatch(MEET_LINK);
    expect(other).not.toBe(a.hangoutLink);

    // Without conferenceDataVersion the conference request is silently dropped.
    const plain = (await insert('booking-3', 0)).data;
    expect(plain.conferenceData).toBeUndefined();
    expect(plain.hangoutLink).toBeUndefined();
    expect(emu.events(email)).toHaveLength(4);
  });

  it('refuses conference types other than hangoutsMeet', async () => {
    const { cal } = connect();
    const err = await gaxiosError(() =>
      cal.events.insert({
        calendarId: 'primary',
        conferenceDataVersion: 1,
        requestBody: {
          ...slot(5),
          conferenceData: {
            createRequest: { requestId: 'r', conferenceSolutionKey: { type: 'eventHangout' } },
          },
        },
      }),
    );
    expect(err.status).toBe(400);
    expect(googleError(err).message).toBe('Invalid conference type value.');
  });

  it('reports a pending conference until events.get has been polled enough', async () => {
    const { cal } = connect();
    emu.conferenceMode = 'pending';
    emu.pendingPolls = 2;
    const created = await cal.events.insert({
      calendarId: 'primary',
      conferenceDataVersion: 1,
      requestBody: { ...slot(6), conferenceData: meetRequest('pending-1') },
    });
    expect(created.data.conferenceData?.createRequest?.status?.statusCode).toBe('pending');
    expect(created.data.hangoutLink).toBeUndefined();

    const polls: Array<string | null | undefined> = [];
    let event = created.data;
    while (event.conferenceData?.createRequest?.status?.statusCode === 'pending') {
      event = (await cal.events.get({ calendarId: 'primary', eventId: created.data.id ?? '' })).data;
      polls.push(event.conferenceData?.createRequest?.status?.statusCode);
    }
    expect(polls).toEqual(['pending', 'success']);
    expect(event.hangoutLink).toMatch(MEET_LINK);
    expect(event.etag).not.toBe(created.data.etag);
  });

  it('reports a failed conference without a link', async () => {
    const { cal } = connect();
    emu.conferenceMode = 'failure';
    const res = await cal.events.insert({
      calendarId: 'primary',
      conferenceDataVersion: 1,
      requestBody: { ...slot(7), conferenceData: meetRequest('fails') },
    });
    expect(res.data.conferenceData).toEqual({
      createRequest: {
        requestId: 'fails',
        conferenceSolutionKey: { type: 'hangoutsMeet' },
        status: { statusCode: 'failure' },
      },
    });
    expect(res.data.hangoutLink).toBeUndefined();
  });
});

describe('events.get / patch / delete / list', () => {
  it('patches fields, keeps the conference and bumps etag and sequence', async () => {
    const { cal, email } = connect();
    const created = (
      await cal.events.insert({
        calendarId: 'primary',
        conferenceDataVersion: 1,
        requestBody: { ...slot(8), summary: 'Before', conferenceData: meetRequest('keep-me') },
      })
    ).data;
    const id = created.id ?? '';

    const patched = (
      await cal.events.patch({
        calendarId: 'primary',
        eventId: id,
        sendUpdates: 'all',
        requestBody: { summary: 'After', ...slot(9) },
      })
    ).data;

    expect(patched).toMatchObject({ id, summary: 'After', start: slot(9).start, sequence: 1 });
    expect(patched.hangoutLink).toBe(created.hangoutLink);
    expect(patched.etag).not.toBe(created.etag);
    expect(patched.created).toBe(created.created);
    expect(emu.sentUpdates(email).map((u) => [u.op, u.sendUpdates])).toEqual([
      ['insert', undefined],
      ['patch', 'all'],
    ]);

    const err = await gaxiosError(() =>
      cal.events.patch({ calendarId: 'primary', eventId: id, requestBody: { end: slot(0).end } }),
    );
    expect(googleError(err).message).toBe('The specified time range is empty.');
  });

  it('deletes with 204, then 410 deleted; get still returns it as cancelled', async () => {
    const { cal, email } = connect();
    const id = (await cal.events.insert({ calendarId: 'primary', requestBody: slot(10) })).data.id ?? '';

    const del = await cal.events.delete({ calendarId: 'primary', eventId: id, sendUpdates: 'all' });
    expect(del.status).toBe(204);

    const again = await gaxiosError(() => cal.events.delete({ calendarId: 'primary', eventId: id }));
    expect(again.status).toBe(410);
    expect(googleError(again).errors).toEqual([
      { domain: 'global', reason: 'deleted', message: 'Resource has been deleted' },
    ]);

    expect((await cal.events.get({ calendarId: 'primary', eventId: id })).data.status).toBe('cancelled');
    expect(emu.sentUpdates(email).at(-1)).toEqual({ eventId: id, op: 'delete', sendUpdates: 'all' });

    const missing = await gaxiosError(() =>
      cal.events.get({ calendarId: 'primary', eventId: 'nosuchevent0' }, { retry: false }),
    );
    expect(missing.status).toBe(404);
    expect(googleError(missing).errors[0]?.reason).toBe('notFound');
    const missingDelete = await gaxiosError(() =>
      cal.events.delete({ calendarId: 'primary', eventId: 'nosuchevent0' }),
    );
    expect(missingDelete.status).toBe(404);
  });

  it('lists events in a window, hiding cancelled ones unless showDeleted', async () => {
    const { cal } = connect();
    const a = (await cal.events.insert({ calendarId: 'primary', requestBody: { ...slot(1), summary: 'A' } }))
      .data;
    const b = (await cal.events.insert({ calendarId: 'primary', requestBody: { ...slot(5), summary: 'B' } }))
      .data;
    await cal.events.insert({ calendarId: 'primary', requestBody: { ...slot(48), summary: 'Later' } });
    await cal.events.delete({ calendarId: 'primary', eventId: b.id ?? '' });

    const window = { timeMin: '2030-01-07T00:00:00Z', timeMax: '2030-01-08T00:00:00Z' };
    const visible = await cal.events.list({
      calendarId: 'primary',
      ...window,
      singleEvents: true,
      orderBy: 'startTime',
    });
    expect(visible.data.kind).toBe('calendar#events');
    expect(visible.data.items?.map((e) => e.summary)).toEqual(['A']);
    expect(visible.data.items?.[0]?.id).toBe(a.id);

    const all = await cal.events.list({ calendarId: 'primary', ...window, showDeleted: true });
    expect(all.data.items?.map((e) => [e.summary, e.status])).toEqual([
      ['A', 'confirmed'],
      ['B', 'cancelled'],
    ]);
  });
});

describe('freeBusy.query', () => {
  it('counts an all-day event from midnight to midnight in the calendar’s zone, and no event the owner declined', async () => {
    const { cal, email } = connect({ timeZone: 'Asia/Kolkata' });
    await cal.events.insert({
      calendarId: 'primary',
      requestBody: { start: { date: '2030-01-08' }, end: { date: '2030-01-09' } },
    });
    await cal.events.insert({
      calendarId: 'primary',
      requestBody: {
        start: { dateTime: '2030-01-07T06:00:00Z' },
        end: { dateTime: '2030-01-07T07:00:00Z' },
        attendees: [{ email, responseStatus: 'declined' }, { email: 'guest@example.com' }],
      },
    });
    const res = await cal.freebusy.query({
      requestBody: {
        timeMin: '2030-01-07T00:00:00Z',
        timeMax: '2030-01-10T00:00:00Z',
        items: [{ id: email }],
      },
    });
    expect(res.data.calendars?.[email]?.busy).toEqual([
      { start: '2030-01-07T18:30:00Z', end: '2030-01-08T18:30:00Z' },
    ]);
    // A day whose midnight the clocks skip starts at its first instant (Santiago, 2026-09-06: 01:00).
    const santiago = connect({ timeZone: 'America/Santiago' });
    await santiago.cal.events.insert({
      calendarId: 'primary',
      requestBody: { start: { date: '2026-09-06' }, end: { date: '2026-09-07' } },
    });
    const spring = await santiago.cal.freebusy.query({
      requestBody: {
        timeMin: '2026-09-05T00:00:00Z',
        timeMax: '2026-09-08T00:00:00Z',
        items: [{ id: 'primary' }],
      },
    });
    expect(spring.data.calendars?.primary?.busy).toEqual([
      { start: '2026-09-06T04:00:00Z', end: '2026-09-07T03:00:00Z' },
    ]);
    // events.list windows count the all-day event the same way.
    const listed = async (timeMin: string, timeMax: string) =>
      (await cal.events.list({ calendarId: 'primary', timeMin, timeMax })).data.items?.filter(
        (e) => e.start?.date,
      ).length;
    expect(await listed('2030-01-07T17:00:00Z', '2030-01-07T18:30:00Z')).toBe(0);
    expect(await listed('2030-01-07T17:00:00Z', '2030-01-07T18:31:00Z')).toBe(1);
    expect(await listed('2030-01-08T18:30:00Z', '2030-01-09T00:00:00Z')).toBe(0);
  });

  it('merges opaque events and busy blocks, skips transparent and cancelled ones', async () => {
    const { cal, email } = connect();
    const at = (h: number, m = 0) => new Date(Date.UTC(2030, 0, 7, h, m));
    emu.addBusy(email, at(9), at(10));
    await cal.events.insert({
      calendarId: 'primary',
      requestBody: { start: { dateTime: '2030-01-07T09:30:00Z' }, end: { dateTime: '2030-01-07T10:30:00Z' } },
    });
    await cal.events.insert({
      calendarId: 'primary',
      requestBody: {
        transparency: 'transparent',
        start: { dateTime: '2030-01-07T12:00:00Z' },
        end: { dateTime: '2030-01-07T13:00:00Z' },
      },
    });
    const cancelled = await cal.events.insert({
      calendarId: 'primary',
      requestBody: { start: { dateTime: '2030-01-07T14:00:00Z' }, end: { dateTime: '2030-01-07T15:00:00Z' } },
    });
    await cal.events.delete({ calendarId: 'primary', eventId: cancelled.data.id ?? '' });
    emu.addBusy(email, at(16), at(20)); // runs past the window: clipped

    const res = await cal.freebusy.query({
      requestBody: {
        timeMin: '2030-01-07T08:00:00Z',
        timeMax: '2030-01-07T18:00:00Z',
        items: [{ id: email }, { id: 'nobody@example.com' }],
      },
    });

    expect(res.data).toEqual({
      kind: 'calendar#freeBusy',
      timeMin: '2030-01-07T08:00:00.000Z',
      timeMax: '2030-01-07T18:00:00.000Z',
      calendars: {
        [email]: {
          busy: [
            { start: '2030-01-07T09:00:00Z', end: '2030-01-07T10:30:00Z' },
            { start: '2030-01-07T16:00:00Z', end: '2030-01-07T18:00:00Z' },
          ],
        },
        'nobody@example.com': { errors: [{ domain: 'global', reason: 'notFound' }], busy: [] },
      },
    });

    const inZone = await cal.freebusy.query({
      requestBody: {
        timeMin: '2030-01-07T08:00:00Z',
        timeMax: '2030-01-07T11:00:00Z',
        timeZone: 'Asia/Kolkata',
        items: [{ id: 'primary' }],
      },
    });
    expect(inZone.data.calendars?.primary?.busy).toEqual([
      { start: '2030-01-07T14:30:00+05:30', end: '2030-01-07T16:00:00+05:30' },
    ]);
  });

  it('requires timeMin and timeMax', async () => {
    const { cal, email } = connect();
    const err = await gaxiosError(() => cal.freebusy.query({ requestBody: { items: [{ id: email }] } }));
    expect(err.status).toBe(400);
  });
});

describe('fault injection', () => {
  it('answers the next matching request with the injected status, then recovers', async () => {
    const { cal } = connect();
    emu.fail('events.insert', { kind: 'status', status: 429 });
    emu.fail('events.insert', { kind: 'status', status: 403, reason: 'quotaExceeded' });

    const e429 = await gaxiosError(() =>
      cal.events.insert({ calendarId: 'primary', requestBody: slot(1) }, { retry: false }),
    );
    expect(e429.status).toBe(429);
    expect(googleError(e429).errors).toEqual([
      { domain: 'usageLimits', reason: 'rateLimitExceeded', message: 'Rate Limit Exceeded' },
    ]);

    const e403 = await gaxiosError(() =>
      cal.events.insert({ calendarId: 'primary', requestBody: slot(1) }, { retry: false }),
    );
    expect(e403.status).toBe(403);
    expect(googleError(e403)).toMatchObject({
      code: 403,
      message: 'Calendar usage limits exceeded.',
      errors: [{ domain: 'usageLimits', reason: 'quotaExceeded' }],
    });

    await expect(cal.events.insert({ calendarId: 'primary', requestBody: slot(1) })).resolves.toMatchObject({
      status: 200,
    });
    expect(emu.requests.map((r) => [r.status, r.fault])).toEqual([
      [429, 'status'],
      [403, 'status'],
      [200, undefined],
    ]);
  });

  it('answers an injected status after its delay, without doing the work', async () => {
    const { cal, email } = connect();
    emu.fail('events.insert', { kind: 'status', status: 503, delayMs: 150 });
    const sent = Date.now();
    const err = await gaxiosError(() =>
      cal.events.insert({ calendarId: 'primary', requestBody: slot(3) }, { retry: false }),
    );
    expect(err.status).toBe(503);
    expect(Date.now() - sent).toBeGreaterThanOrEqual(140);
    expect(emu.events(email)).toEqual([]);
  });

  it('lets the client retry a 503 on GET by itself', async () => {
    const { cal } = connect();
    const id = (await cal.events.insert({ calendarId: 'primary', requestBody: slot(2) })).data.id ?? '';
    emu.fail('events.get', { kind: 'status', status: 503 }, 2);

    const res = await cal.events.get(
      { calendarId: 'primary', eventId: id },
      { retryConfig: { retryDelay: 1, retryDelayMultiplier: 1 } },
    );

    expect(res.status).toBe(200);
    expect(emu.requests.filter((r) => r.op === 'events.get').map((r) => r.status)).toEqual([503, 503, 200]);
  });

  it('applies token faults as OAuth errors; the auth library retries a 5xx refresh', async () => {
    const { auth, grant } = connect({ expiresIn: -1 });
    emu.fail('token', { kind: 'status', status: 500 });

    await expect(auth.getAccessToken()).resolves.toMatchObject({ token: expect.any(String) });
    expect(emu.requests.map((r) => r.status)).toEqual([500, 200]);
    expect(emu.requests[0]?.fault).toBe('status');
    expect(emu.refreshCount(grant.refresh_token)).toBe(1);
  });

  it('loses the response of an insert that did happen', async () => {
    const { cal, email } = connect();
    emu.fail('events.insert', { kind: 'lost-response' });

    const err = await gaxiosError(() =>
      cal.events.insert(
        { calendarId: 'primary', requestBody: { ...slot(3), summary: 'ghost' } },
        { retry: false },
      ),
    );

    expect(err.response).toBeUndefined();
    expect(emu.events(email).map((e) => e.summary)).toEqual(['ghost']);
    expect(emu.requests.at(-1)).toMatchObject({ op: 'events.insert', status: 0, fault: 'lost-response' });
  });

  it('stalls a request past the client timeout, then performs it anyway', async () => {
    const { cal, email } = connect();
    emu.fail('*', { kind: 'stall', ms: 300 });

    const err = await gaxiosError(() =>
      cal.events.insert({ calendarId: 'primary', requestBody: slot(4) }, { timeout: 50, retry: false }),
    );
    expect(err.response).toBeUndefined();

    await new Promise((r) => setTimeout(r, 400));
    expect(emu.events(email)).toHaveLength(1);
  });

  it('adds latencyMs to every request', async () => {
    const { cal } = connect();
    emu.latencyMs = 120;
    const started = Date.now();
    await cal.events.list({ calendarId: 'primary' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
  });

  it('reset() clears faults and logs but keeps accounts and events', async () => {
    const { cal, email } = connect();
    await cal.events.insert({ calendarId: 'primary', requestBody: slot(1) });
    emu.fail('*', { kind: 'status', status: 500 }, 5);

    emu.reset();

    expect(emu.requests).toEqual([]);
    expect(emu.sentUpdates(email)).toEqual([]);
    expect(emu.events(email)).toHaveLength(1);
    await expect(cal.events.list({ calendarId: 'primary' }, { retry: false })).resolves.toMatchObject({
      status: 200,
    });
  });
});
