import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { healthRoutes } from '../../src/http/routes/health.js';

describe('/readyz', () => {
  async function readyz(ready: () => Promise<boolean>) {
    const app = Fastify();
    await app.register(healthRoutes, { ready });
    try {
      return await app.inject({ url: '/readyz' });
    } finally {
      await app.close();
    }
  }

  it('is 200 once the database answers and is migrated', async () => {
    const res = await readyz(async () => true);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ready' });
  });

  it.each([
    ['not migrated', async () => false],
    [
      'unreachable',
      async () => {
        throw new Error('connect ECONNREFUSED');
      },
    ],
  ])('is a 503 in the error shape of every route when the database is %s', async (_n, ready) => {
    const res = await readyz(ready);
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      success: false,
      status: 'not ready',
      error: 'database unreachable or not migrated',
    });
  });
});
