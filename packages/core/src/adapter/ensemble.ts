/**
 * The ensemble over retrievers the application already has (its vector store's retriever, a BM25
 * retriever, …): the lists are fused, the candidates deduplicated, and the best ones reranked by
 * the M3 All score. Used by both adapters' `BGEM3EnsembleRetriever`.
 *
 * - **Dedup.** Two entries are one candidate when they have the same id, or the same text (unless
 *   both have ids, different ones, in the same list: two stored documents with equal text). So a
 *   chunk found by a dense and a sparse retriever is one candidate even when neither gives ids
 *   (LangChain's MemoryVectorStore, loaders and splitters leave `Document.id` empty) or when the
 *   two give different ids (two LlamaIndex splits of the same documents). No id is ever invented:
 *   a candidate has the id its entries carry, or none.
 * - **Stored vectors.** An entry may say where its vectors are stored (`stored`: a store and the
 *   id there, set by the adapters' store-backed retrievers); such candidates are rescored from
 *   the store (`M3Store.rescore`), nothing encoded.
 * - **Cost cap.** The other candidates are encoded, all in ONE encoder call, and only the best
 *   `rerankCandidates` of the fused list are reranked at all: at most `rerankCandidates` passages
 *   go through the model per query (fewer when the encode cache has them), plus the query.
 */
import { M3Error, checkM3Weights, m3Rerank, reciprocalRankFusion, weightedScoreFusion, type EncodeResult, type M3Encoded, type M3ModeScores, type M3Store, type M3Weights } from './core.js';
import type { EncoderSource } from './encoder-source.js';

/** One entry of a retriever's list. */
export interface EnsembleEntry<T> {
  /** The framework object (a Document, a NodeWithScore). */
  item: T;
  /** Its id, when the retriever gives one. */
  id?: string | undefined;
  /** The text that is compared for dedup and encoded for the rerank. */
  text: string;
  /** The retriever's score (for relative-score fusion). */
  score?: number | undefined;
  /** Where its M3 vectors are stored, if they are. */
  stored?: StoredRef | undefined;
}

/** A document in a store: the store and its id there. */
export interface StoredRef {
  store: M3Store;
  id: string;
}

/** Options of {@link fuseAndRerank} (checked by the adapters). */
export interface EnsembleOptions {
  /** `"rrf"`: Σ w / (c + rank); `"relative-score"`: min-max normalised retriever scores, weighted. */
  fusion: 'rrf' | 'relative-score';
  /** One weight per list. */
  listWeights: readonly number[];
  /** The RRF constant. */
  c: number;
  /** Rerank by the M3 All score (else: the fused order). */
  rerank: boolean;
  /** `[dense, sparse, colbert]` weights of the rerank. */
  weights: M3Weights;
  /** The best fused candidates that are reranked (the cost cap). */
  rerankCandidates: number;
  /** Results. */
  k: number;
  signal?: AbortSignal | undefined;
}

/** One result. */
export interface EnsembleHit<T> {
  /** The first entry's item (the framework object returned). */
  item: T;
  /** Every item merged into this candidate, in list order (the first is `item`). */
  items: T[];
  /** The candidate's id (from its entries), if any. */
  id: string | undefined;
  /** The score results are ordered by: the M3 All score, or the fused score without rerank. */
  score: number;
  /** The fusion score. */
  fused: number;
  /** 1-based rank in each list (null: absent from it). */
  ranks: (number | null)[];
  /** Each mode's score, when reranked. */
  scores?: M3ModeScores;
}

interface Candidate<T> {
  key: string;
  item: T;
  items: T[];
  id: string | undefined;
  text: string;
  stored: StoredRef | undefined;
  lists: Set<number>;
  ranks: (number | null)[];
  scores: (number | undefined)[];
}

/** Dedups the lists into candidates (see the file comment). */
export function dedupe<T>(lists: readonly (readonly EnsembleEntry<T>[])[]): Candidate<T>[] {
  const all: Candidate<T>[] = [];
  const byId = new Map<string, Candidate<T>>();
  const byText = new Map<string, Candidate<T>[]>();
  lists.forEach((list, li) => {
    let rank = 0;
    for (const e of list) {
      const id = typeof e.id === 'string' && e.id.length > 0 ? e.id : undefined;
      let c = id !== undefined ? byId.get(id) : undefined;
      if (!c) c = byText.get(e.text)?.find((t) => !(id !== undefined && t.id !== undefined && t.id !== id && t.lists.has(li)));
      if (!c) {
        c = { key: String(all.length), item: e.item, items: [], id, text: e.text, stored: undefined, lists: new Set(), ranks: lists.map(() => null), scores: lists.map(() => undefined) };
        all.push(c);
        const same = byText.get(e.text);
        if (same) same.push(c);
        else byText.set(e.text, [c]);
      }
      if (id !== undefined && c.id === undefined) c.id = id;
      if (id !== undefined && !byId.has(id)) byId.set(id, c);
      c.stored ??= e.stored;
      if (!c.items.includes(e.item)) c.items.push(e.item);
      if (!c.lists.has(li)) {
        c.lists.add(li);
        c.ranks[li] = ++rank;
        c.scores[li] = typeof e.score === 'number' && Number.isFinite(e.score) ? e.score : undefined;
      }
    }
  });
  return all;
}

