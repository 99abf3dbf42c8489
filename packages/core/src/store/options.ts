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

/** A checked {@link M3SearchOptions}: fetchK is at least k; weights rescaled (see checkM3Weights). */
export interface CheckedSearch extends CheckedSingleMode {
  fetchK: number;
  weights: M3Weights;
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
 * to dense + sparse.
 */
export function checkSearchOptions(options: M3SearchOptions | undefined, what = 'options', defaultWeights?: M3Weights): CheckedSearch {
  const o = checkObject(options, what);
  const single = checkSingleModeOptions(options, what);
  const fetchK = checkPositiveInt(o.fetchK, 'fetchK', DEFAULT_FETCH_K, MAX_K);
  return { ...single, fetchK: Math.max(fetchK, single.k), weights: checkM3Weights(o.weights, 'weights', defaultWeights) };
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
