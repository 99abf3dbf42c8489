/**
 * The packaging decision: every LlamaIndex import of this package comes from `llamaindex` (its
 * peer dependency), so the user's `llamaindex` and this package share one `@llamaindex/core`:
 * one `Settings`, and `instanceof` holds across both.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import * as coreEmbeddings from '@llamaindex/core/embeddings';
import * as coreRetriever from '@llamaindex/core/retriever';
import * as coreGlobal from '@llamaindex/core/global';
import * as li from 'llamaindex';
import { BGEM3ColbertReranker, BGEM3Embedding, BGEM3EnsembleRetriever, BGEM3SparseRetriever } from '../src/index.ts';
import { FIXTURE, RecordingLLM } from './helpers.ts';

const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));

/**
 * The directory (realpath) Node's resolution finds for package `name` when required from `fromDir`:
 * the first `node_modules/<name>` on its lookup path (works for npm's and pnpm's layouts, and
 * for packages whose `exports` hide `package.json`).
 */
function resolvePackageDir(fromDir: string, name: string): string {
  const req = createRequire(join(fromDir, 'package.json'));
  for (const base of req.resolve.paths(name) ?? []) {
    const dir = join(base, name);
    if (existsSync(join(dir, 'package.json'))) return realpathSync(dir);
  }
  throw new Error(`${name} is not resolvable from ${fromDir}`);
}

