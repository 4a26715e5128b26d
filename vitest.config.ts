import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real servers on port 0; files run in parallel workers.
    pool: 'forks',
    // Unhandled rejections and uncaught exceptions fail the run (vitest default); keep it so.
    dangerouslyIgnoreUnhandledErrors: false,
  },
});
