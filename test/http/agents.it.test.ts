import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const create = (payload: Record<string, unknown>, headers: Record<string, string> = t.admin) =>
  t.app.http.inject({ method: 'POST', url: '/api/agents', headers, payload });

describe('agents API', () => {
  it('creates with defaults, reads, patches and lists by owner', async () => {
    const res = await create({ user_id: 'owner-agents', name: 'Front desk' });
    expect(res.statusCode).toBe(201);
    const a = res.json();
    expect(a).toMatchObject({
      user_id: 'owner-agents',
      name: 'Front desk',
      system_prompt: '',
      timezone: 'UTC',
      model: null,
      meeting_duration_minutes: 30,
    });
    expect(a.agent_id).toMatch(/^agt_/);

    const got = await t.app.http.inject({ url: `/api/agents/${a.agent_id}`, headers: t.admin });
    expect(got.json()).toEqual(a);

    const patched = await t.app.http.inject({
      method: 'PATCH',
      url: `/api/agents/${a.agent_id}`,
      headers: t.admin,
      payload: {
        timezone: 'Asia/Kolkata',
        meeting_duration_minutes: 45,
        model: 'gpt-x',
        system_prompt: 'Be brief.',
      },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.json()).toMatchObject({
      timezone: 'Asia/Kolkata',
      meeting_duration_minutes: 45,
      model: 'gpt-x',
      system_prompt: 'Be brief.',
    });
    expect(new Date(patched.json().updated_at).getTime()).toBeGreaterThanOrEqual(
      new Date(a.updated_at).getTime(),
    );

    await create({ user_id: 'owner-agents', name: 'Second' });
    await create({ user_id: 'someone-else', name: 'Other' });
    const list = await t.app.http.inject({ url: '/api/users/owner-agents/agents', headers: t.admin });
    expect(
      list
        .json()
        .agents.map((x: { name: string }) => x.name)
        .sort(),
    ).toEqual(['Front desk', 'Second']);
  });

  it.each([
    ['unknown zone', { timezone: 'Mars/Olympus' }, /timezone must be an IANA time zone/],
    ['offset instead of zone', { timezone: 'UTC+05:30' }, /timezone must be an IANA time zone/],
    ['duration too short', { meeting_duration_minutes: 1 }, /meeting_duration_minutes/],
    ['duration not an integer', { meeting_duration_minutes: 30.5 }, /meeting_duration_minutes/],
    ['blank name', { name: '   ' }, /name must not be blank/],
    ['missing name', { name: undefined }, /name is required/],
    ['bad user id', { user_id: 'a b' }, /user_id/],
    ['unknown field', { colour: 'blue' }, /colour|additional/],
    ['a NUL in the name', { name: 'Front\u0000desk' }, /^name must not contain the NUL character/],
    [
      'a NUL in the system prompt',
      { system_prompt: 'Be\u0000brief' },
      /^system_prompt must not contain the NUL/,
    ],
  ])('rejects %s with 400 and stores nothing', async (_n, over, message) => {
    const before = await t.app.database.db
      .selectFrom('agents')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    const res = await create({ user_id: 'owner-bad', name: 'X', ...over });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ success: false, error: expect.stringMatching(message) });
    const after = await t.app.database.db
      .selectFrom('agents')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });

  it('rejects a bad PATCH and leaves the agent unchanged', async () => {
    const a = (await create({ user_id: 'owner-patch', name: 'Keep', timezone: 'Europe/Berlin' })).json();
    for (const payload of [{ timezone: 'Nowhere/Town' }, {}, { meeting_duration_minutes: 9999 }]) {
      const res = await t.app.http.inject({
        method: 'PATCH',
        url: `/api/agents/${a.agent_id}`,
        headers: t.admin,
        payload,
      });
      expect(res.statusCode).toBe(400);
    }
    const got = (await t.app.http.inject({ url: `/api/agents/${a.agent_id}`, headers: t.admin })).json();
    expect(got).toEqual(a);
  });

  it('refuses a body that names a field twice (the last would silently win) and stores nothing', async () => {
    const raw = (text: string) =>
      t.app.http.inject({
        method: 'POST',
        url: '/api/agents',
        headers: { ...t.admin, 'content-type': 'application/json' },
        payload: text,
      });
    const day = (from: string, to: string) => `[{"start":"${from}","end":"${to}"}]`;
    for (const [text, name] of [
      [
        `{"user_id":"owner-twice","name":"A","working_hours":{"monday":${day('09:00', '12:00')},"monday":${day('13:00', '17:00')}}}`,
        'monday',
      ],
      ['{"user_id":"owner-twice","name":"A","name":"B"}', 'name'],
    ] as const) {
      const res = await raw(text);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ success: false, error: `The body names "${name}" twice in one object` });
    }
    const list = await t.app.http.inject({ url: '/api/users/owner-twice/agents', headers: t.admin });
    expect(list.json().agents).toEqual([]);
    // The same body with each name once is stored.
    expect(
      (await raw(`{"user_id":"owner-twice","name":"A","working_hours":{"monday":${day('09:00', '12:00')}}}`))
        .statusCode,
    ).toBe(201);
  });

  it('refuses settings that leave no bookable time (a notice as long as the horizon), and changes nothing', async () => {
    const unbookable = {
      success: false,
      error: expect.stringContaining('min_notice_minutes must be shorter than horizon_days'),
    };
    // The service's defaults here: 5 minutes' notice, 90 days ahead.
    const refused = await create({
      user_id: 'owner-unbookable',
      name: 'A',
      min_notice_minutes: 1440,
      horizon_days: 1,
    });
    expect(refused.statusCode).toBe(400);
    expect(refused.json()).toEqual(unbookable);
    const created = await create({ user_id: 'owner-unbookable', name: 'A', horizon_days: 1 });
    expect(created.statusCode).toBe(201);
    const id = created.json().agent_id as string;
    const patch = (payload: Record<string, unknown>) =>
      t.app.http.inject({ method: 'PATCH', url: `/api/agents/${id}`, headers: t.admin, payload });
    // The stored horizon (1 day) with a new notice of a day: refused, the stored settings stand.
    const longNotice = await patch({ min_notice_minutes: 1440, name: 'B' });
    expect(longNotice.statusCode).toBe(400);
    expect(longNotice.json()).toEqual(unbookable);
    const after = (await t.app.http.inject({ url: `/api/agents/${id}`, headers: t.admin })).json();
    expect(after).toMatchObject({ name: 'A', min_notice_minutes: null, horizon_days: 1 });
    // Both at once, the horizon first made longer: accepted.
    const both = await patch({ min_notice_minutes: 1440, horizon_days: 7 });
    expect(both.statusCode).toBe(200);
    expect(both.json()).toMatchObject({ min_notice_minutes: 1440, horizon_days: 7 });
    // An unknown agent is still a 404.
    const missing = await t.app.http.inject({
      method: 'PATCH',
      url: '/api/agents/agt_missing',
      headers: t.admin,
      payload: { min_notice_minutes: 1440, horizon_days: 1 },
    });
    expect(missing.statusCode).toBe(404);
  });

  it('404s unknown agents and 401s without the admin key', async () => {
    expect((await t.app.http.inject({ url: '/api/agents/agt_nope', headers: t.admin })).statusCode).toBe(404);
    expect(
      (
        await t.app.http.inject({
          method: 'PATCH',
          url: '/api/agents/agt_nope',
          headers: t.admin,
          payload: { name: 'x' },
        })
      ).statusCode,
    ).toBe(404);
    for (const res of await Promise.all([
      create({ user_id: 'u', name: 'n' }, {}),
      t.app.http.inject({ url: '/api/agents/agt_x' }),
      t.app.http.inject({ method: 'PATCH', url: '/api/agents/agt_x', payload: { name: 'y' } }),
      t.app.http.inject({
        url: '/api/users/u/agents',
        headers: { authorization: 'Bearer wrong-wrong-wrong-wrong' },
      }),
    ])) {
      expect(res.statusCode).toBe(401);
      expect(res.json().success).toBe(false);
    }
  });
});
