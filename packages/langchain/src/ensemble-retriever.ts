/**
 * BGEM3EnsembleRetriever: hybrid retrieval plus the M3 rerank, either over a store (its own
 * pipeline: dense ∪ sparse candidates, rescored from stored vectors) or over retrievers the
 * application already has (fused, deduplicated and reranked by core's adapter kit).
 */
import type { M3Store } from '@bgem3/core';
import {
  DEFAULT_M3_WEIGHTS,
  EncoderSource,
  checkFusionWeightsFor,
  checkM3Weights,
  checkOptions,
  fuseAndRerank,
  invalid,
  nonNegative,
  bool,
  positiveInt,
  queryString,
  sourceOf,
  storedOf,
  type StoredRef,
} from './kit.js';
import type { CallbackManagerForRetrieverRun } from '@langchain/core/callbacks/manager';
import type { DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever, type BaseRetrieverInput, type BaseRetrieverInterface } from '@langchain/core/retrievers';
import { BGEM3VectorStore, type BGEM3AddDocumentsOptions } from './vector-store.js';
import { MODEL_KEYS, RETRIEVER_KEYS, filterOptions, hitToDocument, scoreMetadata, withMetadata, type BGEM3Filter, type BGEM3ModelParams } from './shared.js';

/** Options of {@link BGEM3EnsembleRetriever}. */
export interface BGEM3EnsembleRetrieverInput extends BaseRetrieverInput, BGEM3ModelParams {
  /** Hybrid search over this store (its documents' vectors are used: only the query is encoded). */
  store?: M3Store;
  /** Or over this vector store. */
  vectorStore?: BGEM3VectorStore;
  /** Or over your own retrievers, e.g. `[myVectorStore.asRetriever(20), bm25]`. */
  retrievers?: BaseRetrieverInterface[];
  /** Shorthand for `retrievers: [denseRetriever, sparseRetriever]`. */
  denseRetriever?: BaseRetrieverInterface;
  sparseRetriever?: BaseRetrieverInterface;
  /** Documents returned (default 4). */
  k?: number;
  /** Store mode: candidates from each of dense and sparse search (default 100). */
  fetchK?: number;
  /** A `where` object or a `(metadata, id) => boolean` function (store mode). */
  filter?: BGEM3Filter;
  /** Retrievers mode: one RRF weight per retriever (default 1 each, as EnsembleRetriever's equal weights). */
  weights?: number[];
  /** Retrievers mode: the RRF constant (default 60). */
  c?: number;
  /** Retrievers mode: rerank the fused candidates by the M3 All score (default true). */
  rerank?: boolean;
  /** `[dense, sparse, colbert]` weights of the M3 All score (default [0.4, 0.2, 0.4]). */
  rerankWeights?: readonly [number, number, number];
  /**
   * Retrievers mode: the best fused candidates that are reranked (default 20). Candidates that a
   * store-backed retriever of this package returned are rescored from the store; the others are
   * encoded, in one call: at most this many passages go through the model per query.
   */
  rerankCandidates?: number;
}

/** Options of {@link BGEM3EnsembleRetriever.fromDocuments}. */
export interface BGEM3EnsembleFromDocumentsOptions extends Omit<BGEM3EnsembleRetrieverInput, 'retrievers' | 'denseRetriever' | 'sparseRetriever' | 'vectorStore'> {}

const KEYS = [...MODEL_KEYS, ...RETRIEVER_KEYS, 'store', 'vectorStore', 'retrievers', 'denseRetriever', 'sparseRetriever', 'k', 'fetchK', 'filter', 'weights', 'c', 'rerank', 'rerankWeights', 'rerankCandidates'];
const STORE_ONLY = ['fetchK', 'filter'];
const RETRIEVERS_ONLY = ['weights', 'c', 'rerank', 'rerankCandidates'];

function isRetriever(r: unknown): r is BaseRetrieverInterface {
  return r !== null && typeof r === 'object' && typeof (r as BaseRetrieverInterface).invoke === 'function';
}

// The model of what the ensemble is built on: a store-backed retriever or BGE-M3 embeddings.
function sourceOfRetrievers(retrievers: readonly BaseRetrieverInterface[]): EncoderSource | undefined {
  for (const r of retrievers) {
    const s = sourceOf<EncoderSource>(r) ?? sourceOf<EncoderSource>((r as { vectorStore?: { embeddings?: unknown } }).vectorStore?.embeddings);
    if (s) return s;
  }
  return undefined;
}

