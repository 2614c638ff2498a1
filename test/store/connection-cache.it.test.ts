/**
 * The connection cache behind GET /api/google-tokens/:user_id: filled on read, emptied by the
 * google_calendar_tokens trigger's NOTIFY whoever writes (here: plain SQL, as another process or an
 * operator would), never refilled with a row read before a change, and bypassed while not listening.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type CalendarConnection, CalendarConnectionStore } from '../../src/store/calendar-connections.js';
import { ConnectionCache } from '../../src/store/connection-cache.js';
import type { Database } from '../../src/store/database.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { openTestDatabase } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let store: CalendarConnectionStore;
let loads: string[];
let cache: ConnectionCache;
beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  store = new CalendarConnectionStore(database.db, new SecretBox([randomBytes(32)]));
  loads = [];
  cache = new ConnectionCache(database, (userId) => {
    loads.push(userId);
    return store.get(userId);
  });
  await cache.start();
});
afterAll(async () => {
  await cache?.stop();
  await close?.();
});

const uid = () => `cache-${randomBytes(5).toString('hex')}`;
const loadsOf = (userId: string) => loads.filter((u) => u === userId).length;

/** Waits until a read of `userId` is served from memory (every pending notification delivered). */
async function settled(userId: string): Promise<void> {
  await vi.waitFor(async () => {
    await cache.get(userId);
    const n = loadsOf(userId);
    await cache.get(userId);
    expect(loadsOf(userId)).toBe(n);
  });
}

async function connect(userId: string): Promise<CalendarConnection> {
  return store.connect(userId, {
    accessToken: `ya29.${randomBytes(6).toString('hex')}`,
    refreshToken: '1//refresh',
    tokenExpiry: new Date(Date.now() + 3_600_000),
    scope: 'https://www.googleapis.com/auth/calendar',
  });
}

