import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error, colbertScore, type ColbertMatrix } from '@bgem3/core';
import { Document } from '@langchain/core/documents';
import { BaseDocumentCompressor } from '@langchain/core/retrievers/document_compressors';
import { ContextualCompressionRetriever } from '@langchain/classic/retrievers/contextual_compression';
import { MemoryVectorStore } from '@langchain/classic/vectorstores/memory';
import { BGEM3ColbertReranker, BGEM3Embeddings, BGEM3SparseRetriever } from '../src/index.ts';
import { CORPUS, FIXTURE, close, corpusDocs } from './helpers.ts';

describe('BGEM3ColbertReranker', () => {
  let encoder: M3Encoder;
  const colbertOf = async (text: string) => (await encoder.encode([text], { dense: false, colbert: true }))[0].colbert!;
  const expectedScores = async (query: string, texts: string[]) => {
    const q = await colbertOf(query);
    return Promise.all(texts.map(async (t) => colbertScore(q, await colbertOf(t))));
  };

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
  });
  after(async () => {
    await encoder.close();
  });

  test('compressDocuments: top 3 by default, best first, relevanceScore equal to core colbertScore', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    assert.ok(reranker instanceof BaseDocumentCompressor);
    assert.equal(reranker.topN, 3);
    const docs = corpusDocs();
    const query = 'Which city is the capital of Japan?';
    const out = await reranker.compressDocuments(docs, query);
    assert.equal(out.length, 3);
    const expected = await expectedScores(query, docs.map((d) => d.pageContent));
    const order = expected.map((s, i) => ({ s, i })).sort((a, b) => b.s - a.s || a.i - b.i);
    out.forEach((d, r) => {
      assert.equal(d.id, docs[order[r].i].id);
      assert.ok(close(d.metadata.relevanceScore, order[r].s), `${d.metadata.relevanceScore} vs ${order[r].s}`);
      assert.equal(d.metadata.lang, docs[order[r].i].metadata.lang);
    });
    // inputs are not mutated
    assert.ok(docs.every((d) => d.metadata.relevanceScore === undefined));
  });

  test('rerank returns {index, relevanceScore} for all documents or topN; strings accepted', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    const texts = CORPUS.map((c) => c.text);
    const query = 'река';
    const all = await reranker.rerank(texts, query);
    assert.equal(all.length, texts.length);
    assert.deepEqual(new Set(all.map((r) => r.index)), new Set(texts.keys()));
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].relevanceScore >= all[i].relevanceScore);
    const expected = await expectedScores(query, texts);
    for (const r of all) assert.ok(close(r.relevanceScore, expected[r.index]));
    const two = await reranker.rerank(corpusDocs(), query, { topN: 2 });
    assert.deepEqual(two, all.slice(0, 2));
    assert.equal((await reranker.rerank(texts, query, { topN: 100 })).length, texts.length);
  });

  test('empty input, empty query, non-string query, bad topN', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    assert.deepEqual(await reranker.compressDocuments([], 'q'), []);
    assert.deepEqual(await reranker.rerank([], 'q'), []);
    const blank = await reranker.rerank(['abc', 'def'], '');
    assert.ok(blank.every((r) => Number.isFinite(r.relevanceScore)));
    await assert.rejects(reranker.compressDocuments(corpusDocs(), 7 as unknown as string), TypeError);
    for (const topN of [0, -2, 1.5]) {
      assert.throws(() => new BGEM3ColbertReranker({ encoder, topN }), (e: Error) => e instanceof M3Error && /topN must be a positive integer/.test(e.message));
      await assert.rejects(reranker.rerank(['a'], 'q', { topN }), /topN/);
    }
    reranker.topN = 0;
    await assert.rejects(reranker.compressDocuments(corpusDocs(), 'q'), /topN/);
    await assert.rejects(reranker.rerank([42 as unknown as string], 'q'), TypeError);
  });

  test('uses ColBERT vectors carried by a document instead of encoding it', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    const carried = await colbertOf('Волга — самая длинная река в Европе.');
    const rows: number[][] = Array.from({ length: carried.count }, (_, i) => Array.from(carried.data.subarray(i * carried.dim, (i + 1) * carried.dim)));
    const docs = [
      new Document({ pageContent: 'text that is not what the vectors say', metadata: { colbertVectors: carried } }),
      new Document({ pageContent: 'another unrelated text', metadata: { colbertVectors: rows } }),
      new Document({ pageContent: 'Волга — самая длинная река в Европе.' }),
    ];
    const query = 'река в Европе';
    const res = await reranker.rerank(docs, query);
    const q = await colbertOf(query);
    const want = colbertScore(q, carried);
    for (const r of res) assert.ok(close(r.relevanceScore, want), `doc ${r.index}: ${r.relevanceScore} vs ${want}`);
    const bad = new Document({ pageContent: 'x', metadata: { colbertVectors: { data: new Float32Array(8), count: 1, dim: 8 } } });
    await assert.rejects(reranker.rerank([bad], query), (e: Error) => e instanceof M3Error && /dimension/.test(e.message));
    const custom = new BGEM3ColbertReranker({ encoder, vectorsKey: 'cv' });
    const [r] = await custom.rerank([new Document({ pageContent: 'zzz', metadata: { cv: carried } })], query);
    assert.ok(close(r.relevanceScore, want));
  });

  test('documents already encoded by another class cost no forward pass (shared encode cache)', async () => {
    const own = await M3Encoder.load(FIXTURE);
    try {
      const docs = corpusDocs();
      await BGEM3SparseRetriever.fromDocuments(docs, { encoder: own });
      const before = own.stats.textsEncoded;
      assert.equal(before, docs.length);
      await new BGEM3ColbertReranker({ encoder: own }).compressDocuments(docs, 'a new query');
      assert.equal(own.stats.textsEncoded, before + 1, 'only the query was encoded');
    } finally {
      await own.close();
    }
  });

  test('works inside ContextualCompressionRetriever (@langchain/classic)', async () => {
    const store = await MemoryVectorStore.fromDocuments(corpusDocs(), new BGEM3Embeddings({ encoder }));
    const retriever = new ContextualCompressionRetriever({
      baseCompressor: new BGEM3ColbertReranker({ encoder, topN: 2 }),
      baseRetriever: store.asRetriever(8),
    });
    const query = '東京は日本の首都です';
    const out = await retriever.invoke(query);
    assert.equal(out.length, 2);
    assert.ok(out[0].metadata.relevanceScore >= out[1].metadata.relevanceScore);
    const base = await store.similaritySearch(query, 8);
    const expected = await expectedScores(query, base.map((d) => d.pageContent));
    const best = Math.max(...expected);
    assert.ok(close(out[0].metadata.relevanceScore, best));
    assert.ok(base.some((d) => d.id === out[0].id));
    // and over the sparse retriever
    const sparse = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 12 });
    const viaSparse = new ContextualCompressionRetriever({ baseCompressor: new BGEM3ColbertReranker({ encoder, topN: 1 }), baseRetriever: sparse });
    const [top] = await viaSparse.invoke('Москва столица');
    assert.equal(typeof top.metadata.relevanceScore, 'number');
    assert.equal(typeof top.metadata.sparseScore, 'number');
  });
});
