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

/** Query-string credentials (EventSource cannot send headers, so SSE takes `?token=`). */
export function scrubUrl(url: string): string {
  return url.replace(/([?&](?:token|access_token|key)=)[^&#]*/gi, '$1[redacted]');
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
