#!/usr/bin/env node
// Builds the workspace packages an example imports, but only when needed: when a package has no
// dist/ yet (fresh clone) or one of its sources is newer than its build. The examples import the
// packages as users do, built (dist/), so `pnpm demo` or `pnpm start` in an example folder work
// right after `pnpm install` without a separate `pnpm build`, and cost nothing once built.
//
// Usage: node ensure-built.mjs core [langchain] [llamaindex]
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Newest modification time (ms) of the files under `dir`, or 0. */
function newest(dir) {
  let max = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    max = Math.max(max, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return max;
}

function isStale(name) {
  const pkg = join(root, 'packages', name);
  const built = join(pkg, 'dist', 'index.js');
  if (!existsSync(built)) return true;
  const inputs = Math.max(newest(join(pkg, 'src')), ...['package.json', 'tsup.config.ts'].map((f) => (existsSync(join(pkg, f)) ? statSync(join(pkg, f)).mtimeMs : 0)));
  return inputs > statSync(built).mtimeMs;
}

const wanted = process.argv.slice(2);
// A package's build needs its dependencies built first: `...` selects them too, in order.
const stale = wanted.filter((n) => isStale(n) || (n !== 'core' && isStale('core')));
if (stale.length > 0) {
  const names = stale.map((n) => `@bgem3/${n}`);
  process.stderr.write(`Building ${names.join(', ')} (not built yet, or sources changed)…\n`);
  const args = ['-r', ...names.flatMap((n) => ['--filter', `${n}...`]), 'run', 'build'];
  const r = spawnSync('pnpm', args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], shell: process.platform === 'win32' });
  if (r.status !== 0) {
    process.stderr.write(`The build failed (pnpm ${args.join(' ')}). Run \`pnpm build\` at the repository root to see why.\n`);
    process.exit(r.status ?? 1);
  }
}
