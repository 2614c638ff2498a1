import { createHash } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { fromPglite, type PgBoss } from 'pg-boss';
import { DataDirLockedError, lockDataDir } from './data-dir-lock.js';
import { SerializedPGliteDialect } from './pglite-dialect.js';
import type { DB } from './schema.js';

type BossConstructorOptions = ConstructorParameters<typeof PgBoss>[0] & object;

/**
 * The one PostgreSQL the service talks to: embedded PGlite (default, one process) or a server
 * through a node-postgres pool. Everything above this file is the same on both.
 */
export interface Database {
  readonly kind: 'embedded' | 'server';
  readonly db: Kysely<DB>;
  readonly schema: string;
  /** Options that point pg-boss at this same database (its own schema beside ours). */
  bossOptions(): BossConstructorOptions;
  ping(): Promise<void>;
  /**
   * Calls `onPayload` for every NOTIFY on `channel` in this schema (notifyChannel: SQL notifies through
   * agent_meetings_channel(), migration 008), from any process on this database. On a server
   * the listening connection reconnects by itself; notifications sent while it was down are lost,
   * so listeners must also catch up by querying (the SSE route does). `onState` is told when the
   * listening connection is up (true: from now on nothing is missed) or lost (false).
   */
  listen(
    channel: string,
    onPayload: (payload: string) => void,
    onState?: (listening: boolean) => void,
  ): Promise<() => Promise<void>>;
  /** Embedded only: a tarball of the data directory (backups; a seed for `embeddedSeed`). */
  dump?(): Promise<Blob>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres:// URL; absent = embedded. */
  url?: string | undefined;
  /** Embedded only: directory to persist in; `null` = in memory (tests). */
  dataDir?: string | null;
  schema?: string;
  poolSize?: number;
  /** Server only: named prepared statements per connection (default on; off behind PgBouncer in transaction mode). */
  preparedStatements?: boolean;
  /** Embedded only: start from this data-directory dump (PGlite's dumpDataDir) instead of initdb. */
  embeddedSeed?: Blob | undefined;
  /**
   * Embedded with a data directory: called when another process took the directory's lock from this
   * one (see lockDataDir: this process was paused long enough to be taken for dead). It must end the
   * process without another write: no close, no flush (PGlite's close checkpoints into the files
   * the other process now uses). Default: a line on stderr, then exit code 1.
   */
  onDataDirLost?: (message: string) => void;
  /** Embedded: how often the data directory's lock is touched (tests). */
  lockHeartbeatMs?: number;
}

function quoteIdent(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`invalid schema name: ${name}`);
  return `"${name}"`;
}

/**
 * The database-wide name of our channel `base` in `schema` (SQL's agent_meetings_channel(base), migration
 * 008): schemas sharing a database do not hear each other; 'public' keeps the plain name.
 */
export function notifyChannel(schema: string, base: string): string {
  return schema === 'public'
    ? base
    : `${base}_${createHash('md5').update(schema).digest('hex').slice(0, 16)}`;
}

export function bossSchemaFor(schema: string): string {
  return schema === 'public' ? 'pgboss' : `${schema}_pgboss`;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const schema = options.schema ?? 'public';
  return options.url
    ? openServer(options.url, schema, options.poolSize ?? 10, options.preparedStatements ?? true)
    : openEmbedded(options.dataDir ?? null, schema, options.embeddedSeed, options);
}

/** Distinct statements a connection keeps prepared at most; any further one runs unprepared. */
const PREPARED_PER_CONNECTION = 200;

/**
 * A node-postgres client that runs every parameterized statement as a named prepared statement on
 * its connection: PostgreSQL parses it once per connection instead of once per execution, and after
 * a few executions plans it once too (plan_cache_mode auto). Parse and plan were ~40 % of the
 * server's time for our short statements (bench/README.md). node-postgres remembers the names per
 * connection and prepares again on a new one. Statements without parameters (BEGIN, COMMIT,
 * migrations) stay unnamed; the names per connection are bounded, so statements whose text varies
 * (IN lists of any length) cannot grow the server's memory without bound.
 */
export class PreparingClient extends pg.Client {
  readonly #names = new Map<string, string>();
  #prepared = 0;
  /** Names this connection may use. */
  protected readonly capacity: number = PREPARED_PER_CONNECTION;

  /** Whether `text`, run with `values`, is worth a name on this connection. */
  protected preparable(_text: string, values: unknown): boolean {
    return Array.isArray(values) && values.length > 0;
  }

