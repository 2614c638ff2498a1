/**
 * The container image's recipe (Dockerfile), read rather than built (no Docker engine on the
 * development machines): everything the service reads at run time is copied into it, and the
 * embedded database's default directory is the service user's to write.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/process.js';

const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
/** The sources of every COPY line (the last word is the destination). */
const copied = dockerfile
  .split('\n')
  .filter((line) => /^COPY\s/.test(line))
  .flatMap((line) => line.trim().split(/\s+/).slice(1, -1));

describe('Dockerfile', () => {
  it('copies what the service reads at run time: the code, the pages, the TypeScript settings', () => {
    for (const path of ['package.json', 'package-lock.json', 'src', 'public', 'tsconfig.json'])
      expect(copied, path).toContain(path);
    // The pages plugin reads every file of public/ at start-up, for every role.
    expect(readdirSync(join(REPO_ROOT, 'public')).length).toBeGreaterThan(0);
  });

  it('runs as an unprivileged user who owns the default DATA_DIR', () => {
    const user = dockerfile.match(/^USER\s+(\S+)/m)?.[1];
    expect(user).toBe('node');
    const before = dockerfile.slice(0, dockerfile.search(/^USER\s/m));
    expect(before).toMatch(/mkdir -p \/app\/data && chown node:node \/app\/data/);
    expect(dockerfile).toMatch(/^WORKDIR \/app$/m);
  });
});

describe('compose.yaml', () => {
  it('gives each service the time its shutdown takes before Docker kills it', () => {
    const compose = readFileSync(join(REPO_ROOT, 'compose.yaml'), 'utf8');
    // main.ts forces the exit 30 s after the signal.
    expect(compose.match(/^ {4}stop_grace_period: 35s$/gm)).toHaveLength(2);
    expect(compose).toMatch(/^ {2}api:$/m);
    expect(compose).toMatch(/^ {2}worker:$/m);
  });

  it('does not probe /healthz on a worker, which opens no HTTP port', () => {
    const compose = readFileSync(join(REPO_ROOT, 'compose.yaml'), 'utf8');
    const worker = compose.slice(compose.search(/^ {2}worker:$/m)).split(/\n(?=\S| {2}\S)/)[0]!;
    expect(worker).toContain('--role=worker');
    expect(worker).toMatch(/healthcheck:\n\s+disable: true/);
  });
});
