/**
 * PgM3Store (on PGlite) as the store behind both framework adapters, through each framework's
 * own machinery: a LangChain LCEL RAG chain over BGEM3VectorStore's hybrid retriever, and
 * LlamaIndex's VectorStoreIndex.fromVectorStore with its hybrid retriever, query engine and
 * ContextChatEngine (fake LLMs: no network). Results equal the store's own search, and a query
 * encodes one text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EncodeOptions, EncodeResult, M3Encoder, TextEncoder3 } from '@bgem3/core';
import { BGEM3EnsembleRetriever as LcEnsemble, BGEM3VectorStore as LcVectorStore } from '@bgem3/langchain';
import { BGEM3VectorStore as LiVectorStore } from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda, RunnablePassthrough, RunnableSequence } from '@langchain/core/runnables';
import { FakeListChatModel } from '@langchain/core/utils/testing';
import { BaseLLM, ContextChatEngine, FilterOperator, Settings, TextNode, VectorStoreIndex, VectorStoreQueryMode, extractText, type ChatMessage, type ChatResponse, type LLMMetadata } from 'llamaindex';
import { PgM3Store, type OpenedPglite } from '../src/index.js';
import { CORPUS, QUERIES, loadEncoder, sharedPglite } from './helpers.js';

/** Counts the texts given to the encoder. */
class Counting implements TextEncoder3 {
  texts: string[] = [];
  constructor(private readonly inner: TextEncoder3) {}
  get modelId() {
    return this.inner.modelId;
  }
  get dim() {
    return this.inner.dim;
  }
  get vocabSize() {
    return this.inner.vocabSize;
  }
  encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.texts.push(...texts);
    return this.inner.encode(texts, options);
  }
}

/** A LlamaIndex LLM answering a fixed text and recording what it was sent. */
class RecordingLLM extends BaseLLM {
  metadata: LLMMetadata = { model: 'recording', temperature: 0, topP: 1, contextWindow: 32768, tokenizer: undefined, structuredOutput: false };
  sent: ChatMessage[][] = [];
  // biome-ignore lint: the overloads of BaseLLM.chat
  async chat(params: { messages: ChatMessage[]; stream?: boolean }): Promise<any> {
    this.sent.push(params.messages);
    if (params.stream) {
      return (async function* () {
        yield { delta: 'streamed answer', raw: null };
      })();
    }
    return { message: { role: 'assistant', content: 'the answer' }, raw: null } satisfies ChatResponse;
  }
  get transcript(): string {
    return this.sent.flat().map((m) => extractText(m.content)).join('\n');
  }
}

let encoder: M3Encoder;
let counting: Counting;
let pg: OpenedPglite;
let store: PgM3Store;

before(async () => {
  [encoder, pg] = await Promise.all([loadEncoder(), sharedPglite()]);
  counting = new Counting(encoder);
  store = await PgM3Store.connect({ client: pg.client, encoder: counting, table: 'adapter_docs' });
});
after(async () => {
  await pg.close();
});

