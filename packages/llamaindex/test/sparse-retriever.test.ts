import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Error, lexicalMatchingScore, type M3Encoder, type SparseVector } from '@bgem3/core';
import { BaseRetriever, Document, MetadataMode, NodeRelationship, Settings, SimpleDocumentStore, TextNode, VectorStoreIndex } from 'llamaindex';
import { BGEM3Embedding, BGEM3SparseRetriever } from '../src/index.ts';
import { FIXTURE, PASSAGES, SpyEncoder, corpusNodes, embedText, freshModelPath, missingModelPath, referenceEncoder } from './helpers.ts';

const invalidArg = (err: unknown) => err instanceof M3Error && err.code === 'INVALID_ARGUMENT';

/** Brute force with core's score over every node: the expected ranking. */
async function expected(query: string, nodes: TextNode[], k: number): Promise<{ id: string; score: number }[]> {
  const enc = await referenceEncoder();
  const [q, ...docs] = await enc.encode([query, ...nodes.map(embedText)], { dense: false, sparse: true });
  const scored = nodes
    .map((n, i) => ({ id: n.id_, score: lexicalMatchingScore(q!.sparse as SparseVector, docs[i]!.sparse as SparseVector) }))
    .filter((h) => h.score > 0);
  scored.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  return scored.slice(0, k);
}

