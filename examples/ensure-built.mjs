#!/usr/bin/env node
// Builds the workspace packages an example (or the CLI) imports, but only when needed: when a
// package has no complete dist/ yet (fresh clone) or one of its sources is newer than its build.
// The examples and `pnpm -s bgem3` use the packages as users do, built (dist/), so they work right
// after `pnpm install` without a separate `pnpm build`, and cost nothing once built.
//
// Concurrent runs (two examples started at once, a test suite) build once: the build runs under a
// lock directory in node_modules/.cache, and a run that waited for the lock checks again before
// building.
//
// Usage: node ensure-built.mjs [--cli] core [langchain] [llamaindex] [pgvector]
//   --cli   for the `bgem3` launcher: nothing is printed on success (one progress line when
//           stderr is a terminal), a failed build prints one `bgem3: …` line (the CLI's error
//           form) and exits 1.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** What a package's build writes; a dist/ missing any of them is incomplete (never built, or a build in progress). */
const OUTPUTS = {
  core: ['index.js', 'index.cjs', 'index.d.ts', 'cli/main.js', 'inference/encoder-worker.js'],
  langchain: ['index.js', 'index.cjs', 'index.d.ts'],
  llamaindex: ['index.js', 'index.cjs', 'index.d.ts'],
  pgvector: ['index.js', 'index.cjs', 'index.d.ts'],
};

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

/** True when every output of `packages/<name>` exists. */
function complete(name) {
  return (OUTPUTS[name] ?? ['index.js']).every((f) => existsSync(join(root, 'packages', name, 'dist', f)));
}

/** True when `packages/<name>` has no complete build, or a source is newer than the oldest output. */
export function isStale(name) {
  const pkg = join(root, 'packages', name);
  if (!complete(name)) return true;
  const outputs = (OUTPUTS[name] ?? ['index.js']).map((f) => join(pkg, 'dist', f));
  const built = Math.min(...outputs.map((f) => statSync(f).mtimeMs));
  const inputs = Math.max(newest(join(pkg, 'src')), ...['package.json', 'tsup.config.ts'].map((f) => (existsSync(join(pkg, f)) ? statSync(join(pkg, f)).mtimeMs : 0)));
  return inputs > built;
}

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** True when the lock's owner is gone (no such process), or the lock is older than `maxAgeMs`. */
function abandoned(lock, maxAgeMs) {
  let age;
  try {
    age = Date.now() - statSync(lock).mtimeMs;
  } catch {
    return false; // released meanwhile
  }
  if (age > maxAgeMs) return true;
  let pid;
  try {
    pid = Number(readFileSync(join(lock, 'pid'), 'utf8'));
  } catch {
    return age > 5000; // the owner has not written its pid yet
  }
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return e.code === 'ESRCH';
  }
}

/** Takes the build lock (a directory: mkdir is atomic), waiting for another build to finish. Returns the release function. */
function lock() {
  const dir = join(root, 'node_modules', '.cache');
  const lockDir = join(dir, 'bgem3-build.lock');
  mkdirSync(dir, { recursive: true });
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'pid'), String(process.pid));
      return () => rmSync(lockDir, { recursive: true, force: true });
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    if (abandoned(lockDir, 10 * 60_000)) rmSync(lockDir, { recursive: true, force: true });
    else sleep(200);
  }
}

/**
 * Builds the named packages (and what they depend on) if any of them is stale. Returns true when
 * everything is built, false when the build failed (after printing why, in the chosen form).
 */
export function ensureBuilt(wanted, { cli = false } = {}) {
  // A package's build needs its dependencies built first: `...` selects them too, in order.
  const needsBuild = () => wanted.filter((n) => isStale(n) || (n !== 'core' && isStale('core')));
  if (needsBuild().length === 0) return true;
  const release = lock();
  try {
    const stale = needsBuild(); // another process may have built them while we waited
    if (stale.length === 0) return true;
    const names = stale.map((n) => `@bgem3/${n}`);
    // The CLI stays quiet (its stderr is for errors) unless a person is watching the terminal.
    if (!cli) process.stderr.write(`Building ${names.join(', ')} (not built yet, or sources changed)…\n`);
    else if (process.stderr.isTTY) process.stderr.write(`bgem3: building ${names.join(', ')} first (not built yet, or sources changed)…\n`);
    const args = ['-r', ...names.flatMap((n) => ['--filter', `${n}...`]), 'run', 'build'];
    const r = spawnSync('pnpm', args, { cwd: root, stdio: ['ignore', 'ignore', cli ? 'pipe' : 'inherit'], shell: process.platform === 'win32' });
    // A build that exits 0 but left outputs missing (e.g. a `pnpm build` run by hand meanwhile,
    // which cleans dist/ first) is a failure too.
    const incomplete = r.status === 0 ? stale.filter((n) => !complete(n)) : [];
    if (r.status === 0 && incomplete.length === 0) return true;
    const how = incomplete.length
      ? `${incomplete.map((n) => `packages/${n}/dist`).join(', ')} incomplete after the build: was another build running?`
      : r.error ? `pnpm could not be started: ${r.error.message}` : `pnpm ${args.join(' ')} exited with ${r.status ?? r.signal}`;
    if (cli) process.stderr.write(`bgem3: building ${names.join(', ')} failed (${how}); run \`pnpm build\` at the repository root to see why\n`);
    else process.stderr.write(`The build failed (${how}). Run \`pnpm build\` at the repository root to see why.\n`);
    return false;
  } finally {
    release();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const cli = args.includes('--cli');
  const names = args.filter((a) => !a.startsWith('--'));
  for (const n of names) {
    if (!(n in OUTPUTS)) {
      process.stderr.write(`ensure-built: unknown package "${n}" (one of ${Object.keys(OUTPUTS).join(', ')})\n`);
      process.exit(2);
    }
  }
  if (!ensureBuilt(names, { cli })) process.exit(1);
}
