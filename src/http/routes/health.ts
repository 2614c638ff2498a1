import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';

export interface HealthRouteDeps {
  /** Resolves when the database answers and every migration is applied. */
  ready: () => Promise<boolean>;
}

export const healthRoutes: FastifyPluginAsyncTypebox<HealthRouteDeps> = async (app, deps) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Liveness',
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness: database reachable and migrated',
        response: {
          200: Type.Object({ status: Type.Literal('ready') }),
          503: Type.Object({
            success: Type.Literal(false),
            status: Type.Literal('not ready'),
            error: Type.String(),
          }),
        },
      },
    },
    async (_req, reply) => {
      let ok = false;
      try {
        ok = await deps.ready();
      } catch {
        ok = false;
      }
      if (ok) return { status: 'ready' as const };
      // The error shape of every other route, with the status health checkers read.
      return reply.code(503).send({
        success: false as const,
        status: 'not ready' as const,
        error: 'database unreachable or not migrated',
      });
    },
  );
};
