import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error, m3Rerank, reciprocalRankFusion, weightedScoreFusion, type M3Encoded } from '@bgem3/core';
import {
  BaseRetriever,
  MetadataMode,
  Settings,
  VectorStoreIndex,
  storageContextFromDefaults,
  type NodeWithScore,
  type QueryBundle,
} from 'llamaindex';
import { BGEM3ColbertReranker, BGEM3Embedding, BGEM3EnsembleRetriever, BGEM3SparseRetriever, type BGEM3EnsembleScores } from '../src/index.ts';
import { PASSAGES, TextStoringVectorStore, corpusNodes, embedText, freshModelPath, referenceEncoder } from './helpers.ts';

const invalidArg = (err: unknown) => err instanceof M3Error && err.code === 'INVALID_ARGUMENT';
const QUERIES = ['Which city is the capital?', '首都はどこですか', 'кошка и дождь', 'عاصمة', 'how does rank fusion work'];

/** A retriever returning fixed results (to test dedupe and odd inputs). */
class FixedRetriever extends BaseRetriever {
  constructor(private readonly results: NodeWithScore[]) {
    super();
  }
  async _retrieve(_: QueryBundle): Promise<NodeWithScore[]> {
    return this.results;
  }
}

/** What the ensemble must return: core RRF over the sub-retrievers, then core m3Rerank. */
async function expected(query: string, retrievers: BaseRetriever[], topK: number, weights: [number, number, number] = [0.4, 0.2, 0.4]) {
  const lists = await Promise.all(retrievers.map((r) => r.retrieve(query)));
  const nodes = new Map(lists.flat().map((n) => [n.node.id_, n.node]));
  const fused = reciprocalRankFusion(lists.map((l) => l.map((n) => ({ id: n.node.id_, score: n.score }))));
  const enc = await referenceEncoder();
  const all = { dense: true, sparse: true, colbert: true } as const;
  const [q] = await enc.encode([query], all);
  const cands = await enc.encode(fused.map((f) => embedText(nodes.get(f.id)!)), all);
  const hits = await m3Rerank(q as M3Encoded, cands as M3Encoded[], { weights, k: topK });
  return hits.map((h) => ({ id: fused[h.index]!.id, score: h.score, scores: h.scores, fusion: fused[h.index]!.score }));
}