  // biome-ignore lint/suspicious/noExplicitAny: node-postgres's query has a dozen overloads.
  override query(config: any, values?: any, callback?: any): any {
    // (text, callback) is (text, undefined, callback); pg.Pool's own query() passes a callback.
    if (typeof values === 'function' && callback === undefined) {
      callback = values;
      values = undefined;
    }
    if (typeof config === 'string' && this.preparable(config, values)) {
      let name = this.#names.get(config);
      if (name === undefined && this.#prepared < this.capacity) {
        name = `am_${this.#prepared++}`;
        this.#names.set(config, name);
      }
      if (name !== undefined) {
        // A migration changed a table under a prepared `SELECT *` (a rolling deploy): PostgreSQL
        // refuses that statement from now on. This execution fails (like any statement during a
        // schema change); the next one prepares the text afresh under a new name.
        const forget = (err: unknown) => {
          if ((err as { code?: string } | null)?.code === '0A000') this.#names.delete(config);
        };
        const named = { name, text: config, values };
        if (typeof callback === 'function') {
          return super.query(named, (err: Error, res: pg.QueryResult) => {
            forget(err);
            callback(err, res);
          });
        }
        return (super.query(named) as Promise<unknown>).catch((err: unknown) => {
          forget(err);
          throw err;
        });
      }
    }
    return super.query(config, values, callback);
  }
}

/**
 * pg-boss's connections: its statements carry their constants in the text (queue name, batch
 * size), so single statements without parameters are prepared too. Its job fetch, the heaviest
 * statement per booking on the server (~2.5 ms, about half of it planning), then runs on a cached
 * plan. Multi-statement texts (its maintenance transactions) cannot be prepared and stay plain. The
 * fetch's text changes with the batch size, so fewer names per connection are allowed.
 */
export class BossPreparingClient extends PreparingClient {
  protected override readonly capacity = 64;
  protected override preparable(text: string, values: unknown): boolean {
    return super.preparable(text, values) || !text.includes(';');
  }
}

/**
 * A connection's URL and session options: ours (`-c` settings) after those of the URL's own `options`
 * parameter. pg lets a URL's parameters override the config's, so an `options` in DATABASE_URL (a
 * hosting provider's endpoint id, a statement_timeout) would otherwise replace ours silently: the
 * search_path lost, every table made and read in `public`, NOTIFYs sent on another channel.
 */
export function sessionOptions(url: string, ours: string): { connectionString: string; options: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // pg reads some URLs the URL parser does not (credentials before an empty host, say): such a
    // URL's `options` cannot be merged here, and would silently replace ours.
    if (/[?&]options=/.test(url)) {
      throw new Error(
        'DATABASE_URL has an options parameter, but is not a URL this service can merge its own session options into: give the host in the URL, or drop options',
      );
    }
    return { connectionString: url, options: ours };
  }
  const theirs = parsed.searchParams.get('options');
  if (theirs === null) return { connectionString: url, options: ours };
  parsed.searchParams.delete('options');
  return { connectionString: parsed.toString(), options: `${theirs} ${ours}`.trim() };
}

async function openServer(
  url: string,
  schema: string,
  poolSize: number,
  preparedStatements: boolean,
): Promise<Database> {
  // Create the schema before the pool pins search_path to it.
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  try {
    await setup.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  } catch (err) {
    // IF NOT EXISTS is not safe under concurrency: a process that loses the race gets 23505 or
    // 42P06 although the schema now exists, which is all we wanted.
    const code = (err as { code?: string }).code;
    if (code !== '23505' && code !== '42P06') throw err;
  } finally {
    await setup.end();
  }
  const pool = new pg.Pool({
    ...(preparedStatements ? { Client: PreparingClient } : {}),
    ...sessionOptions(url, `-c search_path=${schema}`),
    max: poolSize,
    application_name: 'agent-meetings',
    connectionTimeoutMillis: 10_000,
  });
  // An idle client that loses its server (restart, failover) emits 'error'; without a listener the
  // process would crash. The pool drops that client and opens a new one on the next query.
  pool.on('error', () => {});
  // The pool listens only on idle clients. A client checked out between two statements (a
  // transaction waiting on our code) that loses its server (57P01 on restart) emits 'error' with no
  // listener, which would kill the process; with this one, its next query fails instead, the
  // transaction rolls back, and the pool discards the broken client on release.
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return {
    kind: 'server',
    db,
    schema,
    bossOptions: () => ({
      // pg-boss's own statements (fetching and completing jobs, heartbeats, failures, maintenance)
      // commit without waiting for the WAL flush (~1.6 ms per commit on the bench machine, on every
      // job's pickup). A PostgreSQL crash can lose the last few hundred ms of them, which only makes
      // jobs run again: handlers are at-least-once safe anyway, and a job completes only after its
      // reply committed. Everything that records an outcome (enqueue, reply, the last attempt's job
      // completion with it) runs on our pool and commits synchronously; WAL is sequential, so such a
      // commit also makes every earlier one durable.
      ...sessionOptions(url, '-c synchronous_commit=off'),
      // Handed to pg-boss's pg.Pool as is.
      ...(preparedStatements ? { Client: BossPreparingClient } : {}),
      schema: bossSchemaFor(schema),
      max: Math.max(2, Math.ceil(poolSize / 2)),
      useListenNotify: true,
    }),
    ping: async () => {
      await sql`SELECT 1`.execute(db);
    },
    listen: (channel, onPayload, onState) =>
      listenOnServer(url, schema, notifyChannel(schema, channel), onPayload, onState),
    close: async () => {
      await db.destroy();
    },
  };
}

