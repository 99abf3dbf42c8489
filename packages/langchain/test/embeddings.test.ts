import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error, type EncodeOptions, type EncodeResult, type TextEncoder3 } from '@bgem3/core';
import { Embeddings } from '@langchain/core/embeddings';
import { MemoryVectorStore } from '@langchain/classic/vectorstores/memory';
import { BGEM3Embeddings } from '../src/index.ts';
import { CORPUS, FIXTURE, corpusDocs } from './helpers.ts';

/** Wraps an encoder, recording the texts of every encode call and the most calls in flight. */
class RecordingEncoder implements TextEncoder3 {
  calls: string[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  failNext = 0;
  constructor(private readonly inner: M3Encoder) {}
  get modelId() {
    return this.inner.modelId;
  }
  get dim() {
    return this.inner.dim;
  }
  get vocabSize() {
    return this.inner.vocabSize;
  }
  async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.calls.push([...texts]);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('transient failure');
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 2));
      return await this.inner.encode(texts, options);
    } finally {
      this.inFlight--;
    }
  }
}

describe('BGEM3Embeddings', () => {
  let encoder: M3Encoder;
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
  });
  after(async () => {
    await encoder.close();
  });

  test('is a LangChain Embeddings with the standard contract (number[] vectors of one length)', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    assert.ok(emb instanceof Embeddings);
    const q = await emb.embedQuery('foo');
    assert.ok(Array.isArray(q) && q.length > 0);
    assert.ok(q.every((x) => typeof x === 'number' && Number.isFinite(x)));
    const docs = await emb.embedDocuments(['foo', 'bar', 'baz']);
    assert.equal(docs.length, 3);
    for (const d of docs) {
      assert.ok(Array.isArray(d));
      assert.equal(d.length, q.length);
    }
    assert.equal(q.length, encoder.dim);
  });

  test('vectors equal core encode() dense output exactly, in input order', async () => {
    const emb = new BGEM3Embeddings({ encoder, batchSize: 5 });
    const texts = CORPUS.map((c) => c.text);
    const got = await emb.embedDocuments(texts);
    const ref = await encoder.encode(texts, { dense: true });
    got.forEach((v, i) => assert.deepEqual(v, Array.from(ref[i].dense!)));
    // a query is embedded exactly like a document (no instruction for M3)
    assert.deepEqual(await emb.embedQuery(texts[3]), got[3]);
  });

  test('embedDocuments of one text equals embedQuery; batch equals single', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    const texts = ['alpha', 'βήτα', '伽马'];
    const batch = await emb.embedDocuments(texts);
    for (let i = 0; i < texts.length; i++) {
      assert.deepEqual((await emb.embedDocuments([texts[i]]))[0], batch[i]);
      assert.deepEqual(await emb.embedQuery(texts[i]), batch[i]);
    }
  });

  test('empty array gives [] without loading the model', async () => {
    const emb = new BGEM3Embeddings({ model: join(tmpdir(), 'no-such-model-dir-bgem3') });
    assert.deepEqual(await emb.embedDocuments([]), []);
    assert.equal(emb.dimensions, undefined);
  });

  test('non-string input is a TypeError naming the index', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    await assert.rejects(emb.embedDocuments(['ok', 42 as unknown as string]), (e: Error) => e instanceof TypeError && /documents\[1\]/.test(e.message));
    await assert.rejects(emb.embedDocuments('text' as unknown as string[]), TypeError);
    await assert.rejects(emb.embedQuery(null as unknown as string), TypeError);
  });

  test('an empty string is a valid text', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    const v = await emb.embedQuery('');
    assert.equal(v.length, encoder.dim);
    assert.ok(v.every(Number.isFinite));
  });

  test('batchSize chunks what is sent to the encoder; chunks run one at a time by default', async () => {
    const rec = new RecordingEncoder(encoder);
    const emb = new BGEM3Embeddings({ encoder: rec, batchSize: 3 });
    const texts = CORPUS.slice(0, 10).map((c) => c.text);
    const got = await emb.embedDocuments(texts);
    assert.deepEqual(rec.calls.map((c) => c.length), [3, 3, 3, 1]);
    assert.deepEqual(rec.calls.flat(), texts);
    assert.equal(rec.maxInFlight, 1, 'maxConcurrency defaults to 1 for local inference');
    const ref = await encoder.encode(texts);
    got.forEach((v, i) => assert.deepEqual(v, Array.from(ref[i].dense!)));

    const rec2 = new RecordingEncoder(encoder);
    await new BGEM3Embeddings({ encoder: rec2, batchSize: 2, maxConcurrency: 3 }).embedDocuments(texts);
    assert.ok(rec2.maxInFlight > 1, 'maxConcurrency is honoured when raised');
  });

  test('local failures are not retried by default (maxRetries 0)', async () => {
    const rec = new RecordingEncoder(encoder);
    rec.failNext = 1;
    const emb = new BGEM3Embeddings({ encoder: rec });
    await assert.rejects(emb.embedQuery('x'), /transient failure/);
    assert.equal(rec.calls.length, 1);
    assert.equal((await emb.embedQuery('x')).length, encoder.dim);
  });

  test('invalid options are clear errors', () => {
    assert.throws(() => new BGEM3Embeddings({ encoder, batchSize: 0 }), (e: Error) => e instanceof M3Error && /batchSize/.test(e.message));
    assert.throws(() => new BGEM3Embeddings({ encoder, batchSize: 2.5 }), /batchSize/);
    assert.throws(() => new BGEM3Embeddings({ model: '' }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new BGEM3Embeddings({ encoder: {} as TextEncoder3 }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new BGEM3Embeddings({ encoder, modle: 'x' } as never), /unknown option "modle"/);
    assert.throws(() => new BGEM3Embeddings({ encoder, dtype: 'q8' }), /dtype has no effect with encoder/);
    assert.throws(() => new BGEM3Embeddings({ model: FIXTURE, encoder }), /not model and encoder/);
  });

  test('the model loads lazily behind one promise, and a failed load is retried', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bgem3-lc-'));
    const modelDir = join(dir, 'model');
    try {
      const emb = new BGEM3Embeddings({ model: modelDir });
      assert.equal(emb.dimensions, undefined);
      await assert.rejects(emb.embedQuery('x'), (e: Error) => e instanceof M3Error && e.code === 'MODEL_NOT_FOUND');
      await symlink(FIXTURE, modelDir, 'dir');
      const [a, b] = await Promise.all([emb.embedQuery('x'), emb.getDimensions()]);
      assert.equal(a.length, 32);
      assert.equal(b, 32);
      assert.equal(emb.dimensions, 32);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('works as the embeddings of a MemoryVectorStore (a text finds itself first)', async () => {
    const emb = new BGEM3Embeddings({ encoder });
    const store = await MemoryVectorStore.fromDocuments(corpusDocs(), emb);
    for (const c of CORPUS) {
      const [top] = await store.similaritySearch(c.text, 1);
      assert.equal(top.id, c.id);
    }
  });
});
