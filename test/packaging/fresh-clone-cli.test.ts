/**
 * A fresh clone, right after `pnpm install`: the `bgem3` bin links are created without warnings
 * (the bin is the committed launcher packages/core/bin/bgem3.js, not a file of dist/), and
 * `pnpm -s bgem3 …` at the root builds @bgem3/core on demand, quietly and once even when two
 * commands start together, then runs the CLI; errors stay one `bgem3: …` line.
 *
 * The clone is a copy of the repository's tracked files (no node_modules, no dist) in a
 * temporary directory, installed with `pnpm install --frozen-lockfile --offline` from the pnpm
 * store the workspace was installed from (hard links: no download).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, input = ''): Promise<Run> {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^(npm_|PNPM_|pnpm_|BGEM3_|HF_)/.test(k)) delete env[k];
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd, env, timeout: 300_000, maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.end(input);
  });
}

/** What a clone has that an installed, built working tree adds (used when there is no git). */
const UNTRACKED = new Set(['node_modules', 'dist', '.git', 'packed', '.models', '.bench-models']);

/** The repository's files as a clone has them (git's tracked files, as in the working tree), copied to `to`. */
function copyTracked(to: string): void {
  let files: string[];
  try {
    files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 }).split('\0').filter(Boolean);
  } catch {
    // Not a git checkout (e.g. an exported tarball): everything but what install and build add.
    cpSync(ROOT, to, { recursive: true, filter: (src) => !UNTRACKED.has(basename(src)) && !basename(src).endsWith('.tsbuildinfo') });
    return;
  }
  for (const f of files) {
    const from = join(ROOT, f);
    if (!existsSync(from)) continue; // deleted in the working tree
    mkdirSync(dirname(join(to, f)), { recursive: true });
    cpSync(from, join(to, f));
  }
}

describe('a fresh clone: the CLI right after pnpm install', () => {
  let clone: string;
  let install: Run;
  const main = () => join(clone, 'packages/core/dist/cli/main.js');

  before(async () => {
    clone = mkdtempSync(join(tmpdir(), 'bgem3-clone-'));
    copyTracked(clone);
    install = await run('pnpm', ['install', '--frozen-lockfile', '--offline'], clone);
  });
  after(() => rmSync(clone, { recursive: true, force: true }));

  test('pnpm install: no "Failed to create bin" warnings, the bgem3 links exist, nothing is built', () => {
    assert.equal(install.code, 0, `pnpm install failed:\n${install.stdout}\n${install.stderr}`);
    const out = install.stdout + install.stderr;
    assert.doesNotMatch(out, /Failed to create bin/);
    assert.doesNotMatch(out, /WARN.*bgem3/);
    assert.ok(existsSync(join(clone, 'node_modules/.bin/bgem3')), 'the root has the bgem3 link');
    assert.ok(!existsSync(join(clone, 'packages/core/dist')), 'dist is not committed');
  });

  test('the bin before any build: one bgem3: line saying how to build, exit 1', async () => {
    const r = await run(join(clone, 'node_modules/.bin/bgem3'), ['--help'], clone);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^bgem3: @bgem3\/core is not built \(dist\/cli\/main\.js is missing\): run `pnpm -s bgem3 …` at the repository root/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  test('pnpm -s bgem3 builds core quietly on first use, then runs; errors are one bgem3: line', async () => {
    const help = await run('pnpm', ['-s', 'bgem3', '--help'], clone);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: bgem3/);
    assert.equal(help.stderr, '', 'nothing but the CLI output');
    assert.ok(existsSync(main()));
    const bad = await run('pnpm', ['-s', 'bgem3', 'encode', '--model', join(clone, 'no-such-model')], clone);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^bgem3: model not found: .*no-such-model/);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    const enc = await run('pnpm', ['-s', 'bgem3', 'encode', '--model', 'test/fixtures/tiny-m3-A', '--outputs', 'dense'], clone, '{"text":"What is BGE M3?"}\n');
    assert.equal(enc.code, 0, enc.stderr);
    assert.equal(JSON.parse(enc.stdout).dense.length, 32);
  });

  test('a changed source rebuilds before the next command; two commands at once both succeed', async () => {
    const before = statSync(main()).mtimeMs;
    const src = join(clone, 'packages/core/src/index.ts');
    const now = new Date();
    utimesSync(src, now, now);
    const [a, b] = await Promise.all([run('pnpm', ['-s', 'bgem3', '--help'], clone), run('pnpm', ['-s', 'bgem3', '--help'], clone)]);
    for (const r of [a, b]) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage: bgem3/);
      assert.equal(r.stderr, '');
    }
    assert.ok(statSync(main()).mtimeMs > before, 'dist was rebuilt');
    assert.ok(!existsSync(join(clone, 'node_modules/.cache/bgem3-build.lock')), 'the build lock was released');
  });
});
