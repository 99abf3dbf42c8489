/**
 * M3Index with a small deterministic fake encoder (the real one is tested elsewhere).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { m3AllScore } from '../src/scoring/weights.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { FakeEncoder, corpus } from './helpers/fake-m3.js';
import { M3Index as LegacyM3Index } from '../../../bench/lib/legacy-m3-index.js';
import { maxSimReference } from '../src/retrieval/maxsim.js';
import type { ColbertMatrix, EncodeResult, SparseVector, TextEncoder3 } from '../src/types.js';

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

{
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
      assert.deepEqual(await index.get('doc-9'), { id: 'doc-9', text: 'replaced nine', metadata: { replaced: true } });
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
      assert.equal((await index.get('x'))?.text, 'second x');
      assert.deepEqual((await index.get(more[1]))?.metadata, {});
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
        // fetchK ≥ corpus and rerankDepth ≥ corpus: every document is a candidate reranked by
        // ColBERT, so the result is the exact brute force.
        const got = await index.search(query, { k: 7, fetchK: 100, weights, rerankDepth: 60 });
        assert.deepEqual(got.map((r) => r.id), brute.slice(0, 7).map((b) => b.id));
        for (const [i, r] of got.entries()) {
          assert.equal(r.scores.dense, brute[i].scores.dense);
          assert.equal(r.scores.sparse, brute[i].scores.sparse);
          assert.ok(Math.abs(r.scores.colbert - brute[i].scores.colbert) < 1e-6);
          assert.equal(r.score, m3AllScore(r.scores, weights));
          assert.equal(r.text, (await index.get(r.id))?.text);
          assert.deepEqual(r.metadata, docs.find((d) => d.id === r.id)?.metadata);
        }
        // Small fetchK: the result is the brute force restricted to dense top-3 ∪ sparse top-3
        // (a query given as an EncodeResult is used as is).
        const dTop = (await index.searchDense(query, { k: 3 })).map((h) => h.id);
        const sTop = (await index.searchSparse(query, { k: 3 })).map((h) => h.id);
        const cands = new Set([...dTop, ...sTop]);
        const small = await index.search(q, { k: 3, fetchK: 3, weights, rerankDepth: 6 });
        assert.deepEqual(small.map((r) => r.id), brute.filter((b) => cands.has(b.id)).slice(0, 3).map((b) => b.id));
        // Single modes agree with brute force too.
        assert.deepEqual(dTop, [...brute].sort((a, b) => b.scores.dense - a.scores.dense || (a.id < b.id ? -1 : 1)).slice(0, 3).map((b) => b.id));
      }
    });

    test('rerankDepth: only the best R candidates by dense + sparse get ColBERT, and their M3 All score is exact', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, colbertPrecision: 'fp32', rerankDepth: 12 });
      const docs = corpus(80, 5);
      await index.add(docs);
      const encoded = new Map(docs.map((d) => [d.id as string, encoder.encodeOne(d.text, all)]));
      const weights = [0.4, 0.2, 0.4] as const;
      const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
      for (const query of ['apple river ocean', 'music history', 'fire stone wind cloud', 'stone']) {
        const q = encoder.encodeOne(query, all);
        // Every document is a candidate (fetchK ≥ corpus): rank all by the partial score, keep
        // the best R, rerank those by the M3 All score.
        const partial = docs
          .map((d) => {
            const e = encoded.get(d.id as string) as EncodeResult;
            const dense = dot(q.dense as Float32Array, e.dense as Float32Array);
            const sparse = lexical(q.sparse as SparseVector, e.sparse as SparseVector);
            return { id: d.id as string, dense, sparse, partial: weights[0] * dense + weights[1] * sparse, e };
          })
          .sort((a, b) => b.partial - a.partial || byId(a, b));
        const expected = (depth: number) =>
          partial
            .slice(0, depth)
            .map((c) => {
              const scores = { dense: c.dense, sparse: c.sparse, colbert: maxSimReference(q.colbert as ColbertMatrix, c.e.colbert as ColbertMatrix) };
              return { id: c.id, score: m3AllScore(scores, weights) };
            })
            .sort((a, b) => b.score - a.score || byId(a, b));
        for (const [opts, depth] of [[{}, 12], [{ rerankDepth: 3 }, 5], [{ rerankDepth: 30 }, 30], [{ rerankDepth: 1000 }, 80]] as const) {
          // k 5: a depth below k is raised to k.
          const got = await index.search(q, { k: 5, fetchK: 100, weights, ...opts });
          const want = expected(depth);
          assert.deepEqual(got.map((r) => r.id), want.slice(0, 5).map((w) => w.id), `${query} ${JSON.stringify(opts)}`);
          for (const [i, r] of got.entries()) assert.ok(Math.abs(r.score - want[i].score) < 1e-6);
        }
        // ColBERT weight 0: no rerank stage, the partial order is the result.
        const noColbert = await index.search(q, { k: 5, fetchK: 100, weights: [0.4, 0.2, 0], rerankDepth: 1 });
        assert.deepEqual(noColbert.map((r) => r.id), partial.slice(0, 5).map((c) => c.id));
      }
      for (const bad of [0, -1, 1.5, '10', Number.NaN, 200_001]) {
        await assert.rejects(index.search('apple', { rerankDepth: bad as number }), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /rerankDepth/.test(e.message), String(bad));
        await assert.rejects(M3Index.create({ encoder, rerankDepth: bad as number }), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /rerankDepth/.test(e.message), String(bad));
      }
      await index.close();
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
      await assert.rejects(index.delete(42 as unknown as string), (e: any) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /ids must be a string or an array/.test(e.message));
      await assert.rejects(index.delete(['a', 7] as unknown as string[]), (e: any) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /ids\[1\]/.test(e.message));
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

    test('save/load round trip; the saved settings; mismatched encoders; save into another index replaces it atomically', async () => {
      const encoder = new FakeEncoder();
      const index = await M3Index.create({ encoder, colbertPrecision: 'fp16', maxLength: 32, batchSize: 7 });
      await index.add(corpus(50, 7));
      await index.add([{ id: 'uni', text: 'ünïcödé apple', metadata: { nested: { a: [1, 2] }, s: 'x\ny' } }]);
      const before: Record<string, unknown> = {};
      for (const q of ['apple river', 'music', 'fire water stone']) before[q] = await index.search(q, { k: 8 });
      const dir = join(tmp, 'roundtrip');
      await index.save(dir);
      assert.ok(readdirSync(dir).includes('index.sqlite'));
      assert.equal(index.directory, realpathSync(dir));
      // The saved index lives in dir now: a later add is committed there, with no save.
      await index.add([{ id: 'late', text: 'late apple' }]);
      const loaded = await M3Index.load(dir, { encoder, readOnly: true });
      assert.equal(loaded.size, 52);
      assert.equal(loaded.colbertPrecision, 'fp16');
      assert.deepEqual(loaded.settings, { modelId: 'fake/m3', maxLength: 32, colbertPrecision: 'fp16', batchSize: 7 });
      assert.deepEqual(await loaded.get('uni'), await index.get('uni'));
      await index.delete('late');
      for (const q of Object.keys(before)) {
        assert.deepEqual(await loaded.search(q, { k: 8 }), before[q]);
        assert.deepEqual(await index.search(q, { k: 8 }), before[q]);
      }
      // maxLength was saved with the index.
      encoder.calls.length = 0;
      await loaded.search('apple');
      assert.equal(encoder.calls[0].options?.maxLength, 32);
      // Without an encoder: EncodeResult queries work, text queries explain what is missing.
      const bare = await M3Index.load(dir, { readOnly: true });
      const q = encoder.encodeOne('apple river', all);
      assert.deepEqual(await bare.search(q, { k: 5 }), await index.search(q, { k: 5 }));
      await assert.rejects(bare.search('apple'), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /encoder/.test(e.message));
      await assert.rejects(bare.add([{ text: 'x' }]), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /readOnly/.test(e.message));
      // Mismatched encoders.
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('other/model') }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /model id/.test(e.message));
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('fake/m3', 32) }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /dimension 16 vs 32/.test(e.message));
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('fake/m3', 16, 6000) }), (e: unknown) => e instanceof M3Error && e.code === 'INDEX_MISMATCH' && /vocabulary/.test(e.message));
      // save(dir) of the index's own directory is a checkpoint; metadata JSON cannot hold is refused at add.
      await index.save(dir);
      await assert.rejects(index.add([{ id: 'big', text: 'apple', metadata: { n: 1n } }]), codeOf('INVALID_ARGUMENT'));
      // Saving another index into dir replaces it in one transaction; the reader follows.
      await index.close();
      const other = await M3Index.create({ encoder, colbertPrecision: 'fp16' });
      await other.add(corpus(5, 8));
      await other.save(dir);
      assert.equal(loaded.size, 5);
      assert.deepEqual(await loaded.search('apple', { k: 3 }), await other.search('apple', { k: 3 }));
      await other.close();
      assert.equal((await M3Index.load(dir)).size, 5);
      // Empty index.
      const empty = await M3Index.create({ encoder });
      await empty.save(join(tmp, 'empty'));
      assert.equal((await M3Index.load(join(tmp, 'empty'))).size, 0);
      await empty.close();
    });

    test('damaged, edited or swapped rows are INDEX_INVALID naming the file', async () => {
      const encoder = new FakeEncoder();
      const make = async (name: string, seed: number) => {
        const dir = join(tmp, name);
        const index = await M3Index.open(dir, { encoder });
        await index.add(corpus(20, seed));
        await index.close();
        return { dir, file: join(dir, 'index.sqlite') };
      };
      const a = await make('damaged-a', 8);
      const b = await make('damaged-b', 9); // same ids, other texts and vectors
      await assert.rejects(M3Index.load(join(tmp, 'nothing-here')), codeOf('INDEX_INVALID'));
      const isInvalid = (file: string) => (e: unknown) => e instanceof M3Error && e.code === 'INDEX_INVALID' && e.file === file;
      const edit = (file: string, sql: string, ...params: unknown[]) => {
        const db = new Database(file);
        db.prepare(sql).run(...params);
        db.close();
      };
      const copyDir = (from: string, to: string) => {
        rmSync(to, { recursive: true, force: true });
        cpSync(from, to, { recursive: true });
        return join(to, 'index.sqlite');
      };
      // A docs row edited in place (metadata): refused at load.
      let f = copyDir(a.dir, join(tmp, 'd1'));
      edit(f, `UPDATE docs SET metadata = ? WHERE id = 'doc-3'`, Buffer.from('{"i":4}'));
      await assert.rejects(M3Index.load(join(tmp, 'd1')), isInvalid(f));
      // A text row swapped in from another index with the same ids: refused when read.
      f = copyDir(a.dir, join(tmp, 'd2'));
      const db = new Database(f);
      db.prepare('ATTACH DATABASE ? AS b').run(b.file);
      db.exec(`UPDATE texts SET text = (SELECT t.text FROM b.texts t JOIN b.docs d USING (rid) WHERE d.id = 'doc-5'), crc = (SELECT t.crc FROM b.texts t JOIN b.docs d USING (rid) WHERE d.id = 'doc-5') WHERE rid = (SELECT rid FROM docs WHERE id = 'doc-5')`);
      db.exec(`UPDATE colbert SET data = (SELECT c.data FROM b.colbert c JOIN b.docs d USING (rid) WHERE d.id = 'doc-6'), crc = (SELECT c.crc FROM b.colbert c JOIN b.docs d USING (rid) WHERE d.id = 'doc-6') WHERE rid = (SELECT rid FROM docs WHERE id = 'doc-6')`);
      db.close();
      const swapped = await M3Index.load(join(tmp, 'd2'), { readOnly: true });
      await assert.rejects(swapped.get('doc-5'), isInvalid(f));
      await assert.rejects(swapped.rescore(encoder.encodeOne('apple', all), ['doc-6']), isInvalid(f));
      assert.equal((await swapped.get('doc-4'))?.id, 'doc-4', 'intact rows still read');
      await swapped.close();
      // A whole docs row swapped in from the other index.
      f = copyDir(a.dir, join(tmp, 'd3'));
      const db3 = new Database(f);
      db3.prepare('ATTACH DATABASE ? AS b').run(b.file);
      db3.exec(`UPDATE docs SET dense = (SELECT dense FROM b.docs WHERE id = 'doc-1'), sparse = (SELECT sparse FROM b.docs WHERE id = 'doc-1'), crc = (SELECT crc FROM b.docs WHERE id = 'doc-1') WHERE id = 'doc-1'`);
      db3.close();
      await assert.rejects(M3Index.load(join(tmp, 'd3')), isInvalid(f));
      // Meta edited (another precision or model): the meta checksum fails.
      f = copyDir(a.dir, join(tmp, 'd4'));
      edit(f, `UPDATE meta SET value = 'other/model' WHERE key = 'modelId'`);
      await assert.rejects(M3Index.load(join(tmp, 'd4')), isInvalid(f));
      // A row removed behind the index's back: the counts disagree.
      f = copyDir(a.dir, join(tmp, 'd5'));
      edit(f, `DELETE FROM texts WHERE rid = 3`);
      await assert.rejects(M3Index.load(join(tmp, 'd5')), isInvalid(f));
      // A ColBERT row removed: the load does not scan the ColBERT table, the first search that
      // reranks the document refuses it (never a silently dropped candidate), others still work.
      f = copyDir(a.dir, join(tmp, 'd5c'));
      edit(f, `DELETE FROM colbert WHERE rid = (SELECT rid FROM docs WHERE id = 'doc-7')`);
      const lost = await M3Index.load(join(tmp, 'd5c'), { readOnly: true });
      await assert.rejects(lost.rescore(encoder.encodeOne('apple', all), ['doc-2', 'doc-7']), (e: unknown) => isInvalid(f)(e) && /has no ColBERT vectors/.test((e as Error).message));
      assert.equal((await lost.rescore(encoder.encodeOne('apple', all), ['doc-2'])).length, 1);
      await assert.rejects(lost.search(encoder.encodeOne('apple', all), { k: 20, fetchK: 20, rerankDepth: 20 }), isInvalid(f));
      await lost.close();
      // A dense blob of the wrong size (with a matching checksum, as a crafted file would have) is refused before use.
      f = copyDir(a.dir, join(tmp, 'd6'));
      edit(f, `UPDATE docs SET dense = zeroblob(8) WHERE id = 'doc-2'`);
      await assert.rejects(M3Index.load(join(tmp, 'd6')), isInvalid(f));
      // Truncated and non-database files.
      f = copyDir(a.dir, join(tmp, 'd7'));
      writeFileSync(f, readFileSync(f).subarray(0, 20000));
      await assert.rejects(M3Index.load(join(tmp, 'd7')), codeOf('INDEX_INVALID'));
      writeFileSync(f, 'not a database at all, just text');
      await assert.rejects(M3Index.load(join(tmp, 'd7')), codeOf('INDEX_INVALID'));
      // The untouched original still loads.
      assert.equal((await M3Index.load(a.dir, { readOnly: true })).size, 20);
    });

    test('a directory written by the previous release (CURRENT + gen-*) is migrated on load', async () => {
      const encoder = new FakeEncoder();
      const dir = join(tmp, 'legacy');
      const docs = corpus(25, 11);
      const legacy = await LegacyM3Index.create({ encoder, colbertPrecision: 'int8', maxLength: 48 });
      await legacy.add(docs);
      await legacy.save(dir);
      assert.ok(readdirSync(dir).includes('CURRENT'));
      const reader = await M3Index.load(dir, { encoder, readOnly: true });
      assert.ok(readdirSync(dir).includes('CURRENT'), 'a reader leaves the directory as it is');
      const index = await M3Index.load(dir, { encoder });
      assert.deepEqual(readdirSync(dir).filter((n) => n === 'CURRENT' || n.startsWith('gen-')), []);
      for (const x of [reader, index]) {
        assert.equal(x.size, 25);
        assert.equal(x.colbertPrecision, 'int8');
        assert.equal(x.settings.maxLength, 48);
        for (const q of ['apple river', 'music history']) {
          const want = await legacy.search(q, { k: 6 });
          const got = await x.search(q, { k: 6 });
          assert.deepEqual(got.map((r) => r.id), want.map((r) => r.id));
          got.forEach((r, i) => assert.ok(Math.abs(r.score - want[i].score) < 1e-6));
        }
        assert.deepEqual(await x.get('doc-3'), { id: 'doc-3', text: docs[3].text, metadata: docs[3].metadata });
      }
      await index.close();
      assert.equal((await M3Index.load(dir)).size, 25);
    });

    test('two loads migrating one old directory at once: one migrates under the writer lock, the other waits and then loads its database (nothing migrated twice, no write lost)', async () => {
      const encoder = new FakeEncoder();
      const dir = join(tmp, 'legacy-race');
      const legacy = await LegacyM3Index.create({ encoder });
      await legacy.add(corpus(12, 4));
      await legacy.save(dir);
      const loads = [M3Index.load(dir, { encoder, lockTimeoutMs: 20_000 }), M3Index.load(dir, { encoder, lockTimeoutMs: 20_000 })];
      // Whichever takes the lock migrates and keeps it as the index's writer; the other waits.
      const done = await Promise.race(loads.map((p, i) => p.then((index) => ({ index, i }))));
      const a = done.index;
      assert.deepEqual(readdirSync(dir).filter((n) => n === 'CURRENT' || n.startsWith('gen-')), []);
      // Written after the migration: the waiting load must see it, not a second migration of the old files.
      await a.add([{ id: 'after-migration', text: 'apple river written by the first' }]);
      await a.close();
      const b = await loads[1 - done.i];
      assert.equal(b.size, 13);
      assert.equal((await b.get('after-migration'))?.text, 'apple river written by the first');
      await b.close();
      assert.deepEqual(readdirSync(dir).filter((n) => n === 'CURRENT' || n.startsWith('gen-')), []);
    });
  });
}
