/**
 * The fault suite (`npm run test:faults`, issue 6 items 2 and 3).
 *
 * Starts the real service as separate processes — 1 API (`--role=api`; `--role=all` during the
 * sigkill-all scenario, which kills it while it holds messages claimed by their own insert) and 2
 * workers (`--role=worker`) — on the PostgreSQL server at FAULTS_DATABASE_URL (a fresh schema, dropped at the
 * end), with the Google and OpenAI emulators running in this process, then runs each scenario on its
 * own conversations and checks from the database and the emulators that every customer message was
 * answered exactly once, in order, and every booking is one event, one meeting row and one
 * confirmation. Prints a table, writes it to test/faults/last-results.md, and exits 1 on any lost or
 * duplicated message or meeting (or any other failed check).
 *
 * Environment: FAULTS_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
 * FAULTS_ONLY=<comma-separated scenario keys> to run a subset, FAULTS_PG_CLUSTER="<version> <name>"
 * for the cluster pg_ctlcluster restarts (default: the one under /etc/postgresql),
 * FAULTS_KEEP_LOGS=1 to keep the processes' logs after a passing run, FAULTS_SERVICE_ROOT to test
 * another checkout of the service (with its own node_modules) and FAULTS_SERVICE_LABEL to name it in
 * the results file (default: its git commit).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAllChildren, SERVICE_ROOT } from './cluster.js';
import { Harness, ScenarioContext, SERVICE_SETTINGS, type Tally } from './harness.js';
import { clusterName, dropSchemas, ensurePostgres } from './postgres.js';
import { bookingCrash } from './scenarios/booking-crash.js';
import type { Scenario } from './scenarios/common.js';
import { googleStorm } from './scenarios/google-storm.js';
import { openaiOutage } from './scenarios/openai-outage.js';
import { postgresRestart } from './scenarios/postgres-restart.js';
import { sigkill } from './scenarios/sigkill.js';
import { sigkillAll } from './scenarios/sigkill-all.js';
import { sigterm } from './scenarios/sigterm.js';
import { steady } from './scenarios/steady.js';
import { seconds } from './util.js';

const SCENARIOS: Record<string, Scenario> = {
  steady,
  sigkill,
  'google-storm': googleStorm,
  'openai-outage': openaiOutage,
  'postgres-restart': postgresRestart,
  sigterm,
  'booking-crash': bookingCrash,
  'sigkill-all': sigkillAll,
};

/** The whole run is bounded: past this, everything is torn down and the suite fails. */
const SUITE_DEADLINE_MS = 15 * 60_000;
const RESULTS_FILE = fileURLToPath(new URL('./last-results.md', import.meta.url));

interface Row {
  scenario: string;
  messages: number;
  answered: number;
  duplicates: number;
  lost: number;
  ms: number;
  ok: boolean;
  notes: string[];
  failures: string[];
}

function rowFrom(ctx: ScenarioContext, tally: Tally | undefined, ms: number): Row {
  if (tally) {
    if (tally.notStored > 0) ctx.fail(`${tally.notStored} accepted messages are not in the database`);
    if (tally.lost - tally.notStored > 0) ctx.fail(`${tally.lost - tally.notStored} messages have no reply`);
    if (tally.duplicates > 0) ctx.fail(`${tally.duplicates} extra replies`);
    if (tally.outOfOrder > 0) ctx.fail(`${tally.outOfOrder} replies out of order`);
    if (tally.fallbacks > 0) ctx.fail(`${tally.fallbacks} messages answered with the fallback text`);
    if (tally.mismatched > 0) ctx.fail(`${tally.mismatched} replies do not answer their own message`);
    if (tally.extraStored > 0)
      ctx.note(`${tally.extraStored} customer messages stored twice by a retried POST`);
  }
  const duplicates = (tally?.duplicates ?? 0) + ctx.extraDuplicates;
  const lost = (tally?.lost ?? ctx.sent.length) + ctx.extraLost;
  return {
    scenario: ctx.name,
    messages: tally?.messages ?? ctx.sent.length,
    answered: tally?.answered ?? 0,
    duplicates,
    lost,
    ms,
    ok: ctx.failures.length === 0 && duplicates === 0 && lost === 0,
    notes: ctx.notes,
    failures: ctx.failures,
  };
}

