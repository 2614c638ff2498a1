import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { bearerToken, isAdmin, secretEquals } from '../../src/http/auth.js';

const request = (authorization?: string) => ({ headers: { authorization } }) as unknown as FastifyRequest;

describe('isAdmin', () => {
  it('is true only for the admin key as a bearer token', () => {
    expect(isAdmin(request('Bearer adm_secret'), 'adm_secret')).toBe(true);
    expect(isAdmin(request('Bearer adm_secreT'), 'adm_secret')).toBe(false);
    expect(isAdmin(request('Bearer adm_secret_'), 'adm_secret')).toBe(false);
    expect(isAdmin(request('adm_secret'), 'adm_secret')).toBe(false);
    expect(isAdmin(request(), 'adm_secret')).toBe(false);
  });

  it('answers a request it already checked the same way, and checks again for another key', () => {
    const req = request('Bearer adm_one');
    expect(isAdmin(req, 'adm_one')).toBe(true);
    expect(isAdmin(req, 'adm_one')).toBe(true);
    expect(isAdmin(req, 'adm_two')).toBe(false);
    expect(isAdmin(req, 'adm_one')).toBe(true);
    const other = request('Bearer adm_two');
    expect(isAdmin(other, 'adm_one')).toBe(false);
    expect(isAdmin(other, 'adm_one')).toBe(false);
    expect(isAdmin(other, 'adm_two')).toBe(true);
  });
});

describe('secretEquals and bearerToken', () => {
  it('compares whole secrets of any length', () => {
    expect(secretEquals('a', 'a')).toBe(true);
    expect(secretEquals('a', 'ab')).toBe(false);
    expect(secretEquals('', '')).toBe(true);
  });

  it('reads the token of a Bearer header only', () => {
    expect(bearerToken(request('Bearer  tok '))).toBe('tok');
    expect(bearerToken(request('bearer tok'))).toBe('tok');
    expect(bearerToken(request('Basic tok'))).toBeUndefined();
    expect(bearerToken(request('Bearer a b'))).toBeUndefined();
  });
});
