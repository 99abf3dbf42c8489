/**
 * M3Index with a small deterministic fake encoder (the real one is tested elsewhere).
 * With BGEM3_M3INDEX_CRASH_CHILD set, this file is the child process of the crash test.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { m3AllScore } from '../src/scoring/weights.js';
import { M3Index, type M3Document } from '../src/retrieval/m3-index.js';
import { maxSimReference } from '../src/retrieval/maxsim.js';
import type { ColbertMatrix, EncodeOptions, EncodeResult, SparseVector, TextEncoder3 } from '../src/types.js';

function hash(s: string, seed = 0): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

function unitFor(key: string, dim: number): Float32Array {
  const v = new Float32Array(dim);
  let n = 0;
  for (let j = 0; j < dim; j++) {
    v[j] = (hash(key, j + 1) / 2 ** 32) * 2 - 1;
    n += v[j] * v[j];
  }
  return v.map((x) => x / Math.sqrt(n));
}

/** Words → token ids by hash; lexical weight per token; dense = normalised sum of word vectors; ColBERT = word vectors + `</s>`. */
class FakeEncoder implements TextEncoder3 {
  readonly calls: { texts: string[]; options: EncodeOptions | undefined }[] = [];
  constructor(
    readonly modelId = 'fake/m3',
    readonly dim = 16,
    readonly vocabSize = 5000,
    private readonly broken?: 'dim',
  ) {}

  encodeOne(text: string, options: EncodeOptions = {}): EncodeResult {
    const words = text.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
    const D = this.dim;
    const out: EncodeResult = { tokens: words.length + 2, truncated: false };
    if (options.dense) {
      const d = new Float32Array(this.broken === 'dim' ? D + 1 : D);
      for (const w of words) unitFor(w, D).forEach((x, j) => (d[j] += x));
      const n = Math.hypot(...d) || 1;
      out.dense = d.map((x) => x / n);
    }
    if (options.sparse) {
      const weights = new Map<number, number>();
      for (const w of words) {
        const id = 4 + (hash(w) % (this.vocabSize - 4));
        weights.set(id, Math.max(weights.get(id) ?? 0, Math.fround(0.05 + (hash(w, 99) % 300) / 1000)));
      }
      const indices = Uint32Array.from([...weights.keys()].sort((a, b) => a - b));
      out.sparse = { indices, values: Float32Array.from(indices, (i) => weights.get(i) as number) };
    }
    if (options.colbert) {
      const rows = [...words, '</s>'];
      const data = new Float32Array(rows.length * D);
      rows.forEach((w, i) => data.set(unitFor(`c:${w}`, D), i * D));
      out.colbert = { data, count: rows.length, dim: D };
    }
    return out;
  }

  async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.calls.push({ texts: [...texts], options });
    if (options?.signal?.aborted) throw new M3Error('ABORTED', 'aborted');
    return texts.map((t) => this.encodeOne(t, options));
  }
}

const WORDS = 'apple banana cherry river mountain ocean forest desert city village music painting science history energy water fire stone cloud wind'.split(' ');

function corpus(n: number, seed: number): M3Document[] {
  const docs: M3Document[] = [];
  for (let i = 0; i < n; i++) {
    const len = 3 + (hash(`len${i}`, seed) % 8);
    const words = Array.from({ length: len }, (_, j) => WORDS[hash(`${i}:${j}`, seed) % WORDS.length]);
    docs.push({ id: `doc-${i}`, text: words.join(' '), metadata: { i, even: i % 2 === 0 } });
  }
  return docs;
}

