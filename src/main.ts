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
  // Graceful shutdown: stop accepting, finish in-flight work, close the database. A second signal
  // (or 30 s) forces the exit. The handlers are installed before anything starts: a signal that
  // arrives while the service is still starting (migrations, the queue) lets startup finish and then
  // stops it the same way, instead of killing the process halfway.
  let app: Application | undefined;
  let requested: string | undefined;
  const stop = (running: Application, signal: string) => {
    running.logger.info({ signal }, 'shutting down');
    running.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        running.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: string) => {
    if (requested !== undefined) process.exit(1);
    requested = signal;
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    if (app) stop(app, signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  try {
    const config = loadConfig();
    const role = parseRole(process.argv.slice(2));
    const logger = createLogger(config.logLevel);
    for (const note of config.startupNotes) logger.warn(note);
    const started = await createApplication(config, { logger, role });
    const address = await started.listen();
    app = started;
    logger.info(
      {
        address,
        role,
        database: started.database.kind === 'embedded' ? `embedded (${config.dataDir})` : 'server',
      },
      `agent-meetings listening on ${address} (docs: ${address}/docs)`,
    );
    if (requested !== undefined) stop(started, requested);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof DataDirLockedError) {
      process.stderr.write(`agent-meetings: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

await main();
