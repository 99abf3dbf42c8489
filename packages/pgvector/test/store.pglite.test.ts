/**
 * PgM3Store on an in-process PGlite (pgvector 0.8), or on the server of BGEM3_PG_URL: agreement
 * with the embedded M3Index, writes, both sparse first stages (postings and the 1,000-non-zero
 * HNSW projection), schema/meta checks and filters.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { M3Error, M3Index, lexicalMatchingScore, type EncodeResult, type M3EncodedDocument, type M3Encoder, type SparseVector, type TextEncoder3 } from '@bgem3/core';
import { PgM3Store, type PgM3StoreOptions, type SqlClient } from '../src/index.js';
import { decodeSparsevecSend } from '../src/codec.js';
import { CORPUS, QUERIES, RUN, assertSameResults, loadEncoder, sharedDatabase, syntheticEncoding, type TestDatabase } from './helpers.js';

let encoder: M3Encoder;
let pg: TestDatabase;
let tables = 0;
const next = () => `${RUN}_${++tables}`;

/** A store in a fresh table. */
function fresh(options: Partial<PgM3StoreOptions> = {}): Promise<PgM3Store> {
  return PgM3Store.connect({ client: pg.client, encoder, table: next(), ...options });
}

before(async () => {
  [encoder, pg] = await Promise.all([loadEncoder(), sharedDatabase()]);
});
after(async () => {
  await pg.close();
});

