import { defineConfig } from 'vitest/config';

// `npm run test:browser`: end-to-end tests in a real browser (test/**/*.e2e.ts), kept out of
// `npm test` because they need Debian's chromium (scripts/setup-browser.sh) and minutes of CPU.
export default defineConfig({
  test: {
    include: ['test/**/*.e2e.ts'],
    pool: 'forks',
    testTimeout: 600_000,
    hookTimeout: 300_000,
  },
});
