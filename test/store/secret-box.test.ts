import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SecretBox } from '../../src/store/secret-box.js';

const OLD_KEY = randomBytes(32);
const NEW_KEY = randomBytes(32);
const CTX = 'google_calendar_tokens:user-1:access_token';
const SECRET = 'ya29.a0AfB_byD-this-is-a-secret-access-token';

const keyIdOf = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 8);

/** Replaces part `index` of a sealed value (v1.<keyId>.<iv>.<body>.<tag>). */
function withPart(sealed: string, index: number, change: (bytes: Buffer) => Buffer): string {
  const parts = sealed.split('.');
  parts[index] = change(Buffer.from(parts[index]!, 'base64url')).toString('base64url');
  return parts.join('.');
}

const flipFirstBit = (b: Buffer) => {
  const copy = Buffer.from(b);
  copy[0] = copy[0]! ^ 1;
  return copy;
};

describe('SecretBox', () => {
  it('round-trips a value', () => {
    const box = new SecretBox([OLD_KEY]);
    const sealed = box.encrypt(SECRET, CTX);
    expect(box.decrypt(sealed, CTX)).toBe(SECRET);
    // A second instance with the same key (a restarted process) opens it too.
    expect(new SecretBox([Buffer.from(OLD_KEY)]).decrypt(sealed, CTX)).toBe(SECRET);
  });

  it('round-trips the empty string', () => {
    const box = new SecretBox([OLD_KEY]);
    expect(box.decrypt(box.encrypt('', CTX), CTX)).toBe('');
  });

  it('has the documented format and never contains the plaintext', () => {
    const box = new SecretBox([OLD_KEY]);
    const sealed = box.encrypt(SECRET, CTX);
    const parts = sealed.split('.');
    expect(parts).toHaveLength(5);
    expect(parts[0]).toBe('v1');
    expect(parts[1]).toBe(keyIdOf(OLD_KEY));
    expect(Buffer.from(parts[2]!, 'base64url')).toHaveLength(12);
    expect(Buffer.from(parts[4]!, 'base64url')).toHaveLength(16);
    expect(sealed).not.toContain(SECRET);
    expect(sealed).not.toContain('ya29');
    // Nor any encoding of it.
    for (const enc of ['base64', 'base64url', 'hex'] as const) {
      expect(sealed).not.toContain(Buffer.from(SECRET).toString(enc).slice(0, 12));
    }
    // The key id is not the key.
    expect(sealed).not.toContain(OLD_KEY.toString('base64url').slice(0, 8));
  });

  it('uses a fresh IV every time, so equal plaintexts give different ciphertexts', () => {
    const box = new SecretBox([OLD_KEY]);
    const sealed = Array.from({ length: 50 }, () => box.encrypt(SECRET, CTX));
    expect(new Set(sealed.map((s) => s.split('.')[2])).size).toBe(50);
    expect(new Set(sealed.map((s) => s.split('.')[3])).size).toBe(50);
    for (const s of sealed) expect(box.decrypt(s, CTX)).toBe(SECRET);
  });

  it('does not open a value under another context (row/column binding)', () => {
    const box = new SecretBox([OLD_KEY]);
    const sealed = box.encrypt(SECRET, CTX);
    expect(() => box.decrypt(sealed, 'google_calendar_tokens:user-2:access_token')).toThrow();
    expect(() => box.decrypt(sealed, 'google_calendar_tokens:user-1:refresh_token')).toThrow();
    expect(() => box.decrypt(sealed, '')).toThrow();
    expect(box.decrypt(sealed, CTX)).toBe(SECRET);
  });

  it.each([
    ['ciphertext bit flip', (s: string) => withPart(s, 3, flipFirstBit)],
    ['ciphertext truncated', (s: string) => withPart(s, 3, (b) => b.subarray(0, b.length - 1))],
    ['ciphertext extended', (s: string) => withPart(s, 3, (b) => Buffer.concat([b, Buffer.from([0])]))],
    ['tag bit flip', (s: string) => withPart(s, 4, flipFirstBit)],
    ['tag removed', (s: string) => withPart(s, 4, () => Buffer.alloc(0))],
    // GCM would verify a prefix of the tag if allowed to: a shorter tag is a forgery shortcut.
    ['tag truncated to 4 bytes', (s: string) => withPart(s, 4, (b) => b.subarray(0, 4))],
    ['tag truncated to 12 bytes', (s: string) => withPart(s, 4, (b) => b.subarray(0, 12))],
    ['tag truncated to 15 bytes', (s: string) => withPart(s, 4, (b) => b.subarray(0, 15))],
    ['iv bit flip', (s: string) => withPart(s, 2, flipFirstBit)],
    ['iv removed', (s: string) => withPart(s, 2, () => Buffer.alloc(0))],
    ['wrong version', (s: string) => s.replace(/^v1\./, 'v2.')],
    ['missing part', (s: string) => s.split('.').slice(0, 4).join('.')],
    ['not sealed at all', () => SECRET],
    ['empty', () => ''],
  ])('rejects a tampered value: %s', (_name, tamper) => {
    const box = new SecretBox([OLD_KEY]);
    const sealed = box.encrypt(SECRET, CTX);
    const bad = tamper(sealed);
    expect(bad).not.toBe(sealed);
    expect(() => box.decrypt(bad, CTX)).toThrow();
  });

  it('rotates keys: the first key seals, the others still open, and old values are stale', () => {
    const oldBox = new SecretBox([OLD_KEY]);
    const sealedOld = oldBox.encrypt(SECRET, CTX);
    expect(oldBox.isStale(sealedOld)).toBe(false);

    const rotated = new SecretBox([NEW_KEY, OLD_KEY]);
    expect(rotated.decrypt(sealedOld, CTX)).toBe(SECRET);
    expect(rotated.isStale(sealedOld)).toBe(true);

    const resealed = rotated.encrypt(rotated.decrypt(sealedOld, CTX), CTX);
    expect(resealed.split('.')[1]).toBe(keyIdOf(NEW_KEY));
    expect(rotated.isStale(resealed)).toBe(false);
    expect(rotated.decrypt(resealed, CTX)).toBe(SECRET);
    // A process that only has the new key opens the re-sealed value but not the old one.
    const newOnly = new SecretBox([NEW_KEY]);
    expect(newOnly.decrypt(resealed, CTX)).toBe(SECRET);
    expect(() => newOnly.decrypt(sealedOld, CTX)).toThrow(keyIdOf(OLD_KEY));
    // And the old-key-only process cannot open what the rotated one sealed.
    expect(() => oldBox.decrypt(resealed, CTX)).toThrow();
  });

  it('explains an unknown key id, naming the id and the setting', () => {
    const sealed = new SecretBox([OLD_KEY]).encrypt(SECRET, CTX);
    const other = new SecretBox([NEW_KEY]);
    expect(() => other.decrypt(sealed, CTX)).toThrow(
      `secret was sealed with key ${keyIdOf(OLD_KEY)}, which is not in TOKEN_ENCRYPTION_KEY`,
    );
  });

  it('does not open a value whose key id was swapped to another configured key', () => {
    const both = new SecretBox([NEW_KEY, OLD_KEY]);
    const sealed = new SecretBox([OLD_KEY]).encrypt(SECRET, CTX);
    const swapped = sealed.replace(`.${keyIdOf(OLD_KEY)}.`, `.${keyIdOf(NEW_KEY)}.`);
    expect(swapped).not.toBe(sealed);
    expect(() => both.decrypt(swapped, CTX)).toThrow();
  });

  it('refuses to be built without a key', () => {
    expect(() => new SecretBox([])).toThrow(/at least one key/);
  });

  it('round-trips arbitrary unicode strings under arbitrary contexts (property)', () => {
    const box = new SecretBox([NEW_KEY, OLD_KEY]);
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 200 }),
        fc.string({ unit: 'binary', maxLength: 60 }),
        (plaintext, context) => {
          const sealed = box.encrypt(plaintext, context);
          expect(box.decrypt(sealed, context)).toBe(plaintext);
          expect(box.isStale(sealed)).toBe(false);
          if (plaintext.length >= 4) expect(sealed).not.toContain(plaintext);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a different context never opens a value (property)', () => {
    const box = new SecretBox([OLD_KEY]);
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary', maxLength: 100 }),
        fc.string({ maxLength: 40 }),
        fc.string({ maxLength: 40 }),
        (plaintext, ctxA, ctxB) => {
          fc.pre(ctxA !== ctxB);
          const sealed = box.encrypt(plaintext, ctxA);
          expect(() => box.decrypt(sealed, ctxB)).toThrow();
        },
      ),
      { numRuns: 200 },
    );
  });
});
