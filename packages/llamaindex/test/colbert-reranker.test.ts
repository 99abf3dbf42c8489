import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { M3Encoder, M3Error, colbertScore, type ColbertMatrix } from '@bgem3/core';
import { MetadataMode, SimilarityPostprocessor, TextNode, type BaseNodePostprocessor, type NodeWithScore } from 'llamaindex';
import { BGEM3ColbertReranker } from '../src/index.ts';
import { FIXTURE, PASSAGES, corpusNodes, freshModelPath, missingModelPath, referenceEncoder } from './helpers.ts';

const invalidArg = (err: unknown) => err instanceof M3Error && err.code === 'INVALID_ARGUMENT';

function candidates(): NodeWithScore[] {
  return corpusNodes().map((node, i) => ({ node, score: 1 - i / 100 }));
}

/** Raw MaxSim of the query against each node's text in `mode`, with core's reference score. */
async function rawScores(query: string, nodes: NodeWithScore[], mode = MetadataMode.ALL): Promise<number[]> {
  const enc = await referenceEncoder();
  const [q, ...docs] = await enc.encode([query, ...nodes.map((n) => n.node.getContent(mode))], { dense: false, colbert: true });
  return docs.map((d) => colbertScore(q!.colbert as ColbertMatrix, d.colbert as ColbertMatrix));
}

