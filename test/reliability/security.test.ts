/**
 * Security checks not covered by the package tests (docs/RELIABILITY.md lists those):
 *
 * - the HF_TOKEN never appears in what the CLI prints (stdout, stderr, BGEM3_DEBUG stack traces),
 *   not even when a server echoes it back, and is never written into the model cache;
 * - crafted index files (dense and ColBERT counts, the adapters' header lengths, an M3Index
 *   manifest) fail with INDEX_INVALID before anything of the claimed size is allocated.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ColbertStore, DenseIndex, M3Index, M3Error, type TextEncoder3, type EncodeResult } from '@bgem3/core';
import { BGEM3SparseRetriever as LangChainSparse } from '@bgem3/langchain';
import { BGEM3SparseRetriever as LlamaSparse } from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { FakeHub, fixtureRepos } from '../../packages/core/test/helpers/fake-hub.ts';
import { concatChunks, encodeContainer, sectionOf } from '../../packages/core/src/retrieval/binary-format.ts';
import { assertOneLineError, m3, runCli, tempDir } from './helpers.ts';
import { TextNode } from './llamaindex.ts';

const TOKEN = 'hf_RELIABILITYsecretTOKEN0123456789';
const WRONG = 'hf_WRONGreliabilitySECRET9876543210';

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory()) out.push(...filesUnder(p));
    else if (st?.isFile()) out.push(p);
  }
  return out;
}

describe('HF_TOKEN never appears in CLI output or in the cache', () => {
  let hub: FakeHub;
  let echo: http.Server;
  let echoUrl: string;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos(), token: TOKEN });
    // A hostile or buggy server that echoes the credentials back in its error message.
    echo = http.createServer((req, res) => {
      res.writeHead(401, { 'X-Error-Code': 'GatedRepo', 'X-Error-Message': `Invalid credentials in Authorization header: ${req.headers.authorization ?? 'none'}` });
      res.end(`bad token ${req.headers.authorization ?? ''}`);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
  });
  after(async () => {
    await hub.close();
    echo.closeAllConnections();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  test('bgem3 download / encode with a refused token: exit 1, one line, no token (also with BGEM3_DEBUG=1)', async () => {
    const cache = tempDir('bgem3-rel-token-');
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_TOKEN: WRONG };
    const runs = await Promise.all([
      runCli(['download', 'BAAI/bge-m3'], '', env),
      runCli(['download', 'BAAI/bge-m3'], '', { ...env, HF_TOKEN: undefined, HUGGING_FACE_HUB_TOKEN: WRONG }),
      runCli(['encode', '--model', 'BAAI/bge-m3'], '{"text":"x"}\n', env),
      runCli(['download', 'BAAI/bge-m3'], '', { ...env, BGEM3_DEBUG: '1' }),
    ]);
    runs.slice(0, 3).forEach((r, i) => assertOneLineError(r, /HTTP 401.*token that was sent was not accepted/, `refused token, run ${i}`));
    assert.match(runs[3].stderr, /\n\s+at /, 'BGEM3_DEBUG=1 prints the stack trace');
    for (const r of runs) {
      assert.ok(!r.stdout.includes(WRONG) && !r.stderr.includes(WRONG), `the token is not printed:\n${r.stderr}`);
      assert.ok(!r.stderr.includes('hf_WRONG'), 'not even a prefix of it');
    }
    for (const f of filesUnder(cache)) assert.ok(!readFileSync(f).includes(WRONG), `${f} holds the token`);
  });

  test('without a token: the message says to set HF_TOKEN', async () => {
    const r = await runCli(['download', 'BAAI/bge-m3'], '', { HF_ENDPOINT: hub.url, HF_HUB_CACHE: tempDir('bgem3-rel-token-') });
    assertOneLineError(r, /HTTP 401.*Set HF_TOKEN/, 'no token');
  });

  test('a server that echoes the token in its error message: the CLI prints it redacted', async () => {
    const r = await runCli(['download', 'BAAI/bge-m3'], '', { HF_ENDPOINT: echoUrl, HF_HUB_CACHE: tempDir('bgem3-rel-token-'), HF_TOKEN: WRONG, BGEM3_DEBUG: '1' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /Invalid credentials in Authorization header: Bearer \*\*\*/, 'the echoed token is replaced by ***');
    assert.ok(!r.stderr.includes(WRONG) && !r.stdout.includes(WRONG), r.stderr);
  });

  test('an accepted token: the download works and no output or cached file contains the token', async () => {
    const cache = tempDir('bgem3-rel-token-');
    const r = await runCli(['download', 'BAAI/bge-m3'], '', { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_TOKEN: `${TOKEN}\n` });
    assert.equal(r.status, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).files.onnx, /snapshots/);
    assert.ok(!r.stdout.includes(TOKEN) && !r.stderr.includes(TOKEN));
    const files = filesUnder(cache);
    assert.ok(files.length >= 7, `the model files are cached (${files.length})`);
    for (const f of files) assert.ok(!readFileSync(f).includes(TOKEN), `${f} holds the token`);
  });
});