describe('LangChain over PgM3Store', () => {
  let vs: LcVectorStore;
  before(async () => {
    vs = await LcVectorStore.fromDocuments(
      CORPUS.map((c) => new Document({ id: c.id, pageContent: c.text, metadata: c.metadata })),
      undefined,
      { store },
    );
  });

  it('the hybrid retriever equals store.search, with per-mode scores, and encodes the query only', async () => {
    for (const q of QUERIES) {
      counting.texts = [];
      const docs = await vs.asRetriever({ k: 5 }).invoke(q);
      assert.deepEqual(counting.texts, [q]);
      const want = await store.search(q, { k: 5 });
      assert.deepEqual(docs.map((d) => d.id), want.map((h) => h.id), q);
      docs.forEach((d, i) => {
        assert.ok(Math.abs(d.metadata.score - want[i]!.score) < 1e-6);
        assert.ok(Math.abs(d.metadata.colbertScore - want[i]!.scores.colbert) < 1e-6);
        assert.equal(d.metadata.lang, want[i]!.metadata.lang);
      });
    }
    const ja = await vs.asRetriever({ k: 10, mode: 'sparse', filter: { lang: 'ja' } }).invoke('日本');
    assert.ok(ja.length > 0 && ja.every((d) => d.metadata.lang === 'ja'), 'where filters run in SQL');
  });

  it('an LCEL RAG chain: retriever → prompt → chat model → string', async () => {
    const prompts: string[] = [];
    const chain = RunnableSequence.from([
      { context: vs.asRetriever({ k: 3 }).pipe(RunnableLambda.from((docs: Document[]) => docs.map((d) => d.pageContent).join('\n'))), question: new RunnablePassthrough() },
      ChatPromptTemplate.fromMessages([
        ['system', 'Context:\n{context}'],
        ['human', '{question}'],
      ]),
      RunnableLambda.from((p: { toString(): string }) => {
        prompts.push(p.toString());
        return p;
      }),
      new FakeListChatModel({ responses: ['Paris.'] }),
      new StringOutputParser(),
    ]);
    assert.equal(await chain.invoke(QUERIES[0]!), 'Paris.');
    for (const h of await store.search(QUERIES[0]!, { k: 3 })) assert.ok(prompts[0]!.includes(h.text));
  });

  it('the ensemble over the store is the store\'s pipeline', async () => {
    const hits = await new LcEnsemble({ store, k: 4 }).invoke(QUERIES[2]!);
    assert.deepEqual(hits.map((d) => d.id), (await store.search(QUERIES[2]!, { k: 4 })).map((h) => h.id));
  });
});

describe('LlamaIndex over PgM3Store', () => {
  const table = 'adapter_nodes';
  let lstore: PgM3Store;
  let vs: LiVectorStore;
  before(async () => {
    lstore = await PgM3Store.connect({ client: pg.client, encoder: counting, table });
    vs = new LiVectorStore({ store: lstore });
    await vs.add(CORPUS.map((c) => new TextNode({ id_: c.id, text: c.text, metadata: c.metadata })));
  });

  it('VectorStoreIndex.fromVectorStore: hybrid retriever, query engine and ContextChatEngine, one text encoded per query', async () => {
    const llm = new RecordingLLM();
    Settings.llm = llm;
    Settings.embedModel = vs.embedModel;
    const index = await VectorStoreIndex.fromVectorStore(vs);
    const retriever = index.asRetriever({ mode: VectorStoreQueryMode.HYBRID, similarityTopK: 4 });
    for (const q of QUERIES) {
      counting.texts = [];
      const nodes = await retriever.retrieve(q);
      assert.deepEqual([...new Set(counting.texts)], [q], 'only the query');
      const want = await lstore.search(q, { k: 4 });
      assert.deepEqual(nodes.map((n) => n.node.id_), want.map((h) => h.id), q);
    }
    const response = await index.asQueryEngine({ retriever }).query({ query: QUERIES[1]! });
    assert.equal(response.toString(), 'the answer');
    for (const h of await lstore.search(QUERIES[1]!, { k: 4 })) assert.ok(llm.transcript.includes(h.text));
    const chat = new ContextChatEngine({ retriever, chatModel: llm });
    assert.equal((await chat.chat({ message: QUERIES[3]! })).message.content, 'the answer');
    let streamed = '';
    for await (const c of await chat.chat({ message: QUERIES[4]!, stream: true })) streamed += c.delta;
    assert.equal(streamed, 'streamed answer');
  });

  it('MetadataFilters are translated to SQL', async () => {
    const r = await vs.query({
      queryStr: 'capital',
      mode: VectorStoreQueryMode.HYBRID,
      similarityTopK: 24,
      filters: { filters: [{ key: 'tags', value: ['de', 'fr'], operator: FilterOperator.ANY }, { key: 'n', value: 20, operator: FilterOperator.GTE }] },
    });
    const want = CORPUS.filter((c) => ['de', 'fr'].includes(c.metadata.lang as string) && (c.metadata.n as number) >= 20).map((c) => c.id).sort();
    assert.deepEqual([...r.ids].sort(), want);
  });
});
