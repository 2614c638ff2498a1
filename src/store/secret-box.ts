import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * AES-256-GCM for secrets at rest (OAuth tokens).
 *
 * Format: `v1.<keyId>.<iv>.<ciphertext>.<tag>` (base64url parts). `keyId` is the first 8 hex chars of
 * sha256(key), so with several keys configured (rotation) the right one is picked without trial and
 * error. The associated data binds a ciphertext to its row and column: a value copied into another
 * user's row does not decrypt.
 */
export class SecretBox {
  readonly #keys: Map<string, Buffer>;
  readonly #primaryId: string;

  constructor(keys: readonly Buffer[]) {
    if (keys.length === 0) throw new Error('SecretBox needs at least one key');
    this.#keys = new Map(keys.map((k) => [keyId(k), k]));
    this.#primaryId = keyId(keys[0]!);
  }

  encrypt(plaintext: string, context: string): string {
    const key = this.#keys.get(this.#primaryId)!;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [
      'v1',
      this.#primaryId,
      iv.toString('base64url'),
      body.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
    ].join('.');
  }

  decrypt(sealed: string, context: string): string {
    const [version, id, iv, body, tag] = sealed.split('.');
    if (version !== 'v1' || !id || iv === undefined || body === undefined || tag === undefined) {
      throw new Error('not a v1 sealed secret');
    }
    const key = this.#keys.get(id);
    if (!key) throw new Error(`secret was sealed with key ${id}, which is not in TOKEN_ENCRYPTION_KEY`);
    // authTagLength pins the tag to 16 bytes: otherwise GCM accepts a truncated tag (down to 4 bytes),
    // which makes forging a value far easier.
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), {
      authTagLength: 16,
    });
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString(
      'utf8',
    );
  }

  /** The id of the key new values are sealed with (the first one): the second part of a sealed value. */
  get primaryKeyId(): string {
    return this.#primaryId;
  }

  /** True when the value was sealed with an older key (resealSecrets re-seals it). */
  isStale(sealed: string): boolean {
    return sealed.split('.')[1] !== this.#primaryId;
  }
}

function keyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}
