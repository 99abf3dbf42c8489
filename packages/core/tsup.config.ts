import { defineConfig, type Options } from 'tsup';

// @bgem3/core/adapter imports the rest of core through src/adapter/core.ts, whose `../index.js`
// becomes the package's own main entry (a self-reference): both entries then share one copy of
// every class (M3Encoder, M3Error, M3Index) instead of the adapter bundle carrying a second one.
const adapterUsesMainEntry: NonNullable<Options['esbuildPlugins']>[number] = {
  name: 'adapter-uses-main-entry',
  setup(build) {
    build.onResolve({ filter: /^\.\.\/index\.js$/ }, (args) =>
      /[\\/]src[\\/]adapter[\\/]core\.ts$/.test(args.importer) ? { path: '@bgem3/core', external: true } : undefined,
    );
  },
};

// The library ships ESM and CJS with types; the CLI (top-level await) and the worker entry are ESM only.
export default defineConfig([
  {
    entry: { index: 'src/index.ts', 'server/index': 'src/server/index.ts', 'adapter/index': 'src/adapter/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    shims: true,
    splitting: false,
    esbuildPlugins: [adapterUsesMainEntry],
  },
  {
    entry: { 'cli/main': 'src/cli/main.ts', 'inference/encoder-worker': 'src/inference/encoder-worker.ts' },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
    splitting: false,
  },
]);