/**
 * Hybrid retrieval with BGE-M3, reranked by the M3 All score, (w_d·dense + w_s·sparse +
 * w_c·colbert) / Σw (FlagEmbedding's formula; default weights [0.4, 0.2, 0.4]).
 *
 * - **Over a store** (`store`, `vectorStore`, or {@link BGEM3EnsembleRetriever.fromDocuments}):
 *   the store's pipeline, dense top-fetchK ∪ sparse top-fetchK rescored from stored vectors; a
 *   query encodes one text.
 * - **Over your retrievers** (`retrievers`): their lists fused by RRF, deduplicated by id where
 *   the documents have ids and by content otherwise (no id is invented), then the best
 *   `rerankCandidates` reranked (see that option for the cost).
 *
 * Results are copies carrying `denseScore`, `sparseScore`, `colbertScore`, `score` (the M3 All
 * score), `relevanceScore` (in [0, 1]) and, over retrievers, `fusedScore`.
 */
export class BGEM3EnsembleRetriever extends BaseRetriever {
  static override lc_name(): string {
    return 'BGEM3EnsembleRetriever';
  }

  lc_namespace = ['bgem3', 'retrievers', 'ensemble'];

  /** Documents returned. */
  k: number;
  /** The vector store (store mode). */
  readonly vectorStore: BGEM3VectorStore | undefined;
  /** The retrievers (retrievers mode). */
  readonly retrievers: BaseRetrieverInterface[];
  /** Store mode: candidates per first-stage mode. */
  fetchK: number;
  /** Store mode filter. */
  filter: BGEM3Filter | undefined;
  /** Retrievers mode: RRF weights. */
  weights: number[];
  /** Retrievers mode: RRF constant. */
  c: number;
  /** Retrievers mode: whether to rerank. */
  rerank: boolean;
  /** M3 All weights. */
  rerankWeights: readonly [number, number, number];
  /** Retrievers mode: reranked candidates. */
  rerankCandidates: number;
  private readonly source: EncoderSource;

