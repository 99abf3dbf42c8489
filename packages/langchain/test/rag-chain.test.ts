import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { M3Encoder } from '@bgem3/core';
import type { DocumentInterface } from '@langchain/core/documents';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda, RunnablePassthrough, RunnableSequence } from '@langchain/core/runnables';
import { FakeChatModel, FakeListChatModel } from '@langchain/core/utils/testing';
import { ContextualCompressionRetriever } from '@langchain/classic/retrievers/contextual_compression';
import { RecursiveCharacterTextSplitter } from '@langchain/textsplitters';
import { BGEM3ColbertReranker, BGEM3EnsembleRetriever, BGEM3SparseRetriever } from '../src/index.ts';
import { CORPUS, FIXTURE, corpusDocs } from './helpers.ts';

const formatDocs = (docs: DocumentInterface[]) => docs.map((d) => `[${d.id}] ${d.pageContent}`).join('\n');

const prompt = ChatPromptTemplate.fromMessages([
  ['system', 'Answer from the context only.\n\nContext:\n{context}'],
  ['human', '{question}'],
]);

describe('LCEL RAG chain over a multilingual corpus', () => {
  let encoder: M3Encoder;
  let retriever: BGEM3EnsembleRetriever;

  before(async () => {
    encoder = await M3Encoder.load(FIXTURE);
    retriever = await BGEM3EnsembleRetriever.fromDocuments(corpusDocs(), { encoder, k: 3 });
  });
  after(async () => {
    await encoder.close();
  });

  test('retriever → format → prompt → chat model → parser: the retrieved context reaches the prompt', async () => {
    const chain = RunnableSequence.from([
      { context: retriever.pipe(RunnableLambda.from(formatDocs)), question: new RunnablePassthrough() },
      prompt,
      new FakeChatModel({}), // echoes its prompt
      new StringOutputParser(),
    ]);
    for (const c of CORPUS) {
      // a passage's own text (any language) must come back in its top 3 and reach the prompt
      const answer = await chain.invoke(c.text);
      const retrieved = await retriever.invoke(c.text);
      assert.ok(retrieved.some((d) => d.id === c.id), `${c.id} not retrieved for its own text`);
      assert.match(answer, /Answer from the context only/);
      for (const d of retrieved) assert.ok(answer.includes(`[${d.id}] ${d.pageContent}`), `${c.id}: context missing ${d.id}`);
      assert.ok(answer.endsWith(c.text));
    }
  });

  test('the answer plumbing returns the model output; batch works through the chain', async () => {
    const chain = RunnableSequence.from([
      { context: retriever.pipe(RunnableLambda.from(formatDocs)), question: new RunnablePassthrough() },
      prompt,
      new FakeListChatModel({ responses: ['Tokyo.', 'Beijing.'] }),
      new StringOutputParser(),
    ]);
    assert.equal(await chain.invoke('日本の首都はどこですか？'), 'Tokyo.');
    assert.equal(await chain.invoke('中国的首都是哪里？'), 'Beijing.');
    const echo = RunnableSequence.from([{ context: retriever.pipe(RunnableLambda.from(formatDocs)), question: new RunnablePassthrough() }, prompt, new FakeChatModel({}), new StringOutputParser()]);
    const answers = await echo.batch(['Москва', 'القاهرة']);
    assert.equal(answers.length, 2);
    assert.ok(answers[0].endsWith('Москва') && answers[1].endsWith('القاهرة'));
  });

  test('split documents → sparse retriever + ColBERT reranker (contextual compression) in a chain', async () => {
    const splitter = new RecursiveCharacterTextSplitter({ chunkSize: 40, chunkOverlap: 0 });
    const chunks = await splitter.splitDocuments(corpusDocs());
    assert.ok(chunks.length > CORPUS.length);
    const sparse = await BGEM3SparseRetriever.fromDocuments(chunks, { encoder, k: 8 });
    const reranked = new ContextualCompressionRetriever({ baseCompressor: new BGEM3ColbertReranker({ encoder, topN: 2 }), baseRetriever: sparse });
    const chain = RunnableSequence.from([
      { context: reranked.pipe(RunnableLambda.from(formatDocs)), question: new RunnablePassthrough() },
      prompt,
      new FakeChatModel({}),
      new StringOutputParser(),
    ]);
    const question = 'Волга — самая длинная река';
    const docs = await reranked.invoke(question);
    assert.ok(docs.length > 0 && docs.length <= 2);
    assert.ok(docs.every((d) => typeof d.metadata.relevanceScore === 'number' && typeof d.metadata.sparseScore === 'number'));
    const answer = await chain.invoke(question);
    for (const d of docs) assert.ok(answer.includes(d.pageContent));
  });
});
