/**
 * BGEM3VectorStore over an M3Index: the three query modes against the store's own results,
 * MetadataFilters translated (and refused), docIds, delete(refDocId), and
 * VectorStoreIndex.fromVectorStore with its retriever, query engine and ContextChatEngine in
 * hybrid mode (a recording LLM: no network).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import {
  ContextChatEngine,
  Document,
  FilterCondition,
  FilterOperator,
  MetadataMode,
  Settings,
  TextNode,
  VectorStoreIndex,
  VectorStoreQueryMode,
  type MetadataFilters,
} from 'llamaindex';
import { BGEM3Embedding, BGEM3VectorStore, toWhere } from '../src/index.ts';
import { FIXTURE, PASSAGES, RecordingLLM, SpyEncoder } from './helpers.ts';

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));

function nodes(): TextNode[] {
  return PASSAGES.map((p, i) => new TextNode({ id_: `n${i}`, text: p.text, metadata: { lang: p.lang, n: i, tags: [p.lang, i % 2 ? 'odd' : 'even'] } }));
}

describe('BGEM3VectorStore (LlamaIndex) over M3Index', () => {
  let encoder: M3Encoder;
  let spy: SpyEncoder;
  let store: M3Index;
  let vs: BGEM3VectorStore;

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    spy = new SpyEncoder(encoder);
    store = await M3Index.create({ encoder: spy });
    vs = new BGEM3VectorStore({ store });
    await vs.add(nodes());
  });
  after(async () => {
    await encoder.close();
  });

  test('stores the text; add encodes each node once, with all three outputs, of its NONE text', async () => {
    assert.equal(vs.storesText, true);
    assert.equal(await store.count(), PASSAGES.length);
    const stored = await store.get('n3');
    assert.equal(stored!.text, PASSAGES[3]!.text);
    assert.equal(stored!.metadata.lang, 'zh');
    assert.equal(typeof stored!.metadata._node_content, 'string');
    const texts = spy.calls.flatMap((c) => c.texts);
    assert.deepEqual(texts, PASSAGES.map((p) => p.text), 'the text alone (MetadataMode.NONE): metadata is not lexically searchable');
  });

  test('DEFAULT, SPARSE and HYBRID equal the store\'s dense, sparse and hybrid search; each encodes one text, the query', async () => {
    const query = '日本の首都はどこですか？';
    for (const [mode, want] of [
      [VectorStoreQueryMode.DEFAULT, await store.searchDense(query, { k: 4 })],
      [VectorStoreQueryMode.SPARSE, await store.searchSparse(query, { k: 4 })],
      [VectorStoreQueryMode.HYBRID, await store.search(query, { k: 4 })],
    ] as const) {
      spy.calls = [];
      const r = await vs.query({ queryStr: query, mode, similarityTopK: 4 });
      assert.deepEqual(spy.calls.flatMap((c) => c.texts), [query], `${mode}: one text encoded`);
      assert.deepEqual(r.ids, want.map((h) => h.id), mode);
      r.similarities.forEach((s, i) => assert.ok(close(s, want[i]!.score), `${mode} score`));
      r.nodes!.forEach((n, i) => {
        assert.ok(n instanceof TextNode);
        assert.equal(n.id_, want[i]!.id);
        assert.equal(n.getContent(MetadataMode.NONE), want[i]!.text);
        assert.equal(n.metadata.lang, want[i]!.metadata.lang);
        assert.ok(!('_node_content' in n.metadata));
      });
    }
  });

  test('HYBRID takes alpha (1: dense + ColBERT, 0: sparse + ColBERT) or customParams weights and fetchK', async () => {
    const q = 'Moscow river';
    const a1 = await vs.query({ queryStr: q, mode: VectorStoreQueryMode.HYBRID, similarityTopK: 3, alpha: 1 });
    const want1 = await store.search(q, { k: 3, weights: [0.6, 0, 0.4] });
    assert.deepEqual(a1.ids, want1.map((h) => h.id));
    const w = await vs.query({ queryStr: q, mode: VectorStoreQueryMode.HYBRID, similarityTopK: 3, customParams: { weights: [0, 1, 0], fetchK: 5 } });
    const want2 = await store.search(q, { k: 3, weights: [0, 1, 0], fetchK: 5 });
    assert.deepEqual(w.ids, want2.map((h) => h.id));
    await assert.rejects(vs.query({ queryStr: q, mode: VectorStoreQueryMode.HYBRID, similarityTopK: 3, alpha: 1.5 }), /alpha must be a number from 0 to 1/);
    await assert.rejects(vs.query({ queryStr: q, mode: VectorStoreQueryMode.DEFAULT, similarityTopK: 3, alpha: 0.5 }), /alpha applies to the hybrid mode only/);
    await assert.rejects(vs.query({ queryStr: q, mode: VectorStoreQueryMode.HYBRID, similarityTopK: 3, customParams: { fetch_k: 5 } as never }), /unknown option "fetch_k"/);
    await assert.rejects(vs.query({ queryStr: q, mode: VectorStoreQueryMode.MMR, similarityTopK: 3 }), /not "mmr"/);
  });

  test('MetadataFilters become the store\'s where (every operator), docIds restrict; text_match is refused', async () => {
    const f = (filters: MetadataFilters['filters'], condition?: FilterCondition): MetadataFilters => ({ filters, ...(condition ? { condition } : {}) });
    const ids = async (filters: MetadataFilters, docIds?: string[]) =>
      (await vs.query({ queryStr: 'city', mode: VectorStoreQueryMode.HYBRID, similarityTopK: 12, filters, ...(docIds ? { docIds } : {}) })).ids.sort();
    const langs = (ls: string[]) => PASSAGES.flatMap((p, i) => (ls.includes(p.lang) ? [`n${i}`] : [])).sort();
    assert.deepEqual(await ids(f([{ key: 'lang', value: 'ja', operator: FilterOperator.EQ }])), langs(['ja']));
    assert.deepEqual(await ids(f([{ key: 'lang', value: 'en', operator: FilterOperator.NE }])), langs(['zh', 'ja', 'ar', 'ru']));
    assert.deepEqual(await ids(f([{ key: 'lang', value: ['zh', 'ar'], operator: FilterOperator.IN }])), langs(['zh', 'ar']));
    assert.deepEqual(await ids(f([{ key: 'lang', value: ['en', 'zh', 'ja'], operator: FilterOperator.NIN }])), langs(['ar', 'ru']));
    assert.deepEqual(await ids(f([{ key: 'n', value: 9, operator: FilterOperator.GTE }])), ['n10', 'n11', 'n9']);
    assert.deepEqual(await ids(f([{ key: 'n', value: 1, operator: FilterOperator.LT }])), ['n0']);
    assert.deepEqual(await ids(f([{ key: 'n', value: 10, operator: FilterOperator.GT }, { key: 'n', value: 1, operator: FilterOperator.LTE }], FilterCondition.OR)), ['n0', 'n1', 'n11']);
    assert.deepEqual(await ids(f([{ key: 'tags', value: 'ru', operator: FilterOperator.CONTAINS }])), langs(['ru']));
    assert.deepEqual(await ids(f([{ key: 'tags', value: ['ru', 'ar'], operator: FilterOperator.ANY }])), langs(['ru', 'ar']));
    assert.deepEqual(await ids(f([{ key: 'tags', value: ['ja', 'odd'], operator: FilterOperator.ALL }])), ['n5']);
    assert.deepEqual(await ids(f([{ key: 'missing', operator: FilterOperator.IS_EMPTY }])), PASSAGES.map((_, i) => `n${i}`).sort());
    assert.deepEqual(await ids(f([{ key: 'lang', operator: FilterOperator.IS_EMPTY }])), []);
    assert.deepEqual(await ids(f([{ key: 'lang', value: 'en', operator: FilterOperator.EQ }]), ['n0', 'n3']), ['n0']);
    await assert.rejects(ids(f([{ key: 'lang', value: 'en', operator: FilterOperator.TEXT_MATCH }])), /text_match .* cannot be expressed/);
    assert.throws(() => toWhere(f([{ key: 'lang', value: ['a'], operator: FilterOperator.EQ }])), /must be a string or a finite number/);
    assert.throws(() => toWhere(f([{ key: 'x', value: 1, operator: 'like' as never }])), /unknown filter operator/);
  });

  test('delete(refDocId) removes the nodes of that source document', async () => {
    const own = await M3Index.create({ encoder });
    const v = new BGEM3VectorStore({ store: own });
    const doc = new Document({ id_: 'doc-1', text: 'parent' });
    const children = [0, 1, 2].map((i) => new TextNode({ id_: `c${i}`, text: `child ${i}`, relationships: { SOURCE: doc.asRelatedNodeInfo() } as never }));
    await v.add([...children, new TextNode({ id_: 'other', text: 'unrelated' })]);
    await v.delete('doc-1');
    assert.equal(await own.count(), 1);
    assert.equal(await own.has('other'), true);
  });

  test('VectorStoreIndex.fromVectorStore: hybrid retriever, query engine and ContextChatEngine answer from the store', async () => {
    const llm = new RecordingLLM('mock answer');
    Settings.llm = llm;
    Settings.embedModel = vs.embedModel;
    assert.ok(vs.embedModel instanceof BGEM3Embedding);
    const index = await VectorStoreIndex.fromVectorStore(vs);
    const query = 'Какой город является столицей России?';
    const retriever = index.asRetriever({ mode: VectorStoreQueryMode.HYBRID, similarityTopK: 3 });
    const got = await retriever.retrieve(query);
    const want = await store.search(query, { k: 3 });
    assert.deepEqual(got.map((n) => n.node.id_), want.map((h) => h.id));
    got.forEach((n, i) => assert.ok(close(n.score!, want[i]!.score)));

    const engine = index.asQueryEngine({ retriever });
    const response = await engine.query({ query });
    assert.equal(response.toString(), 'mock answer');
    assert.deepEqual(response.sourceNodes!.map((n) => n.node.id_), want.map((h) => h.id));
    for (const h of want) assert.ok(llm.transcript.includes(h.text), 'the LLM saw the retrieved text');

    llm.chats = [];
    const chat = new ContextChatEngine({ retriever, chatModel: llm });
    const first = await chat.chat({ message: query });
    assert.equal(first.message.content, 'mock answer');
    assert.deepEqual(first.sourceNodes!.map((n) => n.node.id_), want.map((h) => h.id));
    const stream = await chat.chat({ message: 'and Egypt?', stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.delta;
    assert.equal(text.trim(), 'mock answer');
    assert.equal((await chat.chatHistory).length, 4);

    // defaultMode: "hybrid": the engines made without a retriever search hybrid too.
    const hybridByDefault = new BGEM3VectorStore({ store, defaultMode: 'hybrid' });
    Settings.embedModel = hybridByDefault.embedModel;
    const index2 = await VectorStoreIndex.fromVectorStore(hybridByDefault);
    const viaEngine = await index2.asQueryEngine({ similarityTopK: 3 }).query({ query });
    assert.deepEqual(viaEngine.sourceNodes!.map((n) => n.node.id_), want.map((h) => h.id));
    const viaChat = await index2.asChatEngine({ similarityTopK: 3, chatModel: llm }).chat({ message: query });
    assert.deepEqual(viaChat.sourceNodes!.map((n) => n.node.id_), want.map((h) => h.id));

    // insertNodes through the index goes to the store.
    await index.insertNodes([new TextNode({ id_: 'fresh', text: 'A new passage about Cairo.' })]);
    assert.equal(await store.has('fresh'), true);
  });

  test('refusals: other embedModels, unknown options', () => {
    assert.throws(() => new BGEM3VectorStore({ store, embedModel: new RecordingLLM() as never }), /embedModel must be a BGEM3Embedding/);
    assert.throws(() => new BGEM3VectorStore({ store, topK: 3 } as never), /unknown option "topK"/);
    const other = new SpyEncoder(encoder, 'local:sha256-another');
    assert.throws(() => new BGEM3VectorStore({ store, embedModel: new BGEM3Embedding({ encoder: other }) }), (e: Error) => e.message.includes('local:sha256-another') && e.message.includes(store.modelId));
    assert.throws(() => new BGEM3VectorStore({} as never), /store must be an M3Store/);
  });
});
