/** Test helpers: the fixture model, a multilingual corpus, a recording LLM and encoder spies. */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { M3Encoder, type EncodeOptions, type EncodeResult, type TextEncoder3 } from '@bgem3/core';
import {
  BaseLLM,
  BaseVectorStore,
  type VectorStoreQuery,
  type VectorStoreQueryResult,
  Document,
  MetadataMode,
  TextNode,
  extractText,
  type BaseNode,
  type ChatMessage,
  type ChatResponse,
  type ChatResponseChunk,
  type LLMChatParamsNonStreaming,
  type LLMChatParamsStreaming,
  type LLMMetadata,
} from 'llamaindex';

/** BGE-M3's architecture, hidden size 32, random weights. */
export const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/tiny-m3-A', import.meta.url));

/**
 * A fresh path to the fixture (a symlink in a temp dir): `M3Encoder.shared` keys encoders by the
 * model string, so every such path gets its own shared encoder, load and cache.
 */
export function freshModelPath(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-li-'));
  const path = join(dir, 'model');
  symlinkSync(FIXTURE, path);
  return { path, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A fresh directory path that does not exist yet (for failed-load tests). */
export function missingModelPath(): { path: string; create: () => void; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-li-missing-'));
  const path = join(dir, 'model');
  return { path, create: () => symlinkSync(FIXTURE, path), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A reference encoder with no cache: what the adapters must agree with. */
let reference: Promise<M3Encoder> | undefined;
export function referenceEncoder(): Promise<M3Encoder> {
  reference ??= M3Encoder.load(FIXTURE, { cache: false });
  return reference;
}

/** Wraps an encoder and records every encode call (texts and options). */
export class SpyEncoder implements TextEncoder3 {
  calls: { texts: string[]; options: EncodeOptions | undefined }[] = [];
  constructor(
    readonly inner: TextEncoder3,
    readonly modelId: string = inner.modelId,
  ) {}
  get dim(): number {
    return this.inner.dim;
  }
  get vocabSize(): number {
    return this.inner.vocabSize;
  }
  encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.calls.push({ texts: [...texts], options });
    return this.inner.encode(texts, options);
  }
}

/** Twelve short passages in English, Chinese, Japanese, Arabic and Russian. */
export const PASSAGES: { text: string; lang: string }[] = [
  { lang: 'en', text: 'BGE-M3 produces dense, sparse and multi-vector representations from a single forward pass.' },
  { lang: 'en', text: 'Reciprocal rank fusion combines ranked lists by summing one over the constant plus the rank.' },
  { lang: 'en', text: 'The cat sat on the warm mat while the rain fell outside the kitchen window.' },
  { lang: 'zh', text: '北京是中华人民共和国的首都，也是全国的政治和文化中心。' },
  { lang: 'zh', text: '稀疏检索根据查询和文档共享的词语及其权重来计算相关性。' },
  { lang: 'ja', text: '東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。' },
  { lang: 'ja', text: '猫は窓辺で日向ぼっこをするのが大好きです。' },
  { lang: 'ar', text: 'القاهرة هي عاصمة مصر وأكبر مدنها، وتقع على ضفاف نهر النيل.' },
  { lang: 'ar', text: 'تعلم الآلة فرع من الذكاء الاصطناعي يهتم ببناء أنظمة تتعلم من البيانات.' },
  { lang: 'ru', text: 'Москва — столица России и крупнейший город страны на реке Москве.' },
  { lang: 'ru', text: 'Кошка спала на тёплом подоконнике, пока за окном шёл дождь.' },
  { lang: 'en', text: 'ColBERT scores a passage by matching every query token with its most similar passage token.' },
];

/** The corpus as Documents (metadata `lang`, visible to embeddings and LLMs). */
export function corpusDocuments(): Document[] {
  return PASSAGES.map((p, i) => new Document({ id_: `doc-${i}`, text: p.text, metadata: { lang: p.lang } }));
}

/** The corpus as TextNodes with fixed ids. */
export function corpusNodes(): TextNode[] {
  return PASSAGES.map((p, i) => new TextNode({ id_: `node-${i}`, text: p.text, metadata: { lang: p.lang } }));
}

/** The text BGEM3Embedding / the sparse retriever encode for a node. */
export function embedText(node: BaseNode): string {
  return node.getContent(MetadataMode.EMBED);
}

/**
 * A minimal LLM (LlamaIndex's LLM interface via BaseLLM, whose `complete` calls `chat`) that records
 * what it was sent and answers with a fixed text, streaming or not.
 */
export class RecordingLLM extends BaseLLM {
  metadata: LLMMetadata = {
    model: 'recording-llm',
    temperature: 0,
    topP: 1,
    contextWindow: 32768,
    tokenizer: undefined,
    structuredOutput: false,
  };
  chats: ChatMessage[][] = [];
  constructor(readonly answer = 'mock answer') {
    super();
  }

  chat(params: LLMChatParamsStreaming): Promise<AsyncIterable<ChatResponseChunk>>;
  chat(params: LLMChatParamsNonStreaming): Promise<ChatResponse>;
  async chat(params: LLMChatParamsStreaming | LLMChatParamsNonStreaming): Promise<AsyncIterable<ChatResponseChunk> | ChatResponse> {
    this.chats.push(params.messages);
    const answer = this.answer;
    if (params.stream) {
      return (async function* () {
        for (const word of answer.split(' ')) yield { delta: `${word} `, raw: null };
      })();
    }
    return { message: { role: 'assistant', content: answer }, raw: null };
  }

  /** Everything the LLM was sent, as text. */
  get transcript(): string {
    return this.chats.flat().map((m) => extractText(m.content)).join('\n');
  }
}

/**
 * A vector store that keeps the node text itself (`storesText = true`, like Qdrant, Postgres,
 * Chroma…): VectorStoreIndex then leaves the docStore without the text nodes.
 */
export class TextStoringVectorStore extends BaseVectorStore {
  storesText = true;
  private readonly rows = new Map<string, BaseNode>();
  constructor() {
    super();
  }
  client(): unknown {
    return this.rows;
  }
  async add(nodes: BaseNode[]): Promise<string[]> {
    for (const n of nodes) this.rows.set(n.id_, n.clone());
    return nodes.map((n) => n.id_);
  }
  async delete(refDocId: string): Promise<void> {
    for (const [id, n] of this.rows) if (n.sourceNode?.nodeId === refDocId) this.rows.delete(id);
  }
  async query(query: VectorStoreQuery): Promise<VectorStoreQueryResult> {
    const q = query.queryEmbedding as number[];
    const scored = [...this.rows.values()].map((n) => ({ n, s: (n.embedding as number[]).reduce((acc, x, i) => acc + x * (q[i] as number), 0) }));
    scored.sort((a, b) => b.s - a.s);
    const top = scored.slice(0, query.similarityTopK);
    return { nodes: top.map((t) => t.n.clone()), similarities: top.map((t) => t.s), ids: top.map((t) => t.n.id_) };
  }
}