describe('agreement with the embedded M3Index', () => {
  let store: PgM3Store;
  let index: M3Index;
  before(async () => {
    // 'vector' keeps dense values in float32, so every score can be compared at 1e-5.
    store = await fresh({ denseType: 'vector' });
    index = await M3Index.create({ encoder });
    await Promise.all([store.add(CORPUS), index.add(CORPUS)]);
  });

  it('search: same top-k ids and scores (fetchK ≥ corpus, so HNSW cannot differ)', async () => {
    assert.equal(await store.count(), CORPUS.length);
    for (const q of QUERIES) {
      const [a, b] = await Promise.all([store.search(q, { k: 8, fetchK: 100 }), index.search(q, { k: 8, fetchK: 100 })]);
      assert.equal(a.length, 8);
      assertSameResults(a, b, 1e-5, q);
    }
  });

  it('search: small fetchK gives the same candidates (ef_search 40 covers 24 rows) and results', async () => {
    for (const q of QUERIES) {
      const [a, b] = await Promise.all([store.search(q, { k: 3, fetchK: 4 }), index.search(q, { k: 3, fetchK: 4 })]);
      assertSameResults(a, b, 1e-5, q);
    }
  });

  it('search: other weights, and ColBERT weight 0 (skipped, reported 0)', async () => {
    for (const weights of [[1, 1, 1], [0.2, 0.8, 0], [0, 0, 1]] as const) {
      const [a, b] = await Promise.all([store.search(QUERIES[0], { k: 5, weights }), index.search(QUERIES[0], { k: 5, weights })]);
      assertSameResults(a, b, 1e-5, `weights ${weights}`);
      if (weights[2] === 0) assert.ok(a.every((h) => h.scores.colbert === 0), 'ColBERT scores are 0');
    }
  });

  it('rerankDepth: only the best R by dense + sparse get ColBERT; their M3 All scores are exact; R ≥ candidates equals M3Index', async () => {
    let agree = 0;
    let total = 0;
    for (const q of QUERIES) {
      const all = await index.search(q, { k: 24, fetchK: 100 });
      assertSameResults(await store.search(q, { k: 5, fetchK: 100, rerankDepth: 24 }), all.slice(0, 5), 1e-5, `${q} R 24`);
      for (const depth of [5, 8, 12]) {
        const got = await store.search(q, { k: 5, fetchK: 100, rerankDepth: depth });
        // Exact for those returned: the same scores as M3Index.rescore of the same ids.
        const exact = await index.rescore(q, got.map((h) => h.id));
        assertSameResults(got, exact, 1e-5, `${q} R ${depth}`);
        // The R reranked are the R best by w_d·dense + w_s·sparse.
        const byPartial = [...all].sort((a, b) => 0.4 * b.scores.dense + 0.2 * b.scores.sparse - (0.4 * a.scores.dense + 0.2 * a.scores.sparse));
        const allowed = new Set(byPartial.slice(0, depth).map((h) => h.id));
        assert.ok(got.every((h) => allowed.has(h.id)), `${q} R ${depth}: only the top ${depth} by dense + sparse`);
        const want = new Set(all.slice(0, 5).map((h) => h.id));
        agree += got.filter((h) => want.has(h.id)).length;
        total += 5;
      }
    }
    // The fixture's weights are random (ColBERT is barely related to dense/sparse): a floor, not a target.
    assert.ok(agree / total >= 0.5, `top-5 agreement with full rescoring ${agree}/${total}`);
    await assert.rejects(store.search(QUERIES[0], { rerankDepth: 0 }), /rerankDepth/);
  });

  it('search with a precomputed EncodeResult query equals the string query', async () => {
    const [q] = await encoder.encode([QUERIES[1]], { dense: true, sparse: true, colbert: true });
    assert.deepEqual(await store.search(q, { k: 5 }), await store.search(QUERIES[1], { k: 5 }));
  });

  it('searchDense and searchSparse: same ids and scores as M3Index', async () => {
    for (const q of QUERIES) {
      const [d1, d2] = await Promise.all([store.searchDense(q, { k: 6 }), index.searchDense(q, { k: 6 })]);
      assert.deepEqual(d1.map((h) => h.id), d2.map((h) => h.id), q);
      d1.forEach((h, i) => assert.ok(Math.abs(h.score - d2[i].score) <= 1e-5, `${q} dense ${h.score} vs ${d2[i].score}`));
      const [s1, s2] = await Promise.all([store.searchSparse(q, { k: 6 }), index.searchSparse(q, { k: 6 })]);
      assert.deepEqual(s1.map((h) => h.id), s2.map((h) => h.id), q);
      s1.forEach((h, i) => assert.ok(Math.abs(h.score - s2[i].score) <= 1e-5, `${q} sparse ${h.score} vs ${s2[i].score}`));
      assert.ok(s1.every((h) => h.score > 0), 'documents sharing no token are not returned');
    }
  });

  it('postingsPerToken: Infinity (every posting) equals M3Index; a bound of 1 reads only the heaviest posting of each query token', async () => {
    for (const q of QUERIES) {
      const want = await index.searchSparse(q, { k: 6 });
      assert.deepEqual((await store.searchSparse(q, { k: 6, postingsPerToken: Infinity })).map((h) => h.id), want.map((h) => h.id), q);
      const [enc] = await encoder.encode([q], { sparse: true });
      const one = await store.searchSparse(enc, { k: 50, postingsPerToken: 1 });
      assert.ok(one.length <= (enc.sparse as SparseVector).indices.length, `${q}: at most one document per query token`);
      const exact = new Map((await index.searchSparse(enc, { k: 50 })).map((h) => [h.id, h.score]));
      for (const h of one) assert.ok(Math.abs(h.score - (exact.get(h.id) as number)) < 1e-5, `${q}: ${h.id} scored exactly`);
    }
    await assert.rejects(store.searchSparse(QUERIES[0], { postingsPerToken: 0 }), /postingsPerToken/);
  });

  it('with a where filter, postingsPerToken bounds the postings of the passing documents: a bound of 1 finds, per query token, the heaviest passing document', async () => {
    const en = CORPUS.filter((c) => c.metadata.lang === 'en');
    const docs = await encoder.encode(en.map((c) => c.text), { sparse: true });
    for (const q of [...QUERIES, 'the river and the capital of tea']) {
      const [enc] = await encoder.encode([q], { sparse: true });
      const qs = enc.sparse as SparseVector;
      const want = new Set<string>();
      qs.indices.forEach((token, i) => {
        if (!(qs.values[i] > 0)) return;
        let best: string | undefined;
        let weight = 0;
        docs.forEach((d, j) => {
          const s = d.sparse as SparseVector;
          const at = s.indices.indexOf(token);
          if (at >= 0 && s.values[at] > weight) [best, weight] = [en[j].id, s.values[at]];
        });
        if (best) want.add(best);
      });
      const got = await store.searchSparse(enc, { k: 50, postingsPerToken: 1, where: { lang: 'en' } });
      assert.deepEqual(new Set(got.map((h) => h.id)), want, q);
    }
  });

  it('get / has / ids / count', async () => {
    assert.deepEqual(await store.get('ja-fuji'), { id: 'ja-fuji', ...CORPUS.find((c) => c.id === 'ja-fuji') });
    assert.equal(await store.get('nope'), undefined);
    assert.equal(await store.has('en-bge'), true);
    assert.equal(await store.has('nope'), false);
    const ids: string[] = [];
    for await (const id of store.ids(5)) ids.push(id);
    assert.deepEqual(ids.sort(), CORPUS.map((c) => c.id).sort());
  });

  it('filters: where (compiled to SQL) and filter (function) as the M3Index filter', async () => {
    const lang = (l: string) => (m: Record<string, unknown>) => m.lang === l;
    for (const q of QUERIES.slice(0, 3)) {
      const viaWhere = await store.search(q, { k: 3, where: { lang: 'en' } });
      const viaFn = await store.search(q, { k: 3, filter: lang('en') });
      const ref = await index.search(q, { k: 3, filter: lang('en') });
      assertSameResults(viaWhere, ref, 1e-5, `${q} where`);
      assertSameResults(viaFn, ref, 1e-5, `${q} filter`);
      const tagged = await store.searchDense(q, { k: 4, where: { tags: { $contains: 'even' } } });
      assert.ok(tagged.length > 0 && tagged.every((h) => (h.metadata.tags as string[]).includes('even')), 'array containment');
      const sparseRef = await index.searchSparse(q, { k: 4, filter: lang('zh') });
      assert.deepEqual((await store.searchSparse(q, { k: 4, where: { lang: 'zh' } })).map((h) => h.id), sparseRef.map((h) => h.id));
    }
  });
});

