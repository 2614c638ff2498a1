import type { PGlite, Transaction } from '@electric-sql/pglite';
import {
  type CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  type QueryResult,
} from 'kysely';

/**
 * Kysely over an in-process PGlite.
 *
 * Why not Kysely's built-in PGliteDialect: it hands out ONE shared connection object whose
 * "current transaction" is a field, so two concurrent `db.transaction()` calls overwrite each other's
 * commit callbacks and plain queries issued meanwhile run inside someone else's transaction. PGlite
 * has a single session anyway, so here a connection is an exclusive lease: each acquire waits for the
 * previous release. Transactions use `pglite.transaction()`, which also makes PGlite's other users
 * (pg-boss through `fromPglite`) wait until commit.
 */
export class SerializedPGliteDialect implements Dialect {
  /**
   * `beforeQuery` runs before every statement and every commit, inside transactions too (where
   * statements go to PGlite's transaction object, not to `pglite`); it throws to refuse them
   * (database.ts: the data directory's lock is lost). A refused commit rolls back.
   */
  constructor(
    private readonly pglite: PGlite,
    private readonly beforeQuery: () => void = () => {},
  ) {}
  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }
  createDriver(): Driver {
    return new SerializedPGliteDriver(this.pglite, this.beforeQuery);
  }
  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }
}

class SerializedPGliteDriver implements Driver {
  #tail: Promise<void> = Promise.resolve();
  constructor(
    private readonly pglite: PGlite,
    private readonly beforeQuery: () => void,
  ) {}

  async init(): Promise<void> {
    await this.pglite.waitReady;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    let release!: () => void;
    const previous = this.#tail;
    this.#tail = new Promise<void>((r) => {
      release = r;
    });
    await previous;
    return new PGliteLease(this.pglite, release, this.beforeQuery);
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as PGliteLease).begin();
  }
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as PGliteLease).end(true);
  }
  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as PGliteLease).end(false);
  }
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    (connection as PGliteLease).release();
  }
  async destroy(): Promise<void> {
    // The PGlite instance is owned (and closed) by whoever created it.
  }
}

class PGliteLease implements DatabaseConnection {
  #tx: Transaction | undefined;
  #finish: ((commit: boolean) => void) | undefined;
  #done: Promise<unknown> | undefined;

  constructor(
    private readonly pglite: PGlite,
    readonly release: () => void,
    private readonly beforeQuery: () => void,
  ) {}

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    this.beforeQuery();
    const target = this.#tx ?? this.pglite;
    // Without parameters use the simple protocol, which (like node-postgres) accepts several
    // statements at once: migrations are multi-statement scripts.
    const result =
      compiled.parameters.length === 0
        ? ((await target.exec(compiled.sql)).at(-1) ?? { rows: [], affectedRows: 0 })
        : await target.query<R>(compiled.sql, compiled.parameters as unknown[], { rowMode: 'object' });
    return {
      rows: result.rows as R[],
      numAffectedRows: result.affectedRows === undefined ? undefined : BigInt(result.affectedRows),
    };
  }

  // biome-ignore lint/correctness/useYield: streaming is not supported on PGlite
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming is not supported on PGlite');
  }

  begin(): Promise<void> {
    return new Promise<void>((started, failedToStart) => {
      this.#done = this.pglite
        .transaction(async (tx) => {
          this.#tx = tx;
          started();
          const commit = await new Promise<boolean>((r) => {
            this.#finish = r;
          });
          if (!commit) await tx.rollback();
        })
        .catch((err: unknown) => {
          failedToStart(err);
          throw err;
        });
    });
  }

  async end(commit: boolean): Promise<void> {
    let refused: unknown;
    let ok = commit;
    if (commit) {
      try {
        this.beforeQuery();
      } catch (err) {
        refused = err;
        ok = false;
      }
    }
    const done = this.#done;
    this.#finish?.(ok);
    this.#tx = undefined;
    this.#finish = undefined;
    this.#done = undefined;
    if (ok) await done;
    else await done?.catch(() => {});
    if (refused !== undefined) throw refused;
  }
}
