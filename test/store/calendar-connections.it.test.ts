/**
 * The calendar connection store's compare-and-set writes: a refresh stores its result, and an
 * invalid_grant revokes, only while the tokens are still those the refresh read (its revision).
 * A reconnect in between (with or without a new refresh token) makes both change nothing. The refresh
 * lease goes to one caller at a time, with the row read under it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CalendarConnectionStore } from '../../src/store/calendar-connections.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { openTestDatabase } from '../helpers/database.js';

let db: Awaited<ReturnType<typeof openTestDatabase>>;
let store: CalendarConnectionStore;
beforeAll(async () => {
  db = await openTestDatabase();
  store = new CalendarConnectionStore(db.database.db, new SecretBox([randomBytes(32)]));
});
afterAll(async () => {
  await db?.close();
});

const uid = () => `cc-${randomBytes(5).toString('hex')}`;
const inAnHour = () => new Date(Date.now() + 3_600_000);
const scope = 'https://www.googleapis.com/auth/calendar';

async function connected(userId: string, refreshToken: string | undefined = '1//first') {
  return store.connect(userId, {
    accessToken: `ya29.${randomBytes(6).toString('hex')}`,
    refreshToken,
    tokenExpiry: new Date(Date.now() - 60_000),
    scope,
  });
}

describe('saveRefreshed', () => {
  it('stores the refreshed token (and a rotated refresh token, sealed) while the tokens are unchanged', async () => {
    const userId = uid();
    const c = await connected(userId);
    const expiry = inAnHour();
    expect(
      await store.saveRefreshed(userId, c.revision, {
        accessToken: 'ya29.refreshed',
        expiry,
        refreshToken: '1//rotated',
      }),
    ).toBe(true);
    const after = await store.get(userId);
    expect(after).toMatchObject({
      accessToken: 'ya29.refreshed',
      refreshToken: '1//rotated',
      tokenExpiry: expiry,
    });
    expect(after?.lastRefreshedAt).toBeInstanceOf(Date);
    expect(after?.revision.refreshTokenEnc).not.toContain('rotated');
    // The same revision again: the row moved on, so a second writer changes nothing.
    expect(await store.saveRefreshed(userId, c.revision, { accessToken: 'ya29.late', expiry })).toBe(false);
    expect((await store.get(userId))?.accessToken).toBe('ya29.refreshed');
  });

  it('changes nothing once the owner reconnected, with a new refresh token or keeping the stored one', async () => {
    for (const newRefresh of ['1//second', undefined]) {
      const userId = uid();
      const before = await connected(userId);
      const again = await connected(userId, newRefresh);
      expect(
        await store.saveRefreshed(userId, before.revision, {
          accessToken: 'ya29.from-the-old-grant',
          expiry: inAnHour(),
          refreshToken: '1//rotated-old',
        }),
      ).toBe(false);
      const stored = await store.get(userId);
      expect(stored).toMatchObject({
        accessToken: again.accessToken,
        refreshToken: newRefresh ?? '1//first',
        lastRefreshedAt: null,
      });
    }
  });
});

describe('markRevoked', () => {
  it('with the revision the refresh read: revokes while unchanged, not after a reconnect', async () => {
    const userId = uid();
    const before = await connected(userId);
    await connected(userId, '1//second');
    expect(await store.markRevoked(userId, before.revision)).toBe(false);
    expect((await store.get(userId))?.status).toBe('connected');

    const current = (await store.get(userId))!;
    expect(await store.markRevoked(userId, current.revision)).toBe(true);
    expect(await store.get(userId)).toMatchObject({ status: 'revoked', revokedAt: expect.any(Date) });
  });

  it('without a revision (an operator’s decision): unconditional', async () => {
    const userId = uid();
    await connected(userId);
    expect(await store.markRevoked(userId)).toBe(true);
    expect((await store.get(userId))?.status).toBe('revoked');
  });
});

describe('leaseRefresh', () => {
  it('hands the lease to one caller with the row as it stands; storing the refreshed token gives it back', async () => {
    const userId = uid();
    const c = await connected(userId);
    const [first, second] = await Promise.all([
      store.leaseRefresh(userId, 30_000),
      store.leaseRefresh(userId, 30_000),
    ]);
    const leased = first ?? second;
    expect([first, second].filter(Boolean)).toHaveLength(1);
    expect(leased).toMatchObject({
      accessToken: c.accessToken,
      refreshToken: '1//first',
      status: 'connected',
    });
    expect(await store.leaseRefresh(userId, 30_000)).toBeUndefined();
    expect(
      await store.saveRefreshed(userId, leased!.revision, { accessToken: 'ya29.new', expiry: inAnHour() }),
    ).toBe(true);
    // The stored token comes with the next lease.
    const next = await store.leaseRefresh(userId, 30_000);
    expect(next).toMatchObject({ accessToken: 'ya29.new' });
    await store.releaseRefreshLease(userId, next!.lease);
    expect(await store.leaseRefresh(userId, 30_000)).toBeDefined();
  });

  /**
   * A holder that stalled past its lease (a frozen process) gives it back late, after another took
   * the lease over: that must not end the other's lease, or a third process would refresh beside it.
   */
  it('a lapsed lease given back late (release, store, revoke) leaves the lease that took over in place', async () => {
    const userId = uid();
    const c = await connected(userId);
    const stale = await store.leaseRefresh(userId, 1);
    await new Promise((r) => setTimeout(r, 20));
    const current = await store.leaseRefresh(userId, 30_000);
    expect(current).toBeDefined();
    expect(current!.lease.getTime()).toBeGreaterThan(stale!.lease.getTime());

    await store.releaseRefreshLease(userId, stale!.lease);
    expect(await store.leaseRefresh(userId, 30_000)).toBeUndefined();
    // The late holder's token is still stored (it is valid), but the lease stays the other's.
    expect(
      await store.saveRefreshed(
        userId,
        c.revision,
        { accessToken: 'ya29.late', expiry: inAnHour() },
        stale!.lease,
      ),
    ).toBe(true);
    expect(await store.leaseRefresh(userId, 30_000)).toBeUndefined();
    const stored = await store.get(userId);
    expect(stored?.accessToken).toBe('ya29.late');
    expect(await store.markRevoked(userId, stored!.revision, stale!.lease)).toBe(true);
    expect(await store.leaseRefresh(userId, 30_000)).toBeUndefined();

    // Its holder gives it back: free again.
    await store.releaseRefreshLease(userId, current!.lease);
    expect(await store.leaseRefresh(userId, 30_000)).toBeDefined();
  });

  it('storing with the lease it holds gives it back in the same statement', async () => {
    const userId = uid();
    await connected(userId);
    const leased = await store.leaseRefresh(userId, 30_000);
    expect(
      await store.saveRefreshed(
        userId,
        leased!.revision,
        { accessToken: 'ya29.mine', expiry: inAnHour() },
        leased!.lease,
      ),
    ).toBe(true);
    expect(await store.leaseRefresh(userId, 30_000)).toMatchObject({ accessToken: 'ya29.mine' });
  });

  it('takes over a lease whose holder died (expired), and gives nothing for an unknown owner', async () => {
    const userId = uid();
    await connected(userId);
    expect(await store.leaseRefresh(userId, 1)).toBeDefined();
    await new Promise((r) => setTimeout(r, 20));
    expect(await store.leaseRefresh(userId, 30_000)).toBeDefined();
    expect(await store.leaseRefresh(uid(), 30_000)).toBeUndefined();
  });
});
