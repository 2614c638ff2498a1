import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Unauthorized } from '../domain/errors.js';

/** The token of an `Authorization: Bearer <token>` header, if any. */
export function bearerToken(req: FastifyRequest): string | undefined {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/**
 * Constant-time comparison. Both sides are hashed first so that neither the content nor the length
 * of the expected value leaks through timing.
 */
export function secretEquals(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function isAdmin(req: FastifyRequest, adminKey: string): boolean {
  const token = bearerToken(req);
  return token !== undefined && secretEquals(token, adminKey);
}

/** preHandler for owner/admin routes. */
export function requireAdmin(adminKey: string) {
  return async (req: FastifyRequest): Promise<void> => {
    if (!isAdmin(req, adminKey))
      throw new Unauthorized('Missing or invalid admin key: send Authorization: Bearer <ADMIN_API_KEY>');
  };
}
