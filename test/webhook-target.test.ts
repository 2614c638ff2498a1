import { describe, expect, it } from 'vitest';
import { isPublicAddress, webhookUrlProblem } from '../src/webhook-target.js';

describe('isPublicAddress', () => {
  it.each(['8.8.8.8', '1.1.1.1', '93.184.216.34', '2606:4700:4700::1111', '::ffff:808:808'])(
    'public: %s',
    (address) => {
      expect(isPublicAddress(address)).toBe(true);
    },
  );

  it.each([
    '0.0.0.0',
    '10.0.0.1',
    '100.64.1.1',
    '127.0.0.1',
    '127.255.255.254',
    '169.254.169.254',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '192.0.2.5',
    '198.18.0.1',
    '224.0.0.1',
    '255.255.255.255',
    '::',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:a9fe:a9fe',
    '64:ff9b::a00:1',
    'fc00::1',
    'fd12:3456::1',
    'fe80::1',
    'ff02::1',
    '2001:db8::1',
    'not-an-address',
    '',
  ])('not public: %j', (address) => {
    expect(isPublicAddress(address)).toBe(false);
  });
});

describe('webhookUrlProblem', () => {
  it('public-https: https to a public address or a name only', () => {
    const problem = (url: string) => webhookUrlProblem(new URL(url), 'public-https');
    expect(problem('https://hooks.example.com/x')).toBeUndefined();
    expect(problem('https://8.8.8.8/x')).toBeUndefined();
    expect(problem('http://hooks.example.com/x')).toMatch(/https/);
    expect(problem('https://[fd00::1]:8443/x')).toMatch(/not fd00::1/);
    expect(problem('https://user:pw@hooks.example.com/x')).toMatch(/credentials/);
    expect(problem('ftp://hooks.example.com/x')).toMatch(/http\(s\)/);
  });

  it('any: http too, and any address', () => {
    expect(webhookUrlProblem(new URL('http://127.0.0.1:8080/x'), 'any')).toBeUndefined();
    expect(webhookUrlProblem(new URL('https://user:pw@127.0.0.1/x'), 'any')).toMatch(/credentials/);
  });
});
