/**
 * The small pieces of the Hub module: presets, isRepoId, environment defaults, hashing,
 * progress throttling, the symlink fallback and the terminal progress bars.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, test } from 'node:test';
import { RepoCache } from '../src/hub/cache.js';
import { createCliProgress, formatBytes } from '../src/hub/cli-progress.js';
import { defaultCacheDir, resolveSettings } from '../src/hub/config.js';
import { hashFile } from '../src/hub/integrity.js';
import { presetFiles } from '../src/hub/presets.js';
import { createReporter } from '../src/hub/progress.js';
import { anySignal } from '../src/hub/signals.js';
import { isRepoId } from '../src/hub/resolve-model.js';
import type { DownloadProgress } from '../src/hub/types.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-hub-'));
  tmpRoots.push(dir);
  return dir;
}
after(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('presets', () => {
  test('fp32: BAAI ONNX graph, explicit external-data sidecars, heads, tokenizer, config', () => {
    assert.deepEqual(presetFiles('BAAI/bge-m3', 'fp32'), [
      { repo: 'BAAI/bge-m3', path: 'onnx/model.onnx' },
      { repo: 'BAAI/bge-m3', path: 'onnx/model.onnx_data' },
      { repo: 'BAAI/bge-m3', path: 'onnx/Constant_7_attr__value', optional: true },
      { repo: 'BAAI/bge-m3', path: 'colbert_linear.pt' },
      { repo: 'BAAI/bge-m3', path: 'sparse_linear.pt' },
      { repo: 'BAAI/bge-m3', path: 'tokenizer.json' },
      { repo: 'BAAI/bge-m3', path: 'tokenizer_config.json' },
      { repo: 'BAAI/bge-m3', path: 'config.json' },
    ]);
  });

  test('q8: Xenova int8 graph plus BAAI support files; revision pins BAAI only', () => {
    const specs = presetFiles('BAAI/bge-m3', 'q8', 'v1');
    assert.deepEqual(specs[0], { repo: 'Xenova/bge-m3', path: 'onnx/model_quantized.onnx' });
    assert.deepEqual(
      specs.slice(1).map((s) => [s.repo, s.path, s.revision]),
      ['colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json', 'config.json'].map((p) => ['BAAI/bge-m3', p, 'v1']),
    );
  });

  test('other repos and dtypes have no preset', () => {
    assert.throws(() => presetFiles('intfloat/e5-large', 'fp32'), { code: 'INVALID_ARGUMENT', message: /explicit list of files/ });
    assert.throws(() => presetFiles('BAAI/bge-m3', 'fp16' as never), { code: 'INVALID_ARGUMENT' });
  });
});

test('isRepoId: org/name that is not an existing local path', () => {
  for (const s of ['BAAI/bge-m3', 'Xenova/bge-m3', 'sentence-transformers/all-MiniLM-L6-v2', 'a_b/c.d']) assert.equal(isRepoId(s), true, s);
  for (const s of ['bge-m3', './BAAI/bge-m3', '/models/bge-m3', 'a/b/c', 'a--b/c', 'a/../b', 'C:\\models\\m', '', 'org/', '/name', 'org/name.git', 'x'.repeat(50) + '/' + 'y'.repeat(50)]) {
    assert.equal(isRepoId(s), false, s);
  }
  const cwd = process.cwd();
  const dir = tempDir();
  mkdirSync(join(dir, 'myorg', 'mymodel'), { recursive: true });
  try {
    process.chdir(dir);
    assert.equal(isRepoId('myorg/mymodel'), false, 'an existing folder is a local path');
    assert.equal(isRepoId('myorg/other'), true);
  } finally {
    process.chdir(cwd);
  }
});

describe('settings from the environment (huggingface_hub names)', () => {
  test('cache directory precedence', () => {
    assert.equal(defaultCacheDir({ HF_HUB_CACHE: '/a/hub', HF_HOME: '/b' }), '/a/hub');
    assert.equal(defaultCacheDir({ HF_HOME: '/b' }), '/b/hub');
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/huggingface/hub');
    assert.equal(defaultCacheDir({}), join(homedir(), '.cache', 'huggingface', 'hub'));
    assert.equal(defaultCacheDir({ HF_HUB_CACHE: '~/hfc' }), join(homedir(), 'hfc'));
  });

  test('endpoint, token, offline and their overrides', () => {
    const s = resolveSettings({}, { HF_ENDPOINT: 'https://mirror.example/', HUGGING_FACE_HUB_TOKEN: 'hf_legacy\n', HF_HUB_OFFLINE: 'yes' });
    assert.equal(s.endpoint, 'https://mirror.example');
    assert.equal(s.token, 'hf_legacy');
    assert.equal(s.offline, true);
    assert.equal(s.revision, 'main');
    assert.equal(resolveSettings({}, { HF_TOKEN: 'a', HUGGING_FACE_HUB_TOKEN: 'b' }).token, 'a');
    assert.equal(resolveSettings({ token: '' }, { HF_TOKEN: 'a' }).token, undefined, "'' means anonymous");
    assert.equal(resolveSettings({ offline: false }, { HF_HUB_OFFLINE: '1' }).offline, false);
    assert.equal(resolveSettings({}, { TRANSFORMERS_OFFLINE: '1' }).offline, true);
    assert.equal(resolveSettings({}, { HF_HUB_OFFLINE: '0' }).offline, false);
    assert.equal(resolveSettings({}, {}).endpoint, 'https://huggingface.co');
    assert.throws(() => resolveSettings({ endpoint: 'file:///x' }, {}), { code: 'INVALID_ARGUMENT' });
  });
});

test('hashFile: sha256 and git blob sha1', async () => {
  const p = join(tempDir(), 'f');
  writeFileSync(p, 'hello\n');
  assert.equal(await hashFile(p, 'git-sha1'), 'ce013625030ba8dba906f756967f9e9ca394464a'); // `git hash-object`
  assert.equal(await hashFile(p, 'sha256'), '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03');
});

test('progress reporter: throttled, first and last always reported', () => {
  let now = 0;
  const seen: DownloadProgress[] = [];
  const r = createReporter((p) => seen.push(p), { file: 'f', repo: 'o/r', bytesTotal: 100 }, 100, () => now);
  r.update(0);
  for (let i = 1; i < 100; i++) {
    now += 10;
    r.update(i);
  }
  r.finish(100);
  r.finish(100);
  assert.deepEqual(
    seen.map((p) => p.bytesDone),
    [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
  );
});

test('progress reporter: a throwing callback is dropped, not propagated', () => {
  let calls = 0;
  let now = 0;
  const r = createReporter(() => {
    calls++;
    throw new Error('display broke');
  }, { file: 'f', repo: 'o/r', bytesTotal: 10 }, 1, () => now);
  r.update(1);
  now += 5;
  r.update(2);
  r.finish(10);
  assert.equal(calls, 1);
});

test('anySignal: native AbortSignal.any and the Node 20.0-20.2 fallback agree', () => {
  const native = AbortSignal.any;
  for (const useNative of [true, false]) {
    if (!useNative) (AbortSignal as { any?: unknown }).any = undefined;
    try {
      const a = new AbortController();
      const b = new AbortController();
      const s = anySignal([a.signal, undefined, b.signal])!;
      assert.equal(s.aborted, false);
      b.abort('why');
      assert.equal(s.aborted, true);
      assert.equal(s.reason, 'why');
      assert.equal(anySignal([undefined]), undefined);
      assert.equal(anySignal([a.signal]), a.signal);
      b.signal.aborted && assert.equal(anySignal([a.signal, b.signal])!.aborted, true);
    } finally {
      AbortSignal.any = native;
    }
  }
});

test('snapshot links fall back to a copy where symlinks fail', async () => {
  const cacheDir = tempDir();
  const cache = new RepoCache(cacheDir, 'org/name');
  const etag = 'ce013625030ba8dba906f756967f9e9ca394464a';
  mkdirSync(join(cache.root, 'blobs'), { recursive: true });
  writeFileSync(cache.blobPath(etag), 'hello\n');
  const failing = (async () => {
    throw Object.assign(new Error('EPERM'), { code: 'EPERM' });
  }) as never;
  const p = await cache.linkSnapshot(etag, 'c0ffee', 'sub/file.txt', failing);
  assert.equal(p, join(cacheDir, 'models--org--name', 'snapshots', 'c0ffee', 'sub', 'file.txt'));
  assert.ok(lstatSync(p).isFile());
  assert.equal(readFileSync(p, 'utf8'), 'hello\n');
});

describe('terminal progress bars', () => {
  test('nothing is drawn when the stream is not a TTY', () => {
    const stream = new PassThrough() as unknown as NodeJS.WriteStream;
    let written = '';
    (stream as unknown as PassThrough).on('data', (d) => (written += d));
    const bars = createCliProgress({ stream });
    bars.onProgress({ file: 'a', repo: 'o/r', bytesDone: 1, bytesTotal: 2 });
    bars.stop();
    assert.equal(written, '');
  });

  test('a TTY gets one bar per file with size, speed and ETA', async () => {
    const pass = new PassThrough();
    let written = '';
    pass.on('data', (d) => (written += d));
    const stream = Object.assign(pass, { isTTY: true, columns: 140, rows: 40 }) as unknown as NodeJS.WriteStream;
    const bars = createCliProgress({ stream });
    const total = 3 * 1024 * 1024;
    bars.onProgress({ file: 'onnx/model.onnx_data', repo: 'BAAI/bge-m3', bytesDone: 0, bytesTotal: total });
    bars.onProgress({ file: 'config.json', repo: 'BAAI/bge-m3', bytesDone: 10, bytesTotal: undefined });
    await new Promise((r) => setTimeout(r, 30));
    bars.onProgress({ file: 'onnx/model.onnx_data', repo: 'BAAI/bge-m3', bytesDone: total, bytesTotal: total });
    bars.stop();
    assert.match(written, /BAAI\/bge-m3\/onnx\/model\.onnx_data/);
    assert.match(written, /BAAI\/bge-m3\/config\.json/);
    assert.match(written, /3\.0 MiB\/3\.0 MiB/);
    assert.match(written, /MiB\/s|GiB\/s|KiB\/s/);
    assert.match(written, /100%/);
  });

  test('formatBytes', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(2.27 * 1024 ** 3), '2.3 GiB');
  });
});
