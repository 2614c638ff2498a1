import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { freePort, REPO_ROOT } from '../helpers/process.js';
import { sleep } from './util.js';

export type ServiceRole = 'api' | 'worker' | 'all';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ServiceChild>();

/**
 * Where `src/main.ts` is run from: this repository, or FAULTS_SERVICE_ROOT (another checkout of the
 * service, e.g. a release to compare with; it needs its own node_modules).
 */
export const SERVICE_ROOT = process.env.FAULTS_SERVICE_ROOT || REPO_ROOT;

/** Last resort (the suite crashed or was interrupted): no child outlives the suite. */
export function killAllChildren(): void {
  for (const child of live) child.kill();
}

/**
 * One `node --import tsx src/main.ts --role=<role>` process. Its whole output goes to a log file;
 * the last lines are kept in memory for error messages. Ready = it logged "agent-meetings listening"
 * (printed after the database is migrated, the queue started and, for a worker, its handlers registered).
 */
export class ServiceChild {
  readonly child: ChildProcess;
  readonly exited: Promise<ChildExit>;
  readonly logPath: string;
  #exit: ChildExit | undefined;
  #ready = false;
  #tail: string[] = [];
  #partial = '';
  readonly #log: WriteStream;

  constructor(
    readonly name: string,
    readonly role: ServiceRole,
    readonly port: number,
    env: Record<string, string>,
    logDir: string,
  ) {
    this.logPath = join(logDir, `${name}.log`);
    this.#log = createWriteStream(this.logPath, { flags: 'a' });
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', `--role=${role}`], {
      cwd: SERVICE_ROOT,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/tmp',
        ...env,
        HOST: '127.0.0.1',
        PORT: String(port),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this);
    const onData = (chunk: string) => {
      this.#log.write(chunk);
      const text = this.#partial + chunk;
      const lines = text.split('\n');
      this.#partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.includes('agent-meetings listening on')) this.#ready = true;
        this.#tail.push(line);
      }
      if (this.#tail.length > 40) this.#tail.splice(0, this.#tail.length - 40);
    };
    this.child.stdout!.setEncoding('utf8').on('data', onData);
    this.child.stderr!.setEncoding('utf8').on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.#exit = { code, signal };
        live.delete(this);
        this.#log.end(`\n[faults] process exited: code=${code} signal=${signal}\n`);
        resolve(this.#exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }
  get running(): boolean {
    return this.#exit === undefined;
  }
  /** Running and past its start-up. */
  get ready(): boolean {
    return this.#ready && this.running;
  }
  get exit(): ChildExit | undefined {
    return this.#exit;
  }
  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  /** The last lines it printed (for error messages). */
  tail(lines = 15): string {
    return this.#tail.slice(-lines).join('\n');
  }

  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#ready) {
      if (!this.running) {
        throw new Error(
          `${this.name} exited before it was ready (${JSON.stringify(this.#exit)}); log ${this.logPath}:\n${this.tail()}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(`${this.name} not ready after ${timeoutMs} ms; log ${this.logPath}:\n${this.tail()}`);
      }
      await sleep(50);
    }
  }

  /** Sends `signal` and waits for the exit; SIGKILLs it (and throws) when it outlives `timeoutMs`. */
  async stop(signal: NodeJS.Signals, timeoutMs = 40_000): Promise<ChildExit> {
    if (!this.running) return this.#exit!;
    this.child.kill(signal);
    return this.waitForExit(timeoutMs, `${signal}`);
  }

  async waitForExit(timeoutMs: number, after = 'the signal'): Promise<ChildExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.kill();
        reject(
          new Error(
            `${this.name} did not exit within ${timeoutMs} ms of ${after} (killed); log ${this.logPath}:\n${this.tail()}`,
          ),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

/** One API process and a fixed number of worker slots, each restartable. */
export class Cluster {
  api: ServiceChild | undefined;
  readonly workers: Array<ServiceChild | undefined>;
  #generation = new Map<string, number>();

  constructor(
    private readonly env: Record<string, string>,
    private readonly logDir: string,
    workerCount: number,
  ) {
    this.workers = Array.from({ length: workerCount }, () => undefined);
  }

  #name(base: string): string {
    const n = (this.#generation.get(base) ?? 0) + 1;
    this.#generation.set(base, n);
    return n === 1 ? base : `${base}.${n}`;
  }

  /**
   * Starts the process the suite sends its HTTP calls to: `--role=api`, or `--role=all` (it then also
   * works messages, and claims the ones POSTed to it in their own insert when it has a free slot).
   */
  async startApi(role: 'api' | 'all' = 'api'): Promise<ServiceChild> {
    const port = await freePort();
    const api = new ServiceChild(
      this.#name(role === 'api' ? 'api' : 'api-all'),
      role,
      port,
      this.env,
      this.logDir,
    );
    this.api = api;
    await api.waitReady();
    return api;
  }

  /** Starts (or restarts) worker slot `slot`; resolves when it is ready. */
  async startWorker(slot: number): Promise<ServiceChild> {
    const current = this.workers[slot];
    if (current?.running) throw new Error(`worker slot ${slot} is still running (${current.name})`);
    const worker = new ServiceChild(this.#name(`worker-${slot + 1}`), 'worker', 0, this.env, this.logDir);
    this.workers[slot] = worker;
    await worker.waitReady();
    return worker;
  }

  async startAll(): Promise<void> {
    await Promise.all([this.startApi(), ...this.workers.map((_, i) => this.startWorker(i))]);
  }

  /** Restarts every slot whose process is gone (after crashes). */
  async restartDeadWorkers(): Promise<number> {
    const dead = this.workers.map((w, i) => (w?.running ? -1 : i)).filter((i) => i >= 0);
    await Promise.all(dead.map((i) => this.startWorker(i)));
    return dead.length;
  }

  /** Processes that died although nobody stopped them (a crash is a finding). */
  unexpectedExits(expected: Set<ServiceChild>): string[] {
    return [this.api, ...this.workers]
      .filter((c): c is ServiceChild => c !== undefined && !c.running && !expected.has(c))
      .map((c) => `${c.name} exited ${JSON.stringify(c.exit)} (log ${c.logPath})`);
  }

  async stopAll(): Promise<void> {
    const all = [this.api, ...this.workers].filter((c): c is ServiceChild => c?.running === true);
    await Promise.all(all.map((c) => c.stop('SIGTERM', 30_000).catch(() => c.kill())));
  }
}