describe('BGEM3EnsembleRetriever', () => {
  const fresh = freshModelPath();
  after(() => fresh.cleanup());
  let index: VectorStoreIndex;
  let dense: BaseRetriever;
  let sparse: BGEM3SparseRetriever;
  let encoder: M3Encoder;

  before(async () => {
    Settings.embedModel = new BGEM3Embedding({ model: fresh.path });
    index = await VectorStoreIndex.init({ nodes: corpusNodes() });
    dense = index.asRetriever({ similarityTopK: 5 });
    sparse = await BGEM3SparseRetriever.fromDocStore(index.docStore, { model: fresh.path, topK: 5 });
    encoder = await M3Encoder.shared(fresh.path);
  });

  test('is a BaseRetriever with documented defaults', () => {
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse] });
    assert.ok(e instanceof BaseRetriever);
    assert.equal(e.topK, 2);
    assert.equal(e.fusion, 'rrf');
    assert.equal(e.rrfK, 60);
    assert.deepEqual(e.weights, [0.4, 0.2, 0.4]);
    assert.deepEqual(e.retrieverWeights, [1, 1]);
    assert.equal(e.rerank, true);
    assert.equal(e.metadataMode, MetadataMode.EMBED);
    assert.equal(e.scoresMetadataKey, 'bgem3_scores');
  });

  test('one pass per text: indexing, the sparse index, the query and the rerank share encodings', async () => {
    assert.equal(encoder.stats.textsEncoded, PASSAGES.length, 'embedding + sparse index: each node once');
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], topK: 4 });
    const out = await e.retrieve('a query seen for the first time');
    assert.equal(encoder.stats.textsEncoded, PASSAGES.length + 1, 'only the query is new');
    await new BGEM3ColbertReranker({ model: fresh.path, topN: 2 }).postprocessNodes(out, 'a query seen for the first time');
    await e.retrieve('a query seen for the first time');
    assert.equal(encoder.stats.textsEncoded, PASSAGES.length + 1, 'reranker and a repeated query are cache hits');
  });

  test('equals core RRF + m3Rerank exactly (ids, All score, per-mode scores)', async () => {
    for (const weights of [undefined, [1, 0.3, 1] as [number, number, number]]) {
      const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], topK: 4, ...(weights ? { weights } : {}) });
      for (const q of QUERIES) {
        const got = await e.retrieve(q);
        const want = await expected(q, [dense, sparse], 4, weights);
        assert.deepEqual(
          got.map((n) => n.node.id_),
          want.map((w) => w.id),
          q,
        );
        got.forEach((n, i) => {
          const s = n.node.metadata.bgem3_scores as BGEM3EnsembleScores;
          assert.ok(Math.abs(n.score! - want[i]!.score) < 1e-6);
          assert.equal(s.score, n.score);
          assert.equal(s.fusion, want[i]!.fusion);
          for (const k of ['dense', 'sparse', 'colbert'] as const) assert.ok(Math.abs(s[k]! - want[i]!.scores[k]) < 1e-6, k);
        });
      }
    }
  });

  test('records ranks and scores in metadata hidden from embeddings and LLMs, on copies', async () => {
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], topK: 3 });
    const q = QUERIES[0]!;
    const out = await e.retrieve(q);
    const denseIds = (await dense.retrieve(q)).map((n) => n.node.id_);
    const sparseIds = (await sparse.retrieve(q)).map((n) => n.node.id_);
    for (const n of out) {
      const s = n.node.metadata.bgem3_scores as BGEM3EnsembleScores;
      assert.deepEqual(s.ranks, [denseIds.indexOf(n.node.id_) + 1 || null, sparseIds.indexOf(n.node.id_) + 1 || null]);
      assert.ok(n.node.excludedEmbedMetadataKeys.includes('bgem3_scores'));
      assert.ok(n.node.excludedLlmMetadataKeys.includes('bgem3_scores'));
      assert.ok(!n.node.getContent(MetadataMode.EMBED).includes('bgem3_scores'));
      assert.ok(!n.node.getContent(MetadataMode.LLM).includes('bgem3_scores'));
      assert.ok(n.node.getContent(MetadataMode.LLM).includes('lang: '), 'other metadata kept');
      const original = index.indexStruct.nodesDict[n.node.id_] ?? (await index.docStore.getNode(n.node.id_));
      assert.equal(original.metadata.bgem3_scores, undefined, 'the indexed node is not modified');
    }
    const custom = await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], scoresMetadataKey: 'hybrid' }).retrieve(q);
    assert.ok(custom.every((n) => 'hybrid' in n.node.metadata && n.node.excludedLlmMetadataKeys.includes('hybrid')));
    const none = await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], scoresMetadataKey: null }).retrieve(q);
    assert.ok(none.every((n) => !('bgem3_scores' in n.node.metadata)));
  });

  test('deduplicates by node id across and within retrievers', async () => {
    const q = QUERIES[1]!;
    const denseHits = await dense.retrieve(q);
    const noisy = new FixedRetriever([...denseHits, ...denseHits]);
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, noisy, sparse, sparse], topK: 100 });
    const out = await e.retrieve(q);
    const ids = out.map((n) => n.node.id_);
    assert.equal(new Set(ids).size, ids.length);
    const union = new Set([...denseHits.map((n) => n.node.id_), ...(await sparse.retrieve(q)).map((n) => n.node.id_)]);
    assert.deepEqual(new Set(ids), union, 'topK larger than the candidates returns them all');
  });

  test('retriever weights are applied (0 drops a retriever)', async () => {
    const q = QUERIES[2]!;
    const denseIds = (await dense.retrieve(q)).map((n) => n.node.id_);
    const out = await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], retrieverWeights: [1, 0], rerank: false, topK: 10 }).retrieve(q);
    assert.deepEqual(
      out.map((n) => n.node.id_),
      denseIds,
    );
    out.forEach((n, i) => assert.equal(n.score, 1 / (60 + i + 1)));
    const weighted = await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], retrieverWeights: [2, 0.5], rrfK: 10, rerank: false, topK: 10 }).retrieve(q);
    const lists = [await dense.retrieve(q), await sparse.retrieve(q)].map((l) => l.map((n) => ({ id: n.node.id_, score: n.score })));
    assert.deepEqual(
      weighted.map((n) => [n.node.id_, n.score]),
      reciprocalRankFusion(lists, { k: 10, weights: [2, 0.5] }).map((f) => [f.id, f.score]),
    );
  });

  test("fusion 'relative-score' without rerank equals core weightedScoreFusion", async () => {
    const q = QUERIES[3]!;
    const out = await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], fusion: 'relative-score', retrieverWeights: [0.7, 0.3], rerank: false, topK: 10 }).retrieve(q);
    const lists = [await dense.retrieve(q), await sparse.retrieve(q)].map((l) => l.map((n) => ({ id: n.node.id_, score: n.score })));
    assert.deepEqual(
      out.map((n) => [n.node.id_, n.score]),
      weightedScoreFusion(lists, { weights: [0.7, 0.3] }).map((f) => [f.id, f.score]),
    );
    const s = out[0]!.node.metadata.bgem3_scores as BGEM3EnsembleScores;
    assert.equal(s.dense, undefined, 'no per-mode scores without rerank');
  });

  test('no candidates gives []; a missing query throws INVALID_ARGUMENT', async () => {
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [new FixedRetriever([]), new FixedRetriever([])] });
    assert.deepEqual(await e.retrieve('anything'), []);
    await assert.rejects(e.retrieve(undefined as never), invalidArg);
    await assert.rejects(e.retrieve({ query: [{ type: 'image_url', image_url: { url: 'data:,' } }] }), invalidArg);
  });

  test('works with a vector store that keeps the text (empty docStore) and a sparse retriever built from nodes', async () => {
    const store = new TextStoringVectorStore();
    const nodes = corpusNodes();
    const textIndex = await VectorStoreIndex.init({ nodes, storageContext: await storageContextFromDefaults({ vectorStore: store }) });
    assert.deepEqual(Object.keys(await textIndex.docStore.docs()), [], 'the docStore holds no text nodes');
    const sparseFromNodes = await BGEM3SparseRetriever.fromNodes(nodes, { model: fresh.path, topK: 5 });
    const e = new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [textIndex.asRetriever({ similarityTopK: 5 }), sparseFromNodes], topK: 4 });
    const before = encoder.stats.textsEncoded;
    const out = await e.retrieve(QUERIES[0]!);
    assert.equal(out.length, 4);
    assert.ok(out.every((n) => PASSAGES.some((p) => n.node.getContent(MetadataMode.NONE) === p.text)));
    assert.equal(encoder.stats.textsEncoded, before, 'same nodes, same query: all cache hits');
    assert.deepEqual(
      out.map((n) => n.node.id_),
      (await new BGEM3EnsembleRetriever({ model: fresh.path, retrievers: [dense, sparse], topK: 4 }).retrieve(QUERIES[0]!)).map((n) => n.node.id_),
      'same nodes, same ranking as over the docStore-backed index',
    );
  });

  test('invalid options fail fast with INVALID_ARGUMENT', () => {
    const ok = { model: fresh.path, retrievers: [dense, sparse] };
    for (const o of [
      {},
      { retrievers: [] },
      { retrievers: [{}] },
      { ...ok, retrieverWeights: [1] },
      { ...ok, retrieverWeights: [0, 0] },
      { ...ok, retrieverWeights: [1, -1] },
      { ...ok, rrfK: -1 },
      { ...ok, fusion: 'max' },
      { ...ok, weights: [0, 0, 0] },
      { ...ok, weights: [1, 1] },
      { ...ok, topK: 0 },
      { ...ok, metadataMode: 'X' },
      { ...ok, scoresMetadataKey: '' },
    ]) {
      assert.throws(() => new BGEM3EnsembleRetriever(o as never), invalidArg, JSON.stringify(Object.keys(o)));
    }
    assert.throws(() => new BGEM3EnsembleRetriever(undefined as never), invalidArg);
  });
});
