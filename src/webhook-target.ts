import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { lookup as dnsLookupAsync } from 'node:dns/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';

/**
 * Where owner webhooks may be sent (WEBHOOK_URLS):
 * - `public-https` (the default): https only, and only to public addresses. A webhook URL is the
 *   admin API's input, often typed by an owner in a dashboard; without this, `http://169.254.169.254/`
 *   (cloud metadata), `http://10.0.0.5:5432/` or `http://localhost:6379/` would make the worker
 *   probe the service's own network, and the deliveries API would show what answered. Plain http
 *   would also carry customers' names, emails and Meet links in the clear.
 * - `any`: http or https, any address (local development, tests, a receiver on a private network by
 *   design).
 */
export const WEBHOOK_URL_POLICIES = ['public-https', 'any'] as const;
export type WebhookUrlPolicy = (typeof WEBHOOK_URL_POLICIES)[number];

/**
 * Addresses that are not on the public internet: this network, private, shared (CGNAT), loopback,
 * link-local (cloud metadata), documentation, benchmarking, multicast and reserved ranges; in IPv6
 * also unique-local, link-local and the NAT64, 6to4 and Teredo forms (which could reach the IPv4
 * ones). An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is checked by the IPv4 rules (BlockList
 * maps it; a rule for the whole `::ffff:0:0/96` would match every IPv4 address too).
 */
const NON_PUBLIC = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  NON_PUBLIC.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 96], // unspecified, loopback and the deprecated IPv4-compatible form (::7f00:1)
  ['2001::', 32], // Teredo: tunnels to an IPv4 address (obfuscated in its last 32 bits)
  ['2002::', 16], // 6to4: embeds an IPv4 address
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  NON_PUBLIC.addSubnet(network, prefix, 'ipv6');
}

/** How long saving a webhook waits for its host's name to resolve (then it is not refused for it). */
const HOST_LOOKUP_TIMEOUT_MS = 5_000;

/** True for an IP address on the public internet; false for any other address or non-address. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return !NON_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** The URL's host as an address, when it is one (`[::1]` -> `::1`); undefined for a name. */
function literalAddress(url: URL): string | undefined {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return isIP(host) ? host : undefined;
}

/**
 * Why `url` may not be used as a webhook under `policy` (undefined when it may), without DNS: the
 * scheme, and a host that is an address. Names are checked when resolved (webhookHostProblem when
 * saved, publicOnlyLookup at every connection).
 */
export function webhookUrlProblem(url: URL, policy: WebhookUrlPolicy): string | undefined {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'url must be an absolute http(s) URL';
  if (url.username || url.password) return 'url must not contain credentials';
  if (policy === 'any') return undefined;
  if (url.protocol !== 'https:') return 'url must be https:// (WEBHOOK_URLS=public-https)';
  const address = literalAddress(url);
  if (address !== undefined && !isPublicAddress(address)) {
    return `url must point at a public address, not ${address} (WEBHOOK_URLS=public-https)`;
  }
  return undefined;
}

/**
 * webhookUrlProblem, and where the host's name resolves now: a name with any non-public address is
 * refused. A name that does not resolve now is not (the receiver's DNS may come later); every
 * delivery's connection checks again (publicOnlyLookup), which also stops a name rebound to a
 * private address after it was saved.
 */
export async function webhookHostProblem(url: URL, policy: WebhookUrlPolicy): Promise<string | undefined> {
  const problem = webhookUrlProblem(url, policy);
  if (problem || policy === 'any' || literalAddress(url) !== undefined) return problem;
  let addresses: LookupAddress[];
  let timer: NodeJS.Timeout | undefined;
  try {
    addresses = await Promise.race([
      dnsLookupAsync(url.hostname, { all: true }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('DNS timed out')), HOST_LOOKUP_TIMEOUT_MS);
      }),
    ]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
  // The address itself is not said: the message may reach an owner's dashboard, and the service's
  // internal DNS is not theirs to map.
  return addresses.some((a) => !isPublicAddress(a.address))
    ? `url's host ${url.hostname} resolves to a non-public address (WEBHOOK_URLS=public-https)`
    : undefined;
}

/**
 * A `lookup` for sockets (net.connect's option) that fails rather than connect to a non-public
 * address: the check is on the very addresses the socket uses, so a DNS answer that changed since
 * the URL was saved (rebinding) is caught too. Addresses in the URL itself are not looked up by
 * Node; webhookUrlProblem checks those.
 */
export function publicOnlyLookup(
  hostname: string,
  options: LookupOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '');
    if (addresses.some((a) => !isPublicAddress(a.address))) {
      const error: NodeJS.ErrnoException = new Error(
        `${hostname} resolves to a non-public address (WEBHOOK_URLS=public-https)`,
      );
      error.code = 'ENOTPUBLIC';
      return callback(error, '');
    }
    const first = addresses[0];
    if (options.all) return callback(null, addresses);
    if (!first)
      return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
    callback(null, first.address, first.family);
  });
}

/**
 * POSTs a webhook delivery and resolves with the receiver's status. Only the status is used: the
 * answer's body is never read (no receiver can make the worker buffer or decompress anything), and
 * its socket is closed once the status arrived. Redirects are not followed. `lookup` resolves the
 * host (publicOnlyLookup under `public-https`). Rejects on a network failure or at `timeoutMs`,
 * with the cause in the message.
 */
export function postWebhook(
  url: URL,
  headers: Record<string, string>,
  body: string,
  options: { timeoutMs: number; lookup?: typeof publicOnlyLookup },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      agent: false,
      signal: AbortSignal.timeout(options.timeoutMs),
      ...(options.lookup ? { lookup: options.lookup } : {}),
    });
    req.on('response', (res) => {
      resolve(res.statusCode ?? 0);
      res.destroy();
    });
    req.on('error', (err: Error) =>
      reject(err.name === 'AbortError' ? new Error(`no answer within ${options.timeoutMs} ms`) : err),
    );
    req.end(body);
  });
}
