/**
 * BGEM3Embeddings: BGE-M3 dense vectors as a LangChain `Embeddings`, computed locally on
 * onnxruntime-node by `@bgem3/core`.
 */
import { M3Error, assertTexts } from '@bgem3/core';
import { Embeddings, type EmbeddingsParams } from '@langchain/core/embeddings';
import { chunkArray } from '@langchain/core/utils/chunk_array';
import { EncoderSource, checkPositiveInteger, checkQuery, type BGEM3ModelParams } from './encoder-source.js';

/** Options of {@link BGEM3Embeddings}. */
export interface BGEM3EmbeddingsParams extends BGEM3ModelParams, EmbeddingsParams {
  /**
   * Texts per call to the encoder (default 64). Each chunk is one `caller.call`, so it is also
   * the unit of retries and concurrency; the encoder itself splits a chunk into forward passes
   * by length.
   */
  batchSize?: number;
}

// Local inference fails the same way when repeated: bad input, a missing file, a closed encoder.
// Only a crashed worker thread is worth a retry.
function failedAttempt(error: unknown): void {
  if (error instanceof TypeError || error instanceof RangeError) throw error;
  if (error instanceof M3Error && error.code !== 'WORKER_FAILED') throw error;
}

/**
 * BGE-M3 dense embeddings (L2-normalised CLS vectors, 1024 dimensions for BAAI/bge-m3), computed
 * locally. Use it wherever LangChain takes `Embeddings`, e.g. a `MemoryVectorStore`.
 *
 * - The model loads lazily on the first call, behind one promise; a failed load is retried on the
 *   next call.
 * - Defaults suit local, CPU-bound inference: `maxConcurrency: 1` (one model, the cores are
 *   already used by onnxruntime) and `maxRetries: 0` (a retry would fail the same way).
 * - Encodings are shared with {@link BGEM3SparseRetriever}, {@link BGEM3ColbertReranker} and
 *   {@link BGEM3EnsembleRetriever} built for the same model: one forward pass per text in total.
 * - No query instruction: BGE-M3 embeds queries and documents the same way.
 *
 * @example
 * ```ts
 * const embeddings = new BGEM3Embeddings(); // BAAI/bge-m3 from the Hugging Face Hub
 * const vectors = await embeddings.embedDocuments(["BGE-M3 is multilingual."]);
 * const q = await embeddings.embedQuery("Which model is multilingual?");
 * ```
 */
export class BGEM3Embeddings extends Embeddings {
  /** The model directory or Hugging Face repo id. */
  model: string;
  /** Texts per encoder call. */
  batchSize: number;
  /** Max tokens per text (undefined: the encoder's default). */
  maxLength: number | undefined;
  /** @internal */
  protected readonly source: EncoderSource;

  constructor(fields: BGEM3EmbeddingsParams = {}) {
    super({
      maxConcurrency: fields.maxConcurrency ?? 1,
      maxRetries: fields.maxRetries ?? 0,
      onFailedAttempt: fields.onFailedAttempt ?? failedAttempt,
    });
    this.source = new EncoderSource(fields);
    this.model = this.source.model;
    this.maxLength = this.source.maxLength;
    this.batchSize = checkPositiveInteger(fields.batchSize ?? 64, 'batchSize');
  }

  static lc_name(): string {
    return 'BGEM3Embeddings';
  }

  /** Dimension of the vectors, known once the model is loaded (else undefined); see {@link getDimensions}. */
  get dimensions(): number | undefined {
    return this.source.loaded?.dim;
  }

  /** Dimension of the vectors; loads the model if needed. */
  async getDimensions(): Promise<number> {
    return (await this.source.get()).dim;
  }

  /**
   * Dense vectors of `documents`, in order. `[]` for an empty array; a non-string entry throws a
   * TypeError naming its index.
   */
  async embedDocuments(documents: string[]): Promise<number[][]> {
    assertTexts(documents, 'documents');
    if (documents.length === 0) return [];
    const chunks = chunkArray(documents, this.batchSize);
    const results = await Promise.all(chunks.map((chunk) => this.caller.call(() => this.source.encode(chunk, { dense: true }))));
    return results.flat().map((r) => Array.from(r.dense as Float32Array));
  }

  /** The dense vector of one query (the same encoding as a document: M3 has no instruction). */
  async embedQuery(document: string): Promise<number[]> {
    checkQuery(document, 'document');
    const [r] = await this.caller.call(() => this.source.encode([document], { dense: true }));
    return Array.from(r.dense as Float32Array);
  }
}
