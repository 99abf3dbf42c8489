import { maxSim, type ColbertMatrix, type M3Store } from '@bgem3/core';
import { EncoderSource, attachSource, checkOptions, invalid, oneOf, positiveInt, storedOf, unitScore } from '@bgem3/core/adapter';
import { MetadataMode, type BaseNode, type BaseNodePostprocessor, type MessageContent, type NodeWithScore } from 'llamaindex';
import { MODEL_KEYS, metadataModeOf, queryText, settingsBase, storeBase, withScores, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3ColbertReranker}. */
export interface BGEM3ColbertRerankerOptions extends BGEM3ModelOptions {
  /** Nodes kept (default 2, as LlamaIndex's Cohere and Jina rerankers). */
  topN?: number;
  /** A store whose model to use when none is given (nodes it returned are rescored from it anyway). */
  store?: M3Store;
  /**
   * Which node text is scored, for nodes not from a store (default `MetadataMode.ALL`, as the
   * Cohere and Jina rerankers). Metadata keys hidden from both the embedding and the LLM (such as
   * the ensemble's score record) are never scored.
   */
  metadataMode?: MetadataMode;
  /**
   * The NodeWithScore's score: `'unit'` (default), (1 + MaxSim) / 2 clamped to [0, 1] (the same
   * mapping as @bgem3/langchain's relevanceScore), or `'raw'`, the MaxSim itself in [-1, 1]. The
   * raw MaxSim is also recorded under `scoresMetadataKey`.
   */
  scoreScale?: 'unit' | 'raw';
  /**
   * Metadata key of the scores (default `"bgem3_rerank"`, hidden from embeddings and prompts, so a
   * retriever's `bgem3_scores` stay beside it); `null`: none, the nodes are returned as given.
   */
  scoresMetadataKey?: string | null;
}

const KEYS = [...MODEL_KEYS, 'topN', 'store', 'metadataMode', 'scoreScale', 'scoresMetadataKey'];

/**
 * A local ColBERT (BGE-M3 multi-vector) reranker for LlamaIndex query and chat engines: MaxSim,
 * (1/N_q) Σ_i max_j q_i·p_j (FlagEmbedding's `colbert_score`). Returns new `{ node, score }`
 * objects, best first, at most `topN`; a node id given twice is scored once. No nodes give `[]`
 * (whatever the query); a missing query with nodes throws INVALID_ARGUMENT.
 */
export class BGEM3ColbertReranker implements BaseNodePostprocessor {
  /** Nodes kept. */
  topN: number;
  /** Which node text is scored. */
  metadataMode: MetadataMode;
  readonly scoreScale: 'unit' | 'raw';
  readonly scoresMetadataKey: string | null;
  private readonly source: EncoderSource;

  constructor(options: BGEM3ColbertRerankerOptions = {}) {
    const o = checkOptions(options, KEYS, 'BGEM3ColbertReranker');
    const { topN: _t, store, metadataMode: _m, scoreScale: _s, scoresMetadataKey: _k, ...model } = o;
    this.source = new EncoderSource(model, store ? storeBase(store) : settingsBase);
    attachSource(this, this.source);
    this.topN = positiveInt(o.topN, 'topN', 2);
    this.metadataMode = metadataModeOf(o.metadataMode, MetadataMode.ALL);
    this.scoreScale = oneOf(o.scoreScale, ['unit', 'raw'] as const, 'scoreScale', 'unit');
    const key = o.scoresMetadataKey === undefined ? 'bgem3_rerank' : o.scoresMetadataKey;
    if (key !== null && (typeof key !== 'string' || key.length === 0)) invalid('scoresMetadataKey must be a non-empty string or null');
    this.scoresMetadataKey = key;
  }

  /** Reranks `nodes` by ColBERT MaxSim against `query` and keeps the best `topN`. */
  async postprocessNodes(nodes: NodeWithScore[], query?: MessageContent): Promise<NodeWithScore[]> {
    if (nodes === undefined || nodes === null) return [];
    if (!Array.isArray(nodes)) invalid('postprocessNodes needs an array of nodes');
    if (nodes.length === 0) return [];
    const text = queryText(query, 'BGEM3ColbertReranker');
    const unique: NodeWithScore[] = [];
    const seen = new Set<string>();
    nodes.forEach((n, i) => {
      if (!n?.node || typeof n.node.getContent !== 'function') invalid(`nodes[${i}] is not a NodeWithScore`);
      if (seen.has(n.node.id_)) return;
      seen.add(n.node.id_);
      unique.push(n);
    });
    const enc = await this.source.get();
    const raw = new Float64Array(unique.length);
    const byStore = new Map<M3Store, { i: number; id: string }[]>();
    const toEncode: number[] = [];
    unique.forEach((n, i) => {
      const ref = storedOf<M3Store>(n.node);
      if (ref && ref.store.modelId === enc.modelId) {
        const g = byStore.get(ref.store) ?? [];
        g.push({ i, id: ref.id });
        byStore.set(ref.store, g);
      } else toEncode.push(i);
    });
    // One encode call: the query (all outputs if a store rescores) and the nodes not from a store.
    const encoded = await this.source.encode([text, ...toEncode.map((i) => contentOf((unique[i] as NodeWithScore).node, this.metadataMode))], {
      dense: byStore.size > 0,
      sparse: byStore.size > 0,
      colbert: true,
    });
    const q = encoded[0] as NonNullable<(typeof encoded)[0]>;
    const late: number[] = [];
    for (const [store, group] of byStore) {
      const results = await store.rescore(q, group.map((g) => g.id), { weights: [0, 0, 1] });
      const byId = new Map(results.map((r) => [r.id, r.scores.colbert]));
      for (const g of group) {
        const s = byId.get(g.id);
        if (s === undefined) late.push(g.i);
        else raw[g.i] = s;
      }
    }
    const lateEncoded = late.length > 0 ? await this.source.encode(late.map((i) => contentOf((unique[i] as NodeWithScore).node, this.metadataMode)), { dense: false, colbert: true }) : [];
    const idx = [...toEncode, ...late];
    const mats = [...encoded.slice(1), ...lateEncoded].map((e) => e.colbert as ColbertMatrix);
    if (mats.length > 0) {
      const s = await maxSim(q.colbert as ColbertMatrix, mats);
      idx.forEach((i, j) => {
        raw[i] = s[j] as number;
      });
    }
    const scored = unique.map((n, i) => ({ n, i, s: raw[i] as number }));
    scored.sort((a, b) => b.s - a.s || a.i - b.i);
    return scored.slice(0, positiveInt(this.topN, 'topN', 2)).map(({ n, s }) => {
      const score = this.scoreScale === 'unit' ? unitScore(s) : s;
      return { node: withScores(n.node, this.scoresMetadataKey, { colbert: s, relevanceScore: unitScore(s) }), score };
    });
  }
}

/**
 * The node text in `mode`, without metadata keys hidden from both the embedding and the LLM
 * (bookkeeping such as score records, which would change the scored text on every query).
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
