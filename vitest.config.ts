import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// Integration tests run once on embedded PGlite and, when TEST_DATABASE_URL is set, a second time on a
// real PostgreSQL server (the "server" project). Unit tests (pure code) run once.
//
// At least two files at a time (vitest's default, the cores less one, is one on 2 cores): most files
// spend their time waiting (emulator latencies, claim lapses, retry backoffs, child processes), not
// on the CPU (README "Tests"). Every file has its own database, ports and temporary directories.
const serverUrl = process.env.TEST_DATABASE_URL;

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: Math.max(2, availableParallelism() - 1),
    globalSetup: ['test/helpers/global-setup.ts'],
    projects: [
      {
        extends: true as const,
        test: { name: 'embedded', include: ['test/**/*.test.ts'], env: { TEST_DB: 'embedded' } },
      },
      ...(serverUrl
        ? [
            {
              extends: true as const,
              test: {
                name: 'server',
                include: ['test/**/*.it.test.ts'],
                env: { TEST_DB: 'server' },
              },
            },
          ]
        : []),
    ],
  },
});
