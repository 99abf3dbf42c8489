/**
 * Bad input through the LangChain and LlamaIndex classes, on the real fixture encoder: what is not
 * text, odd strings, non-integer or non-finite k/topN, and NaN/negative/infinite weights. Each
 * case gets a defined result or an error saying what is wrong. (The package tests already cover
 * the common cases; docs/RELIABILITY.md references them. This file adds what they do not.)
 *
 * Odd strings: the encoder encodes every one of them (U+0000 like any character, lone surrogates
 * as U+FFFD), so they are valid queries and rerank inputs. Stores keep one rule (core's
 * store/validate.ts): a text, id or metadata string with U+0000 (PostgreSQL cannot store it) or a
 * lone surrogate is refused with INVALID_ARGUMENT naming the entry, by M3Index and PgM3Store
 * alike, and nothing of the call is stored.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, type M3Store } from '@bgem3/core';
import { BGEM3ColbertReranker, BGEM3Embeddings, BGEM3EnsembleRetriever, BGEM3SparseRetriever, BGEM3VectorStore } from '@bgem3/langchain';
import * as li from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { FIXTURE, m3, ODD, typeError } from './helpers.ts';
import { TextNode } from './llamaindex.ts';
import { PgM3Store, openPglite, type OpenedPglite } from './pgvector.ts';

const NOT_TEXT: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 42],
  ['an object', { text: 'x' }],
  ['an array', ['x']],
];
const BAD_COUNT: unknown[] = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3'];
const ODD_TEXTS = Object.entries(ODD);
/** What every store holds: well-formed Unicode without U+0000 (empty, whitespace, the 1 MB text). */
const storable = (t: string) => t.isWellFormed() && !t.includes('\u0000');
const STORABLE = ODD_TEXTS.filter(([, t]) => storable(t));
/** U+0000 and the lone surrogates, each with the error a store gives for it as `docs[1].text`. */
const UNSTORABLE: [string, string, RegExp][] = ODD_TEXTS.filter(([, t]) => !storable(t)).map(([id, t]) => [
  id,
  t,
  t.includes('\u0000') ? /^docs\[1\]\.text contains U\+0000, which stores cannot hold \(strip it first\)$/ : /^docs\[1\]\.text contains a lone UTF-16 surrogate .*text\.toWellFormed\(\) replaces it with U\+FFFD/,
]);
const CORPUS = [
  'Paris is the capital of France and sits on the Seine.',
  'Green tea is popular in Japan and China.',
  '北京是中国的首都，有很多历史古迹。',
  'Москва — столица России.',
  'BGE-M3 computes dense, sparse and ColBERT vectors in one pass.',
];

function finiteUnit(v: readonly number[], dim: number): boolean {
  return v.length === dim && v.every(Number.isFinite) && Math.abs(Math.hypot(...v) - 1) < 1e-4;
}

// maxLength 512: the 1 MB text is cut there (at 8,192 tokens one text costs ~3.4 GB on the tiny
// model; core's encoder-runtime test covers that length).
let encoder: M3Encoder;
before(async () => {
  encoder = await M3Encoder.load(FIXTURE, { workers: 0, maxLength: 512 });
});
after(() => encoder.close());

