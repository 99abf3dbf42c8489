/**
 * BGEM3SparseRetriever in the patterns of LlamaIndex's Bm25Retriever tests
 * (@llamaindex/bm25-retriever: a document store, topK, docIds, the default topK) and of Python's
 * BM25Retriever test_scores (every returned node has a score > 0), over the fixture model: its
 * weights are random, so results are checked against core's exact lexical scores.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, lexicalMatchingScore, type SparseVector } from '@bgem3/core';
import { BaseRetriever, Document, MetadataMode, SentenceSplitter, SimpleDocumentStore, TextNode } from 'llamaindex';
import { BGEM3SparseRetriever, BGEM3VectorStore } from '../src/index.ts';
import { FIXTURE, PASSAGES, SpyEncoder, corpusNodes } from './helpers.ts';

describe('BGEM3SparseRetriever (the Bm25Retriever patterns)', () => {
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

  async function docStoreOf(nodes: TextNode[]): Promise<SimpleDocumentStore> {
    const ds = new SimpleDocumentStore();
    await ds.addDocuments(nodes, true);
    return ds;
  }

  test('over a docStore: the topK nodes by exact lexical score of their text, each with a score > 0', async () => {
    const nodes = corpusNodes();
    const retriever = new BGEM3SparseRetriever({ docStore: await docStoreOf(nodes), topK: 3, encoder });
    assert.ok(retriever instanceof BaseRetriever);
    const query = 'the capital and the river';
    const got = await retriever.retrieve(query);
    const scores = await exact(query, nodes.map((n) => n.getContent(MetadataMode.NONE)));
    const want = [...scores.keys()].filter((i) => scores[i]! > 0).sort((a, b) => scores[b]! - scores[a]! || a - b).slice(0, 3);
    assert.deepEqual(got.map((n) => n.node.id_), want.map((i) => nodes[i]!.id_));
    got.forEach((n, i) => {
      assert.ok(n.score! > 0);
      assert.ok(Math.abs(n.score! - scores[want[i]!]!) < 1e-6);
    });
  });

  test('docIds restricts to those nodes; topK defaults to 10, as Bm25Retriever', async () => {
    const nodes = corpusNodes();
    const ds = await docStoreOf(nodes);
    const only = new BGEM3SparseRetriever({ docStore: ds, docIds: ['node-0', 'node-11'], encoder });
    assert.ok((await only.retrieve('BGE-M3 ColBERT token passage')).every((n) => ['node-0', 'node-11'].includes(n.node.id_)));
    const all = new BGEM3SparseRetriever({ docStore: ds, encoder });
    assert.equal(all.topK, 10);
    assert.ok((await all.retrieve(PASSAGES.map((p) => p.text).join(' '))).length <= 10);
  });

  test('metadata is not lexically searchable by default (MetadataMode.NONE, as Bm25Retriever); metadataMode includes it', async () => {
    const nodes = [new TextNode({ id_: 'a', text: 'A plain sentence.', metadata: { file_path: 'zebra_giraffe.txt' } }), new TextNode({ id_: 'b', text: 'zebra giraffe' })];
    const plain = await BGEM3SparseRetriever.fromNodes(nodes, { encoder, topK: 2 });
    const [viaText] = await exact('zebra_giraffe.txt', ['A plain sentence.']);
    const plainHit = (await plain.retrieve('zebra_giraffe.txt')).find((n) => n.node.id_ === 'a');
    assert.ok(Math.abs((plainHit?.score ?? 0) - viaText!) < 1e-6, 'scored on the text alone');
    const withMeta = await BGEM3SparseRetriever.fromNodes(nodes, { encoder, topK: 2, metadataMode: MetadataMode.EMBED });
    const [viaMeta] = await exact('zebra_giraffe.txt', [nodes[0]!.getContent(MetadataMode.EMBED)]);
    const hit = (await withMeta.retrieve('zebra_giraffe.txt')).find((n) => n.node.id_ === 'a');
    assert.ok(Math.abs((hit?.score ?? 0) - viaMeta!) < 1e-6, 'scored on the text with its metadata');
  });

  test('follows the docStore: added, changed and deleted nodes; parent documents are skipped', async () => {
    const ds = await docStoreOf([new TextNode({ id_: 'x', text: 'Волга длинная река' })]);
    const r = new BGEM3SparseRetriever({ docStore: ds, encoder });
    assert.deepEqual((await r.retrieve('Волга')).map((n) => n.node.id_), ['x']);
    await ds.addDocuments([new TextNode({ id_: 'y', text: 'Волга и Москва' })], true);
    assert.ok((await r.retrieve('Волга')).some((n) => n.node.id_ === 'y'));
    await ds.deleteDocument('x', false);
    assert.ok(!(await r.retrieve('Волга')).some((n) => n.node.id_ === 'x'));
  });

  test('fromDocuments splits with the node parser; nodes are fresh copies with their metadata', async () => {
    const docs = PASSAGES.slice(0, 4).map((p, i) => new Document({ id_: `d${i}`, text: p.text, metadata: { lang: p.lang } }));
    const r = await BGEM3SparseRetriever.fromDocuments(docs, { encoder, nodeParser: new SentenceSplitter({ chunkSize: 512 }) });
    const hits = await r.retrieve('BGE-M3 dense sparse');
    assert.ok(hits.length > 0);
    for (const h of hits) {
      assert.ok(h.node instanceof TextNode);
      assert.ok(['en', 'zh'].includes(h.node.metadata.lang as string));
      assert.equal(h.node.sourceNode?.nodeId?.startsWith('d'), true, 'relationships kept');
    }
  });

  test('concurrent adds and queries are serialised (read-your-writes)', async () => {
    const r = new BGEM3SparseRetriever({ encoder, topK: 5 });
    const adds = [0, 1, 2].map((i) => r.addNodes([new TextNode({ id_: `c${i}`, text: `Волга река ${i}` })]));
    const hits = await r.retrieve('Волга'); // started after the adds: sees all three
    await Promise.all(adds);
    assert.deepEqual(new Set(hits.map((n) => n.node.id_)), new Set(['c0', 'c1', 'c2']));
    const del = r.deleteNodes('c1');
    assert.ok(!(await r.retrieve('Волга')).some((n) => n.node.id_ === 'c1'));
    assert.equal(await del, 1);
  });

  test('over a store: only the query is encoded', async () => {
    const spy = new SpyEncoder(encoder);
    const store = await M3Index.create({ encoder: spy });
    await new BGEM3VectorStore({ store }).add(corpusNodes());
    spy.calls = [];
    const hits = await new BGEM3SparseRetriever({ store, topK: 4 }).retrieve('北京 首都');
    assert.deepEqual(spy.calls.flatMap((c) => c.texts), ['北京 首都']);
    assert.deepEqual(hits.map((h) => h.node.id_), (await store.searchSparse('北京 首都', { k: 4 })).map((h) => h.id));
  });

  test('bad options are refused; a 0.1 single-file index fails saying how to rebuild', async () => {
    assert.throws(() => new BGEM3SparseRetriever({ encoder, topK: 0 }), /topK/);
    assert.throws(() => new BGEM3SparseRetriever({ encoder, similarityTopK: 3 } as never), /unknown option "similarityTopK"/);
    assert.throws(() => new BGEM3SparseRetriever({ encoder, docIds: ['a'] }), /with a docStore/);
    const dir = await mkdtemp(join(tmpdir(), 'bgem3-li-old-'));
    try {
      const file = join(dir, 'sparse.bgem3');
      await writeFile(file, Buffer.concat([Buffer.from('BGM3LISP', 'latin1'), Buffer.alloc(8)]));
      await assert.rejects(BGEM3SparseRetriever.load(file), (e: Error & { code?: string }) => e.code === 'INDEX_INVALID' && /no longer reads/.test(e.message) && /BGEM3VectorStore/.test(e.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
