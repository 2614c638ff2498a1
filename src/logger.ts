import pino, { type Logger } from 'pino';
import type { LogLevel } from './config.js';
import { logContext } from './log-context.js';

/**
 * Paths pino replaces with "[redacted]" wherever they appear in a log object: credentials never
 * reach a log line, even when an error object carries a request config or a token response.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'authorization',
  '*.authorization',
  'access_token',
  'refresh_token',
  'customer_token',
  'client_secret',
  'id_token',
  '*.access_token',
  '*.refresh_token',
  '*.customer_token',
  '*.client_secret',
  '*.id_token',
  'err.config',
  'err.response',
  'err.request',
  'error.config',
  'error.response',
  'error.request',
];

const SECRET_PARAMS = new Set(['token', 'access_token', 'key']);

/**
 * Query-string credentials (EventSource cannot send headers, so SSE takes `?token=`). The query is
 * read as the router reads it: everything after the first `?` or `#` (a `#` does not end it), split
 * on `&`; each parameter's name as the query parser reads it (percent-decoded, `+` as a space:
 * `?%74oken=` is `token`). A name that does not decode has its value redacted too.
 */
export function scrubUrl(url: string): string {
  const start = url.search(/[?#]/);
  if (start < 0) return url;
  const pairs = url
    .slice(start + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      if (eq < 0) return pair;
      const raw = pair.slice(0, eq);
      let name: string | undefined;
      try {
        name = decodeURIComponent(raw.replaceAll('+', ' ')).trim().toLowerCase();
      } catch {
        name = undefined;
      }
      return name === undefined || SECRET_PARAMS.has(name) ? `${raw}=[redacted]` : pair;
    });
  return `${url.slice(0, start + 1)}${pairs.join('&')}`;
}

interface RequestLike {
  method?: string;
  url?: string;
  hostname?: string;
  ip?: string;
  socket?: { remotePort?: number };
}

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'agent-meetings' },
      mixin: () => logContext(),
      serializers: {
        err: pino.stdSerializers.err,
        req: (req: RequestLike) => ({
          method: req.method,
          url: req.url ? scrubUrl(req.url) : undefined,
          host: req.hostname,
          remoteAddress: req.ip,
          remotePort: req.socket?.remotePort,
        }),
      },
    },
    destination,
  );
}
