/**
 * BGEM3EnsembleRetriever over a store and over the application's own retrievers: the patterns of
 * LangChain's EnsembleRetriever tests (@langchain/classic retrievers/ensemble: one retriever,
 * several with weights, a weights/retrievers mismatch), the duplicate test with id-less documents
 * (MemoryVectorStore + sparse retriever over the same documents), and what a query encodes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { sharedEncoderCount } from '@bgem3/core/adapter';
import { EnsembleRetriever } from '@langchain/classic/retrievers/ensemble';
import { MemoryVectorStore } from '@langchain/classic/vectorstores/memory';
import { Document } from '@langchain/core/documents';
import { BGEM3Embeddings, BGEM3EnsembleRetriever, BGEM3SparseRetriever, BGEM3VectorStore } from '../src/index.ts';
import { CORPUS, CountingEncoder, FIXTURE, close, corpusDocs } from './helpers.ts';

const TEXTS = [
  'Buildings are made out of brick',
  'Buildings are made out of wood',
  'Buildings are made out of stone',
  'Cars are made out of metal',
  'Cars are made out of plastic',
  'mitochondria is the powerhouse of the cell',
  'mitochondria is made of lipids',
];

describe('BGEM3EnsembleRetriever', () => {
  let encoder: M3Encoder;
  let counting: CountingEncoder;
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE, { cache: false });
    counting = new CountingEncoder(encoder);
  });
  after(async () => {
    await encoder.close();
  });

  /** Documents without ids, as loaders and splitters make them. */
  const idless = () => CORPUS.map((c) => new Document({ pageContent: c.text, metadata: { lang: c.lang } }));

  test('over a MemoryVectorStore and a sparse retriever of the same id-less documents: every result is a distinct text, none gets an id', async () => {
    const dense = await MemoryVectorStore.fromDocuments(idless(), new BGEM3Embeddings({ encoder }));
    const sparse = BGEM3SparseRetriever.fromDocuments(idless(), { encoder, k: 12 });
    const hybrid = new BGEM3EnsembleRetriever({ retrievers: [dense.asRetriever(12), sparse], k: 6 });
    for (const q of ['capital city', '首都', 'река']) {
      const results = await hybrid.invoke(q);
      assert.equal(results.length, 6);
      assert.equal(new Set(results.map((d) => d.pageContent)).size, 6, `${q}: 6 distinct texts`);
      assert.ok(results.every((d) => d.id === undefined), 'no id invented');
      for (let i = 1; i < results.length; i++) assert.ok(results[i - 1]!.metadata.score >= results[i]!.metadata.score);
    }
    // LangChain's own EnsembleRetriever over the same two (it keys by pageContent too) agrees on the set.
    const classic = await new EnsembleRetriever({ retrievers: [dense.asRetriever(12), sparse] }).invoke('capital city');
    assert.equal(new Set(classic.map((d) => d.pageContent)).size, classic.length);
  });

  test('documents with ids are deduplicated by id; two ids with the same text stay two', async () => {
    const a = [new Document({ id: 'a', pageContent: 'same text' }), new Document({ id: 'b', pageContent: 'same text' }), new Document({ id: 'c', pageContent: 'other' })];
    const dense = await MemoryVectorStore.fromDocuments(a, new BGEM3Embeddings({ encoder }));
    const sparse = BGEM3SparseRetriever.fromDocuments(a, { encoder, k: 3 });
    const results = await new BGEM3EnsembleRetriever({ retrievers: [dense.asRetriever(3), sparse], k: 5 }).invoke('same text');
    const ids = results.map((d) => d.id).sort();
    assert.deepEqual([...new Set(ids)], ids, 'each id once');
    assert.ok(ids.includes('a') && ids.includes('b'));
  });

  test('a query encodes the query and at most rerankCandidates passages, only those without stored vectors, in one call', async () => {
    const store = await M3Index.create({ encoder: counting });
    const vs = await BGEM3VectorStore.fromDocuments(idless(), undefined, { store });
    const dense = await MemoryVectorStore.fromDocuments(idless(), new BGEM3Embeddings({ encoder: counting }));
    const sparse = new BGEM3SparseRetriever({ vectorStore: vs, k: 12 });
    const query = 'green tea in China';
    counting.reset();
    await new BGEM3EnsembleRetriever({ retrievers: [sparse], k: 4 }).invoke(query);
    assert.deepEqual(counting.texts.filter((t) => t !== query), [], 'stored candidates are rescored from the store: nothing but the query encoded');
    counting.reset();
    const results = await new BGEM3EnsembleRetriever({ retrievers: [dense.asRetriever(12), sparse], k: 4, rerankCandidates: 5 }).invoke(query);
    assert.equal(results.length, 4);
    const passages = counting.texts.filter((t) => t !== query);
    assert.ok(passages.length <= 5, `${passages.length} passages encoded`);
    const sparseTexts = new Set((await store.searchSparse(query, { k: 12 })).map((h) => h.text));
    assert.ok(passages.every((t) => !sparseTexts.has(t)), 'candidates the sparse retriever returned were not encoded');
    assert.ok(counting.calls <= 4, `${counting.calls} encoder calls: the dense query, the sparse query, the ensemble query, one batch of passages`);
  });

  test('over a store (fromDocuments): the store\'s pipeline; one text, the query, is encoded', async () => {
    counting.reset();
    const hybrid = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder: counting, k: 5 });
    assert.equal(counting.texts.length, CORPUS.length);
    counting.reset();
    const results = await hybrid.invoke('Which river is the longest?');
    assert.deepEqual(counting.texts, ['Which river is the longest?']);
    const store = hybrid.vectorStore!.store;
    const want = await store.search('Which river is the longest?', { k: 5 });
    assert.deepEqual(results.map((d) => d.id), want.map((h) => h.id));
    results.forEach((d, i) => assert.ok(close(d.metadata.score, want[i]!.score) && close(d.metadata.colbertScore, want[i]!.scores.colbert)));
    await hybrid.addDocuments([new Document({ id: 'x', pageContent: 'Волга' })]);
    assert.equal(await store.has('x'), true);
    await hybrid.delete({ ids: ['x'] });
    assert.equal(await store.has('x'), false);
  });

  test('EnsembleRetriever patterns: a question with one retriever; several with weights; a weights mismatch is an error', async () => {
    const vs = await MemoryVectorStore.fromTexts(TEXTS, [{ id: 1 }, { id: 2 }, { id: 3 }, { id: 4 }, { id: 5 }], new BGEM3Embeddings({ encoder }));
    const one = await new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever()], k: 4 }).invoke('What is the powerhouse of the cell?');
    assert.equal(one.length, 4);
    assert.ok(one.every((d) => TEXTS.includes(d.pageContent) && typeof d.metadata.fusedScore === 'number'));
    const sparse = BGEM3SparseRetriever.fromDocuments(TEXTS.map((t) => new Document({ pageContent: t })), { encoder, k: 7 });
    const two = await new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever(7), sparse], weights: [0.3, 0.7], k: 7, rerank: false }).invoke('Buildings');
    assert.equal(new Set(two.map((d) => d.pageContent)).size, 7);
    for (let i = 1; i < two.length; i++) assert.ok(two[i - 1]!.metadata.fusedScore >= two[i]!.metadata.fusedScore, 'rerank: false keeps the fused order');
    assert.throws(() => new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever(), sparse], weights: [1] }), /weights must be an array of 2/);
    assert.throws(() => new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever()], fetchK: 10 }), /fetchK applies over a store only/);
    assert.throws(() => new BGEM3EnsembleRetriever({} as never), /needs a store, a vectorStore or retrievers/);
  });

  test('the model is taken from the retrievers: no other model is loaded', async () => {
    const before = sharedEncoderCount();
    const sparse = BGEM3SparseRetriever.fromDocuments(idless(), { encoder, k: 4 });
    const hybrid = new BGEM3EnsembleRetriever({ retrievers: [sparse], k: 2 });
    assert.equal((await hybrid.invoke('tea')).length, 2);
    assert.equal(sharedEncoderCount(), before, 'no model loaded by the ensemble itself');
    const dense = await MemoryVectorStore.fromDocuments(idless(), new BGEM3Embeddings({ encoder }));
    await new BGEM3EnsembleRetriever({ retrievers: [dense.asRetriever(4)], k: 2 }).invoke('tea');
    assert.equal(sharedEncoderCount(), before, 'the model of the vector store\'s BGEM3Embeddings');
  });
});
