import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** The repository root: where `node --import tsx src/main.ts` runs. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A TCP port that was free a moment ago (the kernel picked it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Milliseconds from spawn to exit. */
  afterMs: number;
}

/** The real service as a child process, with everything it printed. */
export class ServiceProcess {
  readonly child: ChildProcess;
  readonly startedAt = Date.now();
  readonly exited: Promise<Exit>;
  stdout = '';
  stderr = '';
  #exit: Exit | undefined;

  constructor(
    readonly port: number,
    env: Record<string, string>,
    args: string[] = [],
    nodeArgs: string[] = [],
  ) {
    this.child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'src/main.ts', ...args], {
      cwd: REPO_ROOT,
      // Only what we pass: none of the test runner's variables (DATABASE_URL, NODE_OPTIONS, ...).
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
    });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
    });
    // 'close' (not 'exit'): the pipes are drained, so stdout/stderr are complete.
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.#exit = { code, signal, afterMs: Date.now() - this.startedAt };
        resolve(this.#exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }
  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get running(): boolean {
    return this.#exit === undefined;
  }
  get output(): string {
    return `${this.stdout}\n${this.stderr}`;
  }

  fetch(path: string, init?: RequestInit): Promise<Response> {
    return fetch(`${this.baseUrl}${path}`, init);
  }

  /** Resolves once the process printed `text`; rejects (with the output) if it exits first. */
  async waitForOutput(text: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.output.includes(text)) {
      if (!this.running) throw new Error(`service exited before printing "${text}"\n${this.output}`);
      if (Date.now() > deadline)
        throw new Error(`service did not print "${text}" in ${timeoutMs} ms\n${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Resolves once GET /healthz answers 200; rejects (with the output) if the process exits first. */
  async waitForHealthy(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(
          `service exited before it was healthy: ${JSON.stringify(this.#exit)}\n${this.output}`,
        );
      }
      try {
        const res = await fetch(`${this.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`service not healthy after ${timeoutMs} ms\n${this.output}`);
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`, and the test fails on that). */
  async stop(signal: NodeJS.Signals, timeoutMs = 15_000): Promise<Exit> {
    if (!this.running) return this.#exit!;
    this.child.kill(signal);
    return this.waitForExit(timeoutMs);
  }

  async waitForExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`service did not exit within ${timeoutMs} ms\n${this.output}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** For afterAll: never leave a process behind. */
  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

/** Starts `node --import tsx src/main.ts` on a loopback port with only the given environment. */
export function startService(
  env: Record<string, string>,
  port = 0,
  args: string[] = [],
  nodeArgs: string[] = [],
): ServiceProcess {
  return new ServiceProcess(port, { HOST: '127.0.0.1', PORT: String(port), ...env }, args, nodeArgs);
}
