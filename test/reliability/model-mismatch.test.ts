/**
 * An index built by one model, opened with another: two REAL models (the fixture, hidden 32 and
 * vocabulary 3002; a generated one, hidden 48 and vocabulary 4000) through every surface that
 * persists an index. The package tests check this with fake encoders or a same-shape export;
 * here the dimension and the vocabulary really differ. Each case must be INDEX_MISMATCH (or
 * INVALID_ARGUMENT for a foreign encoding) saying what differs, and must not damage the index.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index, SparseIndex } from '@bgem3/core';
import { BGEM3SparseRetriever, BGEM3VectorStore } from '@bgem3/langchain';
import * as li from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { assertOneLineError, FIXTURE, legacySparseFile, m3, otherModel, runCli, tempDir } from './helpers.ts';
import { TextNode } from './llamaindex.ts';

const DOCS = ['Paris is the capital of France.', 'Green tea is popular in Japan.', '北京是中国的首都。'];

describe('an index built by one model, opened with another (dimension 32 vs 48, vocabulary 3002 vs 4000)', () => {
  let a: M3Encoder;
  let b: M3Encoder;
  let otherDir: string;
  let dir: string;
  let indexDir: string;
  before(async () => {
    otherDir = await otherModel();
    [a, b] = await Promise.all([M3Encoder.load(FIXTURE, { workers: 0 }), M3Encoder.load(otherDir, { workers: 0 })]);
    dir = tempDir('bgem3-rel-mismatch-');
    indexDir = join(dir, 'm3index');
    const index = await M3Index.create({ encoder: a });
    await index.add(DOCS.map((text, i) => ({ id: `d${i}`, text })));
    await index.save(indexDir);
  });
  after(async () => {
    await a.close();
    await b.close();
  });

  test('the two models really differ in dimension, vocabulary and id', () => {
    assert.deepEqual([a.dim, a.vocabSize], [32, 3002]);
    assert.deepEqual([b.dim, b.vocabSize], [48, 4000]);
    assert.notEqual(a.modelId, b.modelId);
  });

  test('M3Index.load: INDEX_MISMATCH listing model id, dimension and vocabulary, naming the index database; the index stays intact', async () => {
    await assert.rejects(M3Index.load(indexDir, { encoder: b }), (e: unknown) => {
      m3('INDEX_MISMATCH', /does not match the encoder/)(e);
      const err = e as { message: string; file?: string };
      assert.match(err.message, /model id/);
      assert.match(err.message, /dimension 32 vs 48/);
      assert.match(err.message, /vocabulary size 3002 vs 4000/);
      assert.equal(err.file, join(indexDir, 'index.sqlite'), 'names the index database');
      return true;
    });
    const ok = await M3Index.load(indexDir, { encoder: a });
    assert.equal(ok.size, DOCS.length);
    assert.equal((await ok.search(DOCS[1], { k: 1 }))[0].id, 'd1');
    await ok.close();
  });

  test("M3Index: the other model's encodings are INVALID_ARGUMENT as queries and as documents; nothing is stored", async () => {
    const index = await M3Index.load(indexDir, { encoder: a });
    const [foreign] = await b.encodeFull(['Green tea']);
    await assert.rejects(index.search(foreign), m3('INVALID_ARGUMENT', /the query needs a dense Float32Array of 32 values/));
    await assert.rejects(index.searchDense(foreign), m3('INVALID_ARGUMENT', /the query needs a dense Float32Array of 32 values/));
    await assert.rejects(index.addEncoded([{ id: 'x', text: 'Green tea', encoding: foreign }]), m3('INVALID_ARGUMENT', /dense Float32Array of 32 values/));
    assert.equal(index.size, DOCS.length);
    assert.equal(await index.has('x'), false);
    // An index of the other model given this model's encodings: token ids beyond its vocabulary are refused too.
    const bIndex = await M3Index.create({ encoder: b });
    const [mine] = await a.encodeFull(['Green tea']);
    await assert.rejects(bIndex.addEncoded([{ text: 'Green tea', encoding: mine }]), m3('INVALID_ARGUMENT'));
    assert.equal(await bIndex.count(), 0);
    await Promise.all([index.close(), bIndex.close()]);
  });

  test('CLI: search or --append with another model is one stderr line naming the mismatch, exit 1; without -m, one line asking for it', async () => {
    const docs = join(dir, 'more.jsonl');
    writeFileSync(docs, `${JSON.stringify({ text: 'Lyon is a city in France.' })}\n`);
    const [search, append, noModel] = await Promise.all([
      runCli(['search', '--index', indexDir, '--query', 'tea', '--model', otherDir]),
      runCli(['index', '--model', otherDir, '--input', docs, '--out', indexDir, '--append']),
      runCli(['search', '--index', indexDir, '--query', DOCS[1], '--k', '1']),
    ]);
    assertOneLineError(search, /does not match the encoder: .*dimension 32 vs 48; vocabulary size 3002 vs 4000/, 'search --model <other>');
    assertOneLineError(append, /does not match the encoder/, 'index --append --model <other>');
    // This index was built through the API from a local directory: its model id is a content hash
    // and no location is recorded (`bgem3 index` records one), so the CLI asks for -m rather than
    // guessing or downloading a default model.
    assertOneLineError(noModel, /does not record where its model is \(model id "local:sha256-[0-9a-f]+"\): pass -m/, 'search without --model');
    const own = await runCli(['search', '--index', indexDir, '--query', DOCS[1], '--k', '1', '--model', FIXTURE]);
    assert.equal(own.status, 0, `with its own model the refused append left the index intact: ${own.stderr}`);
    const out = JSON.parse(own.stdout) as { results: { id: string }[] };
    assert.equal(out.results[0].id, 'd1');
  });

  // The adapters are views of a store: the store records its model (id, dimension, vocabulary),
  // and a class given another model is refused naming both, before anything is encoded or stored.
  const bothModels = (e: unknown): boolean => {
    m3('INDEX_MISMATCH', /the store was made with another model than this encoder/)(e);
    const msg = (e as Error).message;
    assert.ok(msg.includes(JSON.stringify(a.modelId)) && msg.includes(JSON.stringify(b.modelId)), `names both model ids: ${msg}`);
    assert.match(msg, /dimension 32 vs 48; vocabulary size 3002 vs 4000/);
    return true;
  };

  test('LangChain over a store built with another model: INDEX_MISMATCH naming both (vector store, sparse retriever; encoder at construction, model at first use); nothing is stored', async () => {
    const store = await M3Index.load(indexDir);
    try {
      assert.throws(() => new BGEM3VectorStore(undefined, { store, encoder: b }), bothModels, 'vector store, encoder: b');
      assert.throws(() => new BGEM3SparseRetriever({ store, encoder: b }), bothModels, 'sparse retriever, encoder: b');
      // A model given by location is loaded on first use, then compared with the store's.
      const vs = new BGEM3VectorStore(undefined, { store, model: otherDir });
      await assert.rejects(vs.asRetriever({ k: 1 }).invoke('tea'), bothModels, 'hybrid query');
      await assert.rejects(vs.similaritySearch('tea', 1), bothModels, 'dense query');
      await assert.rejects(vs.addDocuments([new Document({ id: 'x', pageContent: 'Lyon is in France.' })]), bothModels, 'add');
      await assert.rejects(new BGEM3SparseRetriever({ store, model: otherDir }).invoke('tea'), bothModels, 'sparse query');
      assert.equal(await store.count(), DOCS.length, 'nothing was added');
      assert.equal(await store.has('x'), false);
      // The store's own model answers through the same classes.
      const good = new BGEM3SparseRetriever({ store, encoder: a, k: 1 });
      assert.equal((await good.invoke(DOCS[1]))[0].id, 'd1');
    } finally {
      await store.close();
    }
  });

  test('LlamaIndex over a store built with another model: INDEX_MISMATCH naming both (vector store, sparse retriever); nothing is stored', async () => {
    const store = await M3Index.load(indexDir);
    try {
      assert.throws(() => new li.BGEM3VectorStore({ store, encoder: b }), bothModels, 'vector store, encoder: b');
      assert.throws(() => new li.BGEM3SparseRetriever({ store, encoder: b }), bothModels, 'sparse retriever, encoder: b');
      const vs = new li.BGEM3VectorStore({ store, model: otherDir });
      await assert.rejects(vs.query({ queryStr: 'tea', similarityTopK: 1, mode: 'default' } as never), bothModels, 'default query');
      await assert.rejects(vs.add([new TextNode({ id_: 'x', text: 'Lyon is in France.' })]), bothModels, 'add');
      await assert.rejects(new li.BGEM3SparseRetriever({ store, model: otherDir }).retrieve('tea'), bothModels, 'sparse query');
      assert.equal(await store.count(), DOCS.length, 'nothing was added');
      const good = new li.BGEM3SparseRetriever({ store, encoder: a, topK: 1 });
      assert.equal((await good.retrieve(DOCS[1]))[0].node.id_, 'd1');
    } finally {
      await store.close();
    }
  });

  test('a 0.1 single-file sparse index (LangChain, LlamaIndex) is INDEX_INVALID naming the file and saying how to rebuild; the rebuilt store still refuses the other model', async () => {
    // The files 0.1's save wrote for the fixture model: its header (model id, documents) and its sparse weights.
    const encoded = await a.encode(DOCS, { dense: false, sparse: true });
    const sparse = new SparseIndex({ vocabSize: a.vocabSize, modelId: a.modelId });
    encoded.forEach((r, i) => sparse.upsert(`d${i}`, r.sparse!));
    const lcFile = join(dir, 'langchain-0.1.sparse');
    writeFileSync(lcFile, legacySparseFile('BGM3LCSP', { format: 'bgem3-langchain-sparse', modelId: a.modelId, k: 4, maxLength: null, documents: DOCS.map((pageContent, i) => ({ id: `d${i}`, pageContent, metadata: {} })) }, sparse.toBytes()));
    const liFile = join(dir, 'llamaindex-0.1.sparse');
    writeFileSync(liFile, legacySparseFile('BGM3LISP', { modelId: a.modelId, metadataMode: 'none', nodes: DOCS.map((text, i) => ({ id_: `d${i}`, text })), fromDocStore: [] }, sparse.toBytes()));
    const rebuild = (file: string, lib: string, how: RegExp) => (e: unknown) => {
      m3('INDEX_INVALID', new RegExp(`BGEM3SparseRetriever file of @bgem3/${lib} 0\\.1, which this version no longer reads`))(e);
      assert.equal((e as { file?: string }).file, file);
      assert.match((e as Error).message, how);
      assert.match((e as Error).message, /new BGEM3SparseRetriever\(\{ store \}\)/);
      return true;
    };
    await assert.rejects(BGEM3SparseRetriever.load(lcFile), rebuild(lcFile, 'langchain', /BGEM3VectorStore\.fromDocuments\(docs, undefined, \{ store \}\)/));
    await assert.rejects(li.BGEM3SparseRetriever.load(liFile), rebuild(liFile, 'llamaindex', /new BGEM3VectorStore\(\{ store \}\)/));
    // Following the message with the other model: the store built by the fixture model refuses it.
    const store = await M3Index.create({ encoder: a });
    try {
      await BGEM3VectorStore.fromDocuments(DOCS.map((pageContent, i) => new Document({ id: `d${i}`, pageContent })), undefined, { store });
      // This store has its encoder: another encoder is two models given at once (INVALID_ARGUMENT naming both).
      assert.throws(() => new BGEM3SparseRetriever({ store, encoder: b }), (e: unknown) => {
        m3('INVALID_ARGUMENT', /give one of them/)(e);
        assert.ok((e as Error).message.includes(JSON.stringify(a.modelId)) && (e as Error).message.includes(JSON.stringify(b.modelId)), (e as Error).message);
        return true;
      });
      assert.equal((await new BGEM3SparseRetriever({ store, k: 1 }).invoke(DOCS[1]))[0].id, 'd1');
    } finally {
      await store.close();
    }
  });
});
