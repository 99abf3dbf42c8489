import { DEFAULT_MODEL, type TextEncoder3 } from '@bgem3/core';
import { BaseEmbedding } from 'llamaindex';
import { EncoderSource, positiveInt, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3Embedding}. */
export interface BGEM3EmbeddingOptions extends BGEM3ModelOptions {
  /**
   * Texts per `getTextEmbeddings` call when LlamaIndex embeds nodes (default 32). The encoder
   * still batches by length inside each call; larger values give it more texts to sort.
   */
  embedBatchSize?: number;
}

const BGE_M3_DIM = 1024;

/**
 * BGE-M3 dense embeddings for LlamaIndex.TS (`Settings.embedModel = new BGEM3Embedding()`).
 *
 * - The vector is core's dense output: the L2-normalised CLS vector (CLS pooling, as BGE-M3
 *   specifies; not the mean pooling of `HuggingFaceEmbedding`), number for number.
 * - No query instruction: BGE-M3 embeds queries and passages the same way.
 * - Batched: `getTextEmbeddings` encodes a whole batch in one call (length-sorted forward passes).
 * - Lazy: the model loads on first use, once, even under concurrent first calls; a failed load is
 *   retried on the next call. `await embedding.load()` loads it up front.
 * - Shared: built for the same `model`, it uses the same process-wide encoder and encode cache as
 *   {@link BGEM3SparseRetriever}, {@link BGEM3ColbertReranker} and {@link BGEM3EnsembleRetriever},
 *   so a text embedded here is not run through the model again for its sparse or ColBERT outputs.
 *
 * @example
 * ```ts
 * import { Settings, VectorStoreIndex, Document } from 'llamaindex';
 * import { BGEM3Embedding } from '@bgem3/llamaindex';
 * Settings.embedModel = new BGEM3Embedding(); // BAAI/bge-m3 from the Hugging Face Hub
 * const index = await VectorStoreIndex.fromDocuments([new Document({ text: '…' })]);
 * ```
 */
export class BGEM3Embedding extends BaseEmbedding {
  /** The model directory or repo id this embedding loads (the given encoder's `modelId` if one was given). */
  readonly model: string;
  private readonly source: EncoderSource;

  constructor(options: BGEM3EmbeddingOptions = {}) {
    super();
    this.source = new EncoderSource(options);
    this.model = this.source.model;
    this.embedBatchSize = positiveInt(options.embedBatchSize, 32, 'embedBatchSize');
    const explicit = this.source.explicit;
    const known = explicit?.dim ?? (this.model === DEFAULT_MODEL ? BGE_M3_DIM : undefined);
    this.embedInfo = {
      ...(known !== undefined ? { dimensions: known } : {}),
      maxTokens: this.source.maxLength ?? maxLengthOf(explicit) ?? 8192,
    };
  }

  /**
   * Loads the model now (it otherwise loads on first use) and returns the encoder.
   * `embedInfo` then holds the model's real dimension and token limit.
   */
  async load(): Promise<TextEncoder3> {
    const encoder = await this.source.get();
    this.embedInfo = { dimensions: encoder.dim, maxTokens: this.source.maxLength ?? maxLengthOf(encoder) ?? 8192 };
    return encoder;
  }

  /** The dense embedding of one text. */
  async getTextEmbedding(text: string): Promise<number[]> {
    const [vector] = await this.getTextEmbeddings([text]);
    return vector as number[];
  }

  /**
   * Dense embeddings of many texts from one encode call. (A class field, not a method:
   * BaseEmbedding defines it as an own property, which a method would not override.)
   */
  override getTextEmbeddings = async (texts: string[]): Promise<number[][]> => {
    if (texts.length === 0) return [];
    const encoder = await this.load();
    const results = await encoder.encode(texts, { dense: true, ...this.source.encodeOptions });
    return results.map((r) => Array.from(r.dense as Float32Array));
  };
}

function maxLengthOf(encoder: TextEncoder3 | undefined): number | undefined {
  const m = (encoder as { maxLength?: unknown } | undefined)?.maxLength;
  return typeof m === 'number' ? m : undefined;
}
