/**
 * BGEM3ColbertReranker: BGE-M3 ColBERT (multi-vector) late-interaction reranking as a LangChain
 * document compressor, in the shape of `CohereRerank`.
 */
import { M3Error, maxSim, type ColbertMatrix, type M3Store } from '@bgem3/core';
import { EncoderSource, attachSource, checkOptions, invalid, positiveInt, queryString, storedOf, unitScore } from '@bgem3/core/adapter';
import type { Callbacks } from '@langchain/core/callbacks/manager';
import type { DocumentInterface } from '@langchain/core/documents';
import { BaseDocumentCompressor } from '@langchain/core/retrievers/document_compressors';
import { MODEL_KEYS, withMetadata, type BGEM3ModelParams } from './shared.js';

/** Options of {@link BGEM3ColbertReranker}. */
export interface BGEM3ColbertRerankerParams extends BGEM3ModelParams {
  /** Documents kept (default 3, as `CohereRerank`); also `rerank`'s default. */
  topN?: number;
  /** A store whose model to use when none is given (documents it returned are rescored from it anyway). */
  store?: M3Store;
  /**
   * Metadata key under which a document may carry its ColBERT vectors (default
   * `"colbertVectors"`): a `{data, count, dim}` matrix or a `number[][]`, used instead of encoding it.
   */
  vectorsKey?: string;
}

/** Options of {@link BGEM3ColbertReranker.rerank}. */
export interface BGEM3RerankOptions {
  /** Results (default: the instance's `topN`). */
  topN?: number;
}

/** One result of {@link BGEM3ColbertReranker.rerank}. */
export interface BGEM3RerankResult {
  /** Position of the document in the input. */
  index: number;
  /** MaxSim mapped to [0, 1]: (s + 1) / 2, clamped. */
  relevanceScore: number;
  /** The raw MaxSim, FlagEmbedding's `colbert_score` (in [-1, 1]). */
  score: number;
}

const KEYS = [...MODEL_KEYS, 'topN', 'store', 'vectorsKey'];

/**
 * Reranks documents by BGE-M3 ColBERT MaxSim, (1/N_q) Σ_i max_j q_i·d_j.
 *
 * - `compressDocuments` returns the best `topN`, best first, as copies with
 *   `metadata.relevanceScore` (in [0, 1], the same mapping as @bgem3/llamaindex) and
 *   `metadata.colbertScore` (the raw MaxSim); `[]` for no documents (also `null`/`undefined`).
 * - `rerank` returns `{ index, relevanceScore, score }`, the best `topN` (default the instance's).
 * - A document's ColBERT vectors come from its store when a store-backed class of this package
 *   returned it, else from `metadata[vectorsKey]`, else from encoding it (all such documents in
 *   one encoder call, with the query).
 */
export class BGEM3ColbertReranker extends BaseDocumentCompressor {
  static lc_name(): string {
    return 'BGEM3ColbertReranker';
  }

  /** Documents kept. */
  topN: number;
  /** Metadata key of carried ColBERT vectors. */
  vectorsKey: string;
  private readonly source: EncoderSource;

  constructor(fields: BGEM3ColbertRerankerParams = {}) {
    super();
    const f = checkOptions(fields, KEYS, 'BGEM3ColbertReranker');
    const { topN: _t, store, vectorsKey: _v, ...model } = f;
    this.source = new EncoderSource(model, store ? { what: 'the store', encoder: store.encoder, modelId: store.modelId, dim: store.dim, vocabSize: store.vocabSize } : undefined);
    attachSource(this, this.source);
    this.topN = positiveInt(f.topN, 'topN', 3);
    if (f.vectorsKey !== undefined && typeof f.vectorsKey !== 'string') invalid('vectorsKey must be a string');
    this.vectorsKey = f.vectorsKey ?? 'colbertVectors';
  }

  /** The model, as far as known before loading. */
  get model(): string {
    return this.source.model;
  }

  /** MaxSim of `documents` (Documents or strings) against `query`, best first (ties: input order), the best `topN`. */
  async rerank(documents: Array<DocumentInterface | string>, query: string, options: BGEM3RerankOptions = {}): Promise<BGEM3RerankResult[]> {
    const o = checkOptions(options, ['topN'], 'rerank');
    queryString(query);
    if (!Array.isArray(documents)) throw new TypeError('documents must be an array of Documents or strings');
    const topN = positiveInt(o.topN, 'topN', positiveInt(this.topN, 'topN', 3));
    if (documents.length === 0) return [];
    const scores = await this.scores(documents, query);
    const order = documents.map((_, index) => ({ index, score: scores[index] as number, relevanceScore: unitScore(scores[index] as number) }));
    order.sort((a, b) => b.score - a.score || a.index - b.index);
    return order.slice(0, topN);
  }

