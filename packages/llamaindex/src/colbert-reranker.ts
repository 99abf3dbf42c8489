import { maxSim, type ColbertMatrix } from '@bgem3/core';
import { MetadataMode, type BaseNode, type BaseNodePostprocessor, type MessageContent, type NodeWithScore } from 'llamaindex';
import { EncoderSource, invalid, positiveInt, queryText, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3ColbertReranker}. */
export interface BGEM3ColbertRerankerOptions extends BGEM3ModelOptions {
  /** Nodes kept (default 2, as LlamaIndex's Cohere and Jina rerankers). */
  topN?: number;
  /**
   * Which node text is scored (default `MetadataMode.ALL`, as the other LlamaIndex rerankers).
   * Metadata keys excluded from both the embedding and the LLM (bookkeeping such as
   * {@link BGEM3EnsembleRetriever}'s score record) are left out in every mode.
   * Use `MetadataMode.EMBED` to score exactly the text that was embedded: with the shared encoder
   * the node is then not run through the model again.
   */
  metadataMode?: MetadataMode;
  /**
   * Score scale. `'unit'` (default): (1 + MaxSim) / 2, in [0, 1], order-preserving, so
   * `SimilarityPostprocessor({ similarityCutoff })` works (it drops scores ≤ 0 and missing scores).
   * `'raw'`: FlagEmbedding's `colbert_score` itself (mean over query tokens of the best cosine,
   * in [-1, 1]).
   */
  scoreScale?: 'unit' | 'raw';
}

/**
 * A local ColBERT (BGE-M3 multi-vector) reranker for LlamaIndex.TS query and chat engines.
 *
 * Each node is scored by MaxSim against the query: (1/N_q) Σ_i max_j q_i·p_j over BGE-M3's
 * normalised ColBERT vectors (FlagEmbedding's `colbert_score`, computed by core's `maxSim`), then
 * mapped to [0, 1] as (1 + s) / 2 unless `scoreScale: 'raw'`.
 *
 * Returns new `{ node, score }` objects (the nodes themselves are not copied or changed), best
 * first, at most `topN`; a node id given twice is scored once. No nodes give `[]`; a missing
 * query (or one without text) throws INVALID_ARGUMENT.
 *
 * @example
 * ```ts
 * const engine = index.asQueryEngine({
 *   similarityTopK: 10,
 *   nodePostprocessors: [new BGEM3ColbertReranker({ topN: 3 })],
 * });
 * ```
 */
export class BGEM3ColbertReranker implements BaseNodePostprocessor {
  /** Nodes kept. */
  topN: number;
  /** Which node text is scored. */
  metadataMode: MetadataMode;
  /** Score scale, see {@link BGEM3ColbertRerankerOptions.scoreScale}. */
  readonly scoreScale: 'unit' | 'raw';
  private readonly source: EncoderSource;

  constructor(options: BGEM3ColbertRerankerOptions = {}) {
    this.source = new EncoderSource(options);
    this.topN = positiveInt(options.topN, 2, 'topN');
    this.metadataMode = options.metadataMode ?? MetadataMode.ALL;
    if (!Object.values(MetadataMode).includes(this.metadataMode)) invalid(`metadataMode must be a MetadataMode, got ${String(options.metadataMode)}`);
    this.scoreScale = options.scoreScale ?? 'unit';
    if (this.scoreScale !== 'unit' && this.scoreScale !== 'raw') invalid(`scoreScale must be 'unit' or 'raw', got ${String(options.scoreScale)}`);
  }

  /** Reranks `nodes` by ColBERT MaxSim against `query` and keeps the best `topN`. */
  async postprocessNodes(nodes: NodeWithScore[], query?: MessageContent): Promise<NodeWithScore[]> {
    if (!Array.isArray(nodes)) invalid('postprocessNodes needs an array of nodes');
    const text = queryText(query, 'BGEM3ColbertReranker');
    const unique: NodeWithScore[] = [];
    const seen = new Set<string>();
    nodes.forEach((n, i) => {
      if (!n?.node || typeof n.node.getContent !== 'function') invalid(`nodes[${i}] is not a NodeWithScore`);
      if (seen.has(n.node.id_)) return;
      seen.add(n.node.id_);
      unique.push(n);
    });
    if (unique.length === 0) return [];
    const encoder = await this.source.get();
    const opts = { dense: false, colbert: true, ...this.source.encodeOptions };
    // One encode call for the query and the nodes (cached encodings are not recomputed).
    const [q, ...docs] = await encoder.encode([text, ...unique.map((n) => contentOf(n.node, this.metadataMode))], opts);
    const raw = await maxSim(q?.colbert as ColbertMatrix, docs.map((d) => d.colbert as ColbertMatrix));
    const scored = unique.map((n, i) => ({ n, i, s: raw[i] as number }));
    scored.sort((a, b) => b.s - a.s || a.i - b.i);
    return scored.slice(0, this.topN).map(({ n, s }) => ({ node: n.node, score: this.scoreScale === 'unit' ? unitScore(s) : s }));
  }
}

/**
 * The node text in `mode`, without metadata keys that are excluded from both the embedding and the
 * LLM: they are bookkeeping (e.g. the ensemble's per-query scores), and with `ALL` they would
 * change the scored text on every query (a new forward pass each time, and noise in the score).
 */
function contentOf(node: BaseNode, mode: MetadataMode): string {
  if (mode === MetadataMode.ALL) {
    const llm = new Set(node.excludedLlmMetadataKeys ?? []);
    const hidden = (node.excludedEmbedMetadataKeys ?? []).filter((k) => llm.has(k) && node.metadata && k in node.metadata);
    if (hidden.length > 0) {
      const copy = node.clone();
      for (const k of hidden) delete copy.metadata[k];
      return copy.getContent(mode);
    }
  }
  return node.getContent(mode);
}

/** MaxSim in [-1, 1] mapped to [0, 1]; clamped, since float rounding can put a self-match at 1 + 1e-9. */
function unitScore(s: number): number {
  return Math.min(1, Math.max(0, (1 + s) / 2));
}
