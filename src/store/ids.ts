import { randomFillSync } from 'node:crypto';

/**
 * Resource ids: a short type prefix plus 20 random base32 characters (100 bits), e.g.
 * `msg_k3n0v7...`. The prefix tells at a glance what an id in a log line refers to.
 *
 * The random bytes come from a pool filled 64 ids at a time (as Node's own randomUUID does): a
 * booking takes 3 to 4 ids, and one `randomBytes` call per id was ~0.8 % of the service's CPU at 50
 * bookings/s (bench/README.md). Ids are not secrets (tokens are drawn with `randomBytes` apiece).
 */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const ID_BYTES = 20;
const pool = Buffer.alloc(ID_BYTES * 64);
let taken = pool.length;

export function newId(prefix: 'agt' | 'cnv' | 'msg' | 'mtg'): string {
  if (taken === pool.length) {
    randomFillSync(pool);
    taken = 0;
  }
  let out = `${prefix}_`;
  for (let i = taken; i < taken + ID_BYTES; i++) out += ALPHABET[pool[i]! & 31];
  taken += ID_BYTES;
  return out;
}
