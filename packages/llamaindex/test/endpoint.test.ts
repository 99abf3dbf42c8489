/**
 * `endpoint`: the LlamaIndex classes encode through a `bgem3 serve` server (core's createServer, a
 * real HTTP server on 127.0.0.1), with the same results as in-process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { createServer, type M3Server } from '@bgem3/core/server';
import { VectorStoreQueryMode } from 'llamaindex';
import { BGEM3Embedding, BGEM3VectorStore } from '../src/index.ts';
import { FIXTURE, corpusNodes } from './helpers.ts';

describe('endpoint (LlamaIndex)', () => {
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

  test('a vector store filled and queried through the server equals one filled in-process', async () => {
    const remoteEmbedding = new BGEM3Embedding({ endpoint: url });
    assert.deepEqual(await remoteEmbedding.getTextEmbedding('x'), await new BGEM3Embedding({ encoder }).getTextEmbedding('x'));
    const remote = new BGEM3VectorStore({ store: await M3Index.create({ encoder: await remoteEmbedding.load() }) });
    const local = new BGEM3VectorStore({ store: await M3Index.create({ encoder }) });
    await remote.add(corpusNodes());
    await local.add(corpusNodes());
    for (const mode of [VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID]) {
      const a = await remote.query({ queryStr: 'столица', mode, similarityTopK: 4 });
      const b = await local.query({ queryStr: 'столица', mode, similarityTopK: 4 });
      assert.deepEqual(a.ids, b.ids, mode);
      a.similarities.forEach((s, i) => assert.ok(Math.abs(s - b.similarities[i]!) < 1e-6));
    }
  });
});
