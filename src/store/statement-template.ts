import {
  CompiledQuery,
  type Kysely,
  type QueryExecutorProvider,
  type QueryResult,
  type RawBuilder,
} from 'kysely';

/** Whatever runs a compiled statement: the pool's Kysely, or a transaction. */
type Executor = Pick<Kysely<unknown>, 'executeQuery'>;

/**
 * One statement's SQL, built and compiled by Kysely once, then run with each call's values.
 *
 * Building a statement of CTEs and compiling it (Kysely's query nodes, frozen at each step, then a
 * visitor over them) costs more of the service's CPU than anything else Kysely does on the booking
 * path, and for a fixed statement it yields the same text every time. `build` is called once with
 * placeholders for the named values; the placeholders it passes to `sql` become the statement's
 * parameters, and each call fills them in. Values that are constant for the template (a channel
 * name, a limit fixed per process) stay as they were compiled.
 *
 * `build` must only pass the values on (`${v.name}` in an `sql` template, or a builder's value; not
 * tested, not spread into a row, not a list for `in`, whose length the text would fix): a
 * placeholder cannot be computed with (arithmetic, string concatenation, serialization), and
 * doing so throws when the template is compiled, so a template that compiles runs the SQL `build`
 * would have built. Anything computed from a call's values belongs in the caller, passed in as a
 * value of its own; a statement whose shape depends on a call's values needs one template per shape.
 */
export class StatementTemplate<V extends Record<string, unknown>, R> {
  readonly #sql: string;
  readonly #params: ReadonlyArray<Placeholder | { constant: unknown }>;

  constructor(db: QueryExecutorProvider, build: (values: V) => RawBuilder<R>) {
    const seen = new Set<string>();
    const values = new Proxy({} as V, {
      get: (_target, key) => {
        if (typeof key !== 'string') throw new Error('StatementTemplate: values are named by strings');
        seen.add(key);
        return new Placeholder(key);
      },
    });
    const compiled = build(values).compile(db);
    this.#sql = compiled.sql;
    this.#params = compiled.parameters.map((p) => (p instanceof Placeholder ? p : { constant: p }));
    const used = new Set(
      this.#params.flatMap((p) => (p instanceof Placeholder ? [Placeholder.keyOf(p)] : [])),
    );
    const dropped = [...seen].filter((k) => !used.has(k));
    if (dropped.length > 0)
      throw new Error(`StatementTemplate: ${dropped.join(', ')} read but not passed to the statement`);
  }

  /** The compiled text (for tests and logs). */
  get sql(): string {
    return this.#sql;
  }

  execute(executor: Executor, values: V): Promise<QueryResult<R>> {
    const parameters = this.#params.map((p) =>
      p instanceof Placeholder ? values[Placeholder.keyOf(p)] : p.constant,
    );
    return executor.executeQuery(CompiledQuery.raw(this.#sql, parameters) as CompiledQuery<R>);
  }
}

/**
 * A value's place in a template while it compiles; using it as a value of its own throws. It has no
 * fields to read (a builder given it as a row would find no columns).
 */
class Placeholder {
  readonly #key: string;
  constructor(key: string) {
    this.#key = key;
  }
  static keyOf(p: Placeholder): string {
    return p.#key;
  }
  [Symbol.toPrimitive](): never {
    throw new Error(`StatementTemplate: the value ${this.#key} was computed with while compiling`);
  }
  toJSON(): never {
    throw new Error(`StatementTemplate: the value ${this.#key} was serialized while compiling`);
  }
}
