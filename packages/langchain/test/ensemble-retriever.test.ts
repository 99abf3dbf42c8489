import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  M3Encoder,
  M3Error,
  colbertScore,
  denseScore,
  lexicalMatchingScore,
  m3Rerank,
  reciprocalRankFusion,
  weightedScoreFusion,
  type FullEncodeResult,
} from '@bgem3/core';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever } from '@langchain/core/retrievers';
import { RunnableLambda } from '@langchain/core/runnables';
import { FakeRetriever } from '@langchain/core/utils/testing';
import type { VectorStoreRetriever } from '@langchain/core/vectorstores';
import { MemoryVectorStore } from '@langchain/classic/vectorstores/memory';
import { BGEM3Embeddings, BGEM3EnsembleRetriever, BGEM3SparseRetriever } from '../src/index.ts';
import { CORPUS, FIXTURE, close, corpusDocs } from './helpers.ts';

describe('BGEM3EnsembleRetriever', () => {
  let encoder: M3Encoder;
  let ensemble: BGEM3EnsembleRetriever;
  let docEnc: Map<string, FullEncodeResult>;
  const queries = ['Which city is the capital of Japan?', '中国的首都', 'самая длинная река', 'نهر النيل', 'BGE-M3 dense sparse ColBERT'];

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    ensemble = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder });
    const enc = await encoder.encodeFull(CORPUS.map((c) => c.text));
    docEnc = new Map(CORPUS.map((c, i) => [c.id, enc[i]]));
  });
  after(async () => {
    await encoder.close();
  });

  test('is a LangChain retriever with lc names and sensible defaults', () => {
    assert.ok(ensemble instanceof BaseRetriever);
    assert.deepEqual(ensemble.lc_id, ['bgem3', 'retrievers', 'BGEM3EnsembleRetriever']);
    assert.equal(ensemble.k, 4);
    assert.equal(ensemble.fetchK, 100);
    assert.equal(ensemble.fusion, 'rrf');
    assert.deepEqual(ensemble.weights, [0.5, 0.5]);
    assert.deepEqual(ensemble.rerankWeights, [0.4, 0.2, 0.4]);
    assert.equal(ensemble.rerank, true);
    assert.ok(ensemble.sparseRetriever instanceof BGEM3SparseRetriever);
    assert.ok((ensemble.denseRetriever as VectorStoreRetriever).vectorStore instanceof MemoryVectorStore);
  });

  test('reranked results equal core m3Rerank over the candidates, and the FlagEmbedding formula', async () => {
    for (const query of queries) {
      const got = await ensemble.invoke(query);
      assert.equal(got.length, 4);
      const [q] = await encoder.encodeFull([query]);
      // fetchK (100) exceeds the corpus: the dense retriever returns every document, so the
      // candidates are the whole corpus
      const ids = CORPUS.map((c) => c.id);
      const expected = await m3Rerank(q, ids.map((id) => docEnc.get(id)!), { k: 4 });
      assert.deepEqual(
        got.map((d) => d.metadata.relevanceScore),
        expected.map((h) => h.score),
        query,
      );
      got.forEach((d, i) => {
        const h = expected[i];
        assert.equal(d.id, ids[h.index], query);
        assert.equal(d.metadata.denseScore, h.scores.dense);
        assert.equal(d.metadata.sparseScore, h.scores.sparse);
        assert.equal(d.metadata.colbertScore, h.scores.colbert);
        // FlagEmbedding: (0.4·dense + 0.2·sparse + 0.4·colbert) / (0.4 + 0.2 + 0.4), from the plain reference scores
        const e = docEnc.get(d.id!)!;
        const dense = denseScore(q.dense, e.dense);
        const sparse = lexicalMatchingScore(q.sparse, e.sparse);
        const colbert = colbertScore(q.colbert, e.colbert);
        assert.ok(close(d.metadata.relevanceScore, (0.4 * dense + 0.2 * sparse + 0.4 * colbert) / 1.0));
        assert.equal(d.pageContent, CORPUS.find((c) => c.id === d.id)!.text);
        assert.equal(d.metadata.lang, CORPUS.find((c) => c.id === d.id)!.lang);
      });
    }
  });

  test('fusedScore is core reciprocalRankFusion of the two candidate lists', async () => {
    const store = (ensemble.denseRetriever as VectorStoreRetriever).vectorStore;
    const sparse = ensemble.sparseRetriever as BGEM3SparseRetriever;
    for (const query of queries) {
      const dense = await store.similaritySearch(query, 100);
      const lexical = await sparse.invoke(query);
      const fused = reciprocalRankFusion(
        [dense.map((d) => ({ id: `id:${d.id}` })), lexical.map((d) => ({ id: `id:${d.id}` }))],
        { k: 60, weights: [0.5, 0.5] },
      );
      const byId = new Map(fused.map((f) => [f.id.slice(3), f.score]));
      const got = await ensemble.invoke(query);
      for (const d of got) assert.equal(d.metadata.fusedScore, byId.get(d.id!));
      // without rerank: the fused order itself
      const plain = new BGEM3EnsembleRetriever({ denseRetriever: ensemble.denseRetriever, sparseRetriever: sparse, rerank: false, k: 5 });
      const order = await plain.invoke(query);
      assert.deepEqual(order.map((d) => d.id), fused.slice(0, 5).map((f) => f.id.slice(3)));
      for (const d of order) {
        assert.equal(d.metadata.relevanceScore, d.metadata.fusedScore);
        assert.equal(d.metadata.colbertScore, undefined);
      }
    }
  });

  test("fusion 'weighted' min-max fuses the exact dense and sparse scores (core weightedScoreFusion)", async () => {
    const store = (ensemble.denseRetriever as VectorStoreRetriever).vectorStore;
    const sparse = ensemble.sparseRetriever as BGEM3SparseRetriever;
    const weighted = new BGEM3EnsembleRetriever({
      denseRetriever: ensemble.denseRetriever,
      sparseRetriever: sparse,
      fusion: 'weighted',
      weights: [0.7, 0.3],
      rerank: false,
      k: 6,
    });
    for (const query of queries) {
      const [q] = await encoder.encodeFull([query]);
      const dense = await store.similaritySearch(query, 100);
      const lexical = await sparse.invoke(query);
      const fused = weightedScoreFusion(
        [
          dense.map((d) => ({ id: d.id!, score: denseScore(q.dense, docEnc.get(d.id!)!.dense) })),
          lexical.map((d) => ({ id: d.id!, score: lexicalMatchingScore(q.sparse, docEnc.get(d.id!)!.sparse) })),
        ],
        { weights: [0.7, 0.3] },
      );
      const got = await weighted.invoke(query);
      assert.deepEqual(got.map((d) => d.id), fused.slice(0, 6).map((f) => f.id));
      got.forEach((d, i) => {
        assert.ok(close(d.metadata.fusedScore, fused[i].score));
        assert.equal(d.metadata.denseScore, denseScore(q.dense, docEnc.get(d.id!)!.dense));
        assert.equal(d.metadata.sparseScore, lexicalMatchingScore(q.sparse, docEnc.get(d.id!)!.sparse));
      });
    }
  });

  test('rerankWeights are configurable; a zero ColBERT weight skips ColBERT', async () => {
    const r = new BGEM3EnsembleRetriever({ denseRetriever: ensemble.denseRetriever, sparseRetriever: ensemble.sparseRetriever, rerankWeights: [1, 1, 0] });
    const got = await r.invoke(queries[0]);
    for (const d of got) {
      assert.equal(d.metadata.colbertScore, undefined);
      assert.ok(close(d.metadata.relevanceScore, (d.metadata.denseScore + d.metadata.sparseScore) / 2));
    }
    const pool = new BGEM3EnsembleRetriever({ denseRetriever: ensemble.denseRetriever, sparseRetriever: ensemble.sparseRetriever, rerankCandidates: 2 });
    assert.equal((await pool.invoke(queries[0])).length, 2);
  });

  test('deduplicates by document id (content only for id-less documents) and merges metadata', async () => {
    const a = new Document({ id: 'a', pageContent: 'Paris is the capital of France', metadata: { from: 'dense' } });
    const b = new Document({ id: 'b', pageContent: 'same text, two ids', metadata: {} });
    const c = new Document({ id: 'c', pageContent: 'same text, two ids', metadata: {} });
    const n1 = new Document({ pageContent: 'no id here', metadata: { n: 1 } });
    const n2 = new Document({ pageContent: 'no id here', metadata: { n: 2 } });
    const denseRetriever = new FakeRetriever({ output: [a, a, b, n1] });
    const sparseRetriever = new FakeRetriever({ output: [new Document({ id: 'a', pageContent: a.pageContent, metadata: { from: 'sparse', extra: true } }), c, n2] });
    for (const rerank of [true, false]) {
      const r = new BGEM3EnsembleRetriever({ denseRetriever, sparseRetriever, encoder, k: 10, rerank });
      const got = await r.invoke('Paris');
      assert.equal(got.length, 4, `rerank ${rerank}`);
      assert.deepEqual(got.map((d) => d.id ?? 'none').sort(), ['a', 'b', 'c', 'none']);
      const da = got.find((d) => d.id === 'a')!;
      assert.equal(da.metadata.from, 'dense');
      assert.equal(da.metadata.extra, true);
      assert.equal(got.find((d) => d.id === undefined)!.metadata.n, 1);
    }
    // inputs untouched
    assert.deepEqual(a.metadata, { from: 'dense' });
  });

  test('k larger than the corpus returns every document; an empty corpus returns []', async () => {
    const r = new BGEM3EnsembleRetriever({ denseRetriever: ensemble.denseRetriever, sparseRetriever: ensemble.sparseRetriever, k: 50 });
    const all = await r.invoke(queries[1]);
    assert.equal(all.length, CORPUS.length);
    assert.equal(new Set(all.map((d) => d.id)).size, CORPUS.length);
    const empty = await BGEM3EnsembleRetriever.fromDocuments([], { encoder });
    assert.deepEqual(await empty.invoke('anything'), []);
  });

  test('bad input: empty query → [], non-string → TypeError, invalid options are clear errors', async () => {
    assert.deepEqual(await ensemble.invoke(''), []);
    assert.deepEqual(await ensemble.invoke('  \n'), []);
    await assert.rejects(ensemble.invoke(3 as unknown as string), TypeError);
    const base = { denseRetriever: ensemble.denseRetriever, sparseRetriever: ensemble.sparseRetriever };
    const isArg = (re: RegExp) => (e: Error) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && re.test(e.message);
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, k: 0 }), isArg(/k must be a positive integer/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, k: 2.5 }), isArg(/k must be/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, fetchK: -1 }), isArg(/fetchK/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, weights: [1] as unknown as [number, number] }), isArg(/weights/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, weights: [0, 0] }), isArg(/zero/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, c: -1 }), isArg(/c \(the RRF constant\)/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, rerankWeights: [0, 0, 0] }), isArg(/rerankWeights/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, fusion: 'max' as 'rrf' }), isArg(/fusion/));
    assert.throws(() => new BGEM3EnsembleRetriever({ ...base, rerankCandidates: 0 }), isArg(/rerankCandidates/));
    assert.throws(() => new BGEM3EnsembleRetriever({ denseRetriever: {} as BaseRetriever, sparseRetriever: ensemble.sparseRetriever }), TypeError);
    const r = new BGEM3EnsembleRetriever(base);
    r.k = -3;
    await assert.rejects(r.invoke('x'), /k must be a positive integer/);
  });

  test('child runs: the dense and sparse retrievers run under the ensemble run', async () => {
    const starts: { name: string; runId: string; parentRunId?: string }[] = [];
    await ensemble.invoke(queries[0], {
      callbacks: [
        {
          handleRetrieverStart(serialized: { id: string[] }, _q: string, runId: string, parentRunId?: string) {
            starts.push({ name: serialized.id.at(-1)!, runId, parentRunId });
          },
        },
      ],
    });
    assert.equal(starts.length, 3);
    const root = starts.find((s) => s.name === 'BGEM3EnsembleRetriever')!;
    assert.equal(root.parentRunId, undefined);
    const children = starts.filter((s) => s !== root);
    assert.deepEqual(children.map((s) => s.name).sort(), ['BGEM3SparseRetriever', 'VectorStoreRetriever']);
    for (const c of children) assert.equal(c.parentRunId, root.runId);
  });

  test('invoke equals _getRelevantDocuments; batch equals invoke; composes with LCEL', async () => {
    const single = await Promise.all(queries.map((q) => ensemble.invoke(q)));
    assert.deepEqual(await ensemble.batch(queries), single);
    assert.deepEqual(await ensemble._getRelevantDocuments(queries[0]), single[0]);
    const chain = ensemble.pipe(RunnableLambda.from((docs: DocumentInterface[]) => docs.map((d) => d.id).join(',')));
    assert.equal(await chain.invoke(queries[0]), single[0].map((d) => d.id).join(','));
  });

  test('addDocuments replaces an existing id in both stores; delete removes from both', async () => {
    const own = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder, k: 12 });
    const store = (own.denseRetriever as VectorStoreRetriever<MemoryVectorStore>).vectorStore;
    const sparse = own.sparseRetriever as BGEM3SparseRetriever;
    const text = 'Lyon is a large city in France.';
    const ids = await own.addDocuments([new Document({ id: 'en-paris', pageContent: text, metadata: { lang: 'en' } })]);
    assert.deepEqual(ids, ['en-paris']);
    assert.equal(store.memoryVectors.length, CORPUS.length);
    assert.equal(sparse.size, CORPUS.length);
    const got = await own.invoke(text);
    assert.equal(got.filter((d) => d.id === 'en-paris').length, 1);
    assert.equal(got.find((d) => d.id === 'en-paris')!.pageContent, text);
    await own.delete(['en-paris', 'ja-fuji']);
    assert.equal(store.memoryVectors.length, CORPUS.length - 2);
    assert.equal(sparse.size, CORPUS.length - 2);
    assert.ok(!(await own.invoke(text)).some((d) => d.id === 'en-paris' || d.id === 'ja-fuji'));
  });

  test('fromDocuments accepts your own vector store; addDocuments needs writable parts', async () => {
    const store = new MemoryVectorStore(new BGEM3Embeddings({ encoder }));
    const r = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder, vectorStore: store, k: 2 });
    assert.equal((r.denseRetriever as VectorStoreRetriever).vectorStore, store);
    assert.equal(store.memoryVectors.length, CORPUS.length);
    assert.equal((await r.invoke('富士山')).length, 2);
    const fake = new BGEM3EnsembleRetriever({ denseRetriever: new FakeRetriever(), sparseRetriever: new FakeRetriever(), encoder });
    await assert.rejects(fake.addDocuments([new Document({ pageContent: 'x' })]), (e: Error) => e instanceof M3Error && /VectorStoreRetriever/.test(e.message));
  });
});