/**
 * Fuses, dedups and reranks the lists for `query` (see the file comment). The query is encoded
 * once (all outputs the rerank needs); candidates with stored vectors are rescored from their
 * store; the others are encoded in one call.
 */
export async function fuseAndRerank<T>(query: string, lists: readonly (readonly EnsembleEntry<T>[])[], source: EncoderSource, o: EnsembleOptions): Promise<EnsembleHit<T>[]> {
  const cands = dedupe(lists);
  if (cands.length === 0) return [];
  const byKey = new Map(cands.map((c) => [c.key, c]));
  const entries = lists.map((_, li) =>
    cands
      .filter((c) => c.ranks[li] !== null)
      .sort((a, b) => (a.ranks[li] as number) - (b.ranks[li] as number))
      .map((c) => ({ id: c.key, ...(c.scores[li] !== undefined ? { score: c.scores[li] } : { score: 0 }) })),
  );
  const fused = o.fusion === 'rrf' ? reciprocalRankFusion(entries, { k: o.c, weights: o.listWeights }) : weightedScoreFusion(entries, { weights: o.listWeights });
  const hit = (c: Candidate<T>, score: number, fusedScore: number, scores?: M3ModeScores): EnsembleHit<T> => ({
    item: c.item,
    items: c.items,
    id: c.id,
    score,
    fused: fusedScore,
    ranks: c.ranks,
    ...(scores ? { scores } : {}),
  });
  if (!o.rerank) return fused.slice(0, o.k).map((f) => hit(byKey.get(f.id) as Candidate<T>, f.score, f.score));

  const weights = checkM3Weights(o.weights);
  const useColbert = weights[2] > 0;
  const pool = fused.slice(0, o.rerankCandidates).map((f) => ({ c: byKey.get(f.id) as Candidate<T>, fused: f.score }));
  const [q] = await source.encode([query], { dense: true, sparse: true, colbert: useColbert, ...(o.signal ? { signal: o.signal } : {}) });
  const q3 = q as EncodeResult;
  const scored = new Map<string, { score: number; scores: M3ModeScores }>();

  // Candidates whose vectors are stored: one rescore per store, nothing encoded.
  const byStore = new Map<M3Store, { c: Candidate<T>; id: string }[]>();
  for (const p of pool) {
    if (!p.c.stored) continue;
    const group = byStore.get(p.c.stored.store) ?? [];
    group.push({ c: p.c, id: p.c.stored.id });
    byStore.set(p.c.stored.store, group);
  }
  const enc = await source.get();
  for (const [store, group] of byStore) {
    if (store.modelId !== enc.modelId) {
      throw new M3Error('INDEX_MISMATCH', `a candidate's store was made with model ${JSON.stringify(store.modelId)}, but this ensemble encodes with ${JSON.stringify(enc.modelId)}: give the ensemble the store's model`);
    }
    const results = await store.rescore(q3, group.map((g) => g.id), { weights, ...(o.signal ? { signal: o.signal } : {}) });
    const byId = new Map(results.map((r) => [r.id, r]));
    for (const g of group) {
      const r = byId.get(g.id);
      if (r) scored.set(g.c.key, { score: r.score, scores: { dense: r.scores.dense, sparse: r.scores.sparse, colbert: useColbert ? r.scores.colbert : 0 } });
    }
  }

  // The others (and stored ones deleted meanwhile): encoded in one call.
  const rest = pool.filter((p) => !scored.has(p.c.key));
  if (rest.length > 0) {
    const encoded = await source.encode(
      rest.map((p) => p.c.text),
      { dense: true, sparse: true, colbert: useColbert, ...(o.signal ? { signal: o.signal } : {}) },
    );
    const none = { data: new Float32Array(0), count: 0, dim: enc.dim };
    const asM3 = (e: EncodeResult): M3Encoded => ({ dense: e.dense as Float32Array, sparse: e.sparse as M3Encoded['sparse'], colbert: e.colbert ?? none });
    const hits = await m3Rerank(asM3(q3), encoded.map(asM3), { weights });
    for (const h of hits) scored.set((rest[h.index] as { c: Candidate<T> }).c.key, { score: h.score, scores: h.scores });
  }
  const out = pool.map((p, i) => ({ p, i, s: scored.get(p.c.key) as { score: number; scores: M3ModeScores } }));
  out.sort((a, b) => b.s.score - a.s.score || a.i - b.i);
  return out.slice(0, o.k).map(({ p, s }) => hit(p.c, s.score, p.fused, s.scores));
}
