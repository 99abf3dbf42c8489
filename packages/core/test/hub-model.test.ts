// From a Hub repo id to encodings: download through a local server that answers like the Hub,
// then load and encode with parity (fp32 preset, q8 preset, a three-output repo, offline, the CLI).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error } from '@bgem3/core';
import { FakeHub, fixtureRepos, FIXTURE_DIR } from './helpers/fake-hub.ts';
import { golden } from './helpers/fixture.ts';

const g = golden();

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('models from the Hub', () => {
  let hub: FakeHub;
  let cacheDir: string;
  before(async () => {
    hub = await FakeHub.start({
      repos: {
        ...fixtureRepos(),
        'yuniko-software/bge-m3-onnx': {
          'bge_m3_model.onnx': join(FIXTURE_DIR, 'm3-onnx/bge_m3_model.onnx'),
          'bge_m3_model.onnx_data': join(FIXTURE_DIR, 'm3-onnx/bge_m3_model.onnx_data'),
          'tokenizer.json': join(FIXTURE_DIR, 'tokenizer.json'),
          'tokenizer_config.json': join(FIXTURE_DIR, 'tokenizer_config.json'),
        },
      },
    });
    cacheDir = mkdtempSync(join(tmpdir(), 'bgem3-hub-model-'));
  });
  after(async () => {
    await hub.close();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  test('BAAI/bge-m3 (fp32 preset): download, load, encode with parity; only needed files fetched', async () => {
    const progress: string[] = [];
    const enc = await M3Encoder.load('BAAI/bge-m3', {
      hub: { endpoint: hub.url, cacheDir, onProgress: (p) => progress.push(p.file) },
      cache: false,
    });
    try {
      const r = await enc.encode(g.texts.slice(0, 5), { dense: true, sparse: true, colbert: true });
      r.forEach((x, i) => assert.ok(maxAbsDiff(x.dense!, g.dense[i]) <= 1e-5, `text ${i}`));
      assert.ok(enc.modelId.startsWith('hub:BAAI/bge-m3@'), enc.modelId);
      assert.equal(hub.contentGets('sentencepiece.bpe.model'), 0, 'files the layout does not need are not downloaded');
      assert.ok(progress.includes('onnx/model.onnx_data'));
    } finally {
      await enc.close();
    }
  });

  test('offline: a cached model loads with no request; a missing one names what is missing', async () => {
    const before = hub.requests.length;
    const enc = await M3Encoder.load('BAAI/bge-m3', { hub: { endpoint: hub.url, cacheDir, offline: true }, workers: 0 });
    await enc.close();
    assert.equal(hub.requests.length, before, 'no request in offline mode');
    await assert.rejects(
      M3Encoder.load('BAAI/bge-m3', { dtype: 'q8', hub: { endpoint: hub.url, cacheDir, offline: true } }),
      (e: unknown) => e instanceof M3Error && e.code === 'OFFLINE_MISS' && /model_quantized\.onnx/.test(e.message),
    );
  });

  test('dtype q8: the int8 graph from Xenova/bge-m3 with BAAI heads and tokenizer', async () => {
    const enc = await M3Encoder.load('BAAI/bge-m3', { dtype: 'q8', hub: { endpoint: hub.url, cacheDir }, workers: 0 });
    try {
      assert.match(enc.modelId, /Xenova\/bge-m3@.*model_quantized\.onnx/);
      const [r] = await enc.encode([g.texts[0]], { dense: true, sparse: true, colbert: true });
      let dot = 0;
      for (let k = 0; k < 32; k++) dot += r.dense![k] * g.dense[0][k];
      assert.ok(dot > 0.95, `int8 close to fp32 (${dot})`);
    } finally {
      await enc.close();
    }
  });

  test('any repo in a supported layout: a three-output export, files found by probing', async () => {
    const enc = await M3Encoder.load('yuniko-software/bge-m3-onnx', { hub: { endpoint: hub.url, cacheDir }, workers: 0 });
    try {
      const [r] = await enc.encode([g.texts[1]], { dense: true, sparse: true });
      assert.ok(maxAbsDiff(r.dense!, g.dense[1]) <= 1e-5);
    } finally {
      await enc.close();
    }
  });

  test('a repo that does not exist is a clear error', async () => {
    await assert.rejects(M3Encoder.load('nobody/nothing', { hub: { endpoint: hub.url, cacheDir } }), /nobody\/nothing/);
  });

  // The fake Hub runs in this process, so the CLI must run asynchronously (spawnSync would block it).
  function run(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ status: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile(process.execPath, args, { env, encoding: 'utf8' }, (err, stdout, stderr) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin!.end(input ?? '');
    });
  }

  test('CLI: bgem3 download then encode --model <repo> from the cache', async () => {
    const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
    const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: cacheDir };
    const dl = await run([cli, 'download', 'BAAI/bge-m3'], env);
    assert.equal(dl.status, 0, dl.stderr);
    assert.match(JSON.parse(dl.stdout).files.onnx, /snapshots/);
    const enc = await run([cli, 'encode', '--model', 'BAAI/bge-m3', '--offline', '--outputs', 'dense'], env, `${JSON.stringify({ text: g.texts[0] })}\n`);
    assert.equal(enc.status, 0, enc.stderr);
    assert.ok(maxAbsDiff(JSON.parse(enc.stdout).dense, g.dense[0]) <= 1e-5);
    const miss = await run([cli, 'encode', '--model', 'BAAI/bge-m3', '--offline', '--dtype', 'q8'], { ...env, HF_HUB_CACHE: join(cacheDir, 'empty') }, '{"text":"x"}\n');
    assert.equal(miss.status, 1);
    assert.match(miss.stderr, /^bgem3: .*offline/i);
    assert.equal(miss.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
  });
});
