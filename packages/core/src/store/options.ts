/**
 * The options of the store methods, checked once for every store: the same mistake gets the same
 * INVALID_ARGUMENT, naming the option, in M3Index and PgM3Store, before any work is done.
 */
import { invalidArgument } from '../errors.js';
import { checkM3Weights, type M3Weights } from '../scoring/weights.js';
import type { JsonObject, M3RescoreOptions, M3SearchOptions, M3SingleModeOptions } from './types.js';
import { checkFilterFunction, checkPositiveInt, checkSignal } from './validate.js';
import { checkWhere, type WhereNode } from './where.js';

/** Default number of results. */
export const DEFAULT_K = 10;
/** Default candidates per first-stage mode. */
export const DEFAULT_FETCH_K = 100;
/**
 * Default ColBERT rerank depth of a hybrid search (`rerankDepth`), the same in every store:
 * chosen by measurement (bench/store.bench.ts "rerank depth" and bench/pgvector.bench.ts): the
 * top 10 of the best 40 by dense + sparse, reranked, agrees with exact rescoring of all candidates
 * on synthetic real-size data in most queries (figures in BENCHMARKS.md), for a fifth of the
 * ColBERT reads and MaxSim work of fetchK 100.
 */
export const DEFAULT_RERANK_DEPTH = 40;
/** Largest k / fetchK a search takes (a bound on the work and memory of one call). */
export const MAX_K = 100_000;

/** Filters of a checked call. */
export interface CheckedFilters {
  where: WhereNode | undefined;
  filter: ((metadata: JsonObject, id: string) => boolean) | undefined;
}

/** A checked {@link M3SingleModeOptions}. */
export interface CheckedSingleMode extends CheckedFilters {
  k: number;
  signal: AbortSignal | undefined;
}

/** A checked {@link M3SearchOptions}: fetchK and rerankDepth are at least k; weights rescaled (see checkM3Weights). */
export interface CheckedSearch extends CheckedSingleMode {
  fetchK: number;
  weights: M3Weights;
  rerankDepth: number;
}

/** A checked {@link M3RescoreOptions}. */
export interface CheckedRescore {
  k: number | undefined;
  weights: M3Weights;
  signal: AbortSignal | undefined;
}

function checkObject(options: unknown, what: string): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) invalidArgument(`${what} must be an object`);
  return options as Record<string, unknown>;
}

/** Checks the options of `searchDense` / `searchSparse`. */
export function checkSingleModeOptions(options: M3SingleModeOptions | undefined, what = 'options'): CheckedSingleMode {
  const o = checkObject(options, what);
  return {
    k: checkPositiveInt(o.k, 'k', DEFAULT_K, MAX_K),
    where: checkWhere(o.where),
    filter: checkFilterFunction(o.filter),
    signal: checkSignal(o.signal),
  };
}

/**
 * Checks the options of `search`. `defaultWeights` lets a store without ColBERT vectors default
 * to dense + sparse; `defaultRerankDepth` is the store's (see {@link checkRerankDepth}).
 */
export function checkSearchOptions(options: M3SearchOptions | undefined, what = 'options', defaultWeights?: M3Weights, defaultRerankDepth = DEFAULT_RERANK_DEPTH): CheckedSearch {
  const o = checkObject(options, what);
  const single = checkSingleModeOptions(options, what);
  const fetchK = checkPositiveInt(o.fetchK, 'fetchK', DEFAULT_FETCH_K, MAX_K);
  const rerankDepth = checkRerankDepth(o.rerankDepth, 'rerankDepth', defaultRerankDepth);
  return { ...single, fetchK: Math.max(fetchK, single.k), weights: checkM3Weights(o.weights, 'weights', defaultWeights), rerankDepth: Math.max(rerankDepth, single.k) };
}

/** Checks a `rerankDepth` (a store's default or a search's): a positive integer ≤ 2·MAX_K. */
export function checkRerankDepth(v: unknown, what = 'rerankDepth', fallback = DEFAULT_RERANK_DEPTH): number {
  return checkPositiveInt(v, what, fallback, 2 * MAX_K);
}

/**
 * Which candidates of a hybrid search get the ColBERT rerank (see M3SearchOptions.rerankDepth):
 * given the candidates' exact dense and sparse scores, the indexes of the best `depth` by
 * w_d·dense + w_s·sparse (ties: id ascending, as every store ranks), or all of them when ColBERT
 * does not count, when dense and sparse both weigh 0, or when they fit. Shared by the stores so
 * the same candidates get ColBERT everywhere.
 */
export function rerankSelection(ids: readonly string[], dense: ArrayLike<number>, sparse: ArrayLike<number>, weights: M3Weights, depth: number): number[] {
  const all = ids.map((_, i) => i);
  const [wd, ws, wc] = weights;
  if (wc === 0 || wd + ws === 0 || ids.length <= depth) return all;
  const partial = all.map((i) => wd * dense[i] + ws * sparse[i]);
  all.sort((a, b) => partial[b] - partial[a] || (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : 0));
  return all.slice(0, depth);
}

/** Checks the options of `rescore`. */
export function checkRescoreOptions(options: M3RescoreOptions | undefined, what = 'options', defaultWeights?: M3Weights): CheckedRescore {
  const o = checkObject(options, what);
  return {
    k: o.k === undefined ? undefined : checkPositiveInt(o.k, 'k', DEFAULT_K, MAX_K),
    weights: checkM3Weights(o.weights, 'weights', defaultWeights),
    signal: checkSignal(o.signal),
  };
}
