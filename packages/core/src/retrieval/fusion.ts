/**
 * Score fusion: combining ranked lists from several retrievers, and combining M3's three scores.
 *
 * - {@link reciprocalRankFusion}: RRF (Cormack et al. 2009), score = Σ_s w_s / (k + rank_s), with
 *   per-source weights really applied (Python LlamaIndex ignored `retriever_weights` in RRF until
 *   PR #22171; llamaindexts.md).
 * - {@link weightedScoreFusion}: LlamaIndex's "relative score" fusion — min-max each list, then a
 *   weighted sum (weights normalised to sum 1, so min-max results stay in [0, 1]).
 * (The combination of M3's three mode scores is in scoring/weights.ts.)
 *
 * Each list is deduplicated first (an id counts once, at its first, best, position; ranks are
 * positions in the deduplicated list), so a retriever returning the same chunk twice cannot
 * inflate it (LangChain Python issue #37046). Results are sorted by fused score descending, then
 * id ascending.
 */
import { invalidArgument } from '../errors.js';
import { sortHits, type ScoredId } from './topk.js';

/** An entry of a ranked list: only the id (and, for score fusion, the score) is used. */
export interface RankedEntry {
  id: string;
  score?: number;
}

/** Options of {@link reciprocalRankFusion}. */
export interface RrfOptions {
  /** The RRF constant (default 60): larger values flatten the advantage of top ranks. */
  k?: number;
  /** One weight per list (default all 1); a weight of 0 ignores that list. */
  weights?: readonly number[];
}

/** Options of {@link weightedScoreFusion}. */
export interface WeightedFusionOptions {
  /** One weight per list (default equal); normalised to sum 1. A weight of 0 ignores that list. */
  weights?: readonly number[];
  /**
   * 'minmax' (default): each list's scores are mapped to [0, 1] by (s − min)/(max − min) before
   * weighting (a list whose scores are all equal maps to 1 if they are positive, else 0, as in
   * LlamaIndex). 'none': raw scores are weighted and summed (only meaningful when the scores of
   * the lists are on comparable scales).
   */
  normalize?: 'minmax' | 'none';
}

/**
 * Validates the weights of `n` fused lists: `n` finite, non-negative numbers, not all zero. Returns a copy.
 * Throws INVALID_ARGUMENT naming the problem otherwise.
 */
export function checkFusionWeights(weights: readonly number[] | undefined, n: number, what = 'weights'): number[] {
  if (weights === undefined) return new Array<number>(n).fill(1);
  if (!Array.isArray(weights) || weights.length !== n) {
    invalidArgument(`${what} must be an array of ${n} numbers (one per ${n === 3 ? 'mode: dense, sparse, colbert' : 'list'}), got ${Array.isArray(weights) ? weights.length : typeof weights}`);
  }
  let sum = 0;
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) invalidArgument(`${what}[${i}] must be a finite number ≥ 0, got ${String(w)}`);
    sum += w;
  });
  if (sum === 0) invalidArgument(`${what} are all zero: at least one must be positive`);
  return [...weights];
}

function checkLists(lists: readonly (readonly RankedEntry[])[]): void {
  if (!Array.isArray(lists)) invalidArgument('lists must be an array of ranked lists');
  lists.forEach((l, i) => {
    if (!Array.isArray(l)) invalidArgument(`lists[${i}] must be an array`);
  });
}

/**
 * Reciprocal rank fusion: each id scores Σ over lists of `weight / (k + rank)`, rank 1-based,
 * using the id's first position in each list. Returns the union of ids (from lists with a
 * positive weight), best first.
 */
export function reciprocalRankFusion(lists: readonly (readonly RankedEntry[])[], options: RrfOptions = {}): ScoredId[] {
  checkLists(lists);
  if (lists.length === 0) return [];
  const k = options.k ?? 60;
  if (typeof k !== 'number' || !Number.isFinite(k) || k < 0) invalidArgument(`k must be a finite number ≥ 0, got ${String(k)}`);
  const weights = checkFusionWeights(options.weights, lists.length);
  const scores = new Map<string, number>();
  lists.forEach((list, s) => {
    const w = weights[s];
    if (w === 0) return;
    const seen = new Set<string>();
    list.forEach((entry, i) => {
      const id = entry?.id;
      if (typeof id !== 'string') invalidArgument(`lists[${s}][${i}] has no string id`);
      if (seen.has(id)) return;
      seen.add(id);
      const rank = seen.size; // 1-based rank among distinct ids
      scores.set(id, (scores.get(id) ?? 0) + w / (k + rank));
    });
  });
  return sortHits([...scores].map(([id, score]) => ({ id, score })));
}

/**
 * Weighted score fusion ("relative score fusion" with `normalize: 'minmax'`, the default):
 * per-list normalisation, then Σ normalised weight × score per id. Every entry needs a finite
 * `score`. Returns the union of ids (from lists with a positive weight), best first.
 */
export function weightedScoreFusion(lists: readonly (readonly RankedEntry[])[], options: WeightedFusionOptions = {}): ScoredId[] {
  checkLists(lists);
  if (lists.length === 0) return [];
  const normalize = options.normalize ?? 'minmax';
  if (normalize !== 'minmax' && normalize !== 'none') invalidArgument(`normalize must be 'minmax' or 'none', got ${String(normalize)}`);
  const weights = checkFusionWeights(options.weights, lists.length);
  const total = weights.reduce((a, b) => a + b, 0);
  const fused = new Map<string, number>();
  lists.forEach((list, s) => {
    const w = weights[s] / total;
    if (w === 0) return;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    list.forEach((e, i) => {
      if (typeof e?.id !== 'string') invalidArgument(`lists[${s}][${i}] has no string id`);
      if (typeof e.score !== 'number' || !Number.isFinite(e.score)) invalidArgument(`lists[${s}][${i}] (${e.id}) needs a finite score, got ${String(e.score)}`);
      if (e.score < min) min = e.score;
      if (e.score > max) max = e.score;
    });
    const seen = new Set<string>();
    for (const e of list) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      const x = e.score as number;
      const norm = normalize === 'none' ? x : max === min ? (max > 0 ? 1 : 0) : (x - min) / (max - min);
      fused.set(e.id, (fused.get(e.id) ?? 0) + w * norm);
    }
  });
  return sortHits([...fused].map(([id, score]) => ({ id, score })));
}
