/**
 * BGEM3ColbertReranker: BGE-M3 ColBERT (multi-vector) late-interaction reranking as a LangChain
 * document compressor. Scores are core's `maxSim` (FlagEmbedding's `colbert_score`).
 */
import { M3Error, maxSim, type ColbertMatrix } from '@bgem3/core';
import type { Callbacks } from '@langchain/core/callbacks/manager';
import type { DocumentInterface } from '@langchain/core/documents';
import { BaseDocumentCompressor } from '@langchain/core/retrievers/document_compressors';
import { EncoderSource, checkPositiveInteger, checkQuery, colbertDimOf, type BGEM3ModelParams } from './encoder-source.js';
import { copyDoc } from './sparse-retriever.js';

/** Options of {@link BGEM3ColbertReranker}. */
export interface BGEM3ColbertRerankerParams extends BGEM3ModelParams {
  /** Documents kept by `compressDocuments` (default 3, as `CohereRerank`). */
  topN?: number;
  /**
   * Metadata key under which a document may carry its ColBERT vectors, used instead of encoding
   * it (default `"colbertVectors"`): a `ColbertMatrix` `{data, count, dim}` (data a Float32Array
   * or number[]) or a `number[][]`, e.g. stored next to the document by your vector store.
   */
  vectorsKey?: string;
}

/** Options of {@link BGEM3ColbertReranker.rerank}. */
export interface BGEM3RerankOptions {
  /** Results to return (default: all documents). */
  topN?: number;
}

/** One result of {@link BGEM3ColbertReranker.rerank}: the input position and its MaxSim score. */
export interface BGEM3RerankResult {
  index: number;
  relevanceScore: number;
}

/**
 * Reranks documents by BGE-M3 ColBERT MaxSim against the query:
 * (1/N_q) Σ_i max_j q_i·d_j over the query's and the document's token vectors.
 *
 * Follows the conventions of LangChain's rerankers (`CohereRerank`): `compressDocuments` returns
 * the best `topN` documents, best first, with `metadata.relevanceScore`; `rerank` returns
 * `{index, relevanceScore}` pairs. Returned documents are copies (the inputs are not mutated).
 *
 * ColBERT vectors are taken, in order of preference, from the document (`metadata.colbertVectors`,
 * see {@link BGEM3ColbertRerankerParams.vectorsKey}), from the shared encode cache (free for texts
 * already seen by any class of this package for the same model), or by encoding the text.
 *
 * @example
 * ```ts
 * const retriever = new ContextualCompressionRetriever({
 *   baseCompressor: new BGEM3ColbertReranker({ topN: 3 }),
 *   baseRetriever: vectorStore.asRetriever(20),
 * });
 * ```
 */
export class BGEM3ColbertReranker extends BaseDocumentCompressor {
  static lc_name(): string {
    return 'BGEM3ColbertReranker';
  }

  /** Documents kept by `compressDocuments`. */
  topN: number;
  /** Metadata key of carried ColBERT vectors. */
  vectorsKey: string;
  /** The model directory or Hugging Face repo id (or the given encoder's model id). */
  model: string;
  private readonly source: EncoderSource;

  constructor(fields: BGEM3ColbertRerankerParams = {}) {
    super();
    this.source = new EncoderSource(fields);
    this.model = this.source.model;
    this.topN = checkPositiveInteger(fields.topN ?? 3, 'topN');
    this.vectorsKey = fields.vectorsKey ?? 'colbertVectors';
    if (typeof this.vectorsKey !== 'string') throw new TypeError('vectorsKey must be a string');
  }

  /**
   * MaxSim scores of `documents` (Documents or strings) against `query`, best first (ties keep
   * input order), the best `topN` (default all).
   */
  async rerank(documents: Array<DocumentInterface | string>, query: string, options: BGEM3RerankOptions = {}): Promise<BGEM3RerankResult[]> {
    checkQuery(query);
    if (!Array.isArray(documents)) throw new TypeError('documents must be an array of Documents or strings');
    const topN = options.topN === undefined ? documents.length : checkPositiveInteger(options.topN, 'topN');
    if (documents.length === 0) return [];
    const scores = await this.scores(documents, query);
    const order = documents.map((_, index) => ({ index, relevanceScore: scores[index] }));
    order.sort((a, b) => b.relevanceScore - a.relevanceScore || a.index - b.index);
    return order.slice(0, topN);
  }

  /** The best `topN` documents by MaxSim, best first, copies with `metadata.relevanceScore`. */
  async compressDocuments(documents: DocumentInterface[], query: string, _callbacks?: Callbacks): Promise<DocumentInterface[]> {
    const topN = checkPositiveInteger(this.topN, 'topN');
    const ranked = await this.rerank(documents, query, { topN });
    return ranked.map((r) => copyDoc(documents[r.index], { relevanceScore: r.relevanceScore }));
  }

  private async scores(documents: Array<DocumentInterface | string>, query: string): Promise<Float64Array> {
    const enc = await this.source.get();
    const dim = colbertDimOf(enc);
    const mats: ColbertMatrix[] = new Array(documents.length);
    const toEncode: number[] = [];
    documents.forEach((d, i) => {
      if (typeof d === 'string') {
        toEncode.push(i);
        return;
      }
      if (d === null || typeof d !== 'object' || typeof d.pageContent !== 'string') {
        throw new TypeError(`documents[${i}] must be a Document or a string`);
      }
      const carried = carriedColbert(d.metadata?.[this.vectorsKey], dim, i, this.vectorsKey);
      if (carried) mats[i] = carried;
      else toEncode.push(i);
    });
    const texts = [query, ...toEncode.map((i) => textOf(documents[i]))];
    const encoded = await this.source.encode(texts, { dense: false, colbert: true });
    toEncode.forEach((docIndex, j) => {
      mats[docIndex] = encoded[j + 1].colbert as ColbertMatrix;
    });
    return maxSim(encoded[0].colbert as ColbertMatrix, mats);
  }
}

function textOf(d: DocumentInterface | string): string {
  return typeof d === 'string' ? d : d.pageContent;
}

/** Reads ColBERT vectors a document carries in its metadata; undefined when it carries none. */
function carriedColbert(v: unknown, dim: number, i: number, key: string): ColbertMatrix | undefined {
  if (v === undefined || v === null) return undefined;
  const bad = (why: string): never => {
    throw new M3Error('INVALID_ARGUMENT', `documents[${i}].metadata.${key} ${why}`);
  };
  if (Array.isArray(v)) {
    const rows = v as unknown[];
    const data = new Float32Array(rows.length * dim);
    rows.forEach((row, r) => {
      if (!Array.isArray(row) || row.length !== dim) bad(`row ${r} must be an array of ${dim} numbers (the model's ColBERT dimension)`);
      data.set(row as number[], r * dim);
    });
    return { data, count: rows.length, dim };
  }
  const m = v as Partial<ColbertMatrix> & { data?: unknown };
  if (typeof m !== 'object' || typeof m.count !== 'number' || typeof m.dim !== 'number' || m.data === undefined) {
    return bad('must be a ColbertMatrix {data, count, dim} or number[][]');
  }
  if (m.dim !== dim) bad(`has dimension ${m.dim}, the model's ColBERT vectors have ${dim}`);
  const data = m.data instanceof Float32Array ? m.data : Array.isArray(m.data) ? Float32Array.from(m.data as number[]) : bad('data must be a Float32Array or number[]');
  if (data.length !== m.count * dim) bad(`has ${data.length} values for ${m.count} vectors of ${dim}`);
  return { data, count: m.count, dim };
}
