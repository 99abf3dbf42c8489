/**
 * BGEM3VectorStore over an M3Index: LangChain's VectorStore contract, the retriever's three modes
 * against the store's own results, filters, ids, refusals, what a query costs, and an LCEL RAG
 * chain with LangChain's own fake chat model.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { Document } from '@langchain/core/documents';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda, RunnablePassthrough, RunnableSequence } from '@langchain/core/runnables';
import { FakeEmbeddings, FakeListChatModel } from '@langchain/core/utils/testing';
import { VectorStore, VectorStoreRetriever } from '@langchain/core/vectorstores';
import { BGEM3Embeddings, BGEM3Retriever, BGEM3VectorStore } from '../src/index.ts';
import { CORPUS, CountingEncoder, FIXTURE, close, corpusDocs } from './helpers.ts';

describe('BGEM3VectorStore over M3Index', () => {
  let encoder: M3Encoder;
  let counting: CountingEncoder;
  let store: M3Index;
  let vs: BGEM3VectorStore;

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE, { cache: false });
    counting = new CountingEncoder(encoder);
    store = await M3Index.create({ encoder: counting });
    vs = await BGEM3VectorStore.fromDocuments(corpusDocs(), undefined, { store });
  });
  after(async () => {
    await encoder.close();
  });

  test('is a LangChain VectorStore whose embeddings are BGE-M3 of the store model', async () => {
    assert.ok(vs instanceof VectorStore);
    assert.equal(vs._vectorstoreType(), 'bgem3');
    assert.ok(vs.embeddings instanceof BGEM3Embeddings);
    assert.equal(await store.count(), CORPUS.length);
    assert.equal(await vs.embeddings.getDimensions(), encoder.dim);
  });

  test('similaritySearchWithScore is dense search: the store\'s scores, best first, ids kept', async () => {
    const query = 'capital of France';
    const got = await vs.similaritySearchWithScore(query, 3);
    const want = await store.searchDense(query, { k: 3 });
    assert.deepEqual(got.map(([d]) => d.id), want.map((h) => h.id));
    got.forEach(([d, s], i) => {
      assert.ok(close(s, want[i]!.score));
      assert.equal(d.pageContent, want[i]!.text);
      assert.deepEqual(d.metadata, want[i]!.metadata);
    });
  });

  test('asRetriever: a VectorStoreRetriever, hybrid by default, with per-mode scores', async () => {
    const retriever = vs.asRetriever({ k: 3 });
    assert.ok(retriever instanceof VectorStoreRetriever && retriever instanceof BGEM3Retriever);
    assert.equal(retriever.mode, 'hybrid');
    const query = '日本の首都';
    const got = await retriever.invoke(query);
    const want = await store.search(query, { k: 3 });
    assert.deepEqual(got.map((d) => d.id), want.map((h) => h.id));
    got.forEach((d, i) => {
      const h = want[i]!;
      assert.ok(close(d.metadata.score, h.score));
      assert.ok(close(d.metadata.denseScore, h.scores.dense) && close(d.metadata.sparseScore, h.scores.sparse) && close(d.metadata.colbertScore, h.scores.colbert));
      assert.ok(close(d.metadata.relevanceScore, Math.min(1, Math.max(0, (h.score + 1) / 2))));
      assert.equal(d.metadata.lang, h.metadata.lang);
    });
    const dense = await vs.asRetriever({ k: 2, mode: 'dense' }).invoke(query);
    assert.deepEqual(dense.map((d) => d.id), (await store.searchDense(query, { k: 2 })).map((h) => h.id));
    assert.ok(dense.every((d) => typeof d.metadata.denseScore === 'number' && d.metadata.sparseScore === undefined));
    const sparse = await vs.asRetriever({ k: 2, mode: 'sparse' }).invoke('Paris France');
    assert.deepEqual(sparse.map((d) => d.id), (await store.searchSparse('Paris France', { k: 2 })).map((h) => h.id));
    assert.equal((await vs.asRetriever(5).invoke(query)).length, 5, 'asRetriever(k) as in LangChain');
  });

  test('a query encodes exactly one text, the query (hybrid, dense and sparse)', async () => {
    for (const mode of ['hybrid', 'dense', 'sparse'] as const) {
      counting.reset();
      await vs.asRetriever({ k: 4, mode }).invoke(`what about ${mode}?`);
      assert.equal(counting.calls, 1, mode);
      assert.deepEqual(counting.texts, [`what about ${mode}?`]);
    }
  });

  test('filters: a where object or a (metadata, id) function, inside the top-k', async () => {
    const zh = await vs.asRetriever({ k: 5, filter: { lang: 'zh' } }).invoke('tea');
    assert.equal(zh.length, 2);
    assert.ok(zh.every((d) => d.metadata.lang === 'zh'));
    const fn = await vs.similaritySearch('tea', 3, (m: Record<string, unknown>, id: string) => m.lang === 'ru' || id === 'en-tea');
    assert.deepEqual(new Set(fn.map((d) => d.id)), new Set(['ru-moscow', 'ru-volga', 'en-tea']));
    await assert.rejects(vs.asRetriever({ filter: { lang: undefined } as never }).invoke('x'), { code: 'INVALID_ARGUMENT' });
  });

  test('ids: given ids win, documents without one are stored under a generated id and come back without one', async () => {
    const own = await M3Index.create({ encoder });
    const v = new BGEM3VectorStore(undefined, { store: own });
    const ids = await v.addDocuments([new Document({ pageContent: 'alpha beta' }), new Document({ id: 'doc-b', pageContent: 'gamma delta' }), new Document({ pageContent: 'epsilon' })], { ids: [undefined as never, undefined as never, 'forced'] });
    assert.equal(ids.length, 3);
    assert.equal(ids[1], 'doc-b');
    assert.equal(ids[2], 'forced');
    const all = await v.asRetriever({ k: 10, mode: 'dense' }).invoke('alpha');
    const alpha = all.find((d) => d.pageContent === 'alpha beta')!;
    assert.equal(alpha.id, undefined, 'no id invented for a document given without one');
    assert.ok(!('__bgem3_anonymous' in alpha.metadata));
    assert.equal(all.find((d) => d.pageContent === 'gamma delta')!.id, 'doc-b');
    await v.delete({ ids: [ids[0]!] });
    assert.equal(await own.count(), 2, 'deleted by the returned id');
    await v.addDocuments([new Document({ id: 'doc-b', pageContent: 'replaced' })]);
    assert.equal((await own.get('doc-b'))!.text, 'replaced');
  });

  test('fromTexts with one metadata object or one per text; a new in-memory M3Index without a store', async () => {
    const v = await BGEM3VectorStore.fromTexts(['one', 'two'], [{ n: 1 }, { n: 2 }], new BGEM3Embeddings({ encoder }));
    assert.ok(v.store instanceof M3Index);
    assert.equal(await v.store.count(), 2);
    const hits = await v.similaritySearch('one', 2);
    assert.deepEqual(new Set(hits.map((d) => d.metadata.n)), new Set([1, 2]));
    await assert.rejects(BGEM3VectorStore.fromTexts(['a'], [{}, {}], undefined, { encoder }), /metadatas has 2 entries for 1 texts/);
  });

  test('refusals: addVectors, other embeddings, mmr, unknown options, options of the wrong mode', async () => {
    await assert.rejects(vs.addVectors([[1, 2]], [new Document({ pageContent: 'x' })]), /addDocuments/);
    assert.throws(() => new BGEM3VectorStore(new FakeEmbeddings(), { store }), /must be a BGEM3Embeddings/);
    assert.throws(() => new BGEM3VectorStore(undefined, { store, k: 3 } as never), /unknown option "k"/);
    assert.throws(() => vs.asRetriever({ searchType: 'mmr' } as never), /not offered/);
    assert.throws(() => vs.asRetriever({ mode: 'dense', fetchK: 10 }), /fetchK applies to mode "hybrid" only/);
    assert.throws(() => vs.asRetriever({ mode: 'bm25' as never }), /mode must be one of/);
    assert.throws(() => vs.asRetriever({ weights: [0, 0, 0] }), /all zero/);
  });

  test('an embeddings object of another model is INDEX_MISMATCH / INVALID_ARGUMENT naming both', async () => {
    const other = { modelId: 'local:/elsewhere/model.onnx', dim: encoder.dim, vocabSize: encoder.vocabSize, encode: encoder.encode.bind(encoder) };
    assert.throws(() => new BGEM3VectorStore(new BGEM3Embeddings({ encoder: other }), { store }), (e: Error) => /elsewhere/.test(e.message) && e.message.includes(store.modelId));
    assert.throws(() => new BGEM3Embeddings({ encoder: other, store }), (e: Error) => /elsewhere/.test(e.message) && e.message.includes(store.modelId));
    const storeWithout = await M3Index.create({ encoder: other });
    assert.throws(() => new BGEM3Embeddings({ store: storeWithout, encoder }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /elsewhere/.test(e.message) && e.message.includes(encoder.modelId));
  });

  test('an LCEL RAG chain: retriever → prompt → chat model → string, with the retrieved context in the prompt', async () => {
    const llm = new FakeListChatModel({ responses: ['The capital of France is Paris [1].'] });
    const seen: string[] = [];
    const prompt = ChatPromptTemplate.fromMessages([
      ['system', 'Answer from this context:\n{context}'],
      ['human', '{question}'],
    ]);
    const formatDocs = (docs: Document[]) => docs.map((d, i) => `[${i + 1}] ${d.pageContent}`).join('\n');
    const chain = RunnableSequence.from([
      { context: vs.asRetriever({ k: 2 }).pipe(RunnableLambda.from(formatDocs)), question: new RunnablePassthrough() },
      prompt,
      RunnableLambda.from((p: { toChatMessages(): { content: unknown }[] }) => {
        seen.push(p.toChatMessages().map((m) => String(m.content)).join('\n'));
        return p;
      }),
      llm,
      new StringOutputParser(),
    ]);
    const answer = await chain.invoke('What is the capital of France?');
    assert.equal(answer, 'The capital of France is Paris [1].');
    const top = await store.search('What is the capital of France?', { k: 2 });
    assert.ok(seen[0]!.includes(`[1] ${top[0]!.text}`) && seen[0]!.includes(`[2] ${top[1]!.text}`), seen[0]);
    assert.ok(seen[0]!.includes('What is the capital of France?'));
    const batch = await chain.batch(['a', 'b']);
    assert.equal(batch.length, 2);
  });
});
