/**
 * `endpoint`: the classes encode through a `bgem3 serve` server (core's createServer, a real HTTP
 * server on 127.0.0.1) instead of loading the model, with the same results as in-process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { sharedEncoderCount } from '@bgem3/core/adapter';
import { createServer, type M3Server } from '@bgem3/core/server';
import { BGEM3ColbertReranker, BGEM3Embeddings, BGEM3EnsembleRetriever, BGEM3VectorStore } from '../src/index.ts';
import { FIXTURE, corpusDocs } from './helpers.ts';

describe('endpoint: a bgem3 serve server instead of a model in this process', () => {
  let encoder: M3Encoder;
  let server: M3Server;
  let url: string;
  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    server = await createServer({ encoder, port: 0, modelCheck: false });
    url = await server.listen();
  });
  after(async () => {
    await server.close();
    await encoder.close();
  });

  test('embeddings, a store filled and queried through the server, and the reranker equal in-process results', async () => {
    const before = sharedEncoderCount();
    const remote = new BGEM3Embeddings({ endpoint: url });
    const local = new BGEM3Embeddings({ encoder });
    assert.deepEqual(await remote.embedQuery('hello server'), await local.embedQuery('hello server'));
    const vs = await BGEM3VectorStore.fromDocuments(corpusDocs(), remote);
    assert.equal(vs.store.modelId, encoder.modelId, 'the server reports the model id');
    const localStore = await BGEM3VectorStore.fromDocuments(corpusDocs(), local, { store: await M3Index.create({ encoder }) });
    const q = 'Which river is the longest?';
    const a = await vs.asRetriever({ k: 4 }).invoke(q);
    const b = await localStore.asRetriever({ k: 4 }).invoke(q);
    assert.deepEqual(a.map((d) => d.id), b.map((d) => d.id));
    a.forEach((d, i) => assert.ok(Math.abs(d.metadata.score - b[i]!.metadata.score) < 1e-6));
    const ens = await new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever({ k: 8, mode: 'dense' })], k: 3 }).invoke(q);
    assert.equal(ens.length, 3);
    const r1 = await new BGEM3ColbertReranker({ endpoint: url }).rerank(['a text', 'another'], q);
    const r2 = await new BGEM3ColbertReranker({ encoder }).rerank(['a text', 'another'], q);
    assert.deepEqual(r1, r2);
    assert.equal(sharedEncoderCount(), before, 'no model loaded in this process');
  });

  test('a bad endpoint is a clear error', async () => {
    assert.throws(() => new BGEM3Embeddings({ endpoint: 'localhost:8080' }), /endpoint must be an http\(s\) URL/);
    assert.throws(() => new BGEM3Embeddings({ endpoint: url, model: FIXTURE }), /not model and endpoint/);
    await assert.rejects(new BGEM3Embeddings({ endpoint: 'http://127.0.0.1:9' }).embedQuery('x'), (e: Error & { code?: string }) => e.code === 'REMOTE_FAILED');
  });
});