describe('ConnectionCache', () => {
  it('reads a row again once it is maxAgeMs old, even when no notification ever arrives', async () => {
    const userId = uid();
    const first = await connect(userId);
    // LISTEN that looks up but delivers nothing (a pooler in transaction mode, a dropped socket).
    const silent: Database = {
      ...database,
      listen: async (_channel, _onPayload, onState) => {
        onState?.(true);
        return async () => {};
      },
    };
    const reads: string[] = [];
    const aging = new ConnectionCache(
      silent,
      (u) => {
        reads.push(u);
        return store.get(u);
      },
      { maxAgeMs: 300 },
    );
    await aging.start();
    try {
      expect((await aging.get(userId))?.accessToken).toBe(first.accessToken);
      // A reconnect through another process: its notification never reaches this cache.
      const replaced = await connect(userId);
      expect((await aging.get(userId))?.accessToken).toBe(first.accessToken);
      await vi.waitFor(
        async () => expect((await aging.get(userId))?.accessToken).toBe(replaced.accessToken),
        {
          timeout: 5000,
        },
      );
      expect(reads.filter((u) => u === userId).length).toBe(2);
    } finally {
      await aging.stop();
    }
  });

  it('serves repeated reads from memory', async () => {
    const userId = uid();
    await connect(userId);
    // The INSERT's own notification may still be on its way (it evicts): wait until reads stay cached.
    await settled(userId);
    const before = loadsOf(userId);
    for (let i = 0; i < 5; i++) expect((await cache.get(userId))?.userId).toBe(userId);
    expect(loadsOf(userId)).toBe(before);
  });

  it('drops an entry when any writer changes the row (the trigger notifies)', async () => {
    const userId = uid();
    await connect(userId);
    await settled(userId);
    expect((await cache.get(userId))?.status).toBe('connected');

    // Another process's write: plain SQL on its own, not through this cache.
    await sql`UPDATE google_calendar_tokens SET status = 'revoked', revoked_at = now() WHERE user_id = ${userId}`.execute(
      database.db,
    );
    await vi.waitFor(async () => expect((await cache.get(userId))?.status).toBe('revoked'));

    await sql`DELETE FROM google_calendar_tokens WHERE user_id = ${userId}`.execute(database.db);
    await vi.waitFor(async () => expect(await cache.get(userId)).toBeUndefined());
  });

  it('caches an unknown owner until a connection for it is inserted', async () => {
    const userId = uid();
    expect(await cache.get(userId)).toBeUndefined();
    await connect(userId);
    await vi.waitFor(async () => expect((await cache.get(userId))?.userId).toBe(userId));
  });

  it('does not keep a row read while a change was announced', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const userId = uid();
    await connect(userId);
    const racing = new ConnectionCache(database, async (id) => {
      const row = await store.get(id);
      await gate; // the change lands after the read, before the read is cached
      return row;
    });
    await racing.start();
    try {
      const read = racing.get(userId);
      racing.evict(userId); // what the notification does
      release();
      await read;
      expect(racing.size).toBe(0);
      await racing.get(userId);
      expect(racing.size).toBe(1);
    } finally {
      await racing.stop();
    }
  });

  it('keeps a row read while another owner changed (the check is per owner)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const userId = uid();
    const other = uid();
    await connect(userId);
    const racing = new ConnectionCache(database, async (id) => {
      const row = await store.get(id);
      await gate;
      return row;
    });
    await racing.start();
    try {
      const read = racing.get(userId);
      racing.evict(other); // another owner's token refreshed meanwhile
      release();
      expect((await read)?.userId).toBe(userId);
      expect(racing.size).toBe(1);
    } finally {
      await racing.stop();
    }
  });

  it('shares one read among concurrent misses, but not with a caller that arrives after a change', async () => {
    const gates: Array<() => void> = [];
    let n = 0;
    const userId = uid();
    await connect(userId);
    const shared = new ConnectionCache(database, async (id) => {
      n++;
      const row = await store.get(id);
      await new Promise<void>((r) => gates.push(r));
      return row;
    });
    await shared.start();
    try {
      const first = [shared.get(userId), shared.get(userId), shared.get(userId)];
      await vi.waitFor(() => expect(gates).toHaveLength(1));
      expect(n).toBe(1);
      // A write lands (its notification evicts): a read from now on must not get the older read.
      await store.markRevoked(userId);
      shared.evict(userId);
      const after = shared.get(userId);
      await vi.waitFor(() => expect(gates).toHaveLength(2));
      expect(n).toBe(2);
      for (const g of gates) g();
      for (const r of await Promise.all(first)) expect(r?.status).toBe('connected');
      expect((await after)?.status).toBe('revoked');
    } finally {
      await shared.stop();
    }
  });

  it('is bypassed until it listens, and emptied when the listening connection is lost', async () => {
    let state: ((listening: boolean) => void) | undefined;
    const fake = {
      ...database,
      listen: async (_c: string, _p: (s: string) => void, onState?: (l: boolean) => void) => {
        state = onState;
        return async () => {};
      },
    } as Database;
    let n = 0;
    const row = { userId: 'x' } as CalendarConnection;
    const c = new ConnectionCache(fake, async () => {
      n++;
      return row;
    });
    await c.start();
    await c.get('x');
    await c.get('x');
    expect(n).toBe(2); // not listening yet: every read loads
    state?.(true);
    await c.get('x');
    await c.get('x');
    expect(n).toBe(3);
    state?.(false); // notifications may be lost from here on
    expect(c.size).toBe(0);
    await c.get('x');
    await c.get('x');
    expect(n).toBe(5);
  });

  it('holds at most maxEntries rows, dropping the oldest', async () => {
    const c = new ConnectionCache(database, async (id) => ({ userId: id }) as CalendarConnection, {
      maxEntries: 3,
    });
    await c.start();
    try {
      for (const id of ['a', 'b', 'c', 'd']) await c.get(id);
      expect(c.size).toBe(3);
    } finally {
      await c.stop();
    }
  });
});