describe('precisions', () => {
  it('halfvec dense: same ids as M3Index, scores within fp16 rounding', async () => {
    assert.equal((await fresh()).denseType, pg.external ? 'halfvec' : 'vector', "PGlite's default: halfvec is slow in WebAssembly");
    const store = await fresh({ denseType: 'halfvec' });
    assert.equal(store.denseType, 'halfvec');
    const index = await M3Index.create({ encoder });
    await Promise.all([store.add(CORPUS), index.add(CORPUS)]);
    let maxErr = 0;
    for (const q of QUERIES) {
      const [a, b] = await Promise.all([store.search(q, { k: 5 }), index.search(q, { k: 5 })]);
      assert.deepEqual(a.map((h) => h.id), b.map((h) => h.id), q);
      a.forEach((h, i) => (maxErr = Math.max(maxErr, Math.abs(h.scores.dense - b[i].scores.dense))));
      a.forEach((h, i) => assert.ok(Math.abs(h.scores.sparse - b[i].scores.sparse) <= 1e-6, `${q} sparse ${h.scores.sparse} vs ${b[i].scores.sparse}`));
    }
    assert.ok(maxErr > 0 && maxErr < 1e-3, `dense error ${maxErr}`);
  });

  it('fp16 ColBERT: equals M3Index with fp16 ColBERT', async () => {
    const store = await fresh({ denseType: 'vector', colbertPrecision: 'fp16' });
    const index = await M3Index.create({ encoder, colbertPrecision: 'fp16' });
    await Promise.all([store.add(CORPUS), index.add(CORPUS)]);
    for (const q of QUERIES) assertSameResults(await store.search(q, { k: 5 }), await index.search(q, { k: 5 }), 1e-5, q);
  });

  it("colbertPrecision 'none': no ColBERT stored, dense + sparse rerank, a ColBERT weight is refused", async () => {
    const store = await fresh({ denseType: 'vector', colbertPrecision: 'none' });
    const index = await M3Index.create({ encoder });
    await Promise.all([store.add(CORPUS), index.add(CORPUS)]);
    const rows = await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${store.table}" WHERE colbert IS NOT NULL`);
    assert.equal(rows[0].n, 0);
    const a = await store.search(QUERIES[0], { k: 5 });
    assertSameResults(a, await index.search(QUERIES[0], { k: 5, weights: [0.4, 0.2, 0] }), 1e-5, 'none');
    await assert.rejects(store.search(QUERIES[0], { weights: [0.4, 0.2, 0.4] }), (e: M3Error) => e.code === 'INVALID_ARGUMENT' && /no ColBERT/.test(e.message));
    // Encodings without ColBERT are accepted.
    const [enc] = await encoder.encode(['no colbert here'], { dense: true, sparse: true });
    await store.addEncoded([{ id: 'x', text: 'no colbert here', encoding: enc }]);
    assert.equal((await store.search(enc, { k: 1 }))[0].id, 'x');
  });
});

