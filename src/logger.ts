import pino, { type Logger } from 'pino';
import type { LogLevel } from './config.js';

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

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'agent-meetings' },
    },
    destination,
  );
}
