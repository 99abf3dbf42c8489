import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { M3Encoder } from '@bgem3/core';
import { BGEM3ColbertReranker, BGEM3Embeddings, BGEM3EnsembleRetriever, BGEM3SparseRetriever } from '../src/index.ts';
import { CORPUS, FIXTURE, corpusDocs } from './helpers.ts';

describe('one forward pass per text across classes', () => {
  const opened: M3Encoder[] = [];
  after(async () => {
    for (const e of opened) await e.close();
  });

  test('fromDocuments encodes each document once; a query is encoded once for all stages', async () => {
    const encoder = await M3Encoder.load(FIXTURE);
    opened.push(encoder);
    const retriever = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder, batchSize: 5 });
    assert.equal(encoder.stats.textsEncoded, CORPUS.length, 'every document encoded exactly once');
    const passes = encoder.stats.forwardPasses;
    await retriever.invoke('Which river is the longest?');
    assert.equal(encoder.stats.textsEncoded, CORPUS.length + 1, 'only the query was encoded at search time');
    assert.equal(encoder.stats.forwardPasses, passes + 1, 'one forward pass for the query (dense, sparse, ColBERT and both retrievers)');
    await retriever.invoke('Which river is the longest?');
    assert.equal(encoder.stats.textsEncoded, CORPUS.length + 1);
    assert.equal(encoder.stats.forwardPasses, passes + 1);
  });

  test('embeddings, sparse retriever and reranker given only the model share one encoder and its cache', async () => {
    // encoderOptions make this test's shared encoder distinct from any other in the process
    const params = { model: FIXTURE, encoderOptions: { intraOpNumThreads: 1, batchSize: 7 } };
    const texts = CORPUS.map((c) => c.text);
    const embeddings = new BGEM3Embeddings(params);
    await embeddings.embedDocuments(texts);
    const shared = await M3Encoder.shared(FIXTURE, params.encoderOptions);
    opened.push(shared);
    assert.equal(shared.stats.textsEncoded, texts.length);

    const sparse = await BGEM3SparseRetriever.fromDocuments(corpusDocs(), params);
    assert.equal(shared.stats.textsEncoded, texts.length, 'the sparse build encoded nothing: every text was cached');

    await sparse.invoke('Москва');
    await embeddings.embedQuery('Москва');
    await new BGEM3ColbertReranker(params).compressDocuments(corpusDocs(), 'Москва');
    assert.equal(shared.stats.textsEncoded, texts.length + 1, 'the query once for all three classes');
  });

  test('classes with different maxLength do not share encodings (the cache is keyed by it)', async () => {
    const encoder = await M3Encoder.load(FIXTURE);
    opened.push(encoder);
    await new BGEM3Embeddings({ encoder }).embedDocuments(['some text']);
    await new BGEM3Embeddings({ encoder, maxLength: 16 }).embedDocuments(['some text']);
    assert.equal(encoder.stats.textsEncoded, 2);
  });
});