describe('packaging: one copy of @llamaindex/core', () => {
  test('package.json: llamaindex is a peer range satisfied by the installed version; no @llamaindex runtime dependency', () => {
    assert.equal(pkg.peerDependencies?.llamaindex, '>=0.12.1 <0.13');
    for (const field of ['dependencies', 'peerDependencies']) {
      for (const name of Object.keys(pkg[field] ?? {})) assert.ok(!name.startsWith('@llamaindex/'), `${field} must not pin ${name}: a second copy of core`);
    }
    const liRoot = resolvePackageDir(pkgDir, 'llamaindex');
    const version = JSON.parse(readFileSync(join(liRoot, 'package.json'), 'utf8')).version as string;
    const [major, minor, patch] = version.split('.').map(Number);
    assert.ok(major === 0 && minor === 12 && patch! >= 1, `installed llamaindex ${version} is within the peer range`);
  });

  test('the sources import LlamaIndex only through `llamaindex`', () => {
    const srcDir = join(pkgDir, 'src');
    for (const file of readdirSync(srcDir).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(join(srcDir, file), 'utf8');
      const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      const specifiers = [...code.matchAll(/from '([^']+)'/g)].map((m) => m[1]!);
      assert.ok(specifiers.length > 0);
      for (const s of specifiers) assert.ok(s === 'llamaindex' || s === '@bgem3/core' || s === '@bgem3/core/adapter' || s.startsWith('node:') || s.startsWith('./'), `${file} imports ${s}`);
    }
  });

  test('the built bundle keeps llamaindex and @bgem3/core external', () => {
    const dist = join(pkgDir, 'dist');
    assert.ok(existsSync(join(dist, 'index.js')), 'run `pnpm build` in packages/llamaindex first');
    const esm = readFileSync(join(dist, 'index.js'), 'utf8');
    const cjs = readFileSync(join(dist, 'index.cjs'), 'utf8');
    assert.match(esm, /from ["']llamaindex["']/);
    assert.match(cjs, /require\(["']llamaindex["']\)/);
    assert.ok(!/@llamaindex\/core/.test(esm) && !/@llamaindex\/core/.test(cjs));
    assert.ok(!esm.includes('class BaseEmbedding'), 'LlamaIndex itself is not bundled');
  });

  test('the built ESM and CJS entry points work with the matching llamaindex build', async () => {
    const dist = join(pkgDir, 'dist');
    assert.ok(existsSync(join(dist, 'index.cjs')), 'run `pnpm build` in packages/llamaindex first');
    const esm = (await import(pathToFileURL(join(dist, 'index.js')).href)) as typeof import('../src/index.ts');
    const e = new esm.BGEM3Embedding({ model: FIXTURE });
    assert.ok(e instanceof li.BaseEmbedding);
    assert.equal((await e.getTextEmbedding('hello')).length, 32);
    // CommonJS in its own process (a CJS app loads llamaindex's CJS build, a separate module graph).
    const script = `
      const { BGEM3Embedding, BGEM3SparseRetriever } = require(${JSON.stringify(join(dist, 'index.cjs'))});
      const li = require('llamaindex');
      const e = new BGEM3Embedding({ model: ${JSON.stringify(FIXTURE)} });
      if (!(e instanceof li.BaseEmbedding)) throw new Error('not a BaseEmbedding');
      if (!(new BGEM3SparseRetriever({ model: ${JSON.stringify(FIXTURE)} }) instanceof li.BaseRetriever)) throw new Error('not a BaseRetriever');
      e.getTextEmbedding('hello').then((v) => console.log('dim', v.length));`;
    const out = execFileSync(process.execPath, ['-e', script], { cwd: pkgDir, encoding: 'utf8' });
    assert.match(out, /dim 32/);
  });

  test('one @llamaindex/core realpath from this package, llamaindex and its own dependencies', () => {
    const liRoot = resolvePackageDir(pkgDir, 'llamaindex');
    const roots = new Set([resolvePackageDir(liRoot, '@llamaindex/core'), resolvePackageDir(pkgDir, '@llamaindex/core')]);
    for (const dep of ['@llamaindex/workflow', '@llamaindex/node-parser']) roots.add(resolvePackageDir(resolvePackageDir(liRoot, dep), '@llamaindex/core'));
    // And the module Node actually loads for `llamaindex`'s own import of core.
    roots.add(dirname(dirname(dirname(realpathSync(createRequire(join(liRoot, 'package.json')).resolve('@llamaindex/core/embeddings'))))));
    assert.equal(roots.size, 1, [...roots].join('\n'));
  });

  test('instanceof holds across the user-facing `llamaindex` and the `@llamaindex/core` subpaths', () => {
    assert.equal(li.BaseEmbedding, coreEmbeddings.BaseEmbedding);
    assert.equal(li.BaseRetriever, coreRetriever.BaseRetriever);
    assert.equal(li.Settings, li.Settings);
    const embedding = new BGEM3Embedding({ model: FIXTURE });
    assert.ok(embedding instanceof li.BaseEmbedding);
    assert.ok(embedding instanceof coreEmbeddings.BaseEmbedding);
    const sparse = new BGEM3SparseRetriever({ model: FIXTURE });
    const ensemble = new BGEM3EnsembleRetriever({ model: FIXTURE, retrievers: [sparse] });
    for (const r of [sparse, ensemble]) {
      assert.ok(r instanceof li.BaseRetriever);
      assert.ok(r instanceof coreRetriever.BaseRetriever);
    }
    // Settings set through `llamaindex` is the one core reads (a second core copy would not see it).
    li.Settings.embedModel = embedding;
    assert.equal(coreGlobal.Settings.embedModel, embedding);
  });

  test('RetrieverQueryEngine and ContextChatEngine accept the classes', () => {
    const sparse = new BGEM3SparseRetriever({ model: FIXTURE });
    const reranker = new BGEM3ColbertReranker({ model: FIXTURE });
    li.Settings.llm = new RecordingLLM();
    const engine = new li.RetrieverQueryEngine(sparse, undefined, [reranker]);
    assert.equal(engine.retriever, sparse);
    const chat = new li.ContextChatEngine({
      retriever: new BGEM3EnsembleRetriever({ model: FIXTURE, retrievers: [sparse] }),
      nodePostprocessors: [reranker],
      chatModel: new RecordingLLM(),
    });
    assert.ok(chat instanceof li.ContextChatEngine);
  });
});