describe('LangChain', () => {
  test('BGEM3Embeddings: non-text is a TypeError naming the entry; odd strings give finite unit vectors', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    for (const [what, bad] of NOT_TEXT) {
      await assert.rejects(emb.embedDocuments(['ok', bad as string]), typeError(/documents\[1\] must be a string/), what);
      await assert.rejects(emb.embedQuery(bad as string), typeError(/document must be a string/), what);
    }
    for (const notArray of [undefined, null, 'text', { 0: 'x' }]) {
      await assert.rejects(emb.embedDocuments(notArray as never), typeError(/documents must be an array of strings/), String(notArray));
    }
    const vectors = await emb.embedDocuments(ODD_TEXTS.map(([, t]) => t));
    vectors.forEach((v, i) => assert.ok(finiteUnit(v, 32), ODD_TEXTS[i][0]));
    for (const [what, t] of ODD_TEXTS) assert.ok(finiteUnit(await emb.embedQuery(t), 32), what);
    for (const batchSize of BAD_COUNT) assert.throws(() => new BGEM3Embeddings({ encoder, batchSize: batchSize as number }), m3('INVALID_ARGUMENT', /batchSize/), String(batchSize));
  });

  test('BGEM3SparseRetriever: bad documents, ids, queries, k and deletes; U+0000 and lone surrogates refused naming the entry, nothing stored; other odd texts indexed and searchable', async () => {
    for (const k of BAD_COUNT) assert.throws(() => new BGEM3SparseRetriever({ encoder, k: k as number }), m3('INVALID_ARGUMENT', /k must be a positive integer/), String(k));
    const r = new BGEM3SparseRetriever({ encoder, k: 50 });
    const store = (await r.vectorStore).store;
    await assert.rejects(r.addDocuments(null as never), typeError(/documents must be an array/));
    await assert.rejects(r.addDocuments([null as never]), typeError(/documents\[0\] must be a Document/));
    await assert.rejects(r.addDocuments([{ pageContent: undefined } as never]), typeError(/documents\[0\]\.pageContent must be a string/));
    await assert.rejects(r.addDocuments([new Document({ pageContent: 'x' })], { ids: [42 as never] }), typeError(/the id of documents\[0\] must be a string/));
    await assert.rejects(r.addDocuments([new Document({ pageContent: 'x' })], { ids: ['a', 'b'] }), m3('INVALID_ARGUMENT', /one id per document/));
    assert.equal(await store.count(), 0, 'nothing stored by the failed calls');
    for (const [what, bad] of NOT_TEXT) await assert.rejects(r.invoke(bad as string), typeError(/query must be a string/), what);
    await assert.rejects(r.delete(undefined as never), typeError(/delete expects/));
    await assert.rejects(r.delete([42 as never]), typeError(/ids\[0\] must be a string/));

    for (const [id, t, refused] of UNSTORABLE) {
      await assert.rejects(r.addDocuments([new Document({ id: 'fine', pageContent: 'fine' }), new Document({ id, pageContent: t })]), m3('INVALID_ARGUMENT', refused), id);
    }
    assert.equal(await store.count(), 0, 'the valid document beside a refused one is not stored either');
    await r.addDocuments([...STORABLE.map(([id, pageContent]) => new Document({ id, pageContent })), ...CORPUS.map((pageContent, i) => new Document({ id: `c${i}`, pageContent }))]);
    assert.equal(await store.count(), STORABLE.length + CORPUS.length);
    // Every odd string is a valid query (the encoder takes them all).
    for (const [id, t] of ODD_TEXTS) {
      const hits = await r.invoke(t);
      if (t.trim() === '') {
        assert.deepEqual(hits, [], `${id}: a blank query returns []`);
        continue;
      }
      assert.ok(hits.every((d) => Number.isFinite(d.metadata.sparseScore) && d.metadata.sparseScore > 0), `${id}: scored hits`);
      if (storable(t)) assert.ok(hits.some((d) => d.id === id), `${id}: the document with the same text is found`);
    }
    await r.delete(['never-added']);
    assert.equal(await store.count(), STORABLE.length + CORPUS.length, 'an unknown id deletes nothing');
  });

  test('BGEM3ColbertReranker: bad documents, queries and topN; odd strings give finite scores; rerank() returns the instance topN by default', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    for (const topN of BAD_COUNT) {
      assert.throws(() => new BGEM3ColbertReranker({ encoder, topN: topN as number }), m3('INVALID_ARGUMENT', /topN must be a positive integer/), String(topN));
      await assert.rejects(reranker.rerank(['a'], 'q', { topN: topN as number }), m3('INVALID_ARGUMENT', /topN/), String(topN));
    }
    await assert.rejects(reranker.rerank(null as never, 'q'), typeError(/documents must be an array/));
    await assert.rejects(reranker.rerank([null as never], 'q'), typeError(/documents\[0\] must be a Document or a string/));
    for (const [what, bad] of NOT_TEXT) await assert.rejects(reranker.compressDocuments([new Document({ pageContent: 'x' })], bad as string), typeError(/query must be a string/), what);
    // Reranking stores nothing: every odd string (U+0000 and lone surrogates included) is scored.
    const docs = ODD_TEXTS.map(([, t]) => t);
    for (const [what, q] of ODD_TEXTS) {
      const all = await reranker.rerank(docs, q, { topN: docs.length });
      assert.equal(all.length, docs.length, `${what}: topN = every document`);
      assert.ok(all.every((x) => Number.isFinite(x.relevanceScore) && Number.isFinite(x.score)), `${what}: finite scores`);
      assert.deepEqual(new Set(all.map((x) => x.index)).size, docs.length, `${what}: each document once`);
      assert.deepEqual(await reranker.rerank(docs, q), all.slice(0, 3), `${what}: by default the best instance topN (3, as CohereRerank)`);
    }
    assert.equal((await new BGEM3ColbertReranker({ encoder, topN: 2 }).rerank(docs, ODD.nul)).length, 2, 'an instance topN of 2');
    const top = await reranker.compressDocuments(docs.map((pageContent) => new Document({ pageContent })), ODD.nul);
    assert.equal(top.length, 3);
  });

  test('BGEM3EnsembleRetriever: NaN/negative/infinite (rerank) weights, bad c/fetchK/k/rerankCandidates are INVALID_ARGUMENT naming the option, over retrievers and over a store; odd queries are answered', async () => {
    const ensemble = await BGEM3EnsembleRetriever.fromDocuments(
      CORPUS.map((pageContent, i) => new Document({ id: `c${i}`, pageContent })),
      { encoder, k: 3 },
    );
    // Over retrievers (RRF weights, c, rerank weights) and over the store (fetchK, k, rerank weights):
    // each bad value is refused naming the option, from a configuration that is otherwise valid.
    const vectorStore = ensemble.vectorStore!;
    const retrievers = [vectorStore.asRetriever({ k: 4, mode: 'dense' }), new BGEM3SparseRetriever({ vectorStore })];
    assert.doesNotThrow(() => new BGEM3EnsembleRetriever({ retrievers, weights: [1, 2], c: 10, rerankWeights: [1, 1, 1], k: 2 }));
    assert.doesNotThrow(() => new BGEM3EnsembleRetriever({ vectorStore, fetchK: 20, rerankWeights: [1, 1, 1], k: 2 }));
    const invalid: [Record<string, unknown>, string, RegExp][] = [
      [{ weights: [Number.NaN, 1] }, 'retrievers', /weights\[0\] must be a finite number ≥ 0, got NaN/],
      [{ weights: [-1, 1] }, 'retrievers', /weights\[0\] must be a finite number ≥ 0, got -1/],
      [{ weights: [Number.POSITIVE_INFINITY, 1] }, 'retrievers', /weights\[0\] must be a finite number ≥ 0, got Infinity/],
      [{ weights: ['1', 1] }, 'retrievers', /weights\[0\] must be a finite number ≥ 0/],
      [{ weights: [1] }, 'retrievers', /weights must be an array of 2 numbers \(one per list\)/],
      [{ c: Number.NaN }, 'retrievers', /c must be a finite number ≥ 0, got NaN/],
      [{ c: Number.POSITIVE_INFINITY }, 'retrievers', /c must be a finite number ≥ 0, got Infinity/],
      ...(['retrievers', 'store'] as const).flatMap((mode): [Record<string, unknown>, string, RegExp][] => [
        [{ rerankWeights: [Number.NaN, 1, 1] }, mode, /rerankWeights\[0\] must be a finite number ≥ 0, got NaN/],
        [{ rerankWeights: [1, -0.5, 1] }, mode, /rerankWeights\[1\] must be a finite number ≥ 0, got -0\.5/],
        [{ rerankWeights: [1, 1, Number.POSITIVE_INFINITY] }, mode, /rerankWeights\[2\] must be a finite number ≥ 0, got Infinity/],
        [{ rerankWeights: [1, 1] }, mode, /rerankWeights must be an array of 3 numbers/],
        ...BAD_COUNT.map((k): [Record<string, unknown>, string, RegExp] => [{ k }, mode, /k must be a positive integer/]),
      ]),
      ...BAD_COUNT.map((rerankCandidates): [Record<string, unknown>, string, RegExp] => [{ rerankCandidates }, 'retrievers', /rerankCandidates must be a positive integer/]),
      ...BAD_COUNT.map((fetchK): [Record<string, unknown>, string, RegExp] => [{ fetchK }, 'store', /fetchK must be a positive integer/]),
      [{ weights: [1, 1] }, 'store', /weights applies over retrievers only/],
    ];
    for (const [o, mode, pattern] of invalid) {
      const base = mode === 'store' ? { vectorStore } : { retrievers };
      assert.throws(() => new BGEM3EnsembleRetriever({ ...base, ...o } as never), m3('INVALID_ARGUMENT', pattern), `${mode}: ${JSON.stringify(o)}`);
    }
    for (const [what, bad] of NOT_TEXT) await assert.rejects(ensemble.invoke(bad as string), typeError(/query must be a string/), what);
    for (const [what, q] of ODD_TEXTS) {
      const hits = await ensemble.invoke(q);
      assert.ok(hits.length <= 3, what);
      if (q.trim() === '') assert.deepEqual(hits, [], `${what}: a blank query returns []`);
      else assert.ok(hits.length > 0 && hits.every((d) => Number.isFinite(d.metadata.score ?? d.metadata.rerankScore ?? d.metadata.denseScore)), `${what}: scored hits`);
    }
  });
});

