/**
 * BGEM3EnsembleRetriever: hybrid retrieval with the M3 rerank, over a store (its own pipeline)
 * or over retrievers the application already has (fused, deduplicated and reranked by core's
 * adapter kit). LlamaIndex.TS has no fusion retriever of its own.
 */
import type { M3Store } from '@bgem3/core';
import { DEFAULT_M3_WEIGHTS, EncoderSource, bool, checkM3Weights, checkOptions, fuseAndRerank, invalid, nonNegative, oneOf, positiveInt, sourceOf, storedOf, unitScore, type StoredRef } from '@bgem3/core/adapter';
import { checkFusionWeights } from '@bgem3/core';
import { BaseRetriever, DEFAULT_SIMILARITY_TOP_K, MetadataMode, type NodeWithScore, type QueryBundle } from 'llamaindex';
import { BGEM3VectorStore } from './vector-store.js';
import { MODEL_KEYS, checkStore, hitToNode, metadataModeOf, queryText, settingsBase, withScores, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3EnsembleRetriever}. */
export interface BGEM3EnsembleRetrieverOptions extends BGEM3ModelOptions {
  /** Hybrid search over this store (only the query is encoded). */
  store?: M3Store;
  /** Or over this vector store. */
  vectorStore?: BGEM3VectorStore;
  /** Or over your retrievers, e.g. `[index.asRetriever({ similarityTopK: 10 }), new Bm25Retriever(...)]`. */
  retrievers?: BaseRetriever[];
  /** Results (default 2, LlamaIndex's DEFAULT_SIMILARITY_TOP_K). */
  topK?: number;
  /** Store mode: candidates from each of dense and sparse search (default 100). */
  fetchK?: number;
  /** `[dense, sparse, colbert]` weights of the M3 All score (default [0.4, 0.2, 0.4]). */
  weights?: readonly [number, number, number];
  /** Retrievers mode: `"rrf"` (default) or `"relative-score"` (min-max normalised retriever scores). */
  fusion?: 'rrf' | 'relative-score';
  /** Retrievers mode: RRF constant (default 60). */
  rrfK?: number;
  /** Retrievers mode: one fusion weight per retriever (default equal). */
  retrieverWeights?: number[];
  /** Retrievers mode: rerank by the M3 All score (default true). */
  rerank?: boolean;
  /**
   * Retrievers mode: the best fused candidates reranked (default 20). Nodes that a store-backed
   * class of this package returned are rescored from the store; the others are encoded in one
   * call: at most this many passages go through the model per query.
   */
  rerankCandidates?: number;
  /** Retrievers mode: the node text compared and encoded (default `MetadataMode.NONE`). */
  metadataMode?: MetadataMode;
  /**
   * Metadata key of each result's scores (default `"bgem3_scores"`, hidden from embeddings and LLM
   * prompts); `null` records none.
   */
  scoresMetadataKey?: string | null;
}

/** What a result records under `scoresMetadataKey`. */
export interface BGEM3EnsembleScores {
  /** The raw score results are ordered by (the M3 All score, or the fusion score without rerank). */
  score: number;
  /** `score` in [0, 1]: the NodeWithScore's score. */
  relevanceScore: number;
  /** Retrievers mode: the fusion score and the 1-based rank in each list (null: absent). */
  fusion?: number;
  ranks?: (number | null)[];
  dense?: number;
  sparse?: number;
  colbert?: number;
}

const KEYS = [...MODEL_KEYS, 'store', 'vectorStore', 'retrievers', 'topK', 'fetchK', 'weights', 'fusion', 'rrfK', 'retrieverWeights', 'rerank', 'rerankCandidates', 'metadataMode', 'scoresMetadataKey'];
const RETRIEVERS_ONLY = ['fusion', 'rrfK', 'retrieverWeights', 'rerank', 'rerankCandidates', 'metadataMode'];

/**
 * Hybrid retrieval reranked by the M3 All score (w_d·dense + w_s·sparse + w_c·colbert) / Σw.
 * Each result is a copy of the node with its scores under `scoresMetadataKey`; its score is the
 * ranking score mapped to [0, 1] as (s + 1) / 2 (so `SimilarityPostprocessor` cut-offs work).
 * Over retrievers, candidates are deduplicated by node id and by text (two splits of the same
 * documents give different ids to the same chunk).
 */
export class BGEM3EnsembleRetriever extends BaseRetriever {
  topK: number;
  readonly vectorStore: BGEM3VectorStore | undefined;
  readonly retrievers: BaseRetriever[];
  readonly fetchK: number;
  readonly weights: readonly [number, number, number];
  readonly fusion: 'rrf' | 'relative-score';
  readonly rrfK: number;
  readonly retrieverWeights: number[];
  readonly rerank: boolean;
  readonly rerankCandidates: number;
  readonly metadataMode: MetadataMode;
  readonly scoresMetadataKey: string | null;
  private readonly source: EncoderSource;

