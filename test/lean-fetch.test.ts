import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gzipSync } from 'node:zlib';
import { gaxios } from 'google-auth-library';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLeanFetch, endedBy, type Fetch } from '../src/lean-fetch.js';

/** A plain HTTP server with one route per behaviour the SDKs rely on. */
let server: Server;
let base: string;
const connections: string[] = [];

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readAll(req);
    switch (req.url) {
      case '/echo':
        res.writeHead(201, { 'content-type': 'application/json', 'x-request-id': 'req_1' });
        res.end(JSON.stringify({ method: req.method, headers: req.headers, body }));
        return;
      case '/empty':
        res.writeHead(204);
        res.end();
        return;
      case '/gzip':
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        res.end(gzipSync(JSON.stringify({ compressed: true })));
        return;
      case '/bad-gzip':
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        res.end('not gzip at all');
        return;
      case '/status-600':
        res.writeHead(600, { 'content-type': 'application/json' });
        res.end('{}');
        return;
      case '/error':
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
        res.end(JSON.stringify({ error: { message: 'slow down' } }));
        return;
      case '/drop':
        req.socket.destroy();
        return;
      case '/cut':
        // Headers, part of the body, then the connection goes.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
        res.write('{"partial":');
        setTimeout(() => req.socket.destroy(), 20);
        return;
      case '/slow':
        setTimeout(() => res.end('late'), 2_000);
        return;
      default:
        res.writeHead(404);
        res.end('no such route');
    }
  });
  server.on('connection', (socket) => connections.push(`${socket.remotePort}`));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('createLeanFetch', () => {
  const leanFetch = createLeanFetch();

  it('sends method, headers and a string body; answers status, headers, body and url', async () => {
    const res = await leanFetch(`${base}/echo`, {
      method: 'POST',
      headers: new Headers({ 'content-type': 'application/json', authorization: 'Bearer t' }),
      body: JSON.stringify({ hello: 'world' }),
    });
    expect(res.status).toBe(201);
    expect(res.ok).toBe(true);
    expect(res.url).toBe(`${base}/echo`);
    expect(res.headers.get('x-request-id')).toBe('req_1');
    const echoed = (await res.json()) as { method: string; headers: Record<string, string>; body: string };
    expect(echoed.method).toBe('POST');
    expect(echoed.body).toBe('{"hello":"world"}');
    expect(echoed.headers.authorization).toBe('Bearer t');
    expect(echoed.headers['content-type']).toBe('application/json');
    expect(echoed.headers['content-length']).toBe('17');
  });

  it('takes headers as a plain object or pairs, and form bodies with their content type', async () => {
    const res = await leanFetch(new URL(`${base}/echo`), {
      method: 'POST',
      headers: [['x-one', '1']],
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'r t' }),
    });
    const echoed = (await res.json()) as { headers: Record<string, string>; body: string };
    expect(echoed.body).toBe('grant_type=refresh_token&refresh_token=r+t');
    expect(echoed.headers['content-type']).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    expect(echoed.headers['x-one']).toBe('1');
    const bytes = await leanFetch(`${base}/echo`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: new TextEncoder().encode('bytes'),
    });
    expect(((await bytes.json()) as { body: string }).body).toBe('bytes');
  });

  it('answers 204 with no body and error statuses as responses, not rejections', async () => {
    const empty = await leanFetch(`${base}/empty`, { method: 'DELETE' });
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
    const limited = await leanFetch(`${base}/error`);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('3');
    expect(await limited.json()).toEqual({ error: { message: 'slow down' } });
  });

  it('decodes a gzip answer (as the native fetch does)', async () => {
    const res = await leanFetch(`${base}/gzip`);
    expect(await res.json()).toEqual({ compressed: true });
    expect(res.headers.get('content-encoding')).toBeNull();
  });

  it('rejects (never hangs, never throws elsewhere) an answer it cannot turn into a response', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      // A damaged compressed body: the native fetch fails reading it, with a TypeError too.
      const damaged = await leanFetch(`${base}/bad-gzip`).catch((e: unknown) => e);
      expect(damaged).toBeInstanceOf(TypeError);
      expect((damaged as TypeError).cause).toMatchObject({ code: 'Z_DATA_ERROR' });
      // A status a Response cannot carry.
      const odd = await leanFetch(`${base}/status-600`).catch((e: unknown) => e);
      expect(odd).toBeInstanceOf(TypeError);
      expect((odd as TypeError).cause).toBeInstanceOf(RangeError);
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('reuses its connection between requests (keep-alive)', async () => {
    const before = connections.length;
    for (let i = 0; i < 3; i++) await (await leanFetch(`${base}/echo`)).text();
    expect(connections.length - before).toBeLessThanOrEqual(1);
  });

  it('rejects with the signal’s reason: already aborted, aborted during the request, timed out', async () => {
    const aborted = new AbortController();
    aborted.abort();
    await expect(leanFetch(`${base}/slow`, { signal: aborted.signal })).rejects.toMatchObject({
      name: 'AbortError',
    });
    const during = new AbortController();
    const pending = leanFetch(`${base}/slow`, { signal: during.signal });
    setTimeout(() => during.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await expect(leanFetch(`${base}/slow`, { signal: AbortSignal.timeout(50) })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
  });

  it('rejects network failures with a TypeError carrying the socket error (as the native fetch)', async () => {
    const dropped = await leanFetch(`${base}/drop`).catch((e: unknown) => e);
    expect(dropped).toBeInstanceOf(TypeError);
    expect((dropped as TypeError).cause).toMatchObject({ code: 'ECONNRESET' });
    const cut = await leanFetch(`${base}/cut`).catch((e: unknown) => e);
    expect(cut).toBeInstanceOf(TypeError);
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await leanFetch(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TypeError);
    expect((refused as TypeError).cause).toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('hands what it does not cover (a streamed body, a Request) to the native fetch', async () => {
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('streamed'));
        c.close();
      },
    });
    const res = await leanFetch(`${base}/echo`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(((await res.json()) as { body: string }).body).toBe('streamed');
    const viaRequest = await leanFetch(new Request(`${base}/echo`, { method: 'POST', body: 'r' }));
    expect(((await viaRequest.json()) as { body: string }).body).toBe('r');
  });
});

describe('endedBy', () => {
  // Garbage collection on demand, to make the collection that loses a joined timeout happen.
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const native: Fetch = (input, init) => fetch(input, init);

  it('keeps gaxios’s own request timeout alive through garbage collection (a joined signal lost it)', async () => {
    const deadline = new AbortController();
    const collecting = setInterval(gc, 25);
    try {
      const err = await new gaxios.Gaxios()
        .request({
          url: `${base}/slow`,
          timeout: 300,
          retry: false,
          fetchImplementation: endedBy(deadline.signal, native),
        })
        .catch((e: unknown) => e);
      // The answer would come at 2 s: the request timed out instead.
      expect(err).toMatchObject({ code: 'TimeoutError' });
    } finally {
      clearInterval(collecting);
    }
  });

  it('ends a request in flight with the signal’s reason, and sends none once it ended', async () => {
    const deadline = new AbortController();
    const ended = endedBy(deadline.signal, native);
    setTimeout(() => deadline.abort(new Error('deadline passed')), 100);
    await expect(ended(`${base}/slow`)).rejects.toThrow('deadline passed');
    const before = connections.length;
    await expect(ended(`${base}/echo`)).rejects.toThrow('deadline passed');
    expect(connections).toHaveLength(before);
  });
});
