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
  // (another one, or the same after 2 s; see onSignal) or 30 s forces the exit. The handlers are
  // installed before anything starts: a signal that arrives while the service is still starting
  // (migrations, the queue) lets startup finish and then stops it the same way, instead of killing
  // the process halfway.
  let app: Application | undefined;
  let requested: string | undefined;
  let requestedAt = 0;
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
    if (requested !== undefined) {
      // The same signal again within 2 s is a copy of the first, not an operator insisting: `npm
      // start` passes a signal on to its child, and a terminal's Ctrl-C or systemd's default
      // KillMode signals every process of the group at once, so one SIGTERM can arrive two or three
      // times.
      if (signal === requested && Date.now() - requestedAt < 2_000) return;
      process.exit(1);
    }
    requested = signal;
    requestedAt = Date.now();
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    if (app) stop(app, signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  try {
    const role = parseRole(process.argv.slice(2));
    // The embedded database has one process (its data directory's lock): a worker-only one there
    // opens no HTTP port, so no message could ever reach it. Refused before the configuration
    // generates the embedded keys. (An API-only one stores messages for a later --role=all run to
    // answer; the benchmark measures the API that way.)
    if (role === 'worker' && !process.env.DATABASE_URL?.trim()) {
      throw new ConfigError(
        '--role=worker needs DATABASE_URL: on the embedded database no other process can hand it messages',
      );
    }
    const config = loadConfig();
    const logger = createLogger(config.logLevel);
    for (const note of config.startupNotes) logger.warn(note);
    const started = await createApplication(config, { logger, role });
    let address: string;
    try {
      address = await started.listen();
    } catch (err) {
      // Its port taken, say: the workers already run and the database is open. Stopped as on a
      // signal (claims given back, the database closed, its lock removed) before the error ends it.
      logger.fatal({ err }, 'could not listen; stopping');
      await started.stop().catch((e: unknown) => logger.error({ err: e }, 'shutdown failed'));
      throw err;
    }
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
