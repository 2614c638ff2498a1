import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isPublicAddress, postWebhook, publicOnlyLookup, webhookUrlProblem } from '../src/webhook-target.js';

describe('isPublicAddress', () => {
  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '93.184.216.34',
    '2606:4700:4700::1111',
    '2001:4860:4860::8888',
    '::ffff:808:808',
  ])('public: %s', (address) => {
    expect(isPublicAddress(address)).toBe(true);
  });

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
    '2001:0:4136:e378:8000:63bf:3fff:fdd2', // Teredo
    '2002:7f00:1::1', // 6to4 of 127.0.0.1
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

describe('postWebhook', () => {
  /** A receiver on 127.0.0.1 answering with `handle`; closed after `use`. */
  async function withReceiver<T>(
    handle: (req: IncomingMessage, res: ServerResponse) => void,
    use: (url: URL) => Promise<T>,
  ): Promise<T> {
    const server = createServer(handle);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      return await use(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`));
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  }

  it('resolves with the status as soon as it arrives, never reading the body (an endless compressed one here)', async () => {
    let bodyBytesSent = 0;
    let received = '';
    const status = await withReceiver(
      (req, res) => {
        req.on('data', (c: Buffer) => {
          received += c.toString('utf8');
        });
        req.on('end', () => {
          res.writeHead(200, { 'content-encoding': 'gzip', 'content-type': 'application/octet-stream' });
          const more = () => {
            if (res.destroyed) return;
            bodyBytesSent += 65_536;
            res.write(Buffer.alloc(65_536), () => setImmediate(more));
          };
          more();
        });
      },
      (url) =>
        postWebhook(url, { 'content-type': 'application/json' }, '{"id":"whd_1"}', { timeoutMs: 20_000 }),
    );
    expect(status).toBe(200);
    expect(received).toBe('{"id":"whd_1"}');
    expect(bodyBytesSent).toBeLessThan(64 * 65_536);
  });

  it('rejects, saying so, when no answer comes within its time', async () => {
    await withReceiver(
      () => {},
      async (url) => {
        await expect(postWebhook(url, {}, '{}', { timeoutMs: 200 })).rejects.toThrow(
          'no answer within 200 ms',
        );
      },
    );
  });

  it('rejects when the receiver closes the connection without answering', async () => {
    await withReceiver(
      (req) => req.socket.destroy(),
      async (url) => {
        await expect(postWebhook(url, {}, '{}', { timeoutMs: 5_000 })).rejects.toThrow(
          /socket hang up|ECONNRESET/,
        );
      },
    );
  });

  it('with publicOnlyLookup, refuses a name resolving to loopback before connecting', async () => {
    let connections = 0;
    await withReceiver(
      (_req, res) => {
        connections += 1;
        res.end();
      },
      async (url) => {
        const byName = new URL(url.href.replace('127.0.0.1', 'localhost'));
        await expect(
          postWebhook(byName, {}, '{}', { timeoutMs: 5_000, lookup: publicOnlyLookup }),
        ).rejects.toThrow('localhost resolves to a non-public address');
      },
    );
    expect(connections).toBe(0);
  });
});
