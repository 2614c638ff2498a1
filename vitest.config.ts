import { defineConfig } from 'vitest/config';

// Integration tests run once on embedded PGlite and, when TEST_DATABASE_URL is set, a second time on a
// real PostgreSQL server (the "server" project). Unit tests (pure code) run once.
//
// Two files at a time (vitest's default on a 2-core machine is one): most files spend their time
// waiting (emulator latencies, claim lapses, retry backoffs, child processes starting), not on the
// CPU. Measured on the 2-core machine: 617 s one at a time, 363 s two at a time, same results.
// Every file has its own database, ports and temporary directories, so two never share state.
const serverUrl = process.env.TEST_DATABASE_URL;

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
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
