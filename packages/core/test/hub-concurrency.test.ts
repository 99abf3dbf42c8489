/**
 * Concurrent downloads of the same repo: two processes, two calls in one process, and a lock
 * left behind by a crashed process. Each blob must be fetched once and the cache stay intact.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { presetFiles } from '../src/hub/presets.js';
import { downloadFiles } from '../src/hub/resolve-model.js';
import { FakeHub, fixtureRepos } from './helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT']) delete process.env[k];

const BAAI = 'BAAI/bge-m3';
const FP32_FILES = ['onnx/model.onnx', 'onnx/model.onnx_data', 'colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json', 'config.json'];
const WORKSPACE = new URL('../../../', import.meta.url).pathname;
const HUB_SRC = new URL('../src/hub/', import.meta.url);

const tmpRoots: string[] = [];
function tempCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-hub-'));
  tmpRoots.push(dir);
  return join(dir, 'cache');
}
after(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Resolves once `cond()` holds (polled), or rejects after `ms`. */
async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A gate the fake Hub holds every content response on. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Runs the fp32 preset download in a child process (`node --import tsx`); resolves with its result map. */
function downloadInChild(endpoint: string, cacheDir: string): Promise<Record<string, string>> {
  const script = `
    const { downloadFiles } = await import(${JSON.stringify(new URL('resolve-model.ts', HUB_SRC).href)});
    const { presetFiles } = await import(${JSON.stringify(new URL('presets.ts', HUB_SRC).href)});
    const files = await downloadFiles(presetFiles('BAAI/bge-m3', 'fp32'), { endpoint: process.env.T_ENDPOINT, cacheDir: process.env.T_CACHE, token: '' });
    process.stdout.write(JSON.stringify(files));
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: WORKSPACE,
      env: { ...process.env, T_ENDPOINT: endpoint, T_CACHE: cacheDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err}`))));
  });
}

function assertCacheIntact(hub: FakeHub, cacheDir: string, files: Record<string, string>) {
  for (const p of FP32_FILES) assert.ok(readFileSync(files[p]).equals(hub.file(BAAI, p).content), p);
  const root = join(cacheDir, 'models--BAAI--bge-m3');
  assert.deepEqual(readdirSync(join(root, 'blobs')).sort(), FP32_FILES.map((p) => hub.file(BAAI, p).etag).sort(), 'no temp files, no extra blobs');
  assert.deepEqual(readdirSync(join(cacheDir, '.locks', 'models--BAAI--bge-m3')), [], 'all locks released');
  for (const p of FP32_FILES) assert.equal(hub.contentGets(p), 1, `${p} downloaded once`);
}

describe('concurrent downloads', () => {
  let hub: FakeHub;
  let cacheDir: string;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos() });
  });
  after(() => hub.close());
  beforeEach(() => {
    hub.requests.length = 0;
    hub.faults = {};
    cacheDir = tempCache();
  });

  test('two processes at once: each blob downloaded once, cache intact', async () => {
    const g = gate();
    hub.faults.gate = g.promise;
    const a = downloadInChild(hub.url, cacheDir);
    const b = downloadInChild(hub.url, cacheDir);
    // Both processes have asked for the first file before any content flows: they overlap.
    await until(() => hub.find({ method: 'HEAD', file: 'onnx/model.onnx' }).length >= 2);
    await new Promise((r) => setTimeout(r, 150));
    g.open();
    const [fa, fb] = await Promise.all([a, b]);
    assert.deepEqual(fa, fb);
    assertCacheIntact(hub, cacheDir, fa);
  });

  test('two calls in one process: each blob downloaded once', async () => {
    const g = gate();
    hub.faults.gate = g.promise;
    const opts = { endpoint: hub.url, cacheDir, token: '' };
    const a = downloadFiles(presetFiles(BAAI, 'fp32'), opts);
    const b = downloadFiles(presetFiles(BAAI, 'fp32'), opts);
    await until(() => hub.find({ method: 'HEAD', file: 'onnx/model.onnx_data' }).length >= 2);
    g.open();
    const [fa, fb] = await Promise.all([a, b]);
    assert.deepEqual(fa, fb);
    assertCacheIntact(hub, cacheDir, fa);
  });

  test('one caller aborting does not fail another waiting on the same blob', async () => {
    const g = gate();
    hub.faults.gate = g.promise;
    const ac = new AbortController();
    const spec = [{ repo: BAAI, path: 'onnx/model.onnx_data' }];
    const a = downloadFiles(spec, { endpoint: hub.url, cacheDir, token: '', signal: ac.signal });
    const b = downloadFiles(spec, { endpoint: hub.url, cacheDir, token: '' });
    await until(() => hub.find({ method: 'HEAD', file: 'onnx/model.onnx_data' }).length >= 2);
    ac.abort();
    await assert.rejects(a, { code: 'ABORTED' });
    g.open();
    const files = await b;
    assert.ok(readFileSync(files['onnx/model.onnx_data']).equals(hub.file(BAAI, 'onnx/model.onnx_data').content));
  });

  test('a stale lock left by a crashed process is taken over', async () => {
    const etag = hub.file(BAAI, 'config.json').etag;
    const lock = join(cacheDir, '.locks', 'models--BAAI--bge-m3', `${etag}.bgem3.lock`);
    mkdirSync(lock, { recursive: true });
    const old = new Date(Date.now() - 60_000);
    utimesSync(lock, old, old);
    const t0 = Date.now();
    const files = await downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir, token: '' });
    assert.ok(Date.now() - t0 < 3000);
    assert.ok(readFileSync(files['config.json']).equals(hub.file(BAAI, 'config.json').content));
    assert.ok(!existsSync(lock));
  });

  test('a live lock makes the caller wait, and the finished blob is reused without a GET', async () => {
    const f = hub.file(BAAI, 'config.json');
    const root = join(cacheDir, 'models--BAAI--bge-m3');
    const lock = join(cacheDir, '.locks', 'models--BAAI--bge-m3', `${f.etag}.bgem3.lock`);
    mkdirSync(lock, { recursive: true }); // fresh mtime: another process is downloading
    const pending = downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir, token: '' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(hub.contentGets('config.json'), 0, 'waits instead of downloading');
    // The "other process" finishes: blob in place, lock released.
    mkdirSync(join(root, 'blobs'), { recursive: true });
    writeFileSync(join(root, 'blobs', f.etag), f.content);
    rmSync(lock, { recursive: true });
    const files = await pending;
    assert.equal(hub.contentGets('config.json'), 0);
    assert.ok(readFileSync(files['config.json']).equals(f.content));
  });
});
