import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error, lexicalMatchingScore, type SparseVector } from '@bgem3/core';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever } from '@langchain/core/retrievers';
import { RunnableLambda, RunnableSequence } from '@langchain/core/runnables';
import { BGEM3SparseRetriever } from '../src/index.ts';
import { CORPUS, FIXTURE, corpusDocs } from './helpers.ts';

describe('BGEM3SparseRetriever', () => {
  let encoder: M3Encoder;
  let docVectors: Map<string, SparseVector>;
  let dir: string;

  const sparseOf = async (text: string) => (await encoder.encode([text], { dense: false, sparse: true }))[0].sparse!;
  /** Brute force: every document sharing a token with the query, by score desc then id asc. */
  const bruteForce = async (query: string) => {
    const q = await sparseOf(query);
    const qs = new Set(q.indices);
    return CORPUS.filter((c) => docVectors.get(c.id)!.indices.some((t) => qs.has(t)))
      .map((c) => ({ id: c.id, score: lexicalMatchingScore(q, docVectors.get(c.id)!) }))
      .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  };

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    const enc = await encoder.encode(CORPUS.map((c) => c.text), { dense: false, sparse: true });
    docVectors = new Map(CORPUS.map((c, i) => [c.id, enc[i].sparse!]));
    dir = await mkdtemp(join(tmpdir(), 'bgem3-lc-sparse-'));
  });
  after(async () => {
    await encoder.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('is a LangChain retriever with lc names, default k 4, Documents with id and sparseScore', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder });
    assert.ok(r instanceof BaseRetriever);
    assert.equal(BGEM3SparseRetriever.lc_name(), 'BGEM3SparseRetriever');
    assert.deepEqual(r.lc_id, ['bgem3', 'retrievers', 'BGEM3SparseRetriever']);
    assert.equal(r.k, 4);
    assert.equal(r.size, CORPUS.length);
    const docs = await r.invoke('capital of France, the Seine');
    assert.ok(docs.length > 0 && docs.length <= 4);
    for (const d of docs) {
      assert.ok(d instanceof Document);
      assert.equal(typeof d.id, 'string');
      const src = CORPUS.find((c) => c.id === d.id)!;
      assert.equal(d.pageContent, src.text);
      assert.equal(d.metadata.lang, src.lang);
      assert.equal(typeof d.metadata.sparseScore, 'number');
      assert.ok(d.metadata.sparseScore > 0);
    }
  });

  test('scores and order equal core lexicalMatchingScore by brute force, exactly', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: CORPUS.length });
    for (const query of ['capital', 'Paris is the capital of France', '日本の首都', 'столица России', 'نهر النيل', 'green tea 绿茶']) {
      const expected = await bruteForce(query);
      const got = await r.invoke(query);
      assert.deepEqual(
        got.map((d) => d.id),
        expected.map((e) => e.id),
        query,
      );
      got.forEach((d, i) => assert.equal(d.metadata.sparseScore, expected[i].score, `${query}: ${d.id}`));
    }
  });

  test('k is respected; k larger than the corpus returns every match', async () => {
    const query = 'Paris and 東京'; // shares a token with most of the corpus under the fixture model
    const matches = (await bruteForce(query)).length;
    assert.ok(matches > 3 && matches < CORPUS.length, `precondition: ${matches} matches`);
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 1 });
    assert.equal((await r.invoke(query)).length, 1);
    r.k = 3;
    assert.equal((await r.invoke(query)).length, 3);
    r.k = 1000;
    assert.equal((await r.invoke(query)).length, matches);
  });

  test('CJK, Arabic and Russian: finite scores, an exact substring finds its document', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: CORPUS.length });
    const cases: [string, string][] = [
      ['中国的首都', 'zh-beijing'],
      ['绿茶', 'zh-tea'],
      ['日本の首都', 'ja-tokyo'],
      ['富士山', 'ja-fuji'],
      ['عاصمة مصر', 'ar-cairo'],
      ['столица России', 'ru-moscow'],
    ];
    for (const [query, id] of cases) {
      const docs = await r.invoke(query);
      for (const d of docs) assert.ok(Number.isFinite(d.metadata.sparseScore), `${query}: NaN score`);
      assert.ok(
        docs.some((d) => d.id === id),
        `${query} should find ${id}, got ${docs.map((d) => d.id).join(',')}`,
      );
    }
  });

  test('a query sharing no token, an empty query and an empty corpus return []', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments([new Document({ pageContent: 'apple' })], { encoder });
    const q = await sparseOf('banana');
    const d = await sparseOf('apple');
    assert.ok(!q.indices.some((t) => d.indices.includes(t)), 'precondition: no shared token');
    assert.deepEqual(await r.invoke('banana'), []);
    assert.deepEqual(await r.invoke(''), []);
    assert.deepEqual(await r.invoke('   '), []);
    const empty = new BGEM3SparseRetriever({ encoder });
    assert.deepEqual(await empty.invoke('anything'), []);
    assert.deepEqual(await (await BGEM3SparseRetriever.fromDocuments([], { encoder })).invoke('x'), []);
  });

  test('bad input: non-string query is a TypeError; k ≤ 0 or fractional is a clear error', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder });
    await assert.rejects(r.invoke(42 as unknown as string), TypeError);
    await assert.rejects(r.invoke({ query: 'x' } as unknown as string), TypeError);
    for (const k of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new BGEM3SparseRetriever({ encoder, k }), (e: Error) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /k must be a positive integer/.test(e.message));
    }
    r.k = 0;
    await assert.rejects(r.invoke('x'), /k must be a positive integer/);
    await assert.rejects(r.addDocuments([{ pageContent: 5 } as unknown as DocumentInterface]), (e: Error) => e instanceof TypeError && /documents\[0\]\.pageContent/.test(e.message));
  });

  test('ids: options.ids, else doc.id, else generated; returned documents keep them', async () => {
    const r = new BGEM3SparseRetriever({ encoder, k: 10 });
    const ids = await r.addDocuments([
      new Document({ pageContent: 'Paris is the capital of France', id: 'doc-id' }),
      new Document({ pageContent: 'Paris is the capital of France', id: 'ignored' }),
      new Document({ pageContent: 'Paris is the capital of France' }),
    ], { ids: [undefined as unknown as string, 'explicit', undefined as unknown as string] });
    assert.equal(ids[0], 'doc-id');
    assert.equal(ids[1], 'explicit');
    assert.match(ids[2], /^[0-9a-f-]{36}$/);
    const got = await r.invoke('Paris');
    assert.deepEqual(new Set(got.map((d) => d.id)), new Set(ids));
    await assert.rejects(r.addDocuments([new Document({ pageContent: 'x' })], { ids: ['a', 'b'] }), /one id per document/);
  });

  test('duplicates: the same id twice updates; the same content under two ids is kept twice', async () => {
    const r = new BGEM3SparseRetriever({ encoder, k: 10 });
    await r.addDocuments([new Document({ id: 'a', pageContent: 'Москва — столица России' })]);
    await r.addDocuments([new Document({ id: 'a', pageContent: 'Paris is the capital of France' })]);
    assert.equal(r.size, 1);
    assert.deepEqual(await r.invoke('Москва'), []);
    assert.equal((await r.invoke('Paris'))[0].pageContent, 'Paris is the capital of France');
    // repeated within one call: the last one wins
    const ids = await r.addDocuments([new Document({ id: 'b', pageContent: 'one' }), new Document({ id: 'b', pageContent: '富士山' })]);
    assert.deepEqual(ids, ['b', 'b']);
    assert.equal(r.getDocument('b')?.pageContent, '富士山');
    await r.addDocuments([new Document({ id: 'c1', pageContent: 'Green tea' }), new Document({ id: 'c2', pageContent: 'Green tea' })]);
    const tea = await r.invoke('Green tea');
    assert.deepEqual(tea.map((d) => d.id).sort(), ['c1', 'c2']);
    assert.equal(tea[0].metadata.sparseScore, tea[1].metadata.sparseScore);
  });

  test('delete({ids}) and delete(ids) remove documents', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 20 });
    await r.delete({ ids: ['zh-beijing'] });
    await r.delete(['ja-tokyo', 'unknown']);
    assert.equal(r.size, CORPUS.length - 2);
    const got = await r.invoke('首都');
    assert.ok(!got.some((d) => d.id === 'zh-beijing' || d.id === 'ja-tokyo'));
    assert.equal(r.getDocument('zh-beijing'), undefined);
  });

  test('fromTexts takes one metadata object or one per text', async () => {
    const texts = CORPUS.slice(0, 3).map((c) => c.text);
    const a = await BGEM3SparseRetriever.fromTexts(texts, { source: 'all' }, { encoder, k: 3 });
    assert.ok((await a.invoke(texts[0])).every((d) => d.metadata.source === 'all'));
    const b = await BGEM3SparseRetriever.fromTexts(texts, [{ n: 0 }, { n: 1 }, { n: 2 }], { encoder, k: 1 });
    assert.equal((await b.invoke(texts[1]))[0].metadata.n, 1);
    await assert.rejects(BGEM3SparseRetriever.fromTexts(texts, [{}], { encoder }), /metadatas/);
  });

  test('returned documents are copies: mutating them does not change the index', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 1 });
    const [d] = await r.invoke('Paris');
    d.metadata.lang = 'changed';
    d.pageContent = 'changed';
    const [again] = await r.invoke('Paris');
    assert.equal(again.metadata.lang, 'en');
    assert.notEqual(again.pageContent, 'changed');
  });

  test('filter restricts results inside the top-k search', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 2, filter: (d) => d.metadata.lang === 'ja' });
    const got = await r.invoke('日本の首都 富士山');
    assert.ok(got.length > 0);
    assert.ok(got.every((d) => d.metadata.lang === 'ja'));
  });

  test('save/load round-trips documents, ids, metadata and scores; atomic single file', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 5 });
    const path = join(dir, 'sparse.bgem3');
    await r.save(path);
    await r.save(path); // overwrite
    const loaded = await BGEM3SparseRetriever.load(path, { encoder });
    assert.equal(loaded.k, 5);
    assert.equal(loaded.size, CORPUS.length);
    for (const q of ['capital', '日本の首都', 'Волга']) assert.deepEqual(await loaded.invoke(q), await r.invoke(q));
    const k2 = await BGEM3SparseRetriever.load(path, { encoder, k: 2 });
    assert.equal((await k2.invoke('Paris and 東京')).length, 2);
    // the loaded retriever keeps working: add, replace, delete
    await loaded.addDocuments([new Document({ id: 'new', pageContent: 'Lyon is a city in France' })]);
    await loaded.delete(['en-paris']);
    assert.ok((await loaded.invoke('Lyon')).some((d) => d.id === 'new'));
  });

  test('load rejects damaged files and a different model', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs().slice(0, 3), { encoder });
    const path = join(dir, 'good.bgem3');
    await r.save(path);
    const bytes = await readFile(path);
    const bad = join(dir, 'bad.bgem3');
    await writeFile(bad, bytes.subarray(0, bytes.length - 10));
    await assert.rejects(BGEM3SparseRetriever.load(bad, { encoder }), (e: Error) => e instanceof M3Error && e.code === 'INDEX_INVALID');
    await writeFile(bad, Buffer.from('not an index at all'));
    await assert.rejects(BGEM3SparseRetriever.load(bad, { encoder }), (e: Error) => e instanceof M3Error && e.code === 'INDEX_INVALID');
    const other = await BGEM3SparseRetriever.load(path, { model: FIXTURE, onnxFile: 'm3-onnx/bge_m3_model.onnx' });
    await assert.rejects(other.invoke('x'), (e: Error) => e instanceof M3Error && e.code === 'INDEX_MISMATCH');
  });

  test('invoke equals _getRelevantDocuments; batch equals invoke; usable in an LCEL sequence', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder, k: 3 });
    const queries = ['Paris', '首都', 'река'];
    const single = await Promise.all(queries.map((q) => r.invoke(q)));
    for (let i = 0; i < queries.length; i++) assert.deepEqual(await r._getRelevantDocuments(queries[i]), single[i]);
    assert.deepEqual(await r.batch(queries), single);
    const chain = RunnableSequence.from([r, RunnableLambda.from((docs: DocumentInterface[]) => docs.map((d) => d.id))]);
    assert.deepEqual(await chain.invoke('Paris'), single[0].map((d) => d.id));
  });

  test('callbacks see a retriever run named BGEM3SparseRetriever', async () => {
    const r = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), { encoder });
    const events: string[] = [];
    let serializedId: string[] = [];
    await r.invoke('Paris and 東京', {
      callbacks: [
        {
          handleRetrieverStart(serialized: { id: string[] }) {
            serializedId = serialized.id;
            events.push('start');
          },
          handleRetrieverEnd(docs: DocumentInterface[]) {
            events.push(`end:${docs.length}`);
          },
        },
      ],
    });
    assert.deepEqual(events, ['start', 'end:4']);
    assert.equal(serializedId.at(-1), 'BGEM3SparseRetriever');
  });
});