  constructor(options: BGEM3EnsembleRetrieverOptions) {
    super();
    const o = checkOptions(options, KEYS, 'BGEM3EnsembleRetriever');
    const { store, vectorStore, retrievers, topK: _t, fetchK: _f, weights: _w, fusion: _fu, rrfK: _r, retrieverWeights: _rw, rerank: _re, rerankCandidates: _rc, metadataMode: _m, scoresMetadataKey: _k, ...model } = o;
    const modes = (['store', 'vectorStore', 'retrievers'] as const).filter((k) => o[k] !== undefined);
    if (modes.length !== 1) invalid(modes.length === 0 ? 'BGEM3EnsembleRetriever needs a store, a vectorStore or retrievers' : `give one of store, vectorStore and retrievers, not ${modes.join(' and ')}`);
    if (store !== undefined) checkStore(store);
    if (vectorStore !== undefined && !(vectorStore instanceof BGEM3VectorStore)) invalid('vectorStore must be a BGEM3VectorStore');
    if (retrievers !== undefined) {
      if (!Array.isArray(retrievers) || retrievers.length === 0) invalid('retrievers must be a non-empty array of retrievers');
      retrievers.forEach((r, i) => {
        if (!r || typeof (r as BaseRetriever).retrieve !== 'function') invalid(`retrievers[${i}] is not a LlamaIndex retriever`);
      });
    }
    const storeMode = retrievers === undefined;
    for (const key of storeMode ? RETRIEVERS_ONLY : ['fetchK']) {
      if (o[key as keyof typeof o] !== undefined) invalid(`${key} applies ${storeMode ? 'over retrievers' : 'over a store'} only`);
    }
    if (vectorStore !== undefined && Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: the model comes from the vector store`);
    this.vectorStore = vectorStore ?? (store !== undefined ? new BGEM3VectorStore({ ...model, store }) : undefined);
    this.retrievers = retrievers ?? [];
    this.topK = positiveInt(o.topK, 'topK', DEFAULT_SIMILARITY_TOP_K);
    this.fetchK = positiveInt(o.fetchK, 'fetchK', 100);
    if (o.weights !== undefined) checkM3Weights(o.weights, 'weights');
    this.weights = o.weights ? ([...o.weights] as [number, number, number]) : [...DEFAULT_M3_WEIGHTS];
    this.fusion = oneOf(o.fusion, ['rrf', 'relative-score'] as const, 'fusion', 'rrf');
    this.rrfK = nonNegative(o.rrfK, 'rrfK', 60);
    this.retrieverWeights = storeMode ? [] : checkFusionWeights(o.retrieverWeights, this.retrievers.length, 'retrieverWeights');
    this.rerank = bool(o.rerank, 'rerank', true);
    this.rerankCandidates = positiveInt(o.rerankCandidates, 'rerankCandidates', 20);
    this.metadataMode = metadataModeOf(o.metadataMode, MetadataMode.NONE);
    const key = o.scoresMetadataKey === undefined ? 'bgem3_scores' : o.scoresMetadataKey;
    if (key !== null && (typeof key !== 'string' || key.length === 0)) invalid('scoresMetadataKey must be a non-empty string or null');
    this.scoresMetadataKey = key;
    const inherited = this.retrievers.map((r) => sourceOf<EncoderSource>(r)).find((s) => s !== undefined);
    this.source = this.vectorStore
      ? (sourceOf<EncoderSource>(this.vectorStore) as EncoderSource)
      : new EncoderSource(model, inherited ? { what: "the retrievers' model", source: inherited } : settingsBase);
  }

  /** Fused, deduplicated and reranked top-`topK` nodes. */
  async _retrieve(params: QueryBundle): Promise<NodeWithScore[]> {
    const text = queryText(params, 'BGEM3EnsembleRetriever');
    const topK = positiveInt(this.topK, 'topK', DEFAULT_SIMILARITY_TOP_K);
    const key = this.scoresMetadataKey;
    if (this.vectorStore) {
      const store = this.vectorStore.store;
      const [q] = await this.source.encode([text], { dense: true, sparse: true, colbert: this.weights[2] > 0 });
      const hits = await store.search(q as NonNullable<typeof q>, { k: topK, fetchK: this.fetchK, weights: checkM3Weights(this.weights) });
      return hits.map((h) => {
        const relevanceScore = unitScore(h.score);
        return { node: withScores(hitToNode(store, h), key, { score: h.score, relevanceScore, ...h.scores }), score: relevanceScore };
      });
    }
    const lists = await Promise.all(this.retrievers.map((r) => r.retrieve(params)));
    const hits = await fuseAndRerank(
      text,
      lists.map((list) =>
        (Array.isArray(list) ? list : [])
          .filter((n) => n?.node && typeof n.node.id_ === 'string')
          .map((n) => ({ item: n, id: n.node.id_, text: n.node.getContent(this.metadataMode), score: n.score, stored: storedOf<M3Store>(n.node) as StoredRef | undefined })),
      ),
      this.source,
      { fusion: this.fusion, listWeights: this.retrieverWeights, c: this.rrfK, rerank: this.rerank, weights: checkM3Weights(this.weights), rerankCandidates: positiveInt(this.rerankCandidates, 'rerankCandidates', 20), k: topK },
    );
    return hits.map((h) => {
      const relevanceScore = this.rerank ? unitScore(h.score) : h.score;
      const scores: BGEM3EnsembleScores = { score: h.score, relevanceScore, fusion: h.fused, ranks: h.ranks, ...(h.scores ?? {}) };
      return { node: withScores(h.item.node, key, scores as unknown as Record<string, unknown>), score: relevanceScore };
    });
  }
}
