import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
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
  return matchesDigest(given, sha256(expected));
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();
/** secretEquals against the expected value's digest (kept by a caller that compares often). */
const matchesDigest = (given: string, expectedDigest: Buffer) =>
  timingSafeEqual(sha256(given), expectedDigest);

/** The admin key's digest, computed once per key rather than on every request. */
let adminDigest: { adminKey: string; digest: Buffer } | undefined;

/**
 * Requests already checked: the rate limit's allow list and then the route ask the same question of
 * every request, and each answer costs a SHA-256 digest.
 */
const adminChecked = new WeakMap<FastifyRequest, { adminKey: string; admin: boolean }>();

export function isAdmin(req: FastifyRequest, adminKey: string): boolean {
  const checked = adminChecked.get(req);
  if (checked?.adminKey === adminKey) return checked.admin;
  const token = bearerToken(req);
  if (adminDigest?.adminKey !== adminKey) adminDigest = { adminKey, digest: sha256(adminKey) };
  const admin = token !== undefined && matchesDigest(token, adminDigest.digest);
  adminChecked.set(req, { adminKey, admin });
  return admin;
}

/** preHandler for owner/admin routes. */
export function requireAdmin(adminKey: string) {
  return async (req: FastifyRequest): Promise<void> => {
    if (!isAdmin(req, adminKey))
      throw new Unauthorized('Missing or invalid admin key: send Authorization: Bearer <ADMIN_API_KEY>');
  };
}

/**
 * Every route `app` (a route plugin) registers from here on needs the admin key: checked as the
 * plugin's first hook (before validation, so a caller without the key learns nothing about the
 * input), and documented as such in the OpenAPI document (the `admin` bearer scheme, buildHttpApp).
 */
export function adminOnly(app: FastifyInstance, adminKey: string): void {
  app.addHook('onRequest', requireAdmin(adminKey));
  app.addHook('onRoute', (route) => {
    route.schema = { ...route.schema, security: [{ admin: [] }] };
  });
}
