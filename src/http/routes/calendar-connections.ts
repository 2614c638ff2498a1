import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import {
  assertUserId,
  expiryStatus,
  maskSecret,
  validateConnectInput,
} from '../../domain/calendar-connection.js';
import { InvalidInput, NotFound } from '../../domain/errors.js';
import type { CalendarConnectionStore, CalendarConnectionSummary } from '../../store/calendar-connections.js';
import type { ConnectionCache } from '../../store/connection-cache.js';
import { adminOnly } from '../auth.js';
import { errorResponses, UserIdParams } from '../schemas.js';

export interface CalendarConnectionRouteDeps {
  adminKey: string;
  connections: CalendarConnectionStore;
  /** Serves the single-connection GET from memory; writes here evict it at once. */
  cache: Pick<ConnectionCache, 'get' | 'evict'>;
  now: () => Date;
}

const ConnectBody = Type.Object({
  access_token: Type.String({ minLength: 1, maxLength: 4096 }),
  refresh_token: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  token_expiry: Type.String({ minLength: 1, maxLength: 64, description: 'ISO 8601 with a zone' }),
  scope: Type.String({ minLength: 1, maxLength: 2048 }),
});

const TokenSummary = Type.Object({
  user_id: Type.String(),
  token_expiry: Type.String(),
  is_expired: Type.Boolean(),
  expires_in_minutes: Type.Integer(),
  scope: Type.String(),
  status: Type.Union([Type.Literal('connected'), Type.Literal('revoked')]),
  has_refresh_token: Type.Boolean(),
  created_at: Type.String(),
  updated_at: Type.String(),
});

const encodeCursor = (userId: string) => Buffer.from(userId, 'utf8').toString('base64url');
function decodeCursor(cursor: string): string {
  const userId = Buffer.from(cursor, 'base64url').toString('utf8');
  try {
    assertUserId(userId);
  } catch {
    throw new InvalidInput('cursor is not a cursor returned by this endpoint');
  }
  return userId;
}

/** The seed's four calendar-connection endpoints, behind the admin key. */
export const calendarConnectionRoutes: FastifyPluginAsyncTypebox<CalendarConnectionRouteDeps> = async (
  app,
  deps,
) => {
  const { connections, cache, now } = deps;
  // onRequest: credentials are checked before any validation, so a caller without the key learns
  // nothing about the routes' schemas.
  adminOnly(app, deps.adminKey);

  app.post(
    '/api/users/:user_id/google-calendar/connect',
    {
      schema: {
        tags: ['calendar connections'],
        summary: 'Store (or replace) an owner’s Google OAuth tokens, posted by the external dashboard',
        params: UserIdParams,
        body: ConnectBody,
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            message: Type.String(),
            user_id: Type.String(),
            token_expiry: Type.String(),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const valid = validateConnectInput(req.body);
      const saved = await connections.connect(req.params.user_id, valid);
      cache.evict(req.params.user_id);
      return {
        success: true as const,
        message: 'Google Calendar connected successfully',
        user_id: saved.userId,
        token_expiry: saved.tokenExpiry.toISOString(),
      };
    },
  );

  app.get(
    '/api/google-tokens/:user_id',
    {
      schema: {
        tags: ['calendar connections'],
        summary: 'One owner’s connection, token values masked',
        params: UserIdParams,
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            user_id: Type.String(),
            token_info: Type.Object({
              access_token: Type.Union([Type.String(), Type.Null()]),
              refresh_token: Type.Union([Type.String(), Type.Null()]),
              token_expiry: Type.String(),
              is_expired: Type.Boolean(),
              expires_in_minutes: Type.Integer(),
              scope: Type.String(),
              status: Type.Union([Type.Literal('connected'), Type.Literal('revoked')]),
              revoked_at: Type.Union([Type.String(), Type.Null()]),
              last_refreshed_at: Type.Union([Type.String(), Type.Null()]),
              created_at: Type.String(),
              updated_at: Type.String(),
            }),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const c = await cache.get(req.params.user_id);
      if (!c) throw new NotFound(`No Google Calendar connection for user ${req.params.user_id}`);
      return {
        success: true as const,
        user_id: c.userId,
        token_info: {
          access_token: maskSecret(c.accessToken),
          refresh_token: maskSecret(c.refreshToken),
          token_expiry: c.tokenExpiry.toISOString(),
          ...expiryStatus(c.tokenExpiry, now()),
          scope: c.scope,
          status: c.status,
          revoked_at: c.revokedAt?.toISOString() ?? null,
          last_refreshed_at: c.lastRefreshedAt?.toISOString() ?? null,
          created_at: c.createdAt.toISOString(),
          updated_at: c.updatedAt.toISOString(),
        },
      };
    },
  );

  app.get(
    '/api/google-tokens',
    {
      schema: {
        tags: ['calendar connections'],
        summary: 'All connections ordered by user_id, paginated; never token values',
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
          cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
        }),
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            count: Type.Integer(),
            tokens: Type.Array(TokenSummary),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const after = req.query.cursor === undefined ? undefined : decodeCursor(req.query.cursor);
      // One extra row tells whether another page exists.
      const rows = await connections.list(req.query.limit + 1, after);
      const page = rows.slice(0, req.query.limit);
      const at = now();
      const last = page.at(-1);
      return {
        success: true as const,
        count: page.length,
        tokens: page.map((c: CalendarConnectionSummary) => ({
          user_id: c.userId,
          token_expiry: c.tokenExpiry.toISOString(),
          ...expiryStatus(c.tokenExpiry, at),
          scope: c.scope,
          status: c.status,
          has_refresh_token: c.hasRefreshToken,
          created_at: c.createdAt.toISOString(),
          updated_at: c.updatedAt.toISOString(),
        })),
        next_cursor: rows.length > req.query.limit && last ? encodeCursor(last.userId) : null,
      };
    },
  );

  app.delete(
    '/api/google-tokens/:user_id',
    {
      schema: {
        tags: ['calendar connections'],
        summary: 'Disconnect an owner’s Google Calendar',
        params: UserIdParams,
        response: {
          200: Type.Object({ success: Type.Literal(true), message: Type.String(), user_id: Type.String() }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const deleted = await connections.delete(req.params.user_id);
      cache.evict(req.params.user_id);
      if (!deleted) throw new NotFound(`No Google Calendar connection for user ${req.params.user_id}`);
      return { success: true as const, message: 'Google Calendar disconnected', user_id: req.params.user_id };
    },
  );
};