function lexical(q: SparseVector, d: SparseVector): number {
  let s = 0;
  for (let a = 0, b = 0; a < q.indices.length && b < d.indices.length; ) {
    if (q.indices[a] === d.indices[b]) s += q.values[a++] * d.values[b++];
    else if (q.indices[a] < d.indices[b]) a++;
    else b++;
  }
  return s;
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

const all = { dense: true, sparse: true, colbert: true };
const codeOf = (code: string) => (e: unknown) => e instanceof M3Error && e.code === code;

if (process.env.BGEM3_M3INDEX_CRASH_CHILD) {
  // Crash-test child: saves index B (large) and A (small) alternately into the same directory.
  const dir = process.env.BGEM3_M3INDEX_CRASH_CHILD;
  const encoder = new FakeEncoder('fake/m3', 64);
  const a = await M3Index.create({ encoder, colbertPrecision: 'fp32' });
  await a.add(corpus(30, 1));
  const b = await M3Index.create({ encoder, colbertPrecision: 'fp32' });
  await b.add(corpus(6000, 2));
  process.stdout.write(`READY ${a.size} ${b.size}\n`);
  for (let i = 0; ; i++) await (i % 2 === 0 ? b : a).save(dir);
} else {
  const tmp = mkdtempSync(join(tmpdir(), 'bgem3-m3index-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  describe('M3Index', () => {
    test('add encodes every batch with ONE call for all three outputs, each document once', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, batchSize: 4, maxLength: 64 });
      const docs = corpus(10, 1);
      docs.push({ id: 'doc-9', text: 'replaced nine', metadata: { replaced: true } }); // same batch as doc-9: encoded once, last wins
      const ids = await index.add(docs);
      assert.deepEqual(ids, docs.map((d) => d.id));
      assert.equal(encoder.calls.length, 3);
      assert.deepEqual(encoder.calls.map((c) => c.texts.length), [4, 4, 2]);
      assert.deepEqual(encoder.calls.flatMap((c) => c.texts).sort(), [...docs.slice(0, 9), docs[10]].map((d) => d.text).sort());
      for (const c of encoder.calls) assert.deepEqual({ ...c.options }, { ...all, maxLength: 64 });
      assert.equal(index.size, 10);
      assert.deepEqual(index.get('doc-9'), { id: 'doc-9', text: 'replaced nine', metadata: { replaced: true } });
      // Duplicates within one batch are encoded once (the last wins); missing ids get UUIDs.
      encoder.calls.length = 0;
      const more = await index.add([
        { id: 'x', text: 'first x' },
        { text: 'no id here' },
        { id: 'x', text: 'second x' },
      ]);
      assert.equal(encoder.calls.length, 1);
      assert.deepEqual(encoder.calls[0].texts, ['no id here', 'second x']);
      assert.match(more[1], /^[0-9a-f-]{36}$/);
      assert.equal(index.get('x')?.text, 'second x');
      assert.deepEqual(index.get(more[1])?.metadata, {});
      // One query encoding per search, with all three outputs.
      encoder.calls.length = 0;
      await index.search('apple river');
      assert.equal(encoder.calls.length, 1);
      assert.deepEqual({ ...encoder.calls[0].options }, { ...all, maxLength: 64 });
    });

    test('search = dense ∪ sparse candidates rescored exactly by all three modes', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, colbertPrecision: 'fp32' });
      const docs = corpus(60, 2);
      await index.add(docs);
      const encoded = new Map(docs.map((d) => [d.id as string, encoder.encodeOne(d.text, all)]));
      const weights = [0.5, 0.3, 0.2] as const;
      for (const query of ['apple river ocean', 'music history', 'fire stone wind cloud']) {
        const q = encoder.encodeOne(query, all);
        const brute = docs
          .map((d) => {
            const e = encoded.get(d.id as string) as EncodeResult;
            const scores = {
              dense: dot(q.dense as Float32Array, e.dense as Float32Array),
              sparse: lexical(q.sparse as SparseVector, e.sparse as SparseVector),
              colbert: maxSimReference(q.colbert as ColbertMatrix, e.colbert as ColbertMatrix),
            };
            return { id: d.id as string, scores, score: m3AllScore(scores, weights) };
          })
          .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
        // fetchK ≥ corpus: every document is a candidate, so the result is the exact brute force.
        const got = await index.search(query, { k: 7, fetchK: 100, weights });
        assert.deepEqual(got.map((r) => r.id), brute.slice(0, 7).map((b) => b.id));
        got.forEach((r, i) => {
          assert.equal(r.scores.dense, brute[i].scores.dense);
          assert.equal(r.scores.sparse, brute[i].scores.sparse);
          assert.ok(Math.abs(r.scores.colbert - brute[i].scores.colbert) < 1e-6);
          assert.equal(r.score, m3AllScore(r.scores, weights));
          assert.equal(r.text, index.get(r.id)?.text);
          assert.deepEqual(r.metadata, docs.find((d) => d.id === r.id)?.metadata);
        });
        // Small fetchK: the result is the brute force restricted to dense top-3 ∪ sparse top-3
        // (a query given as an EncodeResult is used as is).
        const dTop = (await index.searchDense(query, { k: 3 })).map((h) => h.id);
        const sTop = (await index.searchSparse(query, { k: 3 })).map((h) => h.id);
        const cands = new Set([...dTop, ...sTop]);
        const small = await index.search(q, { k: 3, fetchK: 3, weights });
        assert.deepEqual(small.map((r) => r.id), brute.filter((b) => cands.has(b.id)).slice(0, 3).map((b) => b.id));
        // Single modes agree with brute force too.
        assert.deepEqual(dTop, [...brute].sort((a, b) => b.scores.dense - a.scores.dense || (a.id < b.id ? -1 : 1)).slice(0, 3).map((b) => b.id));
      }
    });

    test('a ColBERT weight of 0 skips ColBERT entirely', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder });
      await index.add(corpus(20, 9));
      encoder.calls.length = 0;
      const hits = await index.search('apple river', { k: 5, weights: [1, 0.3, 0] });
      assert.deepEqual({ ...encoder.calls[0].options }, { dense: true, sparse: true, colbert: false });
      for (const h of hits) {
        assert.equal(h.scores.colbert, 0);
        assert.equal(h.score, (h.scores.dense + 0.3 * h.scores.sparse) / 1.3);
      }
      const q = encoder.encodeOne('apple river', { dense: true, sparse: true });
      assert.deepEqual(await index.search(q, { k: 5, weights: [1, 0.3, 0] }), hits);
      await assert.rejects(index.search(q, { k: 5 }), codeOf('INVALID_ARGUMENT'));
    });

    test('metadata filter, delete, empty index and validation', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder });
      assert.deepEqual(await index.search('apple'), []);
      assert.deepEqual(await index.searchDense('apple'), []);
      assert.equal(encoder.calls.length, 0, 'an empty index does not encode the query');
      await index.add(corpus(40, 3));
      const even = await index.search('apple banana', { k: 50, filter: (m) => m.even === true });
      assert.ok(even.length > 0);
      for (const r of even) assert.equal(r.metadata.even, true);
      const evenSparse = await index.searchSparse('apple banana', { k: 50, filter: (m) => m.even === true });
      for (const r of evenSparse) assert.equal(r.metadata.even, true);
      const before = await index.search('apple banana', { k: 5 });
      assert.equal(await index.delete([before[0].id, 'nope']), 1);
      assert.equal(index.size, 39);
      assert.ok(!(await index.search('apple banana', { k: 40 })).some((r) => r.id === before[0].id));
      await assert.rejects(index.delete(42 as unknown as string), (e: any) => e instanceof TypeError && /ids must be a string or an array/.test(e.message));
      await assert.rejects(index.delete(['a', 7] as unknown as string[]), (e: any) => e instanceof TypeError && /ids\[1\]/.test(e.message));
      assert.equal(index.size, 39, 'a refused delete removes nothing');
      for (const opts of [{ k: 0 }, { k: 1.5 }, { fetchK: -1 }, { weights: [0, 0, 0] as const }, { weights: [1, -1, 1] as const }]) {
        await assert.rejects(index.search('apple', opts), codeOf('INVALID_ARGUMENT'), JSON.stringify(opts));
      }
      await assert.rejects(index.search({ tokens: 1, truncated: false }), codeOf('INVALID_ARGUMENT'));
      await assert.rejects(index.add([{ text: 42 as unknown as string }]), codeOf('INVALID_ARGUMENT'));
      await assert.rejects(index.add([{ id: '', text: 'x' }]), codeOf('INVALID_ARGUMENT'));
      await assert.rejects(M3Index.create({ encoder: {} as TextEncoder3 }), codeOf('INVALID_ARGUMENT'));
    });

    test('a bad encoder output stores nothing; addEncoded reuses encodings without encoding', async () => {
      const bad = await M3Index.create({ encoder: new FakeEncoder('fake/m3', 16, 5000, 'dim') });
      await assert.rejects(bad.add(corpus(3, 4)), codeOf('INVALID_ARGUMENT'));
      assert.equal(bad.size, 0);
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder });
      const docs = corpus(5, 5).map((d) => ({ ...d, encoding: encoder.encodeOne(d.text, all) }));
      encoder.calls.length = 0;
      assert.deepEqual(await index.addEncoded(docs), docs.map((d) => d.id));
      assert.equal(encoder.calls.length, 0);
      assert.equal(index.size, 5);
      await assert.rejects(index.addEncoded([{ text: 'x', encoding: encoder.encodeOne('x', { dense: true }) }]), codeOf('INVALID_ARGUMENT'));
      assert.equal(index.size, 5);
    });

    test('streams an async iterable and honours an abort signal between batches', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, batchSize: 3 });
      const controller = new AbortController();
      async function* gen() {
        for (const d of corpus(10, 6)) {
          if (d.id === 'doc-7') controller.abort();
          yield d;
        }
      }
      await assert.rejects(index.add(gen(), { signal: controller.signal }), codeOf('ABORTED'));
      assert.equal(index.size, 6); // two complete batches were stored before the abort
      await index.add((async function* () { yield* corpus(10, 6); })());
      assert.equal(index.size, 10);
    });

    test('save/load round trip; mismatched encoder; generations are swapped atomically', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, colbertPrecision: 'int8', maxLength: 32 });
      await index.add(corpus(50, 7));
      await index.add([{ id: 'uni', text: 'ünïcödé apple', metadata: { nested: { a: [1, 2] }, s: 'x\ny' } }]);
      const dir = join(tmp, 'roundtrip');
      await index.save(dir);
      const loaded = await M3Index.load(dir, { encoder });
      assert.equal(loaded.size, index.size);
      assert.equal(loaded.colbertPrecision, 'int8');
      assert.deepEqual(loaded.get('uni'), index.get('uni'));
      for (const q of ['apple river', 'music', 'fire water stone']) {
        assert.deepEqual(await loaded.search(q, { k: 8 }), await index.search(q, { k: 8 }));
      }
      // maxLength was saved with the index.
      encoder.calls.length = 0;
      await loaded.search('apple');
      assert.equal(encoder.calls[0].options?.maxLength, 32);
      // Without an encoder: EncodeResult queries work, text queries explain what is missing.
      const bare = await M3Index.load(dir);
      const q = encoder.encodeOne('apple river', all);
      assert.deepEqual(await bare.search(q, { k: 5 }), await index.search(q, { k: 5 }));
      await assert.rejects(bare.search('apple'), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /encoder/.test(e.message));
      // Mismatched encoders.
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('other/model') }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /model id/.test(e.message));
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('fake/m3', 32) }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /dimension 16 vs 32/.test(e.message));
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('fake/m3', 16, 6000) }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /vocabulary/.test(e.message));
      // Saving again switches generations and keeps at most the previous one.
      await loaded.delete(['doc-1', 'doc-2']);
      await loaded.save(dir);
      await loaded.save(dir);
      const gens = readdirSync(dir).filter((n) => n.startsWith('gen-'));
      assert.equal(gens.length, 2);
      const again = await M3Index.load(dir, { encoder });
      assert.equal(again.size, index.size - 2);
      // A failed save (metadata that JSON cannot represent) leaves the last good save in place.
      await loaded.add([{ id: 'big', text: 'apple', metadata: { n: 1n } }]);
      await assert.rejects(loaded.save(dir), codeOf('INVALID_ARGUMENT'));
      assert.equal(readdirSync(dir).filter((n) => n.startsWith('gen-')).length, 2);
      assert.equal((await M3Index.load(dir)).size, index.size - 2);
      // Empty index.
      const empty = await M3Index.create({ encoder });
      await empty.save(join(tmp, 'empty'));
      assert.equal((await M3Index.load(join(tmp, 'empty'))).size, 0);
    });

    test('damaged directories are INDEX_INVALID naming the file', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder });
      await index.add(corpus(20, 8));
      const dir = join(tmp, 'damaged');
      await index.save(dir);
      const pointer = JSON.parse(readFileSync(join(dir, 'CURRENT'), 'utf8')) as { generation: string };
      const gen = join(dir, pointer.generation);
      await assert.rejects(M3Index.load(join(tmp, 'nothing-here')), codeOf('INDEX_INVALID'));
      const docsPath = join(gen, 'docs.jsonl');
      const docs = readFileSync(docsPath);
      writeFileSync(docsPath, docs.subarray(0, docs.length - 7));
      await assert.rejects(M3Index.load(dir), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_INVALID' && e.file === docsPath);
      const flipped = Buffer.from(docs);
      flipped[10] = flipped[10] === 0x61 ? 0x62 : 0x61;
      writeFileSync(docsPath, flipped);
      await assert.rejects(M3Index.load(dir), codeOf('INDEX_INVALID'));
      writeFileSync(docsPath, docs);
      await M3Index.load(dir);
      const sparsePath = join(gen, 'sparse.bin');
      const sparse = readFileSync(sparsePath);
      writeFileSync(sparsePath, sparse.subarray(0, 100));
      await assert.rejects(M3Index.load(dir), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_INVALID' && e.file === sparsePath);
      writeFileSync(sparsePath, sparse);
      writeFileSync(join(dir, 'CURRENT'), JSON.stringify({ format: 'bgem3-m3index', generation: '../../etc' }));
      await assert.rejects(M3Index.load(dir), codeOf('INDEX_INVALID'));
      // A manifest that disagrees with a part is corruption, not a mismatch.
      writeFileSync(join(dir, 'CURRENT'), JSON.stringify({ format: 'bgem3-m3index', generation: pointer.generation }));
      const manifestPath = join(gen, 'manifest.json');
      const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
      writeFileSync(manifestPath, JSON.stringify({ ...manifest, colbertPrecision: 'fp32' }));
      await assert.rejects(M3Index.load(dir), codeOf('INDEX_INVALID'));
    });

    test('SIGKILL during M3Index.save leaves a loadable index (old or new)', async (t) => {
      const dir = join(tmp, 'crash');
      const encoder = new FakeEncoder('fake/m3', 64);
      const initial = await M3Index.create({ encoder, colbertPrecision: 'fp32' });
      await initial.add(corpus(30, 1));
      await initial.save(dir);
      const self = fileURLToPath(import.meta.url);
      const root = join(dirname(self), '..', '..', '..');
      const child = spawn(process.execPath, ['--import', 'tsx', relative(root, self)], {
        cwd: root,
        env: { ...process.env, BGEM3_M3INDEX_CRASH_CHILD: dir },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const exited = new Promise((res) => child.on('exit', (_c, sig) => res(sig)));
      const sizes = await new Promise<number[]>((res, rej) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /READY (\d+) (\d+)\n/.exec(out);
          if (m) res([Number(m[1]), Number(m[2])]);
        });
        child.on('exit', () => rej(new Error(`child exited early: ${out}`)));
      });
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 250)));
      child.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      const loaded = await M3Index.load(dir, { encoder });
      assert.ok(sizes.includes(loaded.size), `loaded ${loaded.size} documents, expected one of ${sizes.join(', ')}`);
      if (loaded.size === sizes[0]) assert.deepEqual(await loaded.search('apple river', { k: 5 }), await initial.search('apple river', { k: 5 }));
      t.diagnostic(`loaded the ${loaded.size === sizes[0] ? 'small (A)' : 'large (B)'} index`);
    });
  });
}
