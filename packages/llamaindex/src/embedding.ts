import { type M3Store, type TextEncoder3 } from '@bgem3/core';
import { EncoderSource, attachSource, checkOptions, positiveInt, setBrand } from '@bgem3/core/adapter';
import { BaseEmbedding, MetadataMode, type BaseNode } from 'llamaindex';
import { MODEL_KEYS, metadataModeOf, storeBase, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3Embedding}. */
export interface BGEM3EmbeddingOptions extends BGEM3ModelOptions {
  /** Texts per `getTextEmbeddings` call when LlamaIndex embeds nodes (default 32). */
  embedBatchSize?: number;
  /** A store whose model to use (when no model is given). */
  store?: M3Store;
  /**
   * Which node text is embedded when LlamaIndex embeds nodes (default `MetadataMode.EMBED`, as
   * every LlamaIndex embedding). {@link BGEM3VectorStore} makes its embedding with its own mode, so
   * the node's pass is shared with the store's sparse and ColBERT outputs.
   */
  metadataMode?: MetadataMode;
}

const KEYS = [...MODEL_KEYS, 'embedBatchSize', 'store', 'metadataMode'];

/**
 * BGE-M3 dense embeddings for LlamaIndex.TS (`Settings.embedModel = new BGEM3Embedding()`): the
 * L2-normalised CLS vector (CLS pooling, as BGE-M3 specifies), no query instruction, batched.
 *
 * The model loads lazily, once per process for every class of this package and of
 * @bgem3/langchain that uses it (ESM or CJS). Classes of this package given no model take this
 * embedding's model when it is `Settings.embedModel`.
 */
export class BGEM3Embedding extends BaseEmbedding {
  static {
    setBrand(BGEM3Embedding.prototype, 'llamaindex.BGEM3Embedding');
  }

  /** Which node text is embedded. */
  readonly metadataMode: MetadataMode;
  private readonly source: EncoderSource;

  constructor(options: BGEM3EmbeddingOptions = {}) {
    let self: BGEM3Embedding | undefined;
    super(async (nodes: BaseNode[], o?: Record<string, unknown>) => {
      const me = self as BGEM3Embedding;
      const texts = nodes.map((node) => node.getContent(me.metadataMode));
      const embeddings = await me.getTextEmbeddingsBatch(texts, o);
      nodes.forEach((node, i) => {
        node.embedding = embeddings[i];
      });
      return nodes;
    });
    self = this;
    const o = checkOptions(options, KEYS, 'BGEM3Embedding');
    const { embedBatchSize: _b, store, metadataMode: _m, ...model } = o;
    this.source = new EncoderSource(model, store ? storeBase(store) : undefined);
    attachSource(this, this.source);
    this.metadataMode = metadataModeOf(o.metadataMode, MetadataMode.EMBED);
    this.embedBatchSize = positiveInt(o.embedBatchSize, 'embedBatchSize', 32);
    const known = this.source.givenEncoder?.dim ?? store?.dim ?? (this.source.model === 'BAAI/bge-m3' ? 1024 : undefined);
    this.embedInfo = { ...(known !== undefined ? { dimensions: known } : {}), maxTokens: this.source.maxLength ?? 8192 };
  }

  /** The model, as far as known before loading. */
  get model(): string {
    return this.source.model;
  }

  /** Loads the model now (it otherwise loads on first use); `embedInfo` then holds its real values. */
  async load(): Promise<TextEncoder3> {
    const encoder = await this.source.get();
    this.embedInfo = { dimensions: encoder.dim, maxTokens: this.source.maxLength ?? encoder.maxLength ?? 8192 };
    return encoder;
  }

  /** The dense embedding of one text. */
  async getTextEmbedding(text: string): Promise<number[]> {
    const [vector] = await this.getTextEmbeddings([text]);
    return vector as number[];
  }

  /** Dense embeddings of many texts from one encode call (a class field: BaseEmbedding defines it as one). */
  override getTextEmbeddings = async (texts: string[]): Promise<number[][]> => {
    if (texts.length === 0) return [];
    await this.load();
    const results = await this.source.encode(texts, { dense: true });
    return results.map((r) => Array.from(r.dense as Float32Array));
  };
}
