/**
 * BGEM3ColbertReranker in the patterns of LlamaIndex's CohereRerank and JinaAIReranker tests
 * (@llamaindex/cohere, llamaindex postprocessors: topN results with scores, best first; `[]` for
 * no nodes; a missing query refused), with exact MaxSim checks.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, maxSim, type ColbertMatrix } from '@bgem3/core';
import { MetadataMode, SimilarityPostprocessor, TextNode, type NodeWithScore } from 'llamaindex';
import { BGEM3ColbertReranker, BGEM3VectorStore } from '../src/index.ts';
import { FIXTURE, SpyEncoder, corpusNodes } from './helpers.ts';

const QUERY = 'What is the capital of the United States?';
const withScores = (texts: string[]): NodeWithScore[] => texts.map((t, i) => ({ node: new TextNode({ id_: `t${i}`, text: t }), score: 0.5 }));
const TEXTS = [
  'Carson City is the capital city of the American state of Nevada.',
  'Washington, D.C. is the capital of the United States.',
  'Capital punishment has existed in the United States since before it was a country.',
];

describe('BGEM3ColbertReranker (the Cohere / Jina reranker patterns)', () => {
  let encoder: M3Encoder;
  let raw: number[];
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    const nodes = withScores(TEXTS);
    const [q, ...d] = await encoder.encode([QUERY, ...nodes.map((n) => n.node.getContent(MetadataMode.ALL))], { dense: false, colbert: true });
    raw = [...(await maxSim(q!.colbert as ColbertMatrix, d.map((x) => x.colbert as ColbertMatrix)))];
  });
  after(async () => {
    await encoder.close();
  });

  test('returns the topN (default 2) new {node, score}, best first, score (1 + MaxSim) / 2 in [0, 1], raw MaxSim recorded', async () => {
    const r = new BGEM3ColbertReranker({ encoder });
    assert.equal(r.topN, 2);
    const nodes = withScores(TEXTS);
    const out = await r.postprocessNodes(nodes, QUERY);
    assert.equal(out.length, 2);
    const order = [...raw.keys()].sort((a, b) => raw[b]! - raw[a]!);
    out.forEach((n, i) => {
      const j = order[i]!;
      assert.equal(n.node.id_, `t${j}`);
      assert.ok(Math.abs(n.score! - (raw[j]! + 1) / 2) < 1e-6);
      assert.ok(n.score! >= 0 && n.score! <= 1);
      assert.ok(Math.abs((n.node.metadata.bgem3_rerank as { colbert: number }).colbert - raw[j]!) < 1e-6);
      assert.ok(!n.node.getContent(MetadataMode.LLM).includes('bgem3_rerank'), 'the score record stays out of prompts');
      assert.ok(!nodes.includes(n));
    });
    const rawScale = await new BGEM3ColbertReranker({ encoder, topN: 3, scoreScale: 'raw' }).postprocessNodes(nodes, QUERY);
    rawScale.forEach((n) => assert.ok(Math.abs(n.score! - raw[Number(n.node.id_.slice(1))]!) < 1e-6));
    const same = await new BGEM3ColbertReranker({ encoder, scoresMetadataKey: null }).postprocessNodes(nodes, QUERY);
    assert.ok(same.every((n) => nodes.some((m) => m.node === n.node)), 'scoresMetadataKey null: the nodes as given');
  });

  test('no nodes give [] whatever the query (postprocessNodes([], undefined)); a missing query with nodes is refused', async () => {
    const r = new BGEM3ColbertReranker({ model: '/does/not/exist' });
    assert.deepEqual(await r.postprocessNodes([], undefined), []);
    assert.deepEqual(await r.postprocessNodes([], 'q'), []);
    await assert.rejects(new BGEM3ColbertReranker({ encoder }).postprocessNodes(withScores(['x']), undefined), { code: 'INVALID_ARGUMENT' });
  });

  test('chains with SimilarityPostprocessor (positive unit scores survive a cutoff)', async () => {
    const out = await new BGEM3ColbertReranker({ encoder, topN: 3 }).postprocessNodes(withScores(TEXTS), QUERY);
    const kept = await new SimilarityPostprocessor({ similarityCutoff: 0.01 }).postprocessNodes(out);
    assert.equal(kept.length, 3);
  });

  test('nodes returned by a store are rescored from it: only the query is encoded', async () => {
    const spy = new SpyEncoder(encoder);
    const store = await M3Index.create({ encoder: spy });
    const vs = new BGEM3VectorStore({ store });
    await vs.add(corpusNodes());
    const found = await vs.query({ queryStr: 'Tokyo', mode: 'default' as never, similarityTopK: 6 });
    spy.calls = [];
    const out = await new BGEM3ColbertReranker({ store, topN: 3 }).postprocessNodes(found.nodes!.map((node) => ({ node, score: 0 })), 'Tokyo');
    assert.deepEqual(spy.calls.flatMap((c) => c.texts), ['Tokyo']);
    const want = await store.rescore('Tokyo', found.ids, { weights: [0, 0, 1], k: 3 });
    assert.deepEqual(out.map((n) => n.node.id_), want.map((h) => h.id));
  });
});