describe('LlamaIndex', () => {
  const invalidArg = m3('INVALID_ARGUMENT');
  const corpusNodes = () => CORPUS.map((text, i) => new TextNode({ id_: `c${i}`, text }));
  const oddNodes = () => ODD_TEXTS.map(([id_, text]) => new TextNode({ id_, text }));

  test('BGEM3Embedding: non-text is a TypeError naming the entry; odd strings give finite unit vectors', async () => {
    const emb = new li.BGEM3Embedding({ encoder });
    for (const [what, bad] of NOT_TEXT) {
      await assert.rejects(emb.getTextEmbeddings(['ok', bad as string]), typeError(/texts\[1\] must be a string/), what);
      await assert.rejects(emb.getTextEmbedding(bad as string), typeError(/texts\[0\] must be a string/), what);
    }
    const vectors = await emb.getTextEmbeddings(ODD_TEXTS.map(([, t]) => t));
    vectors.forEach((v, i) => assert.ok(finiteUnit(v, 32), ODD_TEXTS[i][0]));
    for (const embedBatchSize of BAD_COUNT) assert.throws(() => new li.BGEM3Embedding({ encoder, embedBatchSize: embedBatchSize as number }), m3('INVALID_ARGUMENT', /embedBatchSize must be a positive integer/), String(embedBatchSize));
  });

  test('BGEM3SparseRetriever: bad queries, topK and nodes; U+0000 and lone surrogates refused naming the entry, nothing stored; other odd-text nodes indexed and searchable', async () => {
    for (const topK of BAD_COUNT) assert.throws(() => new li.BGEM3SparseRetriever({ encoder, topK: topK as number }), m3('INVALID_ARGUMENT', /topK must be a positive integer/), String(topK));
    for (const [id_, text, refused] of UNSTORABLE) {
      await assert.rejects(li.BGEM3SparseRetriever.fromNodes([new TextNode({ id_: 'fine', text: 'fine' }), new TextNode({ id_, text })], { encoder }), m3('INVALID_ARGUMENT', refused), `fromNodes ${id_}`);
    }
    const r = await li.BGEM3SparseRetriever.fromNodes([...oddNodes().filter((n) => storable(n.text)), ...corpusNodes()], { encoder, topK: 50 });
    for (const [id_, text, refused] of UNSTORABLE) {
      await assert.rejects(r.addNodes([new TextNode({ id_: 'fine', text: 'fine' }), new TextNode({ id_, text })]), m3('INVALID_ARGUMENT', refused), `addNodes ${id_}`);
      assert.equal(await r.deleteNodes(['fine', id_]), 0, `${id_}: nothing of the refused call was stored`);
    }
    for (const bad of [null, 42, {}, { query: 42 }, []]) await assert.rejects(r.retrieve(bad as never), invalidArg, JSON.stringify(bad));
    await assert.rejects(r.addNodes(null as never), invalidArg);
    await assert.rejects(r.addNodes([null as never]), m3('INVALID_ARGUMENT', /nodes\[0\] is not a LlamaIndex node/));
    await assert.rejects(r.addNodes([{ id_: 'x' } as never]), m3('INVALID_ARGUMENT', /nodes\[0\]/));
    for (const [id, t] of ODD_TEXTS) {
      const hits = await r.retrieve(t);
      if (t.trim() === '') {
        assert.deepEqual(hits, [], `${id}: a blank query shares no token`);
        continue;
      }
      assert.ok(hits.every((h) => Number.isFinite(h.score) && (h.score as number) > 0), `${id}: positive finite scores`);
      if (storable(t)) assert.ok(hits.some((h) => h.node.id_ === id), `${id}: the node with the same text is found`);
    }
    assert.equal(await r.deleteNodes(['never-added']), 0);
    assert.equal(await r.deleteNodes([]), 0);
    await assert.rejects(r.deleteNodes(undefined as never), m3('INVALID_ARGUMENT', /ids must be a string or an array of strings, got undefined/), 'deleteNodes(undefined) is refused by the store (its id-list check), the retriever keeps working');
    await assert.rejects(r.deleteNodes([42 as never]), m3('INVALID_ARGUMENT', /ids\[0\] must be a string, got 42/));
    assert.equal((await r.retrieve(CORPUS[1])).length > 0, true);
  });

  test('BGEM3ColbertReranker: bad topN and nodes; odd-text nodes get finite scores in [0, 1]', async () => {
    for (const topN of BAD_COUNT) assert.throws(() => new li.BGEM3ColbertReranker({ encoder, topN: topN as number }), m3('INVALID_ARGUMENT', /topN must be a positive integer/), String(topN));
    const reranker = new li.BGEM3ColbertReranker({ encoder, topN: 100 });
    await assert.rejects(reranker.postprocessNodes([{ node: null } as never], 'q'), m3('INVALID_ARGUMENT', /nodes\[0\] is not a NodeWithScore/));
    for (const bad of [42, {}, []]) await assert.rejects(reranker.postprocessNodes([{ node: corpusNodes()[0] }], bad as never), invalidArg, JSON.stringify(bad));
    const nodes = [...oddNodes(), ...corpusNodes()].map((node) => ({ node, score: 0 }));
    for (const [what, q] of ODD_TEXTS) {
      const out = await reranker.postprocessNodes(nodes, q);
      assert.equal(out.length, nodes.length, what);
      // (1 + MaxSim) / 2; a text against itself gives MaxSim 1 + ~3e-9 from float32 rounding.
      assert.ok(out.every((n) => Number.isFinite(n.score) && (n.score as number) >= 0 && (n.score as number) <= 1 + 1e-6), `${what}: unit-scale scores`);
    }
  });

  test('BGEM3EnsembleRetriever: NaN/negative/infinite weights, bad rrfK/topK are INVALID_ARGUMENT; odd queries are answered', async () => {
    const sparse = await li.BGEM3SparseRetriever.fromNodes(corpusNodes(), { encoder, topK: 5 });
    const ok = { encoder, retrievers: [sparse] };
    const invalid: Record<string, unknown>[] = [
      { retrieverWeights: [Number.NaN] },
      { retrieverWeights: [Number.POSITIVE_INFINITY] },
      { retrieverWeights: [-1] },
      { weights: [Number.NaN, 1, 1] },
      { weights: [1, -1, 1] },
      { weights: [1, 1, Number.POSITIVE_INFINITY] },
      { rrfK: Number.NaN },
      { rrfK: Number.POSITIVE_INFINITY },
      ...BAD_COUNT.map((topK) => ({ topK })),
    ];
    assert.doesNotThrow(() => new li.BGEM3EnsembleRetriever(ok), 'the base configuration is valid');
    for (const o of invalid) {
      assert.throws(() => new li.BGEM3EnsembleRetriever({ ...ok, ...o } as never), m3('INVALID_ARGUMENT', new RegExp(`^${Object.keys(o)[0]}(\\[\\d\\])? must be a`)), JSON.stringify(o));
    }
    const e = new li.BGEM3EnsembleRetriever({ ...ok, topK: 3 });
    for (const bad of [null, 42, {}]) await assert.rejects(e.retrieve(bad as never), invalidArg, JSON.stringify(bad));
    for (const [what, q] of ODD_TEXTS) {
      const hits = await e.retrieve(q);
      assert.ok(hits.length <= 3, what);
      assert.ok(hits.every((h) => Number.isFinite(h.score)), `${what}: finite scores`);
    }
  });
});

