/**
 * BGEM3ColbertReranker in the patterns of LangChain's CohereRerank tests (@langchain/cohere:
 * compressDocuments keeps topN with metadata.relevanceScore, rerank returns {index,
 * relevanceScore}), with exact MaxSim checks and the conventions the issue lists.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, maxSim, type ColbertMatrix } from '@bgem3/core';
import { ContextualCompressionRetriever } from '@langchain/classic/retrievers/contextual_compression';
import { Document } from '@langchain/core/documents';
import { BGEM3ColbertReranker, BGEM3VectorStore } from '../src/index.ts';
import { CountingEncoder, FIXTURE, close, corpusDocs } from './helpers.ts';

const DOCS = [
  new Document({ pageContent: 'Carson City is the capital city of the American state of Nevada.' }),
  new Document({ pageContent: 'The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.' }),
  new Document({ pageContent: 'Washington, D.C. is the capital of the United States.' }),
  new Document({ pageContent: 'Capital punishment has existed in the United States since before it was a country.' }),
];
const QUERY = 'What is the capital of the United States?';

describe('BGEM3ColbertReranker (the CohereRerank patterns)', () => {
  let encoder: M3Encoder;
  let raw: number[];
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    const [q, ...d] = await encoder.encode([QUERY, ...DOCS.map((x) => x.pageContent)], { dense: false, colbert: true });
    raw = [...(await maxSim(q!.colbert as ColbertMatrix, d.map((x) => x.colbert as ColbertMatrix)))];
  });
  after(async () => {
    await encoder.close();
  });

  test('compressDocuments keeps topN (default 3), best first, copies with relevanceScore in [0, 1] and the raw colbertScore', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder });
    assert.equal(reranker.topN, 3);
    const out = await reranker.compressDocuments(DOCS, QUERY);
    assert.equal(out.length, 3);
    const order = [...raw.keys()].sort((a, b) => raw[b]! - raw[a]!);
    out.forEach((d, i) => {
      const j = order[i]!;
      assert.equal(d.pageContent, DOCS[j]!.pageContent);
      assert.ok(close(d.metadata.colbertScore, raw[j]!));
      assert.ok(close(d.metadata.relevanceScore, (raw[j]! + 1) / 2));
      assert.ok(d.metadata.relevanceScore >= 0 && d.metadata.relevanceScore <= 1);
    });
    assert.ok(DOCS.every((d) => !('relevanceScore' in d.metadata)), 'the inputs are not mutated');
  });

  test('rerank returns {index, relevanceScore, score}, the instance topN by default, or options.topN', async () => {
    const reranker = new BGEM3ColbertReranker({ encoder, topN: 2 });
    const two = await reranker.rerank(DOCS, QUERY);
    assert.equal(two.length, 2, 'defaults to the instance topN');
    const all = await reranker.rerank(DOCS.map((d) => d.pageContent), QUERY, { topN: 4 });
    assert.equal(all.length, 4);
    for (const r of all) {
      assert.ok(close(r.score, raw[r.index]!));
      assert.ok(close(r.relevanceScore, (raw[r.index]! + 1) / 2));
    }
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.score >= all[i]!.score);
  });

  test('no documents (empty, null, undefined) give [] without loading anything', async () => {
    const reranker = new BGEM3ColbertReranker({ model: '/does/not/exist' });
    assert.deepEqual(await reranker.compressDocuments([], QUERY), []);
    assert.deepEqual(await reranker.compressDocuments(null as never, QUERY), []);
    assert.deepEqual(await reranker.compressDocuments(undefined as never, QUERY), []);
    assert.deepEqual(await reranker.rerank([], QUERY), []);
  });

  test('bad arguments are clear errors', async () => {
    assert.throws(() => new BGEM3ColbertReranker({ encoder, topN: 0 }), /topN/);
    assert.throws(() => new BGEM3ColbertReranker({ encoder, top_n: 3 } as never), /unknown option "top_n"/);
    await assert.rejects(new BGEM3ColbertReranker({ encoder }).rerank(DOCS, 42 as never), TypeError);
  });

  test('documents returned by a store are rescored from its vectors: only the query is encoded', async () => {
    const counting = new CountingEncoder(encoder);
    const store = await M3Index.create({ encoder: counting });
    const vs = await BGEM3VectorStore.fromDocuments(corpusDocs(), undefined, { store });
    const retriever = new ContextualCompressionRetriever({ baseCompressor: new BGEM3ColbertReranker({ store, topN: 2 }), baseRetriever: vs.asRetriever({ k: 8, mode: 'dense' }) });
    counting.reset();
    const out = await retriever.invoke('Tokyo population');
    assert.equal(out.length, 2);
    assert.deepEqual([...new Set(counting.texts)], ['Tokyo population']);
    const want = await store.rescore('Tokyo population', out.map((d) => d.id!), { weights: [0, 0, 1] });
    out.forEach((d) => assert.ok(close(d.metadata.colbertScore, want.find((w) => w.id === d.id)!.scores.colbert)));
  });
});
