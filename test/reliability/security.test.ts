/**
 * Security checks not covered by the package tests (docs/RELIABILITY.md lists those):
 *
 * - the HF_TOKEN never appears in what the CLI prints (stdout, stderr, BGEM3_DEBUG stack traces),
 *   not even when a server echoes it back, and is never written into the model cache;
 * - crafted index files (dense and ColBERT counts, an M3Index database whose meta lies with its
 *   checksum recomputed, a manifest of the pre-database layout that the loader migrates) fail
 *   with INDEX_INVALID before anything of the claimed size is allocated;
 * - a crafted file at the path of the adapters' removed 0.1 sparse retriever format is refused
 *   with INDEX_INVALID saying how to rebuild, without being parsed beyond its magic.
 * (Damaged, edited and swapped rows of an index database, a count beyond its rows and random
 * mutations of the whole file are core's tests: retrieval-m3index, store-embedded, store-fuzz.)
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ColbertStore, DenseIndex, M3Index, M3Error, SparseIndex, type TextEncoder3, type EncodeResult } from '@bgem3/core';
import { BGEM3SparseRetriever as LangChainSparse } from '@bgem3/langchain';
import { BGEM3SparseRetriever as LlamaSparse } from '@bgem3/llamaindex';
import { FakeHub, fixtureRepos } from '../../packages/core/test/helpers/fake-hub.ts';
import { concatChunks, encodeContainer, sectionOf } from '../../packages/core/src/retrieval/binary-format.ts';
import { metaCrc, openDatabase, readMeta } from '../../packages/core/src/store/embedded/database.ts';
import { M3Index as LegacyM3Index } from '../../bench/lib/legacy-m3-index.ts';
import { assertOneLineError, legacySparseFile, m3, runCli, tempDir } from './helpers.ts';

const TOKEN = 'hf_RELIABILITYsecretTOKEN0123456789';
const WRONG = 'hf_WRONGreliabilitySECRET9876543210';

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

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

  test("a crafted file at the path of the adapters' removed 0.1 sparse format (4 GiB header length, lying header, garbage) is INDEX_INVALID saying how to rebuild, never parsed beyond its magic", async () => {
    const dir = tempDir('bgem3-rel-crafted-');
    const sparse = new SparseIndex({ vocabSize: 100, modelId: 'fake/crafted' });
    sparse.upsert('a', { indices: new Uint32Array([5, 9]), values: new Float32Array([0.5, 0.25]) });
    const body = sparse.toBytes();
    const ab0 = process.memoryUsage().arrayBuffers;
    for (const [magic, lib, load] of [
      ['BGM3LCSP', 'langchain', (p: string) => LangChainSparse.load(p)],
      ['BGM3LISP', 'llamaindex', (p: string) => LlamaSparse.load(p)],
    ] as const) {
      const header = { modelId: 'fake/crafted', documents: [{ id: 'a', pageContent: 'x', metadata: {} }], nodes: [{ id_: 'a', text: 'x' }] };
      const original = legacySparseFile(magic, header, body);
      const hugeHeader = Buffer.from(original);
      hugeHeader.writeUInt32LE(0xffffffff, 12);
      const hugeSection = Buffer.from(original);
      hugeSection.writeBigUInt64LE(1n << 40n, original.length - body.length + 24); // the sparse part's first section length
      const crafted: Record<string, Buffer> = {
        'a 4 GiB header length': hugeHeader,
        'a header listing a document the index does not hold (0.1 said "disagree")': legacySparseFile(magic, { ...header, documents: [...header.documents, { id: 'ghost', pageContent: 'g', metadata: {} }], nodes: [...header.nodes, { id_: 'ghost', text: 'g' }] }, body),
        'a header that is not JSON': Buffer.concat([original.subarray(0, 16), Buffer.from('{"documents": [')]),
        'a sparse part claiming a 2^40-byte section': hugeSection,
        'the magic alone': original.subarray(0, 8),
      };
      for (const [what, bytes] of Object.entries(crafted)) {
        const path = join(dir, `${lib}.sparse`);
        writeFileSync(path, bytes);
        await assert.rejects(load(path), (e: unknown) => {
          // One answer whatever follows the magic: nothing after it is read as a header or an index.
          m3('INDEX_INVALID', new RegExp(`^${escapeRegExp(path)} is a BGEM3SparseRetriever file of @bgem3/${lib} 0\\.1, which this version no longer reads: persistence is now the store's`))(e);
          assert.equal((e as { file?: string }).file, path);
          assert.match((e as Error).message, /new BGEM3SparseRetriever\(\{ store \}\)/);
          return true;
        }, `${lib}: ${what}`);
      }
      // Not the 0.1 magic (another file at the old path, empty, a directory, missing): INDEX_INVALID too.
      for (const [what, make, pattern] of [
        ['another format', (p: string) => writeFileSync(p, Buffer.from('PK\x03\x04 not a retriever file')), /is not a saved retriever: persistence is now the store's/],
        ['an empty file', (p: string) => writeFileSync(p, ''), /is not a saved retriever/],
        ['a directory', (p: string) => mkdirSync(p), /cannot read it \(EISDIR\)/],
        ['a missing file', () => undefined, /cannot read it \(ENOENT\)/],
      ] as const) {
        const path = join(dir, `${lib}-${what.replace(/ /g, '-')}`);
        make(path);
        await assert.rejects(load(path), m3('INDEX_INVALID', pattern), `${lib}: ${what}`);
      }
    }
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
  });

  const fakeEncoder: TextEncoder3 = {
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

  test('an M3Index database whose meta lies (dimension, vocabulary, precision, settings, counts, version) with its checksum recomputed is INDEX_INVALID before allocating what it claims', async () => {
    const root = tempDir('bgem3-rel-meta-');
    const src = join(root, 'src');
    const index = await M3Index.open(src, { encoder: fakeEncoder });
    await index.add([{ id: 'a', text: 'x' }, { id: 'b', text: 'y' }]);
    await index.close();
    // A crafted copy: meta fields set and metaCrc recomputed to match, as an attacker would.
    const craft = (name: string, fields: Record<string, string | number>): string => {
      const dir = join(root, name);
      cpSync(src, dir, { recursive: true });
      const db = openDatabase(dir, false);
      try {
        const meta = readMeta(db, dir);
        const put = db.prepare('UPDATE meta SET value = ? WHERE key = ?');
        for (const [k, v] of Object.entries(fields)) put.run(String(v), k);
        const numeric = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, typeof v === 'number' ? v : Number.isNaN(Number(v)) ? v : Number(v)]));
        put.run(String(metaCrc({ ...meta, ...numeric } as typeof meta)), 'metaCrc');
      } finally {
        db.close();
      }
      return dir;
    };
    const ab0 = process.memoryUsage().arrayBuffers;
    const lies: [Record<string, string | number>, RegExp][] = [
      [{ dim: 2 ** 30 }, /invalid meta field dim/],
      [{ dim: 65536 }, /row 1: dense vector of 16 bytes, expected 262144/], // in range: the rows give it away
      [{ dim: 8 }, /row 1: dense vector of 16 bytes, expected 32/],
      [{ vocabSize: 2 ** 40 }, /invalid meta field vocabSize/],
      [{ vocabSize: 3 }, /row 1: sparse token ids must ascend strictly below 3/],
      [{ colbertPrecision: 'fp64' }, /invalid meta field colbertPrecision/],
      [{ colbertPrecision: 'none' }, /2 ColBERT rows for 2 documents of an index without ColBERT vectors/],
      [{ batchSize: 2 ** 40 }, /invalid meta field batchSize/],
      [{ maxLength: 0 }, /invalid meta field maxLength/],
      [{ count: -1 }, /invalid meta field count/],
      [{ count: '1e20' }, /invalid meta field count/],
      [{ modelId: 'm'.repeat(5000) }, /invalid meta field modelId/],
      [{ version: 3 }, /unsupported M3Index format version "3"/],
    ];
    for (const [fields, pattern] of lies) {
      const dir = craft(`lie-${Object.keys(fields).join('-')}-${String(Object.values(fields)[0]).slice(0, 12)}`, fields);
      await assert.rejects(M3Index.load(dir), (e: unknown) => {
        m3('INDEX_INVALID', pattern)(e);
        assert.equal((e as { file?: string }).file, join(dir, 'index.sqlite'));
        return true;
      }, JSON.stringify(fields).slice(0, 80));
    }
    // A lie only the ColBERT rows contradict (they are read for reranking only) is caught when they are read.
    const fp32 = await M3Index.load(craft('lie-precision-fp32', { colbertPrecision: 'fp32' }), { readOnly: true });
    const [q] = await fakeEncoder.encode(['x']);
    await assert.rejects(fp32.search(q, { k: 2 }), m3('INDEX_INVALID', /ColBERT bytes: 8 is not a multiple of 16/));
    await fp32.close();
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
    const intact = await M3Index.load(src, { readOnly: true });
    assert.equal(intact.size, 2);
    await intact.close();
  });

  test('a manifest of the pre-database layout claiming huge counts, sizes or dimensions is INDEX_INVALID at migration; nothing is written', async () => {
    const dir = join(tempDir('bgem3-rel-manifest-'), 'ix');
    const legacy = await LegacyM3Index.create({ encoder: fakeEncoder });
    await legacy.add([{ id: 'a', text: 'x' }]);
    await legacy.save(dir);
    const gen = JSON.parse(readFileSync(join(dir, 'CURRENT'), 'utf8')).generation as string;
    const manifestPath = join(dir, gen, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    const ab0 = process.memoryUsage().arrayBuffers;
    for (const lie of [{ count: 2 ** 52 }, { docsBytes: 2 ** 52 }, { dim: 2 ** 30 }, { vocabSize: 2 ** 40 }, { count: -1 }, { dim: 0 }, { files: { ...manifest.files, dense: '../../x' } }]) {
      writeFileSync(manifestPath, JSON.stringify({ ...manifest, ...lie }));
      await assert.rejects(M3Index.load(dir), m3('INDEX_INVALID'), JSON.stringify(lie));
      assert.ok(!existsSync(join(dir, 'index.sqlite')), `${JSON.stringify(lie)}: no database was written`);
      assert.ok(existsSync(join(dir, 'CURRENT')), `${JSON.stringify(lie)}: the old files are left as they were`);
    }
    assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * MB, 'no large allocation');
    writeFileSync(manifestPath, JSON.stringify(manifest));
    const migrated = await M3Index.load(dir);
    assert.equal(migrated.size, 1, 'the honest manifest migrates');
    await migrated.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