  /** The best `topN` documents by MaxSim, best first, copies with `relevanceScore` and `colbertScore`. */
  async compressDocuments(documents: DocumentInterface[], query: string, _callbacks?: Callbacks): Promise<DocumentInterface[]> {
    if (documents === null || documents === undefined || (Array.isArray(documents) && documents.length === 0)) return [];
    const ranked = await this.rerank(documents, query);
    return ranked.map((r) => withMetadata(documents[r.index] as DocumentInterface, { relevanceScore: r.relevanceScore, colbertScore: r.score }));
  }

  private async scores(documents: Array<DocumentInterface | string>, query: string): Promise<Float64Array> {
    const enc = await this.source.get();
    const dim = enc.colbertDim ?? enc.dim;
    const out = new Float64Array(documents.length);
    const stored = new Map<M3Store, { i: number; id: string }[]>();
    const carried = new Map<number, ColbertMatrix>();
    const toEncode: number[] = [];
    documents.forEach((d, i) => {
      if (typeof d === 'string') return toEncode.push(i);
      if (d === null || typeof d !== 'object' || typeof d.pageContent !== 'string') throw new TypeError(`documents[${i}] must be a Document or a string`);
      const ref = storedOf<M3Store>(d);
      if (ref && ref.store.modelId === enc.modelId) {
        const g = stored.get(ref.store) ?? [];
        g.push({ i, id: ref.id });
        return stored.set(ref.store, g);
      }
      const m = carriedColbert(d.metadata?.[this.vectorsKey], dim, i, this.vectorsKey);
      if (m) return carried.set(i, m);
      return toEncode.push(i);
    });
    const texts = [query, ...toEncode.map((i) => textOf(documents[i] as DocumentInterface | string))];
    const encoded = await this.source.encode(texts, { dense: stored.size > 0, sparse: stored.size > 0, colbert: true });
    const q = encoded[0] as NonNullable<(typeof encoded)[0]>;
    for (const [store, group] of stored) {
      const results = await store.rescore(q, group.map((g) => g.id), { weights: [0, 0, 1] });
      const byId = new Map(results.map((r) => [r.id, r.scores.colbert]));
      for (const g of group) {
        const s = byId.get(g.id);
        if (s === undefined) toEncode.push(g.i); // deleted from the store meanwhile
        else out[g.i] = s;
      }
    }
    const late = toEncode.slice(texts.length - 1);
    const lateEncoded = late.length > 0 ? await this.source.encode(late.map((i) => textOf(documents[i] as DocumentInterface | string)), { dense: false, colbert: true }) : [];
    const mats: ColbertMatrix[] = [];
    const idx: number[] = [];
    toEncode.forEach((i, j) => {
      idx.push(i);
      mats.push((j < texts.length - 1 ? encoded[j + 1] : lateEncoded[j - (texts.length - 1)])?.colbert as ColbertMatrix);
    });
    for (const [i, m] of carried) {
      idx.push(i);
      mats.push(m);
    }
    if (mats.length > 0) {
      const s = await maxSim(q.colbert as ColbertMatrix, mats);
      idx.forEach((i, j) => {
        out[i] = s[j] as number;
      });
    }
    return out;
  }
}

function textOf(d: DocumentInterface | string): string {
  return typeof d === 'string' ? d : d.pageContent;
}

/** ColBERT vectors a document carries in its metadata; undefined when none. */
function carriedColbert(v: unknown, dim: number, i: number, key: string): ColbertMatrix | undefined {
  if (v === undefined || v === null) return undefined;
  const bad = (why: string): never => {
    throw new M3Error('INVALID_ARGUMENT', `documents[${i}].metadata.${key} ${why}`);
  };
  if (Array.isArray(v)) {
    const data = new Float32Array(v.length * dim);
    v.forEach((row: unknown, r) => {
      if (!Array.isArray(row) || row.length !== dim) bad(`row ${r} must be an array of ${dim} numbers (the model's ColBERT dimension)`);
      data.set(row as number[], r * dim);
    });
    return { data, count: v.length, dim };
  }
  const m = v as Partial<ColbertMatrix> & { data?: unknown };
  if (typeof m !== 'object' || typeof m.count !== 'number' || typeof m.dim !== 'number' || m.data === undefined) return bad('must be a ColbertMatrix {data, count, dim} or number[][]');
  if (m.dim !== dim) bad(`has dimension ${m.dim}, the model's ColBERT vectors have ${dim}`);
  const data = m.data instanceof Float32Array ? m.data : Array.isArray(m.data) ? Float32Array.from(m.data as number[]) : bad('data must be a Float32Array or number[]');
  if (data.length !== m.count * dim) bad(`has ${data.length} values for ${m.count} vectors of ${dim}`);
  return { data, count: m.count, dim };
}