describe('every store refuses what no store can hold, through both adapters', () => {
  let pg: OpenedPglite | undefined;
  before(async () => {
    pg = await openPglite(); // in-memory PostgreSQL with pgvector (a few seconds to boot)
  });
  after(() => pg?.close());

  test('U+0000 or a lone surrogate in a text, an id or metadata: the same INVALID_ARGUMENT naming the entry from M3Index and PgM3Store; nothing of the call is stored; the cleaned text is accepted', async () => {
    type Case = [what: string, doc: { id: string; text: string; metadata?: Record<string, unknown> }, refused: RegExp];
    const cases: Case[] = [
      ...UNSTORABLE.map(([id, text, refused]): Case => [`text (${id})`, { id, text }, refused]),
      ['an id with U+0000', { id: 'a\u0000b', text: 'x' }, /^docs\[1\]\.id contains U\+0000$/],
      ['an id with a lone surrogate', { id: 'a\uD800', text: 'x' }, /^docs\[1\]\.id contains a lone UTF-16 surrogate/],
      ['a metadata string with U+0000', { id: 'm1', text: 'x', metadata: { tag: 'a\u0000' } }, /^docs\[1\]\.metadata\.tag contains U\+0000, which stores cannot hold$/],
      ['a metadata key with U+0000', { id: 'm2', text: 'x', metadata: { 'k\u0000': 1 } }, /^docs\[1\]\.metadata key "k\\u0000" contains U\+0000/],
      ['a nested metadata string with a lone surrogate', { id: 'm3', text: 'x', metadata: { tags: ['ok', '\uDC00'] } }, /^docs\[1\]\.metadata\.tags\[1\] is a string with a lone UTF-16 surrogate/],
    ];
    const stores: [string, M3Store][] = [
      ['M3Index', await M3Index.create({ encoder })],
      ['PgM3Store', await PgM3Store.connect({ client: pg!.client, encoder })],
    ];
    const messages = new Map<string, string>();
    const sameEverywhere = (key: string, refused: RegExp) => (e: unknown) => {
      m3('INVALID_ARGUMENT', refused)(e);
      const msg = (e as Error).message;
      if (!messages.has(key)) messages.set(key, msg);
      assert.equal(msg, messages.get(key), `${key}: the same message from every store and adapter`);
      return true;
    };
    for (const [name, store] of stores) {
      const lc = new BGEM3VectorStore(undefined, { store });
      const ll = new li.BGEM3VectorStore({ store });
      for (const [what, d, refused] of cases) {
        await assert.rejects(
          lc.addDocuments([new Document({ id: 'fine', pageContent: 'fine' }), new Document({ id: d.id, pageContent: d.text, metadata: d.metadata ?? {} })]),
          sameEverywhere(what, refused),
          `${name} through LangChain: ${what}`,
        );
        await assert.rejects(
          ll.add([new TextNode({ id_: 'fine', text: 'fine' }), new TextNode({ id_: d.id, text: d.text, metadata: d.metadata ?? {} })]),
          sameEverywhere(what, refused),
          `${name} through LlamaIndex: ${what}`,
        );
      }
      assert.equal(await store.count(), 0, `${name}: nothing of the refused calls is stored`);
      assert.equal(await store.has('fine'), false, `${name}: not even the valid document beside the refused one`);
      // The remedy the messages give: strip U+0000; text.toWellFormed() for lone surrogates.
      await lc.addDocuments(UNSTORABLE.map(([id, t]) => new Document({ id, pageContent: t.replaceAll('\u0000', '').toWellFormed() })));
      assert.equal(await store.count(), UNSTORABLE.length, `${name}: the cleaned texts are stored`);
      for (const [id, t] of UNSTORABLE.filter(([, t]) => !t.isWellFormed())) {
        // The encoder reads a lone surrogate as U+FFFD: the odd query finds the cleaned text first.
        const [[doc, score]] = await lc.similaritySearchWithScore(t, 1);
        assert.equal(doc.id, id, `${name}: ${id}`);
        assert.ok(Math.abs(score - 1) < 1e-5, `${name}: ${id} scores ${score}`);
      }
      await store.close();
    }
  });
});
