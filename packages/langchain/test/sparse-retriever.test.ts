/**
 * BGEM3SparseRetriever as LangChain's BM25Retriever is used and tested upstream
 * (@langchain/community retrievers/bm25: `fromDocuments(docs, { k })`, `new X({ docs, k })`,
 * `includeScore`, queries with regex characters), over the fixture model: the fixture's weights
 * are random, so results are checked against core's exact lexical scores, not against which text
 * "should" win (see the README's differences table).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, lexicalMatchingScore, type SparseVector } from '@bgem3/core';
import { Document } from '@langchain/core/documents';
import { BaseRetriever } from '@langchain/core/retrievers';
import { BGEM3SparseRetriever, BGEM3VectorStore } from '../src/index.ts';
import { CountingEncoder, FIXTURE, close, corpusDocs } from './helpers.ts';

const FOX = [
  new Document({ pageContent: 'The quick brown fox jumps over the lazy dog' }),
  new Document({ pageContent: 'A lazy dog sleeps all day' }),
  new Document({ pageContent: 'The brown fox is quick and clever' }),
];

describe('BGEM3SparseRetriever (the BM25Retriever patterns)', () => {
  let encoder: M3Encoder;
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
  });
  after(async () => {
    await encoder.close();
  });

  async function exact(query: string, texts: string[]): Promise<number[]> {
    const [q, ...d] = await encoder.encode([query, ...texts], { dense: false, sparse: true });
    return d.map((x) => lexicalMatchingScore(q!.sparse as SparseVector, x.sparse as SparseVector));
  }

  test('fromDocuments(docs, { k: 2 }) is synchronous like BM25Retriever and returns the best k by exact lexical score', async () => {
    const retriever = BGEM3SparseRetriever.fromDocuments(FOX, { k: 2, encoder });
    assert.ok(retriever instanceof BaseRetriever);
    const results = await retriever.invoke('the quick brown fox and the lazy dog');
    const scores = await exact('the quick brown fox and the lazy dog', FOX.map((d) => d.pageContent));
    // Documents sharing no token with the query score 0 and are not returned (BM25Retriever pads with them: README).
    const best = [...scores.keys()].filter((i) => scores[i]! > 0).sort((a, b) => scores[b]! - scores[a]!).slice(0, 2);
    assert.ok(best.length > 0);
    assert.deepEqual(results.map((d) => d.pageContent), best.map((i) => FOX[i]!.pageContent));
    results.forEach((d, i) => assert.ok(close(d.metadata.sparseScore, scores[best[i]!]!)));
  });

  test('new BGEM3SparseRetriever({ docs, k }) indexes the docs (the constructor shape of BM25Retriever)', async () => {
    const retriever = new BGEM3SparseRetriever({ docs: FOX, k: 3, encoder });
    const results = await retriever.invoke('lazy dog');
    assert.ok(results.length > 0 && results.length <= 3);
    assert.ok(results.every((d) => FOX.some((f) => f.pageContent === d.pageContent)));
  });

  test('includeScore: false leaves the metadata as given; the default adds sparseScore, score and relevanceScore', async () => {
    const docs = [new Document({ pageContent: 'cats and dogs', metadata: { src: 'a' } })];
    const [plain] = await BGEM3SparseRetriever.fromDocuments(docs, { k: 1, includeScore: false, encoder }).invoke('cats');
    assert.deepEqual(plain!.metadata, { src: 'a' });
    const [scored] = await BGEM3SparseRetriever.fromDocuments(docs, { k: 1, encoder }).invoke('cats');
    assert.equal(scored!.metadata.src, 'a');
    for (const key of ['sparseScore', 'score', 'relevanceScore']) assert.equal(typeof scored!.metadata[key], 'number');
  });

  test('queries with regex characters (BM25Retriever issue #8746) and punctuation work', async () => {
    const retriever = BGEM3SparseRetriever.fromDocuments(FOX, { k: 3, encoder });
    for (const q of ['**fox**', 'fox?', '[dog]', '(a|b)', '\\d+']) {
      const results = await retriever.invoke(q);
      assert.ok(Array.isArray(results));
    }
    assert.deepEqual(await retriever.invoke('   '), []);
  });

  test('returned documents are copies without invented ids; documents with ids keep them', async () => {
    const retriever = BGEM3SparseRetriever.fromDocuments([...FOX, new Document({ id: 'x1', pageContent: 'fox with an id' })], { k: 4, encoder });
    const results = await retriever.invoke('fox');
    for (const d of results) {
      if (d.pageContent === 'fox with an id') assert.equal(d.id, 'x1');
      else assert.equal(d.id, undefined);
      assert.ok(!FOX.includes(d as Document));
    }
  });

  test('k is required to be a positive integer; a failed background index is reported by invoke', async () => {
    assert.throws(() => BGEM3SparseRetriever.fromDocuments(FOX, { k: 0, encoder }), /k must be a positive integer/);
    assert.throws(() => new BGEM3SparseRetriever({ k: 2, encoder, preprocessFunc: (s: string) => [s] } as never), /unknown option "preprocessFunc"/);
    const bad = BGEM3SparseRetriever.fromDocuments([{ pageContent: 42 } as never], { k: 1, encoder });
    await assert.rejects(bad.invoke('x'), TypeError);
  });

  test('over a store: only the query is encoded; addDocuments and delete go to the store', async () => {
    const counting = new CountingEncoder(encoder);
    const store = await M3Index.create({ encoder: counting });
    await BGEM3VectorStore.fromDocuments(corpusDocs(), undefined, { store });
    counting.reset();
    const retriever = new BGEM3SparseRetriever({ store, k: 3 });
    const hits = await retriever.invoke('Москва столица');
    assert.deepEqual(counting.texts, ['Москва столица']);
    assert.deepEqual(hits.map((d) => d.id), (await store.searchSparse('Москва столица', { k: 3 })).map((h) => h.id));
    const ids = await retriever.addDocuments([new Document({ id: 'new', pageContent: 'Москва' })]);
    assert.deepEqual(ids, ['new']);
    await retriever.delete({ ids: ['new'] });
    assert.equal(await store.has('new'), false);
    const zh = await new BGEM3SparseRetriever({ store, k: 5, filter: { lang: 'zh' } }).invoke('茶');
    assert.ok(zh.every((d) => d.metadata.lang === 'zh'));
  });

  test('a file of the 0.1 single-file format fails saying how to rebuild', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bgem3-lc-old-'));
    try {
      const file = join(dir, 'sparse.bgem3');
      await writeFile(file, Buffer.concat([Buffer.from('BGM3LCSP', 'latin1'), Buffer.alloc(8)]));
      await assert.rejects(BGEM3SparseRetriever.load(file), (e: Error & { code?: string }) => e.code === 'INDEX_INVALID' && /no longer reads/.test(e.message) && /BGEM3VectorStore\.fromDocuments/.test(e.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