  constructor(fields: BGEM3EnsembleRetrieverInput) {
    const f = checkOptions(fields, KEYS, 'BGEM3EnsembleRetriever');
    super({ callbacks: f.callbacks, tags: f.tags, metadata: f.metadata, verbose: f.verbose });
    const given = (['store', 'vectorStore'] as const).filter((key) => f[key] !== undefined);
    const retrievers = [...(f.retrievers ?? []), ...(f.denseRetriever ? [f.denseRetriever] : []), ...(f.sparseRetriever ? [f.sparseRetriever] : [])];
    if (f.retrievers !== undefined && !Array.isArray(f.retrievers)) invalid('retrievers must be an array of retrievers');
    retrievers.forEach((r, i) => {
      if (!isRetriever(r)) invalid(`retrievers[${i}] is not a LangChain retriever (with invoke)`);
    });
    if (given.length > 1) invalid('give store or vectorStore, not both');
    if (given.length === 1 && retrievers.length > 0) invalid(`give ${given[0]} or retrievers, not both`);
    if (given.length === 0 && retrievers.length === 0) invalid('BGEM3EnsembleRetriever needs a store, a vectorStore or retrievers');
    const storeMode = given.length === 1;
    for (const key of storeMode ? RETRIEVERS_ONLY : STORE_ONLY) {
      if (f[key as keyof typeof f] !== undefined) invalid(`${key} applies ${storeMode ? 'over retrievers' : 'over a store'} only`);
    }
    const { store, vectorStore, retrievers: _r, denseRetriever: _d, sparseRetriever: _s, k: _k, fetchK: _fk, filter: _f, weights: _w, c: _c, rerank: _re, rerankWeights: _rw, rerankCandidates: _rc, callbacks: _cb, tags: _t, metadata: _m, verbose: _v, ...model } = f;
    if (vectorStore !== undefined && !(vectorStore instanceof BGEM3VectorStore)) invalid('vectorStore must be a BGEM3VectorStore');
    if (vectorStore !== undefined && Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: the model comes from the vector store`);
    this.vectorStore = vectorStore ?? (store !== undefined ? new BGEM3VectorStore(undefined, { ...model, store }) : undefined);
    this.retrievers = retrievers;
    this.k = positiveInt(f.k, 'k', 4);
    this.fetchK = positiveInt(f.fetchK, 'fetchK', 100);
    if (f.filter !== undefined && (f.filter === null || (typeof f.filter !== 'object' && typeof f.filter !== 'function'))) invalid('filter must be a where object or a function (metadata, id) => boolean');
    this.filter = f.filter;
    this.weights = checkFusionWeightsFor(f.weights, retrievers.length);
    this.c = nonNegative(f.c, 'c', 60);
    this.rerank = bool(f.rerank, 'rerank', true);
    if (f.rerankWeights !== undefined) checkM3Weights(f.rerankWeights, 'rerankWeights');
    this.rerankWeights = f.rerankWeights ? ([...f.rerankWeights] as [number, number, number]) : [...DEFAULT_M3_WEIGHTS];
    this.rerankCandidates = positiveInt(f.rerankCandidates, 'rerankCandidates', 20);
    const inherited = this.vectorStore ? sourceOf<EncoderSource>(this.vectorStore.embeddings) : sourceOfRetrievers(retrievers);
    this.source = this.vectorStore
      ? (inherited as EncoderSource)
      : new EncoderSource(model, inherited ? { what: 'the retrievers\' model', source: inherited } : undefined);
  }

  /**
   * Builds a store from documents (`options.store`, else an in-memory M3Index: one encoder pass
   * per document) and an ensemble over it.
   */
  static async fromDocuments(documents: DocumentInterface[], options: BGEM3EnsembleFromDocumentsOptions = {}): Promise<BGEM3EnsembleRetriever> {
    const o = checkOptions(options, KEYS, 'BGEM3EnsembleRetriever.fromDocuments');
    const { store, k, fetchK, filter, rerankWeights, callbacks, tags, metadata, verbose, ...rest } = o;
    const model: BGEM3ModelParams = rest;
    for (const key of RETRIEVERS_ONLY) if ((rest as Record<string, unknown>)[key] !== undefined) invalid(`${key} applies over retrievers only`);
    const vectorStore = await BGEM3VectorStore.fromDocuments(documents, undefined, { ...model, ...(store ? { store } : {}) });
    return new BGEM3EnsembleRetriever({ vectorStore, k, fetchK, filter, rerankWeights, callbacks, tags, metadata, verbose });
  }

  /** Store mode: adds documents to the store (see {@link BGEM3VectorStore.addDocuments}). */
  async addDocuments(documents: DocumentInterface[], options?: BGEM3AddDocumentsOptions): Promise<string[]> {
    if (!this.vectorStore) invalid('addDocuments needs a store; over your own retrievers, add documents to them');
    return this.vectorStore.addDocuments(documents, options);
  }

  /** Store mode: removes documents by id. */
  async delete(params: { ids: string[] } | string[]): Promise<void> {
    if (!this.vectorStore) invalid('delete needs a store; over your own retrievers, delete from them');
    await this.vectorStore.delete(params);
  }

  override async _getRelevantDocuments(query: string, runManager?: CallbackManagerForRetrieverRun): Promise<DocumentInterface[]> {
    queryString(query);
    const k = positiveInt(this.k, 'k', 4);
    if (query.trim().length === 0) return [];
    if (this.vectorStore) {
      const store = this.vectorStore.store;
      const q = await this.vectorStore.storeQuery(query, { dense: true, sparse: true, colbert: this.rerankWeights[2] > 0 });
      const hits = await store.search(q, { k, fetchK: positiveInt(this.fetchK, 'fetchK', 100), weights: checkM3Weights(this.rerankWeights), ...filterOptions(this.filter) });
      return hits.map((h) => hitToDocument(store, h, scoreMetadata(h.score, h.scores)));
    }
    const lists = await Promise.all(this.retrievers.map((r, i) => r.invoke(query, runManager?.getChild(`retriever_${i + 1}`))));
    const hits = await fuseAndRerank(
      query,
      lists.map((docs) =>
        (Array.isArray(docs) ? docs : []).map((doc) => ({
          item: doc,
          id: typeof doc.id === 'string' ? doc.id : undefined,
          text: doc.pageContent,
          stored: storedOf<M3Store>(doc) as StoredRef | undefined,
        })),
      ),
      this.source,
      {
        fusion: 'rrf',
        listWeights: this.weights,
        c: this.c,
        rerank: this.rerank,
        weights: checkM3Weights(this.rerankWeights),
        rerankCandidates: positiveInt(this.rerankCandidates, 'rerankCandidates', 20),
        k,
      },
    );
    return hits.map((h) => {
      // Metadata of every copy of the candidate (the first wins), then the scores.
      const merged = Object.assign({}, ...[...h.items].reverse().map((d) => d.metadata));
      const scores = h.scores ? scoreMetadata(h.score, { ...h.scores, ...(this.rerankWeights[2] > 0 ? {} : { colbert: undefined }) }) : scoreMetadata(h.score, {});
      return withMetadata(h.item, { ...merged, ...scores, fusedScore: h.fused });
    });
  }
}
