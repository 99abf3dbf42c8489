import {
  m3AllScore,
  m3Rerank,
  reciprocalRankFusion,
  weightedScoreFusion,
  type M3Encoded,
  type M3ScoreWeights,
  type RankedEntry,
  type ScoredId,
} from '@bgem3/core';
import { BaseRetriever, DEFAULT_SIMILARITY_TOP_K, MetadataMode, type BaseNode, type NodeWithScore, type QueryBundle } from 'llamaindex';
import { EncoderSource, invalid, positiveInt, queryText, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3EnsembleRetriever}. */
export interface BGEM3EnsembleRetrieverOptions extends BGEM3ModelOptions {
  /**
   * The retrievers whose results are fused, typically a dense one and a sparse one:
   * `[index.asRetriever({ similarityTopK: 10 }), sparseRetriever]`. They must return the same node
   * ids for the same chunks (index the same nodes in both).
   */
  retrievers: BaseRetriever[];
  /** One weight per retriever (default all 1), applied in both fusion modes. 0 ignores a retriever. */
  retrieverWeights?: number[];
  /**
   * `'rrf'` (default): reciprocal rank fusion, Σ weight / (rrfK + rank).
   * `'relative-score'`: each list's scores min-max normalised to [0, 1], then a weighted sum
   * (weights normalised to sum 1; a result without a numeric score counts as 0).
   */
  fusion?: 'rrf' | 'relative-score';
  /** The RRF constant (default 60). */
  rrfK?: number;
  /**
   * Rescore the fused candidates with BGE-M3's All score (default true). With false the fused
   * order and fusion scores are returned.
   */
  rerank?: boolean;
  /** [dense, sparse, colbert] weights of the All score (default [0.4, 0.2, 0.4], the model card's). */
  weights?: M3ScoreWeights;
  /** Results per query (default 2, LlamaIndex's `DEFAULT_SIMILARITY_TOP_K`). */
  topK?: number;
  /**
   * Which node text is encoded for the rerank (default `MetadataMode.EMBED`: the text
   * `BGEM3Embedding` and `BGEM3SparseRetriever` encode, so indexed nodes are cache hits).
   */
  metadataMode?: MetadataMode;
  /**
   * Metadata key under which each returned node records its scores ({@link BGEM3EnsembleScores}),
   * default `'bgem3_scores'`; the key is added to the node's excluded embed and LLM metadata keys,
   * so it never reaches prompts or embeddings. `null` records nothing (nodes are then returned
   * as the retrievers gave them, not copied).
   */
  scoresMetadataKey?: string | null;
}

/** The scores an ensemble result records in its metadata. */
export interface BGEM3EnsembleScores {
  /** The final score (the M3 All score when reranked, else the fusion score). */
  score: number;
  /** The fusion score (RRF or relative-score). */
  fusion: number;
  /** 1-based rank of the node in each retriever's (deduplicated) results, null where absent. */
  ranks: (number | null)[];
  /** Dense score (cosine of the CLS vectors), when reranked. */
  dense?: number;
  /** Sparse (lexical matching) score, when reranked. */
  sparse?: number;
  /** ColBERT MaxSim score, when reranked. */
  colbert?: number;
}

/**
 * Hybrid retrieval for LlamaIndex.TS (which has no fusion or ensemble retriever): runs several
 * retrievers, fuses their lists (weighted RRF or relative-score fusion), deduplicates by node id,
 * rescores the candidates with BGE-M3's All score — (w_d·dense + w_s·sparse + w_c·colbert) /
 * Σw, computed exactly by core's `m3Rerank` — and returns the best `topK`.
 *
 * It encodes the query itself (query engines pass retrievers a plain string), before calling the
 * sub-retrievers, so with the shared encoder a `BGEM3Embedding`-based vector retriever and a
 * {@link BGEM3SparseRetriever} reuse that one pass.
 *
 * Each result is a copy of the node with its scores under `metadata[scoresMetadataKey]`
 * ({@link BGEM3EnsembleScores}; excluded from embed/LLM metadata). Scores are not clamped: the
 * All score can be slightly negative for unrelated text.
 *
 * @example
 * ```ts
 * const hybrid = new BGEM3EnsembleRetriever({
 *   retrievers: [index.asRetriever({ similarityTopK: 10 }), new BGEM3SparseRetriever({ docStore: index.docStore, topK: 10 })],
 *   topK: 5,
 * });
 * const engine = index.asQueryEngine({ retriever: hybrid });
 * ```
 */
export class BGEM3EnsembleRetriever extends BaseRetriever {
  /** Results per query. */
  topK: number;
  readonly retrievers: readonly BaseRetriever[];
  readonly retrieverWeights: readonly number[];
  readonly fusion: 'rrf' | 'relative-score';
  readonly rrfK: number;
  readonly rerank: boolean;
  readonly weights: M3ScoreWeights;
  readonly metadataMode: MetadataMode;
  readonly scoresMetadataKey: string | null;
  private readonly source: EncoderSource;

