#!/usr/bin/env node
// Packs the four publishable packages into npm tarballs that install with plain npm, outside
// this repository: `pnpm pack:all` (or `node scripts/pack.mjs [--out <dir>] [--json]`).
//
// - Builds what is stale first (examples/ensure-built.mjs), so a fresh clone needs no `pnpm build`.
// - Packs with `pnpm pack`, which rewrites `workspace:^` to the real version range (`npm pack`
//   would leave `workspace:^`, which npm cannot install), and adds the repository's LICENSE.
// - Checks every tarball: no `workspace:` left in its package.json, and the files its
//   package.json points at (exports, main, types, bin, the encoder worker) are inside.
//
// Writes <out>/bgem3-<name>-<version>.tgz (default out: ./packed) and prints their paths, one a
// line (with --json: [{ name, version, file }]).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { ensureBuilt } from '../examples/ensure-built.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const PACKAGES = ['core', 'langchain', 'llamaindex', 'pgvector'];

/** The files of a .tgz (ustar, as npm and pnpm write them): path → contents. */
export function readTarball(file) {
  const tar = gunzipSync(readFileSync(file));
  const files = new Map();
  let longName;
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start, len) => header.subarray(start, start + len).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1);
    const prefix = field(345, 155);
    let name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    const body = tar.subarray(off + 512, off + 512 + size);
    if (type === 'x') {
      const path = /\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
      if (path) longName = path[1];
    } else if (type === '0' || type === '') {
      files.set(name, Buffer.from(body));
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** Every file a package.json points at (exports, main, module, types, bin), relative to the package. */
function referencedFiles(pkg) {
  const out = new Set();
  const walk = (v) => {
    if (typeof v === 'string') out.add(v);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(pkg.exports);
  walk(pkg.bin);
  for (const k of ['main', 'module', 'types']) if (pkg[k]) out.add(pkg[k]);
  return [...out].filter((f) => f.startsWith('./') && !f.endsWith('/package.json')).map((f) => f.slice(2));
}

/** Problems with one tarball (empty when it is good). */
export function checkTarball(file, name) {
  const files = readTarball(file);
  const problems = [];
  const raw = files.get('package/package.json')?.toString('utf8');
  if (!raw) return [`${file}: no package/package.json`];
  if (raw.includes('workspace:')) problems.push(`${file}: package.json still has a workspace: range`);
  const pkg = JSON.parse(raw);
  const must = [...referencedFiles(pkg), 'README.md', 'LICENSE'];
  if (name === 'core') must.push('dist/inference/encoder-worker.js', 'dist/cli/main.js');
  for (const f of must) if (!files.has(`package/${f}`)) problems.push(`${file}: ${f} is missing`);
  return problems;
}

/** Builds (if stale), packs and checks the four packages into `out`. Returns [{ name, version, file }]. */
export function packAll(out) {
  if (!ensureBuilt(PACKAGES)) throw new Error('the build failed');
  mkdirSync(out, { recursive: true });
  const packed = [];
  for (const name of PACKAGES) {
    const dir = join(root, 'packages', name);
    const { version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const file = join(out, `bgem3-${name}-${version}.tgz`);
    rmSync(file, { force: true });
    const r = spawnSync('pnpm', ['pack', '--pack-destination', out], { cwd: dir, encoding: 'utf8', shell: process.platform === 'win32' });
    if (r.status !== 0) throw new Error(`pnpm pack in packages/${name} failed (${r.status ?? r.error?.message}):\n${r.stderr}${r.stdout}`);
    const problems = checkTarball(file, name);
    if (problems.length) throw new Error(problems.join('\n'));
    packed.push({ name: `@bgem3/${name}`, version, file });
  }
  return packed;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--out');
  const out = resolve(i >= 0 ? args[i + 1] ?? '' : join(root, 'packed'));
  try {
    const packed = packAll(out);
    if (args.includes('--json')) console.log(JSON.stringify(packed, null, 2));
    else for (const p of packed) console.log(p.file);
  } catch (e) {
    process.stderr.write(`pack: ${e.message}\n`);
    process.exit(1);
  }
}