describe('writes', () => {
  it('upsert by id, delete, and search reflects both (as M3Index)', async () => {
    const store = await fresh({ denseType: 'vector', writeBatchSize: 5, batchSize: 7 });
    const index = await M3Index.create({ encoder });
    const ids = await store.add(CORPUS);
    await index.add(CORPUS);
    assert.deepEqual(ids, CORPUS.map((c) => c.id));
    const changed = [
      { id: 'en-paris', text: 'PostgreSQL with pgvector stores BGE-M3 vectors.', metadata: { lang: 'en', changed: true } },
      { id: 'new-doc', text: 'A brand new document about tea.', metadata: {} },
    ];
    await store.add(changed);
    await index.add(changed);
    assert.equal(await store.count(), CORPUS.length + 1);
    assert.deepEqual(await store.get('en-paris'), changed[0]);
    assert.equal(await store.delete(['ja-fuji', 'zh-tea', 'unknown']), 2);
    assert.equal(await store.delete('ja-fuji'), 0);
    await index.delete(['ja-fuji', 'zh-tea']);
    assert.equal(await store.count(), CORPUS.length - 1);
    for (const q of [...QUERIES, 'pgvector stores vectors', 'tea']) {
      assertSameResults(await store.search(q, { k: 6 }), await index.search(q, { k: 6 }), 1e-5, q);
    }
    await store.clear();
    assert.equal(await store.count(), 0);
    assert.deepEqual(await store.search('anything'), []);
  });

  it('a repeated id within one call: the last one wins; ids returned in input order', async () => {
    const store = await fresh();
    const ids = await store.add([
      { id: 'a', text: 'first' },
      { text: 'no id' },
      { id: 'a', text: 'second', metadata: { v: 2 } },
    ]);
    assert.equal(ids[0], 'a');
    assert.equal(ids[2], 'a');
    assert.match(ids[1], /^[0-9a-f-]{36}$/);
    assert.deepEqual(await store.get('a'), { id: 'a', text: 'second', metadata: { v: 2 } });
    const [enc] = await encoder.encode(['x', 'y'], { dense: true, sparse: true, colbert: true });
    await store.addEncoded([
      { id: 'b', text: 'x', encoding: enc },
      { id: 'b', text: 'x2', encoding: enc },
    ]);
    assert.equal((await store.get('b'))?.text, 'x2');
  });

  it('invalid input is refused before anything is written', async () => {
    const store = await fresh();
    const [enc] = await encoder.encode(['ok'], { dense: true, sparse: true, colbert: true });
    const bad = (docs: unknown[], re: RegExp) =>
      assert.rejects(store.addEncoded(docs as never), (e: M3Error) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && re.test(e.message));
    await bad([{ id: 'ok', text: 'ok', encoding: enc }, { id: 'x', text: 'bad', encoding: { ...enc, dense: new Float32Array(3) } }], /dense/);
    await bad([{ id: 'n', text: 'nul\u0000', encoding: enc }], /U\+0000/);
    await bad([{ id: 'n', text: 'ok', metadata: { s: 'a\u0000b' }, encoding: enc }], /U\+0000/);
    await bad([{ id: 'n', text: 'ok', metadata: { big: 1n }, encoding: enc }], /BigInt/);
    await bad([{ id: 'n', text: 'ok', encoding: { ...enc, colbert: undefined } }], /ColBERT/);
    const tooMany = syntheticEncoding(encoder.dim, encoder.vocabSize, 10, 1, 1);
    tooMany.sparse = { indices: Uint32Array.from({ length: 16001 }, (_, i) => i), values: new Float32Array(16001).fill(0.1) };
    const store2 = await fresh({ vocabSize: undefined });
    await assert.rejects(
      PgM3Store.connect({ client: pg.client, table: next(), modelId: 'm', dim: encoder.dim, vocabSize: 20000, colbertPrecision: 'none' }).then((s) => s.addEncoded([{ id: 'x', text: 'x', encoding: tooMany }])),
      /16000/,
    );
    assert.equal(await store.count(), 0);
    assert.equal(await store2.count(), 0);
    // metadata with a "\\u0000" text (not a NUL) is fine
    await store.addEncoded([{ id: 'ok', text: 'ok', metadata: { s: '\\u0000' }, encoding: enc }]);
    assert.deepEqual((await store.get('ok'))?.metadata, { s: '\\u0000' });
  });

  it('a multi-batch add that fails midway names the committed ids; addEncoded is atomic', async () => {
    let calls = 0;
    const failing: TextEncoder3 = {
      modelId: encoder.modelId,
      dim: encoder.dim,
      vocabSize: encoder.vocabSize,
      encode: (texts, options) => (++calls === 3 ? Promise.reject(new Error('encoder crashed')) : encoder.encode(texts, options)),
    };
    const store = await fresh({ encoder: failing, batchSize: 5 });
    await assert.rejects(store.add(CORPUS), (e: Error & { committedIds?: string[] }) => {
      assert.match(e.message, /encoder crashed/);
      assert.deepEqual([...(e.committedIds ?? [])].sort(), CORPUS.slice(0, 10).map((c) => c.id).sort());
      return true;
    });
    assert.equal(await store.count(), 10);
    // addEncoded: one transaction; a row the database refuses rolls back the whole call.
    const [enc] = await encoder.encode(['x'], { dense: true, sparse: true, colbert: true });
    await pg.client.query(`ALTER TABLE "${store.table}" ADD CONSTRAINT no_z CHECK (id <> 'zzz')`);
    await assert.rejects(store.addEncoded([{ id: 'aaa', text: 'x', encoding: enc }, { id: 'zzz', text: 'x', encoding: enc }]), /no_z/);
    assert.equal(await store.has('aaa'), false, 'nothing of the failed call is stored');
  });

  it('a row changed or deleted after a first stage nominated it is scored, filtered and returned as it is now', async () => {
    const model = { modelId: 'stage-race', dim: 16, vocabSize: 300 } as const;
    const docs = (ids: number[], seed: number, lang = 'en'): M3EncodedDocument[] =>
      ids.map((i) => ({ id: `s${i}`, text: `doc ${i} v${seed}`, metadata: { lang, i }, encoding: syntheticEncoding(model.dim, model.vocabSize, 12, 6, i + seed) }));
    const table = next();
    const writer = await PgM3Store.connect({ client: pg.client, table, ...model, colbertPrecision: 'int8' });
    await writer.addEncoded(docs(Array.from({ length: 40 }, (_, i) => i), 0));
    // The write runs right after the dense stage's statement has returned its rowids, before
    // the ranking statement (which waits for both stages).
    let afterDenseStage: (() => Promise<unknown>) | undefined;
    const racing: SqlClient = {
      ...pg.client,
      async transaction(fn) {
        let dense = false;
        const result = await pg.client.transaction((tx) => fn({ query: (sql, params) => ((dense ||= /ORDER BY dense <#>/.test(sql)), tx.query(sql, params)) }));
        const hook = afterDenseStage;
        if (dense && hook) {
          afterDenseStage = undefined;
          await hook();
        }
        return result;
      },
    };
    const store = await PgM3Store.connect({ client: racing, table });
    const q = syntheticEncoding(model.dim, model.vocabSize, 8, 4, 999);
    const options = { k: 10, fetchK: 40, rerankDepth: 20, where: { lang: 'en' } };
    const changes: [string, (top: string) => Promise<unknown>][] = [
      // new vectors and text: scores and fields must all be the new version's
      ['updated', (top) => writer.addEncoded([{ id: top, text: 'changed', metadata: { lang: 'en', i: -1 }, encoding: syntheticEncoding(model.dim, model.vocabSize, 12, 6, 555) }])],
      // no longer passes the where filter
      ['moved out of the filter', (top) => writer.addEncoded(docs([Number(top.slice(1))], 0, 'fr'))],
      ['deleted', (top) => writer.delete(top)],
    ];
    for (const [what, change] of changes) {
      const top = (await writer.search(q, options))[0].id;
      afterDenseStage = () => change(top);
      const got = await store.search(q, options);
      assert.equal(afterDenseStage, undefined, 'the write ran between the first stages and the ranking statement');
      assert.deepEqual(got, await writer.search(q, options), what);
      if (what !== 'updated') assert.ok(!got.some((h) => h.id === top), what);
      else assert.ok(got.every((h) => h.id !== top || (h.text === 'changed' && h.metadata.i === -1)), what);
    }
  });

  it('dense and sparse vectors stay in the row; only ColBERT bytes (and values too large for a page) go to TOAST', async () => {
    // A halfvec(1024) is 2,056 bytes: with the sparse weights the row passes PostgreSQL's 2 kB
    // TOAST threshold, and pgvector's types are STORAGE external.
    const model = { modelId: 'toast', dim: 1024, vocabSize: 5000 } as const;
    const store = await PgM3Store.connect({ client: pg.client, table: next(), ...model, denseType: 'halfvec', colbertPrecision: 'int8' });
    const n = 6;
    await store.addEncoded(Array.from({ length: n }, (_, i) => ({ id: `t${i}`, text: `doc ${i}`, encoding: syntheticEncoding(model.dim, model.vocabSize, 200, 8, i) })));
    const [{ toast }] = await pg.client.query<{ toast: string }>(`SELECT reltoastrelid::regclass::text AS toast FROM pg_class WHERE oid = $1::regclass`, [`"${store.table}"`]);
    const [{ values }] = await pg.client.query<{ values: number }>(`SELECT count(DISTINCT chunk_id)::int AS values FROM ${toast}`);
    assert.equal(values, n, 'one TOAST value per row: its ColBERT bytes (the dense vector would be a second)');
  });

  it('add honours an AbortSignal between batches', async () => {
    const store = await fresh({ batchSize: 4 });
    const ac = new AbortController();
    async function* docs() {
      for (const [i, c] of CORPUS.entries()) {
        if (i === 8) ac.abort();
        yield c;
      }
    }
    await assert.rejects(store.add(docs(), { signal: ac.signal }), (e: M3Error) => e.code === 'ABORTED');
    assert.equal(await store.count(), 8, 'the two batches encoded before the abort are written');
  });
});

describe("more than 1,000 distinct tokens (sparseIndex 'hnsw')", () => {
  const NNZ = 1500;
  let store: PgM3Store;
  let index: M3Index;
  let long: EncodeResult & { sparse: SparseVector };
  before(async () => {
    store = await fresh({ denseType: 'vector', sparseIndex: 'hnsw' });
    index = await M3Index.create({ encoder });
    // The fixture tokenizer caps texts far below 1,500 distinct tokens: synthesise the encoding.
    long = syntheticEncoding(encoder.dim, encoder.vocabSize, NNZ, 12, 42);
    const docs = [...(await Promise.all(CORPUS.slice(0, 10).map(async (c) => ({ ...c, encoding: (await encoder.encode([c.text], { dense: true, sparse: true, colbert: true }))[0] })))), { id: 'long', text: 'a very long document', metadata: { long: true }, encoding: long }];
    await store.addEncoded(docs);
    await index.addEncoded(docs);
  });

  it('stores all weights, indexes the 1,000 largest', async () => {
    const [row] = await pg.client.query<{ s: Uint8Array; f: Uint8Array }>(`SELECT sparsevec_send(sparse) AS s, sparsevec_send(sparse_full) AS f FROM ${store.table} WHERE id = 'long'`);
    const indexed = decodeSparsevecSend(row.s, encoder.vocabSize);
    const full = decodeSparsevecSend(row.f, encoder.vocabSize);
    assert.equal(indexed.indices.length, 1000);
    assert.equal(full.indices.length, NNZ);
    assert.deepEqual(full, long.sparse);
    const cutoff = [...long.sparse.values].sort((a, b) => b - a)[999];
    assert.ok(indexed.values.every((w) => w >= cutoff), 'the projection keeps the largest weights');
    // Short documents store their weights once.
    const [short] = await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${store.table} WHERE sparse_full IS NOT NULL`);
    assert.equal(short.n, 1);
  });

  it('exact rescoring uses every weight, the first stage sees the projection', async () => {
    const full = long.sparse;
    const order = [...full.values.keys()].sort((a, b) => full.values[b] - full.values[a]);
    const kept = order[0];
    const dropped = order[NNZ - 1];
    const pick = (pos: number[]) => ({ indices: Uint32Array.from(pos.map((p) => full.indices[p]).sort((a, b) => a - b)), values: new Float32Array(pos.length).fill(1) });
    const q: EncodeResult = { ...syntheticEncoding(encoder.dim, encoder.vocabSize, 1, 3, 7), sparse: pick([kept, dropped]) };
    const [hit] = await store.searchSparse(q, { k: 1 });
    assert.equal(hit.id, 'long');
    assert.ok(Math.abs(hit.score - lexicalMatchingScore(q.sparse as SparseVector, full)) <= 1e-6, `${hit.score}`);
    assert.ok(Math.abs(hit.score - (full.values[kept] + full.values[dropped])) < 1e-6, 'the dropped token counts');
    const all = await store.search(q, { k: 3, fetchK: 100 });
    assertSameResults(all, await index.search(q, { k: 3, fetchK: 100 }), 1e-5, 'long');
    // A query sharing only a token outside the projection: the sparse HNSW stage cannot find it.
    const onlyDropped: EncodeResult = { ...q, sparse: pick([dropped]) };
    assert.deepEqual(await store.searchSparse(onlyDropped, { k: 5 }), []);
    assert.equal((await index.searchSparse(onlyDropped, { k: 5 }))[0].id, 'long');
  });

  it("the postings (the default) keep and search every weight: the token outside a 1,000 projection is found", async () => {
    const postings = await fresh({ denseType: 'vector' });
    assert.equal(postings.sparseIndex, 'postings');
    const docs = [{ id: 'long', text: 'a very long document', metadata: {}, encoding: long }];
    await postings.addEncoded(docs);
    const [row] = await pg.client.query<{ s: Uint8Array; f: Uint8Array | null; p: number }>(
      `SELECT sparsevec_send(sparse) AS s, sparse_full AS f, (SELECT count(*)::int FROM ${postings.table}_postings) AS p FROM ${postings.table}`,
    );
    assert.deepEqual(decodeSparsevecSend(row.s, encoder.vocabSize), long.sparse);
    assert.equal(row.f, null);
    assert.equal(row.p, NNZ);
    const full = long.sparse;
    const dropped = [...full.values.keys()].sort((a, b) => full.values[a] - full.values[b])[0];
    const q: EncodeResult = { ...syntheticEncoding(encoder.dim, encoder.vocabSize, 1, 3, 7), sparse: { indices: Uint32Array.of(full.indices[dropped]), values: Float32Array.of(1) } };
    const [hit] = await postings.searchSparse(q, { k: 5 });
    assert.equal(hit.id, 'long');
    assert.ok(Math.abs(hit.score - full.values[dropped]) < 1e-6);
    // Re-adding replaces the postings; deleting removes them (ON DELETE CASCADE).
    await postings.addEncoded(docs);
    assert.equal((await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${postings.table}_postings`))[0].n, NNZ);
    await postings.delete('long');
    assert.equal((await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${postings.table}_postings`))[0].n, 0);
  });

  it('a lower sparseIndexNnz projects harder', async () => {
    const small = await fresh({ sparseIndex: 'hnsw', sparseIndexNnz: 8 });
    const enc = syntheticEncoding(encoder.dim, encoder.vocabSize, 40, 3, 9);
    await small.addEncoded([{ id: 'x', text: 'forty tokens', encoding: enc }]);
    const [row] = await pg.client.query<{ s: Uint8Array }>(`SELECT sparsevec_send(sparse) AS s FROM ${small.table}`);
    assert.equal(decodeSparsevecSend(row.s, encoder.vocabSize).indices.length, 8);
    const [hit] = await small.searchSparse(enc, { k: 1 });
    assert.ok(Math.abs(hit.score - lexicalMatchingScore(enc.sparse as SparseVector, enc.sparse as SparseVector)) <= 1e-6, `${hit.score}`);
  });
});

describe('schema and meta', () => {
  it('creates tables, HNSW indexes and a meta row; reopening checks them', async () => {
    const table = next();
    const store = await PgM3Store.connect({ client: pg.client, encoder, table, hnsw: { m: 8, efConstruction: 32 }, denseType: 'halfvec', colbertPrecision: 'fp16', sparseIndex: 'hnsw' });
    if (!pg.external) assert.equal(store.pgvectorVersion, '0.8.7');
    const idx = await pg.client.query<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname`, [table]);
    const defs = idx.map((r) => r.indexdef).join('\n');
    assert.match(defs, /USING hnsw \(dense halfvec_ip_ops\) WITH \(m='?8'?, ef_construction='?32'?\)/);
    assert.match(defs, /USING hnsw \(sparse sparsevec_ip_ops\)/);
    const [meta] = await pg.client.query(`SELECT schema_version, model_id, dim, vocab_size, colbert_precision, dense_type, sparse_index_nnz, sparse_index FROM ${table}_meta`);
    assert.deepEqual(meta, { schema_version: 2, model_id: encoder.modelId, dim: 32, vocab_size: 3002, colbert_precision: 'fp16', dense_type: 'halfvec', sparse_index_nnz: 1000, sparse_index: 'hnsw' });
    // The default store: int8 ColBERT (core's default), postings instead of the sparse HNSW index.
    const dflt = await fresh();
    assert.deepEqual([dflt.colbertPrecision, dflt.sparseIndex], ['int8', 'postings']);
    const dIdx = (await pg.client.query<{ d: string }>(`SELECT indexdef AS d FROM pg_indexes WHERE tablename IN ($1, $2) ORDER BY indexname`, [dflt.table, `${dflt.table}_postings`])).map((r) => r.d).join('\n');
    assert.doesNotMatch(dIdx, /sparsevec_ip_ops/);
    assert.match(dIdx, /\(token, weight DESC\) INCLUDE \(doc\)/);

    // Reopen without encoder: the identity comes from the meta table.
    const reopened = await PgM3Store.connect({ client: pg.client, table, denseType: 'halfvec' });
    assert.deepEqual([reopened.modelId, reopened.dim, reopened.vocabSize, reopened.colbertPrecision, reopened.denseType, reopened.sparseIndex], [encoder.modelId, 32, 3002, 'fp16', 'halfvec', 'hnsw']);
    await assert.rejects(reopened.search('text needs an encoder'), /no encoder/);

    const other: TextEncoder3 = { modelId: 'BAAI/bge-m3', dim: 1024, vocabSize: 250002, encode: async () => [] };
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder: other, table }), (e: M3Error) => {
      assert.equal(e.code, 'INDEX_MISMATCH');
      assert.match(e.message, /model id .* vs "BAAI\/bge-m3"/);
      assert.match(e.message, /dimension 32 \(table\) vs 1024/);
      assert.match(e.message, /vocabulary size 3002 \(table\) vs 250002/);
      return true;
    });
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table, colbertPrecision: 'int8' }), (e: M3Error) => e.code === 'INDEX_MISMATCH' && /ColBERT precision "fp16" \(table\) vs "int8"/.test(e.message));
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table, denseType: 'vector' }), (e: M3Error) => e.code === 'INDEX_MISMATCH' && /dense column type/.test(e.message));
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table, sparseIndex: 'postings' }), (e: M3Error) => e.code === 'INDEX_MISMATCH' && /sparse first stage "hnsw" \(table\) vs "postings"/.test(e.message));
    // A version-1 table (no sparse_index column, sparse HNSW) still opens.
    await pg.client.query(`ALTER TABLE ${table}_meta DROP COLUMN sparse_index`);
    await pg.client.query(`UPDATE ${table}_meta SET schema_version = 1`);
    const v1 = await PgM3Store.connect({ client: pg.client, encoder, table });
    assert.equal(v1.sparseIndex, 'hnsw');
    await pg.client.query(`UPDATE ${table}_meta SET schema_version = 99`);
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table }), (e: M3Error) => e.code === 'INDEX_MISMATCH' && /schema version 99 \(table\) vs 1 or 2/.test(e.message));
    await store.drop();
    assert.deepEqual(await pg.client.query(`SELECT to_regclass($1)::text AS r`, [table]), [{ r: null }]);
  });

  it('a server without pgvector installed gets told to install it (a PGlite without the extension)', async () => {
    const { PGlite } = await import('@electric-sql/pglite');
    const { pgliteClient } = await import('../src/index.js');
    const bare = new PGlite();
    try {
      for (const createSchema of [true, false]) {
        await assert.rejects(PgM3Store.connect({ client: pgliteClient(bare), encoder, createSchema }), (e: M3Error) => {
          assert.equal(e.code, 'INVALID_ARGUMENT');
          assert.match(e.message, /pgvector is not installed on this PostgreSQL server .*Install it on the server/);
          return true;
        });
      }
    } finally {
      await bare.close();
    }
  });

  it('refuses a foreign table, a missing store without createSchema, and bad names', async () => {
    const foreign = `${RUN}_not_a_store`;
    await pg.client.query(`CREATE TABLE IF NOT EXISTS ${foreign} (id int)`);
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table: foreign }), (e: M3Error) => e.code === 'INDEX_INVALID' && /not a @bgem3\/pgvector store/.test(e.message));
    await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table: `${RUN}_never_created`, createSchema: false }), (e: M3Error) => e.code === 'INDEX_INVALID' && /createSchema/.test(e.message));
    await assert.rejects(PgM3Store.connect({ client: pg.client, table: `${RUN}_never_created2` }), /pass an encoder/);
    for (const table of ['docs; DROP TABLE x', 'a.b.c', '1abc', 'with space', '"quoted"', 'x'.repeat(52), '']) {
      await assert.rejects(PgM3Store.connect({ client: pg.client, encoder, table }), (e: M3Error) => e.code === 'INVALID_ARGUMENT' && /not a valid table name|must be/.test(e.message), table);
    }
  });

  it('schema-qualified and mixed-case table names are quoted', async () => {
    await pg.client.query('CREATE SCHEMA IF NOT EXISTS rag');
    const name = `${RUN}_MyDocs`;
    const store = await PgM3Store.connect({ client: pg.client, encoder, table: `rag.${name}` });
    await store.add(CORPUS.slice(0, 3));
    const rows = await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM rag."${name}"`);
    assert.equal(rows[0].n, 3);
    assert.equal((await store.search(CORPUS[0].text, { k: 1 }))[0].id, CORPUS[0].id);
    // A store of the same name in the default schema is another store.
    const other = await PgM3Store.connect({ client: pg.client, encoder, table: name });
    assert.equal(await other.count(), 0);
  });

  it('createIndexes: false for a bulk load, then createIndexes() builds them with the store parameters', async () => {
    const table = next();
    const store = await PgM3Store.connect({ client: pg.client, encoder, table, createIndexes: false, hnsw: { m: 12, efConstruction: 40 } });
    const count = async () => (await pg.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%hnsw%'`, [table]))[0].n;
    assert.equal(await count(), 0);
    await store.add(CORPUS);
    const exact = await store.search(QUERIES[0], { k: 5 });
    await assert.rejects(store.createIndexes({ maintenanceWorkMem: '1 gigabyte' }), /maintenanceWorkMem/);
    await store.createIndexes({ maintenanceWorkMem: '256MB' });
    await store.createIndexes(); // idempotent
    assert.equal(await count(), 1, 'dense HNSW (the postings are btrees, created with the table)');
    const [def] = await pg.client.query<{ d: string }>(`SELECT indexdef AS d FROM pg_indexes WHERE indexname = $1`, [`${table}_dense_hnsw`]);
    assert.match(def.d, new RegExp(`${store.denseType}_ip_ops\\) WITH \\(m='?12'?, ef_construction='?40'?\\)`));
    assert.deepEqual(await store.search(QUERIES[0], { k: 5 }), exact);
  });

  it('connecting twice at once creates the schema once', async () => {
    const table = next();
    const [a, b] = await Promise.all([PgM3Store.connect({ client: pg.client, encoder, table }), PgM3Store.connect({ client: pg.client, encoder, table })]);
    await a.add(CORPUS.slice(0, 2));
    assert.equal(await b.count(), 2);
  });
});