  constructor(options: BGEM3EnsembleRetrieverOptions) {
    super();
    if (options === null || typeof options !== 'object') invalid('BGEM3EnsembleRetriever needs options with `retrievers`');
    this.source = new EncoderSource(options);
    const { retrievers } = options;
    if (!Array.isArray(retrievers) || retrievers.length === 0) invalid('retrievers must be a non-empty array of retrievers');
    retrievers.forEach((r, i) => {
      if (typeof (r as BaseRetriever | undefined)?.retrieve !== 'function') invalid(`retrievers[${i}] is not a retriever (it has no retrieve())`);
    });
    this.retrievers = [...retrievers];
    this.retrieverWeights = [...(options.retrieverWeights ?? retrievers.map(() => 1))];
    this.rrfK = options.rrfK ?? 60;
    // Core validates weights and k (INVALID_ARGUMENT naming the problem): check them up front.
    reciprocalRankFusion(
      retrievers.map(() => []),
      { k: this.rrfK, weights: this.retrieverWeights },
    );
    this.fusion = options.fusion ?? 'rrf';
    if (this.fusion !== 'rrf' && this.fusion !== 'relative-score') invalid(`fusion must be 'rrf' or 'relative-score', got ${String(options.fusion)}`);
    this.rerank = options.rerank ?? true;
    this.weights = options.weights ?? [0.4, 0.2, 0.4];
    m3AllScore({ dense: 0, sparse: 0, colbert: 0 }, this.weights);
    this.topK = positiveInt(options.topK, DEFAULT_SIMILARITY_TOP_K, 'topK');
    this.metadataMode = options.metadataMode ?? MetadataMode.EMBED;
    if (!Object.values(MetadataMode).includes(this.metadataMode)) invalid(`metadataMode must be a MetadataMode, got ${String(options.metadataMode)}`);
    const key = options.scoresMetadataKey === undefined ? 'bgem3_scores' : options.scoresMetadataKey;
    if (key !== null && (typeof key !== 'string' || key.length === 0)) invalid('scoresMetadataKey must be a non-empty string or null');
    this.scoresMetadataKey = key;
  }

  /** Fused, deduplicated and (by default) M3-reranked top-`topK` nodes. */
  async _retrieve(params: QueryBundle): Promise<NodeWithScore[]> {
    const text = queryText(params, 'BGEM3EnsembleRetriever');
    const encoder = await this.source.get();
    const all = { dense: true, sparse: true, colbert: true, ...this.source.encodeOptions };
    // The query first: the sub-retrievers' own query encodings are then cache hits.
    const [query] = await encoder.encode([text], all);
    const results = await Promise.all(this.retrievers.map((r) => r.retrieve(params)));

    const nodes = new Map<string, BaseNode>();
    const ranks = new Map<string, (number | null)[]>();
    const lists: RankedEntry[][] = results.map((list) =>
      (Array.isArray(list) ? list : []).flatMap((n) => {
        const node = n?.node;
        if (!node || typeof node.id_ !== 'string') return [];
        if (!nodes.has(node.id_)) nodes.set(node.id_, node);
        const r = ranks.get(node.id_) ?? this.retrievers.map(() => null);
        ranks.set(node.id_, r);
        return [{ id: node.id_, score: typeof n.score === 'number' && Number.isFinite(n.score) ? n.score : 0 }];
      }),
    );
    // 1-based rank among each list's distinct ids (the rank fusion uses).
    lists.forEach((list, s) => {
      let rank = 0;
      for (const e of list) {
        const r = ranks.get(e.id) as (number | null)[];
        if (r[s] === null) r[s] = ++rank;
      }
    });
    const fused: ScoredId[] =
      this.fusion === 'rrf'
        ? reciprocalRankFusion(lists, { k: this.rrfK, weights: this.retrieverWeights })
        : weightedScoreFusion(lists, { weights: this.retrieverWeights });
    if (fused.length === 0) return [];

    if (!this.rerank) {
      return fused.slice(0, this.topK).map((f) => this.result(nodes.get(f.id) as BaseNode, f.score, { score: f.score, fusion: f.score, ranks: ranks.get(f.id) as (number | null)[] }));
    }
    const candidates = fused.map((f) => nodes.get(f.id) as BaseNode);
    const encoded = await encoder.encode(
      candidates.map((n) => n.getContent(this.metadataMode)),
      all,
    );
    const hits = await m3Rerank(query as M3Encoded, encoded as M3Encoded[], { weights: this.weights, k: this.topK });
    return hits.map((h) => {
      const f = fused[h.index] as ScoredId;
      return this.result(candidates[h.index] as BaseNode, h.score, {
        score: h.score,
        fusion: f.score,
        ranks: ranks.get(f.id) as (number | null)[],
        ...h.scores,
      });
    });
  }

  private result(node: BaseNode, score: number, scores: BGEM3EnsembleScores): NodeWithScore {
    const key = this.scoresMetadataKey;
    if (key === null) return { node, score };
    const copy = node.clone();
    copy.metadata = { ...copy.metadata, [key]: scores };
    const embedKeys = copy.excludedEmbedMetadataKeys ?? [];
    const llmKeys = copy.excludedLlmMetadataKeys ?? [];
    copy.excludedEmbedMetadataKeys = embedKeys.includes(key) ? embedKeys : [...embedKeys, key];
    copy.excludedLlmMetadataKeys = llmKeys.includes(key) ? llmKeys : [...llmKeys, key];
    return { node: copy, score };
  }
}
