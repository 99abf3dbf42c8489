/**
 * End to end through LlamaIndex.TS's own engines with the fixture model and a recording LLM:
 * VectorStoreIndex over a multilingual corpus, `asQueryEngine`, `RetrieverQueryEngine`,
 * `ContextChatEngine` (plain and streaming), with the ensemble, sparse and ColBERT classes.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { M3Encoder } from '@bgem3/core';
import { ContextChatEngine, EngineResponse, MetadataMode, RetrieverQueryEngine, Settings, VectorStoreIndex, type NodeWithScore } from 'llamaindex';
import { BGEM3ColbertReranker, BGEM3Embedding, BGEM3EnsembleRetriever, BGEM3SparseRetriever, type BGEM3EnsembleScores } from '../src/index.ts';
import { FIXTURE, PASSAGES, RecordingLLM, corpusDocuments } from './helpers.ts';

const QUERIES: Record<string, string> = {
  en: 'What does BGE-M3 produce from one forward pass?',
  zh: '中国的首都是哪里？',
  ja: '日本の首都はどこですか？',
  ar: 'ما هي عاصمة مصر؟',
  ru: 'Какой город является столицей России?',
};

function checkSources(sources: NodeWithScore[] | undefined, max: number): NodeWithScore[] {
  assert.ok(Array.isArray(sources) && sources.length > 0, 'source nodes present');
  assert.ok(sources.length <= max);
  const ids = sources.map((n) => n.node.id_);
  assert.equal(new Set(ids).size, ids.length, 'ids deduplicated');
  for (const n of sources) {
    assert.equal(typeof n.score, 'number');
    assert.ok(Number.isFinite(n.score));
    assert.ok(PASSAGES.some((p) => p.text === n.node.getContent(MetadataMode.NONE)), 'a corpus chunk, not a whole source document');
  }
  for (let i = 1; i < sources.length; i++) assert.ok(sources[i - 1]!.score! >= sources[i]!.score!, 'sorted by score');
  return sources;
}

describe('LlamaIndex.TS engines over a multilingual corpus', () => {
  const llm = new RecordingLLM('mock answer');
  let index: VectorStoreIndex;
  let sparse: BGEM3SparseRetriever;
  let ensemble: BGEM3EnsembleRetriever;
  let reranker: BGEM3ColbertReranker;

  before(async () => {
    Settings.embedModel = new BGEM3Embedding({ model: FIXTURE });
    Settings.llm = llm;
    index = await VectorStoreIndex.fromDocuments(corpusDocuments());
    sparse = new BGEM3SparseRetriever({ model: FIXTURE, docStore: index.docStore, topK: 5 });
    ensemble = new BGEM3EnsembleRetriever({ model: FIXTURE, retrievers: [index.asRetriever({ similarityTopK: 5 }), sparse], topK: 4 });
    reranker = new BGEM3ColbertReranker({ model: FIXTURE, topN: 3 });
  });

  test('index.asQueryEngine({ retriever: ensemble, nodePostprocessors: [reranker] })', async () => {
    const engine = index.asQueryEngine({ retriever: ensemble, nodePostprocessors: [reranker] });
    for (const [lang, query] of Object.entries(QUERIES)) {
      llm.chats = [];
      const response = await engine.query({ query });
      assert.ok(response instanceof EngineResponse);
      assert.equal(response.toString(), 'mock answer');
      const sources = checkSources(response.sourceNodes, 3);
      for (const n of sources) {
        assert.ok(n.score! > 0 && n.score! <= 1, `${lang}: reranker score in (0, 1]`);
        const scores = n.node.metadata.bgem3_scores as BGEM3EnsembleScores;
        assert.equal(typeof scores.colbert, 'number', 'ensemble scores recorded');
        assert.ok(llm.transcript.includes(n.node.getContent(MetadataMode.NONE)), 'the LLM saw the retrieved text');
      }
      assert.ok(!llm.transcript.includes('bgem3_scores'), 'score metadata stays out of prompts');
      assert.ok(llm.transcript.includes(query));
    }
  });

  test('new RetrieverQueryEngine(sparse, undefined, [reranker]) and a streaming query', async () => {
    const engine = new RetrieverQueryEngine(sparse, undefined, [reranker]);
    const response = await engine.query({ query: QUERIES.zh! });
    checkSources(response.sourceNodes, 3);
    const stream = await index.asQueryEngine({ retriever: sparse }).query({ query: QUERIES.ru!, stream: true });
    let text = '';
    let last: EngineResponse | undefined;
    for await (const chunk of stream) {
      text += chunk.delta;
      last = chunk;
    }
    assert.equal(text.trim(), 'mock answer');
    checkSources(last?.sourceNodes, 5);
  });

  test('ContextChatEngine with the ensemble retriever and the reranker, plain and streaming', async () => {
    const chat = new ContextChatEngine({ retriever: ensemble, nodePostprocessors: [reranker], chatModel: llm });
    llm.chats = [];
    const first = await chat.chat({ message: QUERIES.ja! });
    assert.equal(first.message.content, 'mock answer');
    for (const n of checkSources(first.sourceNodes, 3)) assert.ok(llm.transcript.includes(n.node.getContent(MetadataMode.NONE)));
    assert.ok(!llm.transcript.includes('bgem3_scores'));
    const stream = await chat.chat({ message: QUERIES.ar!, stream: true });
    let text = '';
    let sources: NodeWithScore[] | undefined;
    for await (const chunk of stream) {
      text += chunk.delta;
      sources = chunk.sourceNodes ?? sources;
    }
    assert.equal(text.trim(), 'mock answer');
    checkSources(sources, 3);
    assert.equal((await chat.chatHistory).length, 4, 'two turns remembered');
    const viaIndex = await index.asChatEngine({ retriever: ensemble }).chat({ message: QUERIES.en! });
    checkSources(viaIndex.sourceNodes, 4);
  });

  test('the whole pipeline ran each text through the model once', async () => {
    const enc = await M3Encoder.shared(FIXTURE);
    const distinctQueries = new Set(Object.values(QUERIES)).size;
    assert.equal(enc.stats.textsEncoded, PASSAGES.length + distinctQueries);
  });
});
