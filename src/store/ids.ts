import { randomBytes } from 'node:crypto';

/**
 * Resource ids: a short type prefix plus 20 random base32 characters (100 bits), e.g.
 * `msg_k3n0v7...`. The prefix tells at a glance what an id in a log line refers to.
 */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
export function newId(prefix: 'agt' | 'cnv' | 'msg' | 'mtg'): string {
  const bytes = randomBytes(20);
  let out = '';
  for (const b of bytes) out += ALPHABET[b & 31];
  return `${prefix}_${out}`;
}
