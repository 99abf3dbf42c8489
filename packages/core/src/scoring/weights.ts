/**
 * The weights of M3's three modes, in one vocabulary for the whole suite: one type
 * ({@link M3Weights}), one check ({@link checkM3Weights}), one default ({@link DEFAULT_M3_WEIGHTS})
 * and one combination ({@link m3AllScore} / {@link combineScores}).
 *
 * FlagEmbedding combines the modes as (w_d·dense + w_s·sparse + w_c·colbert) / (w_d + w_s + w_c)
 * (m3-reference, "compute_score"), so only the ratios of the weights matter. The check therefore
 * rescales the weights so the largest is 1: extreme but valid weights such as
 * `[1e308, 1e308, 1e308]` (whose sum overflows to Infinity) or `[5e-324, 0, 0]` (whose products
 * underflow to 0) give the same ranking as `[1, 1, 1]` and `[1, 0, 0]`, never NaN or a constant.
 */
import { invalidArgument } from '../errors.js';

/** Weights of M3's modes in FlagEmbedding order: `[dense, sparse, colbert]`. */
export type M3Weights = readonly [dense: number, sparse: number, colbert: number];

/** The three M3 relevance scores of one query/passage pair. */
export interface M3ModeScores {
  dense: number;
  sparse: number;
  colbert: number;
}

/**
 * The default weights of every store search, rerank and ensemble: `[0.4, 0.2, 0.4]`, the BGE-M3
 * model card's `compute_score` example. (`computeScore` keeps FlagEmbedding's own default,
 * {@link FLAG_EMBEDDING_DEFAULT_WEIGHTS}, so its numbers equal FlagEmbedding's.)
 */
export const DEFAULT_M3_WEIGHTS: M3Weights = Object.freeze([0.4, 0.2, 0.4]) as unknown as M3Weights;

/** FlagEmbedding `compute_score`'s own default weights, `[1, 1, 1]`. */
export const FLAG_EMBEDDING_DEFAULT_WEIGHTS: M3Weights = Object.freeze([1, 1, 1]) as unknown as M3Weights;

/**
 * Checks weights (three finite numbers ≥ 0, not all zero; INVALID_ARGUMENT naming `what`
 * otherwise) and returns them rescaled so that the largest is 1 (same ranking, no overflow or
 * underflow). `undefined` gives `fallback` (default {@link DEFAULT_M3_WEIGHTS}).
 */
export function checkM3Weights(weights: unknown, what = 'weights', fallback: M3Weights = DEFAULT_M3_WEIGHTS): M3Weights {
  const w = weights === undefined ? fallback : weights;
  if (!Array.isArray(w) || w.length !== 3) {
    invalidArgument(`${what} must be an array of 3 numbers [dense, sparse, colbert], got ${describe(w)}`);
  }
  let max = 0;
  for (let i = 0; i < 3; i++) {
    const x = w[i] as unknown;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) invalidArgument(`${what}[${i}] must be a finite number ≥ 0, got ${describe(x)}`);
    if (x > max) max = x;
  }
  if (max === 0) invalidArgument(`${what} are all zero: at least one must be positive`);
  return [w[0] / max, w[1] / max, w[2] / max] as const;
}

/**
 * FlagEmbedding's combined M3 score, `(w_d·dense + w_s·sparse + w_c·colbert) / Σw`, for weights
 * already checked by {@link checkM3Weights} (pass the result of the check; it is not repeated per
 * candidate). Scores must be finite (INVALID_ARGUMENT otherwise).
 */
export function m3AllScore(scores: M3ModeScores, weights: M3Weights = DEFAULT_M3_WEIGHTS): number {
  const w = weights === DEFAULT_M3_WEIGHTS ? weights : checkM3Weights(weights);
  for (const key of ['dense', 'sparse', 'colbert'] as const) {
    const v = scores?.[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) invalidArgument(`${key} score must be a finite number, got ${String(v)}`);
  }
  return (w[0] * scores.dense + w[1] * scores.sparse + w[2] * scores.colbert) / (w[0] + w[1] + w[2]);
}

/** The five keys of FlagEmbedding's `compute_score`. */
export interface ComputeScoreKeys {
  dense: number;
  sparse: number;
  colbert: number;
  'sparse+dense': number;
  'colbert+sparse+dense': number;
}

/**
 * FlagEmbedding's combinations: `sparse+dense = (w_d·dense + w_s·sparse)/(w_d+w_s)` and
 * `colbert+sparse+dense` = {@link m3AllScore}. Default weights: FlagEmbedding's `[1, 1, 1]`.
 */
export function combineScores(scores: M3ModeScores, weights: M3Weights = FLAG_EMBEDDING_DEFAULT_WEIGHTS): ComputeScoreKeys {
  const w = checkM3Weights(weights);
  const all = m3AllScore(scores, w);
  const [wd, ws] = w;
  return {
    dense: scores.dense,
    sparse: scores.sparse,
    colbert: scores.colbert,
    'sparse+dense': wd + ws > 0 ? (wd * scores.dense + ws * scores.sparse) / (wd + ws) : 0,
    'colbert+sparse+dense': all,
  };
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  return v === null ? 'null' : typeof v;
}
