import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { type Application, type ApplicationOptions, createApplication } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { testDatabaseOptions } from './database.js';

export const ADMIN_KEY = 'test-admin-key-0123456789abcdef';
export const ENCRYPTION_KEY = randomBytes(32).toString('base64');

/** Every log line the app wrote, as raw JSON text (to prove secrets never reach the log). */
export class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    done();
  }
  get text(): string {
    return this.lines.join('\n');
  }
}

export interface TestApp {
  app: Application;
  logs: LogCapture;
  admin: { authorization: string };
  close(): Promise<void>;
}

/** Builds the whole service on a private database with the given extra environment. */
export async function startTestApp(
  env: Record<string, string> = {},
  options: ApplicationOptions = {},
): Promise<TestApp> {
  const db = testDatabaseOptions();
  const config = loadConfig({
    ADMIN_API_KEY: ADMIN_KEY,
    TOKEN_ENCRYPTION_KEY: ENCRYPTION_KEY,
    LOG_LEVEL: 'info',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: '/nonexistent-test-data-dir',
    // Test receivers listen on 127.0.0.1 over http; the default policy has tests of its own.
    WEBHOOK_URLS: 'any',
    // No background passes over owners' calendars in the tests' Google request logs, except where a
    // test turns them on (test/worker/calendar-sync.it.test.ts).
    CALENDAR_SYNC_SECONDS: '0',
    ...env,
  });
  const logs = new LogCapture();
  const app = await createApplication(config, {
    logger: createLogger(config.logLevel, logs),
    database: db,
    ...options,
  });
  return {
    app,
    logs,
    admin: { authorization: `Bearer ${ADMIN_KEY}` },
    async close() {
      await app.stop();
      await db.cleanup();
    },
  };
}
