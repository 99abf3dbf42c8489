#!/usr/bin/env node
// The `bgem3` command. It runs the built CLI (dist/cli/main.js). The launcher is committed so that
// the `bin` link exists from the first `pnpm install` of a clone, before anything is built; in a
// published or packed package dist/ is always there. From a clone, `pnpm -s bgem3 …` at the
// repository root builds @bgem3/core first when needed (examples/ensure-built.mjs).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write(
    'bgem3: @bgem3/core is not built (dist/cli/main.js is missing): run `pnpm -s bgem3 …` at the repository root, which builds it first, or `pnpm build`\n',
  );
  process.exit(1);
}
await import(main.href);
