// An app that esbuild bundles (as ESM and as CommonJS, so no top-level await): with @bgem3/core
// marked external, and with core bundled in (its worker script then copied next to the bundle,
// or named by BGEM3_WORKER_SCRIPT).
import { M3Encoder } from '@bgem3/core';

async function main(model) {
  const encoder = await M3Encoder.load(model);
  const [r] = await encoder.encode(['What is BGE M3?'], { dense: true });
  console.log(JSON.stringify({ format: 'bundle', dense: Array.from(r.dense) }));
}
main(process.argv[2]).catch((e) => {
  console.error(`${e.code ?? e.name}: ${e.message}`);
  process.exit(1);
});