function table(rows: Row[]): string {
  const head = ['scenario', 'messages', 'answered', 'duplicates', 'lost', 'time', 'result'];
  const body = rows.map((r) => [
    r.scenario,
    String(r.messages),
    String(r.answered),
    String(r.duplicates),
    String(r.lost),
    seconds(r.ms),
    r.ok ? 'PASS' : 'FAIL',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 || i === widths.length - 1 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(head), rule, ...body.map(line)].join('\n');
}

function details(rows: Row[]): string {
  return rows
    .map((r) => {
      const lines = [`- **${r.scenario}**: ${r.ok ? 'PASS' : 'FAIL'}`];
      for (const n of r.notes) lines.push(`  - ${n}`);
      for (const f of r.failures) lines.push(`  - FAILED: ${f}`);
      return lines.join('\n');
    })
    .join('\n');
}

/** What was tested, for the results file: FAULTS_SERVICE_LABEL, else the service's git commit. */
function serviceLabel(): string {
  if (process.env.FAULTS_SERVICE_LABEL) return process.env.FAULTS_SERVICE_LABEL;
  try {
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', SERVICE_ROOT, ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    const dirty = git('status', '--porcelain', '--', 'src') !== '';
    return `commit ${git('rev-parse', '--short', 'HEAD')}${dirty ? ' with uncommitted changes in src/' : ''}`;
  } catch {
    return SERVICE_ROOT;
  }
}

async function main(): Promise<number> {
  const databaseUrl = process.env.FAULTS_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const only = process.env.FAULTS_ONLY?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const key of only ?? []) {
    if (!SCENARIOS[key])
      throw new Error(`FAULTS_ONLY: unknown scenario "${key}" (${Object.keys(SCENARIOS).join(', ')})`);
  }
  const chosen = Object.entries(SCENARIOS).filter(([key]) => !only || only.includes(key));
  const schema = `faults_${randomBytes(4).toString('hex')}`;
  const logDir = mkdtempSync(join(tmpdir(), 'agent-meetings-faults-'));
  const suiteStarted = Date.now();
  console.log(
    `fault suite: 1 API + 2 workers on ${databaseUrl.replace(/\/\/[^@]*@/, '//')} schema ${schema}`,
  );
  const label = serviceLabel();
  console.log(`service: ${SERVICE_ROOT} (${label}); process logs: ${logDir}`);

  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    killAllChildren();
    await ensurePostgres(databaseUrl).catch((err: unknown) => console.error(`PostgreSQL: ${String(err)}`));
    await dropSchemas(databaseUrl, [schema, `${schema}_pgboss`]).catch((err: unknown) =>
      console.error(`could not drop schema ${schema}: ${String(err)}`),
    );
  };
  process.on('exit', killAllChildren);
  // A stray rejection must not end the suite before it cleans up: it fails the run instead.
  const stray: string[] = [];
  process.on('unhandledRejection', (err) => {
    stray.push(err instanceof Error ? err.message : String(err));
    console.error('unhandled rejection in the suite:', err);
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping the service processes and dropping the schema`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const watchdog = setTimeout(() => {
    console.error(`fault suite exceeded ${SUITE_DEADLINE_MS / 60_000} minutes: aborting`);
    void cleanup().finally(() => process.exit(1));
  }, SUITE_DEADLINE_MS);

  const rows: Row[] = [];
  let harness: Harness | undefined;
  try {
    await ensurePostgres(databaseUrl);
    harness = await Harness.start({ databaseUrl, schema, logDir, workers: 2 });
    const h = harness;
    await h.cluster.startAll();
    console.log(
      `started ${h.cluster.api?.name} and ${h.cluster.workers.length} workers in ${seconds(Date.now() - suiteStarted)}`,
    );

    for (const [key, scenario] of chosen) {
      h.resetEmulators();
      await h.ensureWorkers();
      const ctx = new ScenarioContext(scenario.name);
      const started = Date.now();
      console.log(`\n▶ ${key}: ${scenario.name}`);
      try {
        await scenario.run(h, ctx);
      } catch (err) {
        ctx.fail(err instanceof Error ? err.message : String(err));
      }
      const ms = Date.now() - started;
      let tally: Tally | undefined;
      try {
        // A scenario that failed early may have left the database restarting.
        await ensurePostgres(databaseUrl);
        tally = await h.tally(ctx);
      } catch (err) {
        ctx.fail(`could not tally: ${err instanceof Error ? err.message : String(err)}`);
      }
      for (const crash of h.cluster.unexpectedExits(ctx.stopped)) ctx.fail(`process died: ${crash}`);
      const row = rowFrom(ctx, tally, ms);
      rows.push(row);
      console.log(
        `  ${row.ok ? 'PASS' : 'FAIL'} in ${seconds(ms)}: ${row.messages} messages, ${row.answered} answered, ` +
          `${row.duplicates} duplicates, ${row.lost} lost`,
      );
      for (const n of row.notes) console.log(`    ${n}`);
      for (const f of row.failures) console.log(`    FAILED: ${f}`);
    }
  } catch (err) {
    rows.push({
      scenario: 'suite set-up',
      messages: 0,
      answered: 0,
      duplicates: 0,
      lost: 0,
      ms: Date.now() - suiteStarted,
      ok: false,
      notes: [],
      failures: [err instanceof Error ? err.message : String(err)],
    });
  } finally {
    await harness?.close();
    await cleanup();
    clearTimeout(watchdog);
  }

  if (stray.length > 0) {
    rows.push({
      scenario: 'suite',
      messages: 0,
      answered: 0,
      duplicates: 0,
      lost: 0,
      ms: 0,
      ok: false,
      notes: [],
      failures: stray.map((m) => `unhandled rejection: ${m}`),
    });
  }
  const total = Date.now() - suiteStarted;
  const passed = rows.length > 0 && rows.every((r) => r.ok);
  const summary = table(rows);
  console.log(`\n${summary}\n\n${details(rows)}\n`);
  console.log(`${passed ? 'PASS' : 'FAIL'}: fault suite in ${seconds(total)}`);

  writeFileSync(
    RESULTS_FILE,
    [
      '# Fault suite: last results',
      '',
      `Run ${new Date().toISOString()} by \`npm run test:faults\` (test/faults/run.ts)` +
        `${only ? ` with FAULTS_ONLY=${only.join(',')}` : ''}` +
        ` on the service at ${label}: 1 API + 2 worker processes ` +
        `(\`--role=api|worker\`; the API as \`--role=all\` in the sigkill-all scenario) on PostgreSQL (cluster ${clusterName()}), Google and OpenAI emulators in the suite's ` +
        `process. WORKER_CONCURRENCY=${SERVICE_SETTINGS.WORKER_CONCURRENCY}, JOB_RETRY_LIMIT=${SERVICE_SETTINGS.JOB_RETRY_LIMIT}, ` +
        `DATABASE_POOL_SIZE=${SERVICE_SETTINGS.DATABASE_POOL_SIZE}, GOOGLE_TIMEOUT_MS=${SERVICE_SETTINGS.GOOGLE_TIMEOUT_MS}.`,
      '',
      summary,
      '',
      details(rows),
      '',
      `${passed ? 'PASS' : 'FAIL'} in ${seconds(total)}.`,
      '',
    ].join('\n'),
  );
  if (passed && !process.env.FAULTS_KEEP_LOGS) rmSync(logDir, { recursive: true, force: true });
  else console.log(`process logs kept in ${logDir}`);
  return passed ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    killAllChildren();
    process.exit(1);
  },
);
