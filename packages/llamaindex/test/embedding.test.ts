import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { M3Encoder, M3Error } from '@bgem3/core';
import { BaseEmbedding, Settings, TextNode } from 'llamaindex';
import { BGEM3Embedding } from '../src/index.ts';
import { FIXTURE, PASSAGES, SpyEncoder, freshModelPath, missingModelPath, referenceEncoder } from './helpers.ts';

const texts = PASSAGES.map((p) => p.text);

describe('BGEM3Embedding', () => {
  const cleanups: (() => void)[] = [];
  after(() => cleanups.forEach((c) => c()));

  test('is a callable BaseEmbedding with LlamaIndex defaults overridden', () => {
    const e = new BGEM3Embedding({ model: FIXTURE });
    assert.equal(typeof e, 'function', 'TransformComponent instances are functions');
    assert.ok(e instanceof BaseEmbedding);
    assert.ok(e instanceof BGEM3Embedding);
    assert.equal(e.model, FIXTURE);
    assert.equal(e.embedBatchSize, 32);
    assert.equal(new BGEM3Embedding({ model: FIXTURE, embedBatchSize: 5 }).embedBatchSize, 5);
    // getTextEmbeddings must be our own-property field (a method would be shadowed by the base field).
    assert.ok(Object.hasOwn(e, 'getTextEmbeddings'));
    Settings.embedModel = e;
    assert.equal(Settings.embedModel, e);
  });

  test('embedInfo: BGE-M3 dimension known up front for the default model; the real one after load', async () => {
    assert.deepEqual(new BGEM3Embedding().embedInfo, { dimensions: 1024, maxTokens: 8192 });
    const e = new BGEM3Embedding({ model: FIXTURE, maxLength: 64 });
    assert.deepEqual(e.embedInfo, { maxTokens: 64 });
    await e.load();
    assert.deepEqual(e.embedInfo, { dimensions: 32, maxTokens: 64 });
    const enc = await referenceEncoder();
    assert.deepEqual(new BGEM3Embedding({ encoder: enc }).embedInfo, { dimensions: 32, maxTokens: 8192 });
  });

  test('vectors are core dense vectors (CLS, normalised), number for number', async () => {
    const e = new BGEM3Embedding({ model: FIXTURE });
    const ref = await (await referenceEncoder()).encode(texts, { dense: true });
    const got = await e.getTextEmbeddings(texts);
    assert.equal(got.length, texts.length);
    got.forEach((v, i) => assert.deepEqual(v, Array.from(ref[i]!.dense!)));
    assert.deepEqual(await e.getTextEmbedding(texts[3]!), Array.from(ref[3]!.dense!));
    assert.deepEqual(await e.getQueryEmbedding({ type: 'text', text: texts[5]! }), Array.from(ref[5]!.dense!));
    const norm = Math.hypot(...got[0]!);
    assert.ok(Math.abs(norm - 1) < 1e-5, `unit norm, got ${norm}`);
  });

  test('maxLength truncates like core', async () => {
    const long = texts.join(' ');
    const e = new BGEM3Embedding({ model: FIXTURE, maxLength: 8 });
    const [ref] = await (await referenceEncoder()).encode([long], { dense: true, maxLength: 8 });
    assert.equal(ref!.truncated, true);
    assert.deepEqual(await e.getTextEmbedding(long), Array.from(ref!.dense!));
  });

  test('batches: one encode call per getTextEmbeddings batch, also through the node transform', async () => {
    const spy = new SpyEncoder(await referenceEncoder());
    const e = new BGEM3Embedding({ encoder: spy, embedBatchSize: 5 });
    await e.getTextEmbeddings(texts);
    assert.equal(spy.calls.length, 1);
    assert.deepEqual(spy.calls[0]!.texts, texts);
    spy.calls = [];
    // VectorStoreIndex calls the instance as a function on nodes: batches of embedBatchSize.
    const nodes = texts.map((text) => new TextNode({ text }));
    await e(nodes);
    assert.deepEqual(
      spy.calls.map((c) => c.texts.length),
      [5, 5, 2],
    );
    assert.ok(nodes.every((n) => Array.isArray(n.embedding) && n.embedding.length === 32));
    assert.deepEqual(await e.getTextEmbeddings([]), []);
  });

  test('an empty batch does not load the model', async () => {
    const missing = missingModelPath();
    cleanups.push(missing.cleanup);
    const e = new BGEM3Embedding({ model: missing.path });
    assert.deepEqual(await e.getTextEmbeddings([]), []);
  });

  test('lazy single load: concurrent first calls share one encoder; a failed load is retried', async () => {
    const missing = missingModelPath();
    cleanups.push(missing.cleanup);
    const e = new BGEM3Embedding({ model: missing.path });
    await assert.rejects(e.getTextEmbedding('x'), (err: unknown) => err instanceof M3Error && err.code === 'MODEL_NOT_FOUND');
    missing.create();
    const [a, b, c] = await Promise.all([e.load(), e.load(), e.getTextEmbedding('x').then(() => e.load())]);
    assert.equal(a, b);
    assert.equal(a, c);
    assert.equal(a, await M3Encoder.shared(missing.path), 'the process-wide shared encoder');
    assert.equal((a as M3Encoder).stats.textsEncoded, 1);
  });

  test('a closed shared encoder is replaced on the next call', async () => {
    const fresh = freshModelPath();
    cleanups.push(fresh.cleanup);
    const e = new BGEM3Embedding({ model: fresh.path });
    const first = (await e.load()) as M3Encoder;
    await first.close();
    const v = await e.getTextEmbedding('hello');
    assert.equal(v.length, 32);
    assert.notEqual(await e.load(), first);
  });

  test('embeddings built for the same model share one encoder and one pass per text', async () => {
    const fresh = freshModelPath();
    cleanups.push(fresh.cleanup);
    const a = new BGEM3Embedding({ model: fresh.path });
    const b = new BGEM3Embedding({ model: fresh.path, embedBatchSize: 3 });
    await a.getTextEmbeddings(texts);
    await b.getTextEmbeddings(texts);
    await b.getTextEmbedding(texts[0]!);
    const enc = (await a.load()) as M3Encoder;
    assert.equal(enc, await b.load());
    assert.equal(enc.stats.textsEncoded, texts.length);
  });

  test('encoderOptions select a separate shared encoder (same options share it)', async () => {
    const fresh = freshModelPath();
    cleanups.push(fresh.cleanup);
    const a = await new BGEM3Embedding({ model: fresh.path, encoderOptions: { batchSize: 2 } }).load();
    const b = await new BGEM3Embedding({ model: fresh.path, encoderOptions: { batchSize: 2 } }).load();
    const c = await new BGEM3Embedding({ model: fresh.path }).load();
    assert.equal(a, b);
    assert.notEqual(a, c);
    assert.equal(a, await M3Encoder.shared(fresh.path, { batchSize: 2 }));
  });

  test('invalid options fail fast with INVALID_ARGUMENT', () => {
    const bad = (o: object) => assert.throws(() => new BGEM3Embedding(o as never), (err: unknown) => err instanceof M3Error && err.code === 'INVALID_ARGUMENT');
    bad({ model: '' });
    bad({ maxLength: 1 });
    bad({ embedBatchSize: 0 });
    bad({ encoder: {} });
    bad({ encoderOptions: 3 });
  });
});