describe('BGEM3ColbertReranker', () => {
  const cleanups: (() => void)[] = [];
  after(() => cleanups.forEach((c) => c()));
  const query = 'Which city is the capital?';

  test('implements BaseNodePostprocessor with LlamaIndex reranker defaults', () => {
    const r: BaseNodePostprocessor = new BGEM3ColbertReranker({ model: FIXTURE });
    assert.equal((r as BGEM3ColbertReranker).topN, 2);
    assert.equal((r as BGEM3ColbertReranker).metadataMode, MetadataMode.ALL);
    assert.equal((r as BGEM3ColbertReranker).scoreScale, 'unit');
  });

  test('scores are (1 + core colbertScore) / 2, sorted descending, topN kept', async () => {
    const input = candidates();
    const r = new BGEM3ColbertReranker({ model: FIXTURE, topN: 5 });
    const out = await r.postprocessNodes(input, query);
    const raw = await rawScores(query, input);
    const want = input
      .map((n, i) => ({ id: n.node.id_, score: (1 + raw[i]!) / 2 }))
      .sort((a, b) => b.score - a.score)
      .slice(0, 5);
    assert.equal(out.length, 5);
    out.forEach((n, i) => {
      assert.equal(n.node.id_, want[i]!.id);
      assert.ok(Math.abs(n.score! - want[i]!.score) < 1e-6, `${n.score} vs ${want[i]!.score}`);
      assert.ok(n.score! >= 0 && n.score! <= 1);
      if (i > 0) assert.ok(out[i - 1]!.score! >= n.score!);
    });
  });

  test('a node whose text is the query scores within [0, 1] (rounding would put it a hair above 1)', async () => {
    const input = candidates();
    const text = input[0]!.node.getContent(MetadataMode.EMBED);
    const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 100, metadataMode: MetadataMode.EMBED }).postprocessNodes(input, text);
    assert.equal(out[0]!.node.id_, input[0]!.node.id_);
    for (const n of out) assert.ok(n.score! >= 0 && n.score! <= 1, String(n.score));
    assert.ok(out[0]!.score! > 0.999);
  });

  test("scoreScale 'raw' gives FlagEmbedding's colbert_score itself", async () => {
    const input = candidates();
    const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 100, scoreScale: 'raw' }).postprocessNodes(input, query);
    const raw = await rawScores(query, input);
    assert.equal(out.length, input.length, 'topN larger than the input keeps everything');
    for (const n of out) {
      const i = input.findIndex((c) => c.node.id_ === n.node.id_);
      assert.ok(Math.abs(n.score! - raw[i]!) < 1e-6);
    }
  });

  test('returns new NodeWithScore objects and leaves the input untouched', async () => {
    const input = candidates();
    const before = input.map((n) => ({ id: n.node.id_, score: n.score, text: n.node.getContent(MetadataMode.ALL) }));
    const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 12 }).postprocessNodes(input, query);
    assert.deepEqual(
      input.map((n) => ({ id: n.node.id_, score: n.score, text: n.node.getContent(MetadataMode.ALL) })),
      before,
    );
    for (const n of out) {
      assert.ok(!input.includes(n), 'a new NodeWithScore');
      assert.ok(input.some((c) => c.node === n.node), 'the same node object');
    }
  });

  test('scores stay positive so SimilarityPostprocessor cut-offs work after it', async () => {
    const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 12 }).postprocessNodes(candidates(), query);
    assert.ok(out.every((n) => typeof n.score === 'number' && n.score > 0));
    const cutoff = out[5]!.score!;
    const kept = await new SimilarityPostprocessor({ similarityCutoff: cutoff }).postprocessNodes(out);
    assert.deepEqual(
      kept.map((n) => n.node.id_),
      out.filter((n) => n.score! >= cutoff).map((n) => n.node.id_),
    );
    assert.ok(kept.length >= 6);
  });

  test('no nodes gives [] without loading the model', async () => {
    const missing = missingModelPath();
    cleanups.push(missing.cleanup);
    assert.deepEqual(await new BGEM3ColbertReranker({ model: missing.path }).postprocessNodes([], query), []);
  });

  test('a missing query, or one without text, throws INVALID_ARGUMENT', async () => {
    const r = new BGEM3ColbertReranker({ model: FIXTURE });
    await assert.rejects(r.postprocessNodes(candidates()), invalidArg);
    await assert.rejects(r.postprocessNodes(candidates(), null as never), invalidArg);
    await assert.rejects(r.postprocessNodes([], undefined), invalidArg);
    await assert.rejects(r.postprocessNodes(candidates(), [{ type: 'image_url', image_url: { url: 'data:,' } }]), invalidArg);
    await assert.rejects(r.postprocessNodes('x' as never, query), invalidArg);
    await assert.rejects(r.postprocessNodes([{ score: 1 }] as never, query), invalidArg);
  });

  test('a multimodal query uses its text parts', async () => {
    const r = new BGEM3ColbertReranker({ model: FIXTURE, topN: 3 });
    const a = await r.postprocessNodes(candidates(), query);
    const b = await r.postprocessNodes(candidates(), [{ type: 'text', text: query }]);
    assert.deepEqual(
      b.map((n) => [n.node.id_, n.score]),
      a.map((n) => [n.node.id_, n.score]),
    );
  });

  test('a node given twice is scored and returned once', async () => {
    const input = candidates();
    const doubled = [...input, ...input.map((n) => ({ node: n.node, score: 0 }))];
    const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 100 }).postprocessNodes(doubled, query);
    assert.equal(out.length, input.length);
    assert.equal(new Set(out.map((n) => n.node.id_)).size, input.length);
  });

  test('metadataMode chooses the scored text; keys hidden from both embed and LLM are never scored', async () => {
    const node = new TextNode({
      id_: 'm',
      text: PASSAGES[3]!.text,
      metadata: { title: 'Beijing', internal: 'x'.repeat(50) },
      excludedEmbedMetadataKeys: ['title', 'internal'],
      excludedLlmMetadataKeys: ['internal'],
    });
    const input = [{ node }, ...candidates().slice(0, 3)];
    for (const mode of [MetadataMode.ALL, MetadataMode.EMBED, MetadataMode.NONE, MetadataMode.LLM]) {
      const out = await new BGEM3ColbertReranker({ model: FIXTURE, topN: 4, metadataMode: mode, scoreScale: 'raw' }).postprocessNodes(input, query);
      const got = out.find((n) => n.node.id_ === 'm')!.score!;
      // 'internal' is hidden from both, so ALL scores the LLM view of this node.
      const text = mode === MetadataMode.ALL ? node.getContent(MetadataMode.LLM) : node.getContent(mode);
      const [want] = await rawScores(query, [{ node: new TextNode({ text }) }], MetadataMode.NONE);
      assert.ok(Math.abs(got - want!) < 1e-6, `${mode}: ${got} vs ${want}`);
    }
  });

  test('shares the encoder: nodes already encoded (same text) are not run again', async () => {
    const fresh = freshModelPath();
    cleanups.push(fresh.cleanup);
    const r = new BGEM3ColbertReranker({ model: fresh.path, topN: 3 });
    await r.postprocessNodes(candidates(), query);
    await r.postprocessNodes(candidates(), query);
    await new BGEM3ColbertReranker({ model: fresh.path, topN: 1 }).postprocessNodes(candidates().slice(0, 4), query);
    const enc = await M3Encoder.shared(fresh.path);
    assert.equal(enc.stats.textsEncoded, 13, 'twelve nodes and one query');
  });

  test('invalid options fail fast with INVALID_ARGUMENT', () => {
    for (const o of [{ topN: 0 }, { topN: 2.5 }, { metadataMode: 'X' }, { scoreScale: 'percent' }, { model: 3 }]) {
      assert.throws(() => new BGEM3ColbertReranker(o as never), invalidArg, JSON.stringify(o));
    }
  });
});
