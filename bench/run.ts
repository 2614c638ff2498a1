import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runApi } from './api.js';
import { runPipeline } from './pipeline.js';
import { startBenchStack } from './setup.js';
import { table } from './stats.js';

/**
 * npm run bench [-- --duration 10 --loads 10,50,200 --concurrency 32 --model-latency 300
 *                  --google-latency 150 --worker-concurrency 100 --owners 5 --workers 2 --json]
 * Embedded database always; a PostgreSQL server too when BENCH_DATABASE_URL is set. With
 * `--workers N` the server pipeline runs one `--role=api` process and N `--role=worker` processes.
 */
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    /** Seconds of warm-up bookings (20/s, owners of their own) before each measured load; 0 = none. */
    warmup: { type: 'string', default: '5' },
    loads: { type: 'string', default: '10,50,200' },
    concurrency: { type: 'string', default: '32' },
    'model-latency': { type: 'string', default: '300' },
    'google-latency': { type: 'string', default: '150' },
    'worker-concurrency': { type: 'string', default: '100' },
    owners: { type: 'string', default: '50' },
    /** Seconds until the owners' access tokens expire (see runPipeline's tokenExpiryS). */
    'token-expiry': { type: 'string', default: '30' },
    /** Server pipeline only: N `--role=worker` processes beside one `--role=api` (0 = one `--role=all`). */
    workers: { type: 'string', default: '0' },
    'api-duration': { type: 'string', default: '5' },
    only: { type: 'string', default: 'pipeline,api' },
    databases: { type: 'string', default: 'embedded,server' },
    /** Writes the service's CPU profiles (node --cpu-prof) to this directory. */
    profile: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const num = (k: keyof typeof values) => {
  const v = Number(values[k]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number`);
  return v;
};
const loads = String(values.loads)
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
const only = new Set(String(values.only).split(','));
const workers = Number(values.workers);
if (!Number.isInteger(workers) || workers < 0) throw new Error('--workers must be 0 or more');
const modelLatencyMs = num('model-latency');
const warmupS = Number(values.warmup);
if (!Number.isFinite(warmupS) || warmupS < 0) throw new Error('--warmup must be 0 or more seconds');
const googleLatencyMs = num('google-latency');

const databases = new Set(String(values.databases).split(','));
const targets: Array<{ name: string; url?: string }> = [];
if (databases.has('embedded')) targets.push({ name: 'embedded' });
if (databases.has('server') && process.env.BENCH_DATABASE_URL) {
  targets.push({ name: 'server', url: process.env.BENCH_DATABASE_URL });
}

const report: { date: string; results: unknown[]; [k: string]: unknown } = {
  date: new Date().toISOString(),
  node: process.version,
  options: { ...values, loads },
  results: [],
};

for (const target of targets) {
  if (only.has('pipeline')) {
    for (const rate of loads) {
      const split = target.url && workers > 0 ? workers : 0;
      const stack = await startBenchStack({
        databaseUrl: target.url,
        modelLatencyMs,
        googleLatencyMs,
        workerConcurrency: num('worker-concurrency'),
        workers: split,
        cpuProfDir: values.profile,
      });
      const database = split ? `${target.name} (api + ${split} workers)` : target.name;
      try {
        const r = await runPipeline(stack, {
          rate,
          durationS: num('duration'),
          owners: num('owners'),
          tokenExpiryS: num('token-expiry'),
          warmupS: warmupS,
          // Every worker process has WORKER_CONCURRENCY slots.
          slots: num('worker-concurrency') * Math.max(1, split),
        });
        (report.results as unknown[]).push({ kind: 'pipeline', database, ...r });
        process.stderr.write(`pipeline ${database} ${rate}/s done\n`);
      } finally {
        await stack.close();
      }
    }
  }
  if (only.has('api')) {
    const stack = await startBenchStack({
      databaseUrl: target.url,
      modelLatencyMs,
      googleLatencyMs,
      workerConcurrency: 1,
      role: 'api',
      cpuProfDir: values.profile,
    });
    try {
      for (const r of await runApi(stack, {
        concurrency: num('concurrency'),
        durationS: num('api-duration'),
      })) {
        (report.results as unknown[]).push({ kind: 'api', database: target.name, ...r });
      }
      process.stderr.write(`api ${target.name} done\n`);
    } finally {
      await stack.close();
    }
  }
}

const results = report.results as Array<Record<string, string | number>>;
const pipeline = results.filter((r) => r.kind === 'pipeline').map(({ kind: _k, stages: _s, ...r }) => r);
const stages = results
  .filter((r) => r.kind === 'pipeline')
  .map((r) => ({
    database: r.database!,
    offered_per_s: r.offered_per_s!,
    ...Object.fromEntries(
      Object.entries(r.stages as unknown as Record<string, { p50: number; p99: number }>).map(([k, v]) => [
        k,
        `${v.p50} / ${v.p99}`,
      ]),
    ),
  }));
const api = results.filter((r) => r.kind === 'api').map(({ kind: _k, ...r }) => r);
const out = [
  `Pipeline (model ${modelLatencyMs} ms, Google ${googleLatencyMs} ms; overhead = end-to-end minus each booking's emulator time)`,
  table(pipeline),
  '',
  'Where the overhead goes (p50 / p99 ms per stage, emulator time excluded)',
  table(stages),
  '',
  'API (service, bare route and load generator each in their own process, same run)',
  table(api),
].join('\n');
process.stdout.write(`${out}\n`);

mkdirSync('bench/results', { recursive: true });
const file = `bench/results/${report.date.slice(0, 10)}.json`;
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
process.stderr.write(`results written to ${file}\n`);
process.exit(0);
