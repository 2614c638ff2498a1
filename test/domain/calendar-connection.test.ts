import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  assertUserId,
  type ConnectInput,
  expiryStatus,
  maskSecret,
  parseZonedDateTime,
  validateConnectInput,
} from '../../src/domain/calendar-connection.js';
import { InvalidInput } from '../../src/domain/errors.js';

describe('maskSecret', () => {
  it.each([
    [null, null],
    [undefined, null],
    ['', null],
    ['a', '****'],
    ['123456789012345', '****'],
    ['1234567890123456', '123456…3456'],
    ['ya29.a0AfB_byD-this-is-a-secret-access-token', 'ya29.a…oken'],
  ])('%j -> %j', (value, masked) => {
    expect(maskSecret(value)).toBe(masked);
  });

  it('property: never shows more than 10 characters of the secret, nor the middle of it', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 300 }), (secret) => {
        const masked = maskSecret(secret)!;
        expect(masked).not.toBeNull();
        expect(masked.replace('…', '').replace('****', '').length).toBeLessThanOrEqual(10);
        if (secret.length >= 16) {
          expect(masked).toBe(`${secret.slice(0, 6)}…${secret.slice(-4)}`);
          expect(masked).not.toContain(secret.slice(6, -4));
        } else {
          expect(masked).toBe('****');
        }
      }),
    );
  });
});

describe('expiryStatus', () => {
  const now = new Date('2025-10-06T14:32:00Z');
  it.each([
    ['58 minutes ahead', '2025-10-06T15:30:00Z', false, 58],
    ['58.9 minutes ahead (rounded down)', '2025-10-06T15:30:54Z', false, 58],
    ['one second ahead', '2025-10-06T14:32:01Z', false, 0],
    ['exactly now', '2025-10-06T14:32:00Z', true, 0],
    ['an hour ago', '2025-10-06T13:32:00Z', true, 0],
    ['a day ahead', '2025-10-07T14:32:00Z', false, 1440],
  ])('%s', (_name, expiry, expired, minutes) => {
    expect(expiryStatus(new Date(expiry), now)).toEqual({ is_expired: expired, expires_in_minutes: minutes });
  });
});

describe('parseZonedDateTime', () => {
  it.each([
    ['2025-10-06T15:30:00Z', '2025-10-06T15:30:00.000Z'],
    ['2025-10-06T15:30:00.5Z', '2025-10-06T15:30:00.500Z'],
    ['2025-10-06T15:30Z', '2025-10-06T15:30:00.000Z'],
    ['2025-10-06T21:00:00+05:30', '2025-10-06T15:30:00.000Z'],
    ['2025-10-06T11:30:00-04:00', '2025-10-06T15:30:00.000Z'],
    ['2028-02-29T00:00:00Z', '2028-02-29T00:00:00.000Z'],
  ])('%s', (value, iso) => {
    expect(parseZonedDateTime(value, 'token_expiry').toISOString()).toBe(iso);
  });

  it.each([
    '2025-10-06T15:30:00',
    '2025-10-06',
    '2025-02-30T10:00:00Z',
    '2026-02-29T10:00:00Z',
    '2025-04-31T10:00:00Z',
    '2025-13-01T10:00:00Z',
    '2025-10-00T10:00:00Z',
    '2025-10-06T25:00:00Z',
    'Mon, 06 Oct 2025 15:30:00 GMT',
    '1759764600',
    '',
  ])('rejects %j, naming the field', (value) => {
    expect(() => parseZonedDateTime(value, 'token_expiry')).toThrow(InvalidInput);
    expect(() => parseZonedDateTime(value, 'token_expiry')).toThrow(/^token_expiry must be an ISO 8601/);
  });
});

describe('assertUserId', () => {
  it.each(['abc-123', 'a', 'user.name@example.com', 'A_b-c.d@e', 'x'.repeat(50)])('accepts %j', (id) => {
    expect(() => assertUserId(id)).not.toThrow();
  });
  it.each(['', 'x'.repeat(51), 'a b', 'a/b', '../x', 'é', 'a\n'])('rejects %j', (id) => {
    expect(() => assertUserId(id)).toThrow(InvalidInput);
  });
});

describe('validateConnectInput', () => {
  const seed: ConnectInput = {
    access_token: 'ya29.a0AfB_byD...',
    refresh_token: '1//0g...',
    token_expiry: '2025-10-06T15:30:00Z',
    scope: 'https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/calendar.events',
  };

  it("accepts the seed's request", () => {
    expect(validateConnectInput(seed)).toEqual({
      accessToken: 'ya29.a0AfB_byD...',
      refreshToken: '1//0g...',
      tokenExpiry: new Date('2025-10-06T15:30:00Z'),
      scope: 'https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/calendar.events',
    });
  });

  it('accepts a missing refresh token', () => {
    expect(validateConnectInput({ ...seed, refresh_token: undefined }).refreshToken).toBeUndefined();
  });

  it.each([
    ['calendar', 'https://www.googleapis.com/auth/calendar'],
    ['calendar.events', 'https://www.googleapis.com/auth/calendar.events'],
    ['calendar among others', 'openid email https://www.googleapis.com/auth/calendar profile'],
  ])('accepts the %s scope', (_name, scope) => {
    expect(validateConnectInput({ ...seed, scope }).scope).toBe(scope);
  });

  it('normalises whitespace between scopes', () => {
    expect(
      validateConnectInput({ ...seed, scope: '  openid\n\thttps://www.googleapis.com/auth/calendar  ' })
        .scope,
    ).toBe('openid https://www.googleapis.com/auth/calendar');
  });

  it.each([
    ['an empty access token', { ...seed, access_token: '' }, /access_token/],
    ['a blank access token', { ...seed, access_token: '  \t' }, /access_token/],
    ['a blank refresh token', { ...seed, refresh_token: ' ' }, /refresh_token/],
    ['an empty refresh token', { ...seed, refresh_token: '' }, /refresh_token/],
    ['an expiry without a zone', { ...seed, token_expiry: '2025-10-06T15:30:00' }, /token_expiry/],
    ['an impossible expiry', { ...seed, token_expiry: '2025-02-30T15:30:00Z' }, /token_expiry/],
    ['no calendar scope', { ...seed, scope: 'openid email profile' }, /scope/],
    [
      'a read-only calendar scope',
      { ...seed, scope: 'https://www.googleapis.com/auth/calendar.readonly' },
      /scope/,
    ],
    [
      'a scope that only starts like one',
      { ...seed, scope: 'https://www.googleapis.com/auth/calendarX' },
      /scope/,
    ],
    ['an empty scope', { ...seed, scope: '' }, /scope/],
  ])('rejects %s', (_name, input, message) => {
    expect(() => validateConnectInput(input)).toThrow(InvalidInput);
    expect(() => validateConnectInput(input)).toThrow(message);
  });
});
