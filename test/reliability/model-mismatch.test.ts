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
import { M3Encoder, M3Index } from '@bgem3/core';
import { BGEM3SparseRetriever } from '@bgem3/langchain';
import * as li from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { assertOneLineError, FIXTURE, m3, otherModel, runCli, tempDir } from './helpers.ts';
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

  test('M3Index.load: INDEX_MISMATCH listing model id, dimension and vocabulary, naming the manifest; the index stays intact', async () => {
    await assert.rejects(M3Index.load(indexDir, { encoder: b }), (e: unknown) => {
      m3('INDEX_MISMATCH', /does not match the encoder/)(e);
      const err = e as { message: string; file?: string };
      assert.match(err.message, /model id/);
      assert.match(err.message, /dimension 32 vs 48/);
      assert.match(err.message, /vocabulary size 3002 vs 4000/);
      assert.ok(err.file?.endsWith('manifest.json'), `names the manifest: ${err.file}`);
      return true;
    });
    const ok = await M3Index.load(indexDir, { encoder: a });
    assert.equal(ok.size, DOCS.length);
    assert.equal((await ok.search(DOCS[1], { k: 1 }))[0].id, 'd1');
  });

  test("M3Index: the other model's encodings are INVALID_ARGUMENT as queries and as documents; nothing is stored", async () => {
    const index = await M3Index.load(indexDir, { encoder: a });
    const [foreign] = await b.encodeFull(['Green tea']);
    await assert.rejects(index.search(foreign), m3('INVALID_ARGUMENT', /dense vector of 32 values/));
    await assert.rejects(index.searchDense(foreign), m3('INVALID_ARGUMENT', /dense vector of 32 values/));
    await assert.rejects(index.addEncoded([{ id: 'x', text: 'Green tea', encoding: foreign }]), m3('INVALID_ARGUMENT', /dense Float32Array of 32 values/));
    assert.equal(index.size, DOCS.length);
    assert.equal(index.has('x'), false);
    // An index of the other model given this model's encodings: token ids beyond its vocabulary are refused too.
    const bIndex = await M3Index.create({ encoder: b });
    const [mine] = await a.encodeFull(['Green tea']);
    await assert.rejects(bIndex.addEncoded([{ text: 'Green tea', encoding: mine }]), m3('INVALID_ARGUMENT'));
  });

  test('CLI: search or --append with another model is one stderr line naming the mismatch, exit 1', async () => {
    const docs = join(dir, 'more.jsonl');
    writeFileSync(docs, `${JSON.stringify({ text: 'Lyon is a city in France.' })}\n`);
    const [search, append, fromIndex] = await Promise.all([
      runCli(['search', '--index', indexDir, '--query', 'tea', '--model', otherDir]),
      runCli(['index', '--model', otherDir, '--input', docs, '--out', indexDir, '--append']),
      runCli(['search', '--index', indexDir, '--query', DOCS[1], '--k', '1']),
    ]);
    assertOneLineError(search, /does not match the encoder: .*dimension 32 vs 48; vocabulary size 3002 vs 4000/, 'search --model <other>');
    assertOneLineError(append, /does not match the encoder/, 'index --append --model <other>');
    assert.equal(fromIndex.status, 0, `without --model the index's own model is used: ${fromIndex.stderr}`);
    assert.equal(JSON.parse(fromIndex.stdout).results[0].id, 'd1');
  });

  test('LangChain BGEM3SparseRetriever.load with another model: INDEX_MISMATCH on first use, naming both vocabularies', async () => {
    const path = join(dir, 'langchain.sparse');
    const r = await BGEM3SparseRetriever.fromDocuments(DOCS.map((pageContent, i) => new Document({ id: `d${i}`, pageContent })), { encoder: a });
    await r.save(path);
    const loaded = await BGEM3SparseRetriever.load(path, { encoder: b });
    const mismatch = m3('INDEX_MISMATCH', /vocabulary 3002\).*vocabulary 4000\)/);
    await assert.rejects(loaded.invoke('tea'), mismatch);
    await assert.rejects(loaded.addDocuments([new Document({ pageContent: 'x' })]), mismatch);
    await assert.rejects(loaded.save(join(dir, 'never-written.sparse')), mismatch);
    assert.equal(loaded.size, DOCS.length, 'nothing was added');
    const good = await BGEM3SparseRetriever.load(path, { encoder: a });
    assert.equal((await good.invoke(DOCS[1]))[0].id, 'd1');
  });

  test('LlamaIndex BGEM3SparseRetriever.load with another model: INDEX_MISMATCH at load, naming the file', async () => {
    const path = join(dir, 'llamaindex.sparse');
    const r = await li.BGEM3SparseRetriever.fromNodes(DOCS.map((text, i) => new TextNode({ id_: `d${i}`, text })), { encoder: a });
    await r.save(path);
    await assert.rejects(li.BGEM3SparseRetriever.load(path, { encoder: b }), (e: unknown) => {
      m3('INDEX_MISMATCH', /vocabulary 3002\).*vocabulary 4000\)/)(e);
      assert.equal((e as { file?: string }).file, path);
      return true;
    });
    const good = await li.BGEM3SparseRetriever.load(path, { encoder: a });
    assert.equal((await good.retrieve(DOCS[1]))[0].node.id_, 'd1');
  });
});
