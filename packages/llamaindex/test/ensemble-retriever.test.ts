/**
 * BGEM3EnsembleRetriever: the duplicate test of the issue (VectorStoreIndex.fromDocuments beside
 * BGEM3SparseRetriever.fromDocuments: two splits, different node ids for the same chunks), store
 * mode, the rerank cap, and that no second model is loaded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { sharedEncoderCount } from '@bgem3/core/adapter';
import { MetadataMode, SentenceSplitter, Settings, VectorStoreIndex } from 'llamaindex';
import { BGEM3ColbertReranker, BGEM3Embedding, BGEM3EnsembleRetriever, BGEM3SparseRetriever, BGEM3VectorStore, type BGEM3EnsembleScores } from '../src/index.ts';
import { FIXTURE, PASSAGES, SpyEncoder, corpusDocuments, corpusNodes } from './helpers.ts';

describe('BGEM3EnsembleRetriever (LlamaIndex)', () => {
  let encoder: M3Encoder;
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    Settings.nodeParser = new SentenceSplitter({ chunkSize: 512 });
  });
  after(async () => {
    await encoder.close();
  });

  test('VectorStoreIndex.fromDocuments beside BGEM3SparseRetriever.fromDocuments: every result a distinct chunk', async () => {
    Settings.embedModel = new BGEM3Embedding({ encoder });
    const index = await VectorStoreIndex.fromDocuments(corpusDocuments());
    const sparse = await BGEM3SparseRetriever.fromDocuments(corpusDocuments(), { encoder, topK: 12 });
    const hybrid = new BGEM3EnsembleRetriever({ retrievers: [index.asRetriever({ similarityTopK: 12 }), sparse], topK: 6 });
    for (const q of ['capital city', '首都', 'кошка']) {
      const out = await hybrid.retrieve(q);
      assert.equal(out.length, 6);
      assert.equal(new Set(out.map((n) => n.node.getContent(MetadataMode.NONE))).size, 6, `${q}: 6 distinct texts`);
      for (let i = 1; i < out.length; i++) assert.ok(out[i - 1]!.score! >= out[i]!.score!);
      for (const n of out) {
        const s = n.node.metadata.bgem3_scores as BGEM3EnsembleScores;
        assert.equal(typeof s.colbert, 'number');
        assert.ok(n.score! >= 0 && n.score! <= 1 && Math.abs(n.score! - Math.min(1, Math.max(0, (s.score + 1) / 2))) < 1e-9);
      }
    }
  });

  test('over a store: the store\'s pipeline, one text encoded per query', async () => {
    const spy = new SpyEncoder(encoder);
    const store = await M3Index.create({ encoder: spy });
    await new BGEM3VectorStore({ store }).add(corpusNodes());
    spy.calls = [];
    const out = await new BGEM3EnsembleRetriever({ store, topK: 4 }).retrieve('Cairo Nile');
    assert.deepEqual(spy.calls.flatMap((c) => c.texts), ['Cairo Nile']);
    const want = await store.search('Cairo Nile', { k: 4 });
    assert.deepEqual(out.map((n) => n.node.id_), want.map((h) => h.id));
    assert.throws(() => new BGEM3EnsembleRetriever({ store, rrfK: 10 }), /rrfK applies over retrievers only/);
  });

  test('over retrievers: candidates from a store are rescored from it, the others encoded (at most rerankCandidates)', async () => {
    const spy = new SpyEncoder(encoder);
    const store = await M3Index.create({ encoder: spy });
    const vs = new BGEM3VectorStore({ store });
    await vs.add(corpusNodes());
    const other = await BGEM3SparseRetriever.fromNodes(corpusNodes().map((n) => Object.assign(n, { id_: `copy-${n.id_}` })), { encoder: spy, topK: 12 });
    const mine = new BGEM3SparseRetriever({ vectorStore: vs, topK: 12 });
    const q = 'Москва река';
    spy.calls = [];
    await new BGEM3EnsembleRetriever({ retrievers: [mine], topK: 3 }).retrieve(q);
    assert.deepEqual([...new Set(spy.calls.flatMap((c) => c.texts))], [q], 'stored candidates: nothing but the query encoded');
    spy.calls = [];
    const out = await new BGEM3EnsembleRetriever({ retrievers: [other], topK: 3, rerankCandidates: 4 }).retrieve(q);
    assert.equal(out.length, Math.min(3, (await other.retrieve(q)).length));
    const passages = spy.calls.flatMap((c) => c.texts).filter((t) => t !== q);
    assert.ok(passages.length <= 4, `${passages.length} passages encoded`);
  });

  test('no model of its own: from its retrievers, or Settings.embedModel; disagreements are named', async () => {
    const count = sharedEncoderCount();
    Settings.embedModel = new BGEM3Embedding({ encoder });
    const index = await VectorStoreIndex.fromDocuments(corpusDocuments().slice(0, 4));
    const e = new BGEM3EnsembleRetriever({ retrievers: [index.asRetriever({ similarityTopK: 3 })], topK: 2 });
    assert.equal((await e.retrieve('tea')).length, 2);
    assert.equal(sharedEncoderCount(), count, 'Settings.embedModel\'s encoder, no other load');
    const other = new SpyEncoder(encoder, 'local:another-model');
    assert.throws(() => new BGEM3EnsembleRetriever({ retrievers: [new BGEM3SparseRetriever({ encoder })], encoder: other }), (err: Error) => err.message.includes('local:another-model') && err.message.includes(encoder.modelId));
    const viaSettings = new BGEM3EnsembleRetriever({ retrievers: [index.asRetriever({ similarityTopK: 3 })], encoder: other });
    await assert.rejects(viaSettings.retrieve('tea'), (err: Error & { code?: string }) => ['INDEX_MISMATCH', 'INVALID_ARGUMENT'].includes(err.code!) && err.message.includes('local:another-model') && err.message.includes(encoder.modelId));
    assert.equal(PASSAGES.length, 12);
  });

  test('Settings.embedModel (a BGEM3Embedding) gives its model to the sparse retriever and the reranker', async () => {
    const spy = new SpyEncoder(encoder);
    Settings.embedModel = new BGEM3Embedding({ encoder: spy });
    const count = sharedEncoderCount();
    const sparse = await BGEM3SparseRetriever.fromNodes(corpusNodes(), { topK: 3 });
    const hits = await sparse.retrieve('Москва');
    const out = await new BGEM3ColbertReranker({ topN: 2 }).postprocessNodes(hits, 'Москва');
    assert.equal(out.length, Math.min(2, hits.length));
    assert.ok(spy.calls.flatMap((c) => c.texts).includes('Москва'), 'encoded by Settings.embedModel\'s encoder');
    assert.equal(sharedEncoderCount(), count, 'no other model loaded');
  });
});