describe('BGEM3SparseRetriever', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'bgem3-li-sparse-'));
  const cleanups: (() => void)[] = [() => rmSync(tmp, { recursive: true, force: true })];
  after(() => cleanups.forEach((c) => c()));
  const nodes = corpusNodes();
  let retriever: BGEM3SparseRetriever;
  before(async () => {
    retriever = await BGEM3SparseRetriever.fromNodes(nodes, { model: FIXTURE, topK: 4 });
  });

  test('is a BaseRetriever with LlamaIndex defaults', () => {
    assert.ok(retriever instanceof BaseRetriever);
    const r = new BGEM3SparseRetriever({ model: FIXTURE });
    assert.equal(r.topK, 2, "LlamaIndex's DEFAULT_SIMILARITY_TOP_K");
    assert.equal(r.metadataMode, MetadataMode.EMBED);
    assert.equal(retriever.size, nodes.length);
  });

  test('scores and order equal core lexicalMatchingScore by brute force', async () => {
    for (const query of ['the cat on the mat', '首都', 'Москва столица', 'عاصمة مصر', '猫', PASSAGES[0]!.text]) {
      const got = await retriever.retrieve(query);
      const want = await expected(query, nodes, 4);
      // The reference encodes in other batches: padded and unpadded attention differ in the last bits.
      assert.deepEqual(
        got.map((n) => n.node.id_),
        want.map((w) => w.id),
        query,
      );
      got.forEach((n, i) => assert.ok(Math.abs(n.score! - want[i]!.score) <= 1e-6 * Math.max(1, want[i]!.score), `${query}: ${n.score} vs ${want[i]!.score}`));
    }
  });

  test('a QueryBundle and multimodal text parts work like the plain string', async () => {
    const plain = await retriever.retrieve('the cat on the mat');
    assert.deepEqual(await retriever.retrieve({ query: 'the cat on the mat' }), plain);
    const parts = await retriever.retrieve({ query: [{ type: 'text', text: 'the cat on the mat' }] });
    assert.deepEqual(
      parts.map((n) => [n.node.id_, n.score]),
      plain.map((n) => [n.node.id_, n.score]),
    );
  });

  test('topK larger than the corpus returns every matching node, each once', async () => {
    const r = await BGEM3SparseRetriever.fromNodes(nodes, { model: FIXTURE, topK: 1000 });
    const got = await r.retrieve(PASSAGES.map((p) => p.text).join(' '));
    const want = await expected(PASSAGES.map((p) => p.text).join(' '), nodes, 1000);
    assert.equal(got.length, want.length);
    assert.ok(got.length <= nodes.length);
    assert.equal(new Set(got.map((n) => n.node.id_)).size, got.length);
    r.topK = 3;
    assert.equal((await r.retrieve(PASSAGES.map((p) => p.text).join(' '))).length, 3);
  });

  test('returns fresh node copies with text and metadata, without embeddings', async () => {
    const all = await BGEM3SparseRetriever.fromNodes(nodes, { model: FIXTURE, topK: 100 });
    const pick = async () => (await all.retrieve(PASSAGES[2]!.text)).find((h) => h.node.id_ === 'node-2');
    const first = await pick();
    assert.ok(first!.node instanceof TextNode);
    assert.equal(first!.node.getContent(MetadataMode.NONE), PASSAGES[2]!.text);
    assert.deepEqual(first!.node.metadata, { lang: 'en' });
    assert.equal(first!.node.embedding, undefined);
    first!.node.metadata.lang = 'changed';
    const again = await pick();
    assert.equal(again!.node.metadata.lang, 'en');
    assert.notEqual(again!.node, first!.node);
  });

  test('empty: no nodes gives [] without loading the model; a query sharing no token gives []', async () => {
    const missing = missingModelPath();
    cleanups.push(missing.cleanup);
    const empty = new BGEM3SparseRetriever({ model: missing.path });
    assert.deepEqual(await empty.retrieve('anything'), []);
    assert.deepEqual(await BGEM3SparseRetriever.fromNodes([], { model: missing.path }).then((r) => r.retrieve('x')), []);
    assert.deepEqual(await retriever.retrieve(''), []);
  });

  test('a missing query, or one without text, throws INVALID_ARGUMENT', async () => {
    await assert.rejects(retriever.retrieve(undefined as never), invalidArg);
    await assert.rejects(retriever.retrieve({} as never), invalidArg);
    await assert.rejects(retriever.retrieve({ query: [{ type: 'image_url', image_url: { url: 'data:,' } }] }), invalidArg);
  });

  test('duplicate nodes are indexed once (the last copy wins)', async () => {
    const a = new TextNode({ id_: 'dup', text: 'first version about cats' });
    const b = new TextNode({ id_: 'dup', text: PASSAGES[9]!.text });
    const r = await BGEM3SparseRetriever.fromNodes([a, nodes[0]!, b], { model: FIXTURE, topK: 10 });
    assert.equal(r.size, 2);
    const hits = await r.retrieve(PASSAGES[9]!.text);
    assert.equal(hits.filter((h) => h.node.id_ === 'dup').length, 1);
    assert.equal(r.getNode('dup')?.getContent(MetadataMode.NONE), PASSAGES[9]!.text);
    await r.addNodes([a]);
    assert.equal(r.size, 2);
    assert.equal(r.getNode('dup')?.getContent(MetadataMode.NONE), 'first version about cats');
  });

  test('addNodes / deleteNodes / deleteRefDoc', async () => {
    const r = new BGEM3SparseRetriever({ model: FIXTURE, topK: 20, nodes: nodes.slice(0, 3) });
    assert.equal((await r.retrieve(PASSAGES[9]!.text)).some((h) => h.node.id_ === 'node-9'), false);
    const source = new Document({ id_: 'ref-1', text: 'parent' });
    const child = new TextNode({ id_: 'child', text: PASSAGES[9]!.text, relationships: { [NodeRelationship.SOURCE]: source.asRelatedNodeInfo() } });
    await r.addNodes([nodes[9]!, child]);
    assert.equal(r.size, 5);
    assert.deepEqual(
      (await r.retrieve(PASSAGES[9]!.text)).slice(0, 2).map((h) => h.node.id_).sort(),
      ['child', 'node-9'],
    );
    assert.equal(await r.deleteRefDoc('ref-1'), 1);
    assert.equal(await r.deleteNodes(['node-9', 'unknown']), 1);
    assert.equal(r.size, 3);
    assert.equal((await r.retrieve(PASSAGES[9]!.text)).some((h) => h.node.id_ === 'node-9' || h.node.id_ === 'child'), false);
    await assert.rejects(r.addNodes([{}] as never), invalidArg);

    // Constructor nodes are indexed before later changes, so a later version wins.
    const v1 = new TextNode({ id_: 'v', text: 'version one' });
    const v2 = new TextNode({ id_: 'v', text: 'version two' });
    const ordered = new BGEM3SparseRetriever({ model: FIXTURE, nodes: [v1] });
    await ordered.addNodes([v2]);
    await ordered.retrieve('version');
    assert.equal(ordered.size, 1);
    assert.equal(ordered.getNode('v')?.getContent(MetadataMode.NONE), 'version two');
  });

  test('follows a docStore: skips split source documents, picks up inserts, changes and deletions', async () => {
    const fresh = freshModelPath();
    cleanups.push(fresh.cleanup);
    Settings.embedModel = new BGEM3Embedding({ model: fresh.path });
    const docs = PASSAGES.slice(0, 6).map((p, i) => new Document({ id_: `d${i}`, text: p.text, metadata: { lang: p.lang } }));
    const index = await VectorStoreIndex.fromDocuments(docs);
    const stored = await index.docStore.docs();
    assert.ok(Object.keys(stored).includes('d0'), 'the docStore holds the source documents too');
    const r = await BGEM3SparseRetriever.fromDocStore(index.docStore, { model: fresh.path, topK: 50 });
    assert.equal(r.size, 6, 'only the chunks, not their source documents');
    assert.ok(r.ids().every((id) => !docs.some((d) => d.id_ === id)));
    const enc = (await (Settings.embedModel as BGEM3Embedding).load()) as M3Encoder;
    assert.equal(enc.stats.textsEncoded, 6, 'the chunks were embedded once and their sparse weights came from the cache');

    const extra = new TextNode({ id_: 'extra', text: PASSAGES[9]!.text });
    await index.insertNodes([extra]);
    const hits = await r.retrieve(PASSAGES[9]!.text);
    assert.equal(hits[0]!.node.id_, 'extra');
    assert.equal(r.size, 7);

    await index.docStore.deleteDocument('extra', false);
    assert.equal((await r.retrieve(PASSAGES[9]!.text)).some((h) => h.node.id_ === 'extra'), false);
    assert.equal(r.size, 6);

    const changedId = r.ids()[0]!;
    await index.docStore.addDocuments([new TextNode({ id_: changedId, text: PASSAGES[10]!.text })], true);
    const afterChange = await r.retrieve(PASSAGES[10]!.text);
    assert.equal(afterChange.find((h) => h.node.id_ === changedId)?.node.getContent(MetadataMode.NONE), PASSAGES[10]!.text);
    assert.equal(r.size, 6);

    const only = await BGEM3SparseRetriever.fromDocStore(index.docStore, { model: fresh.path, docIds: [r.ids()[0]!] });
    assert.equal(only.size, 1);

    const lazy = new BGEM3SparseRetriever({ docStore: index.docStore, model: fresh.path, syncOnRetrieve: false, topK: 50 });
    assert.equal(lazy.size, 0);
    await lazy.retrieve('x');
    assert.equal(lazy.size, 6);
    await index.insertNodes([new TextNode({ id_: 'later', text: 'later' })]);
    await lazy.retrieve('later');
    assert.equal(lazy.size, 6, 'no sync on retrieve');
    await lazy.refresh();
    assert.equal(lazy.size, 7);
  });

  test('fromDocuments splits with Settings.nodeParser (or the given parser) and indexes the chunks', async () => {
    const docs = PASSAGES.map((p, i) => new Document({ id_: `src-${i}`, text: p.text, metadata: { lang: p.lang } }));
    const r = await BGEM3SparseRetriever.fromDocuments(docs, { model: FIXTURE, topK: 12 });
    assert.equal(r.size, PASSAGES.length, 'one chunk per short document');
    assert.ok(r.ids().every((id) => !id.startsWith('src-')), 'chunks get their own ids');
    const hits = await r.retrieve(PASSAGES[7]!.text);
    const hit = hits.find((h) => h.node.getContent(MetadataMode.NONE) === PASSAGES[7]!.text);
    assert.equal(hit?.node.sourceNode?.nodeId, 'src-7');
    const viaParser = await BGEM3SparseRetriever.fromDocuments(docs.slice(0, 2), { model: FIXTURE, nodeParser: Settings.nodeParser });
    assert.equal(viaParser.size, 2);
  });

  test('works when the docStore is empty (a vector store that keeps the text)', async () => {
    const emptyStore = new SimpleDocumentStore();
    const r = await BGEM3SparseRetriever.fromNodes(nodes, { model: FIXTURE, docStore: emptyStore, topK: 3 });
    assert.equal(r.size, nodes.length, 'nodes added directly are kept when the docStore has none');
    assert.equal((await r.retrieve(PASSAGES[3]!.text))[0]!.node.id_, 'node-3');
  });

  test('save and load round-trip; mismatched model or damaged file are refused', async () => {
    const file = join(tmp, 'sparse.bin');
    await retriever.save(file);
    const loaded = await BGEM3SparseRetriever.load(file, { model: FIXTURE, topK: 4 });
    assert.equal(loaded.size, retriever.size);
    for (const q of ['the cat on the mat', '首都', 'Москва']) {
      const a = await retriever.retrieve(q);
      const b = await loaded.retrieve(q);
      assert.deepEqual(
        b.map((n) => [n.node.id_, n.score, n.node.getContent(MetadataMode.ALL)]),
        a.map((n) => [n.node.id_, n.score, n.node.getContent(MetadataMode.ALL)]),
      );
    }
    const other = new SpyEncoder(await referenceEncoder(), 'some-other-model');
    await assert.rejects(BGEM3SparseRetriever.load(file, { encoder: other }), (err: unknown) => err instanceof M3Error && err.code === 'INDEX_MISMATCH');
    await assert.rejects(BGEM3SparseRetriever.load(file, { model: FIXTURE, metadataMode: MetadataMode.ALL }), invalidArg);
    const bytes = readFileSync(file);
    const broken = join(tmp, 'broken.bin');
    writeFileSync(broken, bytes.subarray(0, bytes.length - 7));
    await assert.rejects(BGEM3SparseRetriever.load(broken, { model: FIXTURE }), (err: unknown) => err instanceof M3Error && err.code === 'INDEX_INVALID');
    writeFileSync(broken, 'not an index');
    await assert.rejects(BGEM3SparseRetriever.load(broken, { model: FIXTURE }), (err: unknown) => err instanceof M3Error && err.code === 'INDEX_INVALID');
  });

  test('concurrent adds and queries are serialised (read-your-writes)', async () => {
    const r = new BGEM3SparseRetriever({ model: FIXTURE, topK: 20 });
    const adding = r.addNodes(nodes.slice(0, 6));
    const [hits] = await Promise.all([r.retrieve(PASSAGES[3]!.text), adding, r.addNodes(nodes.slice(6))]);
    assert.equal(hits[0]!.node.id_, 'node-3');
    assert.equal(r.size, 12);
  });

  test('invalid options fail fast with INVALID_ARGUMENT', () => {
    for (const o of [{ topK: 0 }, { topK: 1.5 }, { metadataMode: 'SOME' }, { docStore: {} }, { docIds: 'x' }, { nodes: 'x' }]) {
      assert.throws(() => new BGEM3SparseRetriever(o as never), invalidArg, JSON.stringify(o));
    }
  });
});
