import { type Application, createApplication, type Role } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { DataDirLockedError } from './store/data-dir-lock.js';

function parseRole(argv: string[]): Role {
  const arg = argv.find((a) => a.startsWith('--role='));
  const role = arg?.slice('--role='.length) ?? 'all';
  if (role !== 'api' && role !== 'worker' && role !== 'all') {
    throw new ConfigError(`--role must be api, worker or all (got "${role}")`);
  }
  return role;
}

async function main(): Promise<void> {
  let app: Application;
  try {
    const config = loadConfig();
    const role = parseRole(process.argv.slice(2));
    const logger = createLogger(config.logLevel);
    for (const note of config.startupNotes) logger.warn(note);
    app = await createApplication(config, { logger, role });
    const address = await app.listen();
    logger.info(
      {
        address,
        role,
        database: app.database.kind === 'embedded' ? `embedded (${config.dataDir})` : 'server',
      },
      `agent-meetings listening on ${address} (docs: ${address}/docs)`,
    );
  } catch (err) {
    if (err instanceof ConfigError || err instanceof DataDirLockedError) {
      process.stderr.write(`agent-meetings: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  // Graceful shutdown: stop accepting, finish in-flight work, close the database. A second signal
  // (or 30 s) forces the exit.
  let shuttingDown = false;
  const shutdown = (signal: string) => {
    if (shuttingDown) {
      process.exit(1);
    }
    shuttingDown = true;
    app.logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        app.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

await main();
