/**
 * Offline mode, caches written by huggingface_hub (built by hand here), and network failures.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, beforeEach, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { presetFiles } from '../src/hub/presets.js';
import { downloadFiles } from '../src/hub/resolve-model.js';
import { FakeHub, fixtureRepos, writeHfCache } from './helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT']) delete process.env[k];

const BAAI = 'BAAI/bge-m3';
const FP32_FILES = ['onnx/model.onnx', 'onnx/model.onnx_data', 'colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json', 'config.json'];

const tmpRoots: string[] = [];
function tempCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-hub-'));
  tmpRoots.push(dir);
  return join(dir, 'cache');
}
after(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function rejectsWith(p: Promise<unknown>, code: string): Promise<M3Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof M3Error, `expected M3Error, got ${inspect(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

/** A URL on which nothing listens (a port we bound and released). */
async function deadEndpoint(): Promise<string> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

describe('offline mode and existing caches', () => {
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

  test('offline hit: files downloaded earlier are returned without any request', async () => {
    const online = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, token: '' });
    hub.requests.length = 0;
    const offline = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, offline: true });
    assert.deepEqual(offline, online);
    assert.equal(hub.requests.length, 0);
  });

  test('HF_HUB_OFFLINE=1 turns offline mode on; offline: false overrides it', async () => {
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir }), 'OFFLINE_MISS');
      assert.equal(hub.requests.length, 0);
      assert.match(err.message, /config\.json/);
      const files = await downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir, offline: false, token: '' });
      assert.ok(existsSync(files['config.json']));
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
  });

  test('offline miss: OFFLINE_MISS naming the repo, the file, the cache and what to do', async () => {
    await downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir, token: '' });
    hub.requests.length = 0;
    const err = await rejectsWith(downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, offline: true }), 'OFFLINE_MISS');
    // Every missing required file is listed (config.json is cached; the optional sidecar is not required).
    assert.match(err.message, /and 6 files are not in the cache/);
    for (const p of FP32_FILES.filter((p) => p !== 'config.json')) assert.ok(err.message.includes(`BAAI/bge-m3/${p} at main`), p);
    assert.ok(!err.message.includes('BAAI/bge-m3/config.json') && !err.message.includes('Constant_7'));
    assert.ok(err.message.includes(cacheDir), err.message);
    assert.match(err.message, /network access/);
    assert.match(err.message, /local model directory/);
    assert.equal(err.file, 'onnx/model.onnx');
    assert.equal(hub.requests.length, 0);
  });

  test('a cache written in huggingface_hub layout is used offline without any request', async () => {
    const commit = hub.commit(BAAI);
    const made = writeHfCache(cacheDir, FP32_FILES.map((p) => hub.file(BAAI, p)), { commit });
    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, offline: true });
    assert.deepEqual(files, made);
    assert.equal(hub.requests.length, 0);
    for (const p of FP32_FILES) assert.ok(readFileSync(files[p]).equals(hub.file(BAAI, p).content));
  });

  test('online, a huggingface_hub cache is not downloaded again (HEAD only, no GET)', async () => {
    const commit = hub.commit(BAAI);
    const made = writeHfCache(cacheDir, FP32_FILES.map((p) => hub.file(BAAI, p)), { commit });
    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, token: '' });
    assert.deepEqual(files, made);
    assert.ok(hub.requests.every((r) => r.method === 'HEAD'), JSON.stringify(hub.requests));
  });

  test('online, blobs of an older snapshot are linked into the new one without a GET', async () => {
    const old = 'a'.repeat(40);
    writeHfCache(cacheDir, FP32_FILES.map((p) => hub.file(BAAI, p)), { commit: old });
    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir, token: '' });
    assert.equal(hub.requests.filter((r) => r.method === 'GET').length, 0);
    const root = join(cacheDir, 'models--BAAI--bge-m3');
    assert.equal(readFileSync(join(root, 'refs', 'main'), 'utf8'), hub.commit(BAAI));
    for (const p of FP32_FILES) {
      assert.ok(files[p].includes(join('snapshots', hub.commit(BAAI))));
      assert.ok(lstatSync(files[p]).isSymbolicLink());
      assert.ok(readFileSync(files[p]).equals(hub.file(BAAI, p).content));
    }
  });

  test('a commit-hash revision already in the cache needs no request even online', async () => {
    const commit = hub.commit(BAAI);
    writeHfCache(cacheDir, [hub.file(BAAI, 'config.json')], { commit, withSnapshot: true });
    const files = await downloadFiles([{ repo: BAAI, path: 'config.json', revision: commit }], { endpoint: hub.url, cacheDir, token: '' });
    assert.ok(files['config.json'].includes(commit));
    assert.equal(hub.requests.length, 0);
  });

  test('offline, optional files missing from the cache are skipped', async () => {
    writeHfCache(cacheDir, FP32_FILES.map((p) => hub.file(BAAI, p)), { commit: hub.commit(BAAI) });
    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), { cacheDir, offline: true });
    assert.ok(!('onnx/Constant_7_attr__value' in files));
  });
});

describe('network failures', () => {
  test('unreachable endpoint: HUB_ERROR naming the endpoint and the offline alternatives', async () => {
    const endpoint = await deadEndpoint();
    const cacheDir = tempCache();
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint, cacheDir, token: '' }), 'HUB_ERROR');
    assert.ok(err.message.includes(`cannot reach the Hugging Face Hub at ${endpoint}`), err.message);
    assert.match(err.message, /ECONNREFUSED/);
    assert.match(err.message, /HF_HUB_OFFLINE=1/);
    assert.ok(err.message.includes(cacheDir));
    assert.match(err.message, /local model directory/);
  });

  test('unreachable endpoint with the file cached: the cached file is used', async () => {
    const hub = await FakeHub.start({ repos: fixtureRepos() });
    const cacheDir = tempCache();
    try {
      writeHfCache(cacheDir, [hub.file(BAAI, 'config.json')], { commit: hub.commit(BAAI) });
    } finally {
      await hub.close();
    }
    const files = await downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: await deadEndpoint(), cacheDir, token: '' });
    assert.ok(files['config.json'].includes('snapshots'));
  });
});
