import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate } from 'node:zlib';

/**
 * A `fetch` for the official SDKs' transport option (`fetch` in `openai`, `fetchImplementation` in
 * gaxios, which `@googleapis/calendar` and `google-auth-library` use), on node:http(s) with
 * keep-alive agents.
 *
 * Why: the SDKs' default transports (undici's fetch for `openai`, node-fetch for gaxios) cost the
 * service ~0.4 ms of CPU per model call and ~0.15 ms per Calendar call more than this (measured
 * against the emulators, sequential calls, bench/README.md), and every booking makes three such
 * calls. The SDKs keep doing everything else: building requests, auth, errors, retries.
 *
 * What it covers is what those SDKs send to their APIs: a body that is a string, bytes or
 * URLSearchParams, a whole response read into memory (no streaming), gzip/deflate/br answers
 * decoded, an AbortSignal honoured before and during the request (rejecting with the signal's
 * reason, as the native fetch does). Anything else (a streamed or form body, a `Request` object)
 * goes to the native fetch. Redirects are not followed: neither API redirects these calls, and a
 * 3xx reaches the SDK as an error status. A network failure rejects with a TypeError whose
 * `cause` is the socket error, as the native fetch's does.
 */
export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

const decoders: Record<string, (b: Buffer) => Promise<Buffer>> = {
  gzip: promisify(gunzip),
  'x-gzip': promisify(gunzip),
  deflate: promisify(inflate),
  br: promisify(brotliDecompress),
};

/** Statuses whose response has no body (a Response with one cannot be constructed). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

export function createLeanFetch(): Fetch {
  const httpAgent = new HttpAgent({ keepAlive: true });
  const httpsAgent = new HttpsAgent({ keepAlive: true });
  return function leanFetch(input, init = {}) {
    const body = init.body;
    const simpleBody =
      body === undefined ||
      body === null ||
      typeof body === 'string' ||
      body instanceof Uint8Array ||
      body instanceof URLSearchParams;
    if (input instanceof Request || !simpleBody) return globalThis.fetch(input, init);
    const url = typeof input === 'string' ? new URL(input) : input;
    const signal = init.signal ?? undefined;
    if (signal?.aborted) return Promise.reject(abortReason(signal));

    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, key) => {
      headers[key] = value;
    });
    let payload: string | Uint8Array | undefined;
    if (body instanceof URLSearchParams) {
      payload = body.toString();
      headers['content-type'] ??= 'application/x-www-form-urlencoded;charset=UTF-8';
    } else if (typeof body === 'string') {
      payload = body;
      headers['content-type'] ??= 'text/plain;charset=UTF-8';
    } else if (body) {
      payload = body;
    }
    if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
    headers['accept-encoding'] ??= 'gzip, deflate, br';
    const method = (init.method ?? 'GET').toUpperCase();
    const https = url.protocol === 'https:';

    return new Promise<Response>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const onAbort = () => {
        fail(abortReason(signal!));
        req.destroy();
      };
      const req = (https ? httpsRequest : httpRequest)(
        url,
        { method, headers, agent: https ? httpsAgent : httpAgent },
        (res) => {
          read(res)
            .then(async (raw) => {
              if (settled) return;
              const status = res.statusCode ?? 0;
              const responseHeaders = toHeaders(res);
              const encoding = responseHeaders.get('content-encoding')?.trim().toLowerCase();
              const decode = encoding ? decoders[encoding] : undefined;
              const content = raw.length > 0 && decode ? await decode(raw) : raw;
              if (decode) {
                // As the native fetch: the body is decoded, so its encoded length no longer applies.
                responseHeaders.delete('content-encoding');
                responseHeaders.delete('content-length');
              }
              if (settled) return;
              // Throws (as the decode above may: a damaged compressed body) into the catch below, which
              // rejects this fetch; nothing here may escape as an unhandled rejection.
              const response = new Response(NULL_BODY.has(status) || method === 'HEAD' ? null : content, {
                status,
                statusText: res.statusMessage ?? '',
                headers: responseHeaders,
              });
              Object.defineProperty(response, 'url', { value: url.href });
              settled = true;
              signal?.removeEventListener('abort', onAbort);
              resolve(response);
            })
            .catch((err: unknown) => fail(networkError(err)));
        },
      );
      req.on('error', (err) => fail(networkError(err)));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end(payload);
    });
  };
}

function read(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('the response was cut off')));
  });
}

function toHeaders(res: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = res.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

function networkError(cause: unknown): TypeError {
  return new TypeError('fetch failed', { cause });
}

/**
 * `inner`, also ended by `signal` (rejecting with its reason), without handing the SDK that signal.
 * Why: gaxios joins a caller's signal and its own per-request timeout with `AbortSignal.any`, and on
 * Node 20 a timeout signal inside such a composite can be garbage-collected before it fires
 * (https://github.com/nodejs/node/issues/57736): the request's timeout then never comes (seen here:
 * a stalled token request outlived GOOGLE_TIMEOUT_MS under GC). The timeout signal gaxios passes here
 * keeps a listener of ours, so it stays alive and fires. `signal` is checked before each request: a
 * retry after it ended is never sent.
 */
export function endedBy(signal: AbortSignal, inner: Fetch): Fetch {
  return (input, init = {}) => {
    if (signal.aborted) return Promise.reject(signal.reason);
    const both = new AbortController();
    const own = init.signal ?? undefined;
    const endOnSignal = () => both.abort(signal.reason);
    const endOnOwn = () => both.abort(own?.reason);
    if (own?.aborted) both.abort(own.reason);
    signal.addEventListener('abort', endOnSignal, { once: true });
    own?.addEventListener('abort', endOnOwn, { once: true });
    return inner(input, { ...init, signal: both.signal }).finally(() => {
      signal.removeEventListener('abort', endOnSignal);
      own?.removeEventListener('abort', endOnOwn);
    });
  };
}