/** A dedicated LISTEN connection that comes back after the server restarts. */
async function listenOnServer(
  url: string,
  schema: string,
  channel: string,
  onPayload: (payload: string) => void,
  onState: (listening: boolean) => void = () => {},
): Promise<() => Promise<void>> {
  let client: pg.Client | undefined;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;
  const connect = async (): Promise<void> => {
    const c = new pg.Client(sessionOptions(url, `-c search_path=${schema}`));
    c.on('notification', (n) => {
      if (n.channel === channel) onPayload(n.payload ?? '');
    });
    c.on('error', () => {
      reconnect();
    });
    c.on('end', () => {
      reconnect();
    });
    await c.connect();
    await c.query(`LISTEN ${quoteChannel(channel)}`);
    client = c;
    onState(true);
  };
  const reconnect = () => {
    if (stopped || retryTimer) return;
    onState(false);
    const old = client;
    client = undefined;
    old?.removeAllListeners();
    old?.end().catch(() => {});
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      connect().catch(() => reconnect());
    }, 1000);
    retryTimer.unref();
  };
  await connect();
  return async () => {
    stopped = true;
    if (retryTimer) clearTimeout(retryTimer);
    const c = client;
    client = undefined;
    c?.removeAllListeners();
    await c?.end().catch(() => {});
  };
}

function quoteChannel(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`invalid channel name: ${name}`);
  return `"${name}"`;
}

const lockLost = (dataDir: string) =>
  new DataDirLockedError(`the lock on ${dataDir} is no longer this process's`);

/**
 * `pglite` whose query, exec and transaction first ask `check` whether the data directory's lock is
 * still ours. Every database call of this process starts through it (ours and pg-boss's), so one
 * made right after a pause, before the heartbeat's timer runs, finds out first (onLost then ends the
 * process); if it returns, the call is refused. Our own statements inside a transaction, and its
 * commit, are checked by the dialect (SerializedPGliteDialect's beforeQuery). What cannot be
 * checked: a call that passed its check before the pause and still waits for PGlite's turn, a
 * pg-boss statement inside its own transaction, and a call already inside PGlite.
 */
function guardedPGlite(pglite: PGlite, check: () => boolean, dataDir: string): PGlite {
  const guarded = new Set<PropertyKey>(['query', 'exec', 'transaction']);
  return new Proxy(pglite, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (!guarded.has(prop)) return value.bind(target);
      return (...args: unknown[]) =>
        check() ? value.apply(target, args) : Promise.reject(lockLost(dataDir));
    },
  });
}

function exitOnDataDirLost(message: string): void {
  process.stderr.write(`agent-meetings: ${message}\n`);
  process.exit(1);
}

async function openEmbedded(
  dataDir: string | null,
  schema: string,
  seed: Blob | undefined,
  options: Pick<DatabaseOptions, 'onDataDirLost' | 'lockHeartbeatMs'> = {},
): Promise<Database> {
  const onLost = options.onDataDirLost ?? exitOnDataDirLost;
  const lock = dataDir
    ? lockDataDir(dataDir, options.lockHeartbeatMs, (holder) =>
        onLost(
          `the data directory ${dataDir} was taken over by ${holder} while this process did not ` +
            'touch its lock (paused or stalled for minutes); stopping before another write',
        ),
      )
    : undefined;
  const unlock = () => lock?.();
  let pglite: PGlite;
  try {
    const opened = await PGlite.create({
      ...(dataDir ? { dataDir: `${dataDir}/pgdata` } : {}),
      ...(seed ? { loadDataDir: seed } : {}),
    });
    pglite = lock ? guardedPGlite(opened, lock.check, dataDir ?? '') : opened;
    if (schema !== 'public') {
      // PGlite has one session, so this search_path holds for every query.
      await pglite.exec(
        `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}; SET search_path TO ${quoteIdent(schema)}`,
      );
    }
  } catch (err) {
    unlock();
    throw err;
  }
  const refuseIfLost = () => {
    if (lock && !lock.check()) throw lockLost(dataDir ?? '');
  };
  const db = new Kysely<DB>({ dialect: new SerializedPGliteDialect(pglite, refuseIfLost) });
  return {
    kind: 'embedded',
    db,
    dump: () => pglite.dumpDataDir('none'),
    schema,
    bossOptions: () => ({
      db: fromPglite(pglite),
      backend: 'pglite',
      schema: bossSchemaFor(schema),
      useListenNotify: true,
    }),
    ping: async () => {
      await sql`SELECT 1`.execute(db);
    },
    listen: async (channel, onPayload, onState) => {
      // One process, one session: nothing is ever missed.
      const unlisten = await pglite.listen(notifyChannel(schema, channel), onPayload);
      onState?.(true);
      return async () => {
        if (!pglite.closed) await unlisten();
      };
    },
    close: async () => {
      await db.destroy();
      await pglite.close();
      unlock();
    },
  };
}
