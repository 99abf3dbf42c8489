import { defineConfig } from 'tsup';

// The library ships ESM and CJS with types; the CLI (top-level await) and the worker entry are ESM only.
export default defineConfig([
  {
    entry: { index: 'src/index.ts', 'server/index': 'src/server/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    shims: true,
    splitting: false,
  },
  {
    entry: { 'cli/main': 'src/cli/main.ts', 'inference/encoder-worker': 'src/inference/encoder-worker.ts' },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
    splitting: false,
  },
]);