describe('crafted index files fail before allocating what they claim', () => {
  const MB = 2 ** 20;
  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (e) {
      return e instanceof M3Error ? e.code : `not an M3Error: ${String(e)}`;
    }
    return undefined;
  };
  const container = (magic: string, meta: Record<string, unknown>, sections: number) => {
    const small = sectionOf(new Uint8Array(8));
    const c = encodeContainer(magic, 1, meta, Array.from({ length: sections }, () => small));
    return concatChunks(c.byteLength, c.chunks());
  };

  test('DenseIndex and ColbertStore: huge counts, dims and section lengths with a valid CRC are INDEX_INVALID', () => {
    const ab0 = process.memoryUsage().arrayBuffers;
    for (const meta of [
      { count: 2 ** 31 - 2, dim: 1024 },
      { count: 1, dim: 65536 },
      { count: 1, dim: 65537 },
      { count: 1e300, dim: 4 },
      { count: -1, dim: 4 },
      { count: 3, dim: 1.5 },
    ]) {
      assert.equal(code(() => DenseIndex.fromBytes(container('BGM3DENS', { kind: 'dense', modelId: 'm', ...meta }, 3))), 'INDEX_INVALID', JSON.stringify(meta));
    }
    for (const meta of [
      { docCount: 2 ** 31 - 2, vectorCount: 1, dim: 1024, precision: 'fp32' },
      { docCount: 1, vectorCount: 2 ** 40, dim: 1024, precision: 'fp16' },
      { docCount: 1, vectorCount: 2 ** 53, dim: 1024, precision: 'int8' },
      { docCount: 1, vectorCount: 1, dim: 70000, precision: 'fp32' },
    ]) {
      assert.equal(code(() => ColbertStore.fromBytes(container('BGM3COLB', { kind: 'colbert', modelId: 'm', ...meta }, 5))), 'INDEX_INVALID', JSON.stringify(meta));
    }
    // A real dense file whose section table claims 2^40 bytes, and one whose meta length is 4 GiB.
    const real = new DenseIndex({ dim: 4 });
    real.upsert('a', new Float32Array([1, 0, 0, 0]));
    const bytes = real.toBytes();
    const huge = bytes.slice();
    new DataView(huge.buffer).setBigUint64(24 + 8 * 2, 1n << 40n, true);
    assert.equal(code(() => DenseIndex.fromBytes(huge)), 'INDEX_INVALID');
    const bigMeta = bytes.slice();
    new DataView(bigMeta.buffer).setUint32(16, 0xffffffff, true);
    assert.equal(code(() => DenseIndex.fromBytes(bigMeta)), 'INDEX_INVALID');
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
  });

  test("the adapters' sparse retriever files: a 4 GiB header length or a lying header is INDEX_INVALID", async () => {
    const dir = tempDir('bgem3-rel-crafted-');
    const encoder: TextEncoder3 = {
      modelId: 'fake/crafted',
      dim: 4,
      vocabSize: 100,
      encode: async (texts) => texts.map((): EncodeResult => ({ tokens: 3, truncated: false, sparse: { indices: new Uint32Array([5, 9]), values: new Float32Array([0.5, 0.25]) } })),
    };
    const lc = join(dir, 'lc.bin');
    await (await LangChainSparse.fromDocuments([new Document({ id: 'a', pageContent: 'x' })], { encoder })).save(lc);
    const ll = join(dir, 'll.bin');
    await (await LlamaSparse.fromNodes([new TextNode({ id_: 'a', text: 'x' })], { encoder })).save(ll);
    const ab0 = process.memoryUsage().arrayBuffers;
    for (const [path, loadIt] of [
      [lc, (p: string) => LangChainSparse.load(p, { encoder })],
      [ll, (p: string) => LlamaSparse.load(p, { encoder })],
    ] as const) {
      const original = readFileSync(path);
      const crafted = Buffer.from(original);
      crafted.writeUInt32LE(0xffffffff, 12); // header length
      writeFileSync(path, crafted);
      await assert.rejects(loadIt(path), m3('INDEX_INVALID'), `${path}: 4 GiB header length`);
      // A header that lists a document the index does not hold.
      const len = original.readUInt32LE(12);
      const header = JSON.parse(original.subarray(16, 16 + len).toString('utf8'));
      const list = header.documents ?? header.nodes;
      list.push({ ...list[0], id: 'ghost', id_: 'ghost' });
      const h = Buffer.from(JSON.stringify(header));
      const lying = Buffer.concat([original.subarray(0, 16), h, original.subarray(16 + len)]);
      lying.writeUInt32LE(h.length, 12);
      writeFileSync(path, lying);
      await assert.rejects(loadIt(path), m3('INDEX_INVALID', /disagree/), `${path}: header and index disagree`);
    }
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
  });

  test('an M3Index manifest claiming huge counts, sizes or dimensions is INDEX_INVALID', async () => {
    const encoder: TextEncoder3 = {
      modelId: 'fake/m3',
      dim: 4,
      vocabSize: 100,
      encode: async (texts) =>
        texts.map((): EncodeResult => ({
          tokens: 3,
          truncated: false,
          dense: new Float32Array([1, 0, 0, 0]),
          sparse: { indices: new Uint32Array([5]), values: new Float32Array([0.5]) },
          colbert: { data: new Float32Array([0, 1, 0, 0]), count: 1, dim: 4 },
        })),
    };
    const dir = join(tempDir('bgem3-rel-manifest-'), 'ix');
    const index = await M3Index.create({ encoder });
    await index.add([{ id: 'a', text: 'x' }]);
    await index.save(dir);
    const gen = JSON.parse(readFileSync(join(dir, 'CURRENT'), 'utf8')).generation as string;
    const manifestPath = join(dir, gen, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    const ab0 = process.memoryUsage().arrayBuffers;
    for (const lie of [{ count: 2 ** 52 }, { docsBytes: 2 ** 52 }, { dim: 2 ** 30 }, { vocabSize: 2 ** 40 }, { count: -1 }, { dim: 0 }, { files: { ...manifest.files, dense: '../../x' } }]) {
      writeFileSync(manifestPath, JSON.stringify({ ...manifest, ...lie }));
      await assert.rejects(M3Index.load(dir), m3('INDEX_INVALID'), JSON.stringify(lie));
    }
    writeFileSync(manifestPath, JSON.stringify(manifest));
    assert.equal((await M3Index.load(dir)).size, 1);
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
  });
});
