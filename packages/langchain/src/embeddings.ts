/**
 * BGEM3Embeddings: BGE-M3 dense vectors as a LangChain `Embeddings`, computed locally on
 * onnxruntime-node by `@bgem3/core` (or by a `bgem3 serve` server with `endpoint`).
 */
import { M3Error, assertTexts, type M3Store } from '@bgem3/core';
import { EncoderSource, attachSource, checkOptions, positiveInt, queryString, setBrand } from '@bgem3/core/adapter';
import { Embeddings, type EmbeddingsParams } from '@langchain/core/embeddings';
import { chunkArray } from '@langchain/core/utils/chunk_array';
import { MODEL_KEYS, type BGEM3ModelParams } from './shared.js';

/** Options of {@link BGEM3Embeddings}. */
export interface BGEM3EmbeddingsParams extends BGEM3ModelParams, EmbeddingsParams {
  /** Texts per encoder call (default 64): the unit of retries and concurrency. */
  batchSize?: number;
  /** A store whose model to use (when no model is given): the store's encoder, or its saved model. */
  store?: M3Store;
}

const KEYS = [...MODEL_KEYS, 'batchSize', 'store', 'maxConcurrency', 'maxRetries', 'onFailedAttempt'];

// Local inference fails the same way when repeated: only a crashed worker or an unreachable
// server is worth a retry.
function failedAttempt(error: unknown): void {
  if (error instanceof TypeError || error instanceof RangeError) throw error;
  if (M3Error.isInstance(error) && error.code !== 'WORKER_FAILED' && error.code !== 'REMOTE_FAILED') throw error;
}

/**
 * BGE-M3 dense embeddings (L2-normalised CLS vectors, 1024 dimensions for BAAI/bge-m3).
 *
 * - The model loads lazily, once per process for every class of this package and of
 *   @bgem3/llamaindex that uses it (ESM or CJS), and is shared with them (one encode cache).
 * - `maxConcurrency: 1` and `maxRetries: 0` by default: one local, CPU-bound model, and a local
 *   failure would fail again.
 * - No query instruction: BGE-M3 embeds queries and documents the same way.
 */
export class BGEM3Embeddings extends Embeddings {
  static {
    setBrand(BGEM3Embeddings.prototype, 'langchain.BGEM3Embeddings');
  }

  /** The model (directory, repo id, endpoint or model id), as far as known before loading. */
  get model(): string {
    return this.source.model;
  }
  /** Texts per encoder call. */
  batchSize: number;
  /** Max tokens per text (undefined: the encoder's). */
  readonly maxLength: number | undefined;
  private readonly source: EncoderSource;

  constructor(fields: BGEM3EmbeddingsParams = {}) {
    checkOptions(fields, KEYS, 'BGEM3Embeddings');
    super({
      maxConcurrency: fields.maxConcurrency ?? 1,
      maxRetries: fields.maxRetries ?? 0,
      onFailedAttempt: fields.onFailedAttempt ?? failedAttempt,
    });
    const { store } = fields;
    this.source = new EncoderSource(
      fields,
      store ? { what: 'the store', encoder: store.encoder, modelId: store.modelId, dim: store.dim, vocabSize: store.vocabSize } : undefined,
    );
    attachSource(this, this.source);
    this.maxLength = this.source.maxLength;
    this.batchSize = positiveInt(fields.batchSize, 'batchSize', 64);
  }

  static lc_name(): string {
    return 'BGEM3Embeddings';
  }

  /** Dimension of the vectors once the model is loaded (else undefined); see {@link getDimensions}. */
  get dimensions(): number | undefined {
    return this.source.loaded?.dim;
  }

  /** Dimension of the vectors; loads the model if needed. */
  async getDimensions(): Promise<number> {
    return (await this.source.get()).dim;
  }

  /** Dense vectors of `documents`, in order; `[]` for `[]`. A non-string entry is a TypeError naming it. */
  async embedDocuments(documents: string[]): Promise<number[][]> {
    assertTexts(documents, 'documents');
    if (documents.length === 0) return [];
    const chunks = chunkArray(documents, this.batchSize);
    const results = await Promise.all(chunks.map((chunk) => this.caller.call(() => this.source.encode(chunk, { dense: true }))));
    return results.flat().map((r) => Array.from(r.dense as Float32Array));
  }

  /** The dense vector of one query. */
  async embedQuery(document: string): Promise<number[]> {
    queryString(document, 'document');
    const [r] = await this.caller.call(() => this.source.encode([document], { dense: true }));
    return Array.from(r.dense as Float32Array);
  }
}
