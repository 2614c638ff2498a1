import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { buildHttpApp } from './http/app.js';
import { createLogger } from './logger.js';
import { CalendarConnectionStore } from './store/calendar-connections.js';
import { type Database, type DatabaseOptions, openDatabase } from './store/database.js';
import { isMigrated, migrate } from './store/migrate.js';
import { SecretBox } from './store/secret-box.js';

export type Role = 'api' | 'worker' | 'all';

export interface ApplicationOptions {
  logger?: Logger;
  role?: Role;
  now?: () => Date;
  /** Overrides where the database lives (tests: in-memory PGlite or a private schema). */
  database?: DatabaseOptions;
}

export interface Application {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly http: FastifyInstance;
  readonly connections: CalendarConnectionStore;
  /** Binds the HTTP port (api/all roles). */
  listen(): Promise<string>;
  /** Stops accepting, lets in-flight work finish, closes the database. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Wires one process: config -> database (migrated) -> stores -> HTTP. No module-level state: tests
 * build the same graph with emulator URLs and a private database.
 */
export async function createApplication(
  config: Config,
  options: ApplicationOptions = {},
): Promise<Application> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const now = options.now ?? (() => new Date());
  const database = await openDatabase(
    options.database ?? {
      url: config.databaseUrl,
      dataDir: config.dataDir,
      schema: config.databaseSchema,
      poolSize: config.databasePoolSize,
    },
  );
  let http: FastifyInstance | undefined;
  try {
    const applied = await migrate(database.db);
    if (applied.length > 0) logger.info({ applied }, 'database migrated');

    const box = new SecretBox(config.tokenEncryptionKeys);
    const connections = new CalendarConnectionStore(database.db, box);
    http = await buildHttpApp({
      logger,
      adminKey: config.adminApiKey,
      now,
      ready: async () => {
        await database.ping();
        return isMigrated(database.db);
      },
      connections,
    });

    let stopping: Promise<void> | undefined;
    const app: FastifyInstance = http;
    return {
      config,
      logger,
      database,
      http: app,
      connections,
      async listen() {
        return app.listen({ port: config.port, host: config.host });
      },
      stop() {
        stopping ??= (async () => {
          await app.close();
          await database.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await http?.close().catch(() => {});
    await database.close().catch(() => {});
    throw err;
  }
}
