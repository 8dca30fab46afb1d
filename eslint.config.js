import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'grammar/*.gen.js', 'test/golden/**/*.py', '.gl/', 'out/', '.venv-torch/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { console: 'readonly', process: 'readonly', globalThis: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The runtime runs what `kiln compile` wrote, in browsers too: nothing of the compiler, and
    // Node built-ins only in runtime/node/ (test/runtime/bundle.test.ts checks the bundle).
    files: ['runtime/**/*.ts'],
    ignores: ['runtime/node/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...['fs', 'path', 'os', 'crypto', 'url', 'module', 'child_process', 'worker_threads'].map((name) => ({ name, message: 'Node built-ins belong in runtime/node/.' })),
            ...['webgpu', 'nearley', 'moo', 'ts-morph', 'tsx'].map((name) => ({ name, message: 'runtime/ stays browser-safe: this package is Node-only or compiler-only.' })),
          ],
          patterns: [
            { group: ['**/compiler/**', '**/grammar/**'], message: 'runtime/ must not import the compiler (it ships to browsers without it).' },
            { group: ['node:*'], message: 'Node built-ins belong in runtime/node/.' },
            { group: ['../node/**', './node/**'], message: 'the browser runtime must not reach into runtime/node/.' },
          ],
        },
      ],
    },
  },
);
