/**
 * FlagEmbedding's `compute_score(sentence_pairs, …)` for BGE-M3: every mode's score for each
 * (query, passage) pair plus the weighted combinations.
 */
import { invalidArgument } from '../errors.js';
import type { M3Encoder } from '../inference/encoder.js';
import { colbertScore, denseScore, lexicalMatchingScore } from './scores.js';
import { FLAG_EMBEDDING_DEFAULT_WEIGHTS, checkM3Weights, combineScores, type ComputeScoreKeys, type M3Weights } from './weights.js';

export interface ComputeScoreOptions {
  /** [dense, sparse, colbert] (FlagEmbedding's default [1, 1, 1]). */
  weights?: M3Weights;
  /** Query max tokens (default 512). */
  maxQueryLength?: number;
  /** Passage max tokens (default 8192, FlagEmbedding 1.2's value; 1.4 uses 512). */
  maxPassageLength?: number;
  /**
   * FlagEmbedding pads the passages of each batch of `batchSize` pairs to the longest, and its
   * batched MaxSim then sees padded (zero) passage vectors: a query token whose similarities are
   * all negative scores 0 rather than its best negative value. We reproduce that exactly
   * (default 256, FlagEmbedding's batch size); set 0 for the unpadded `colbert_score` semantics.
   */
  batchSize?: number;
  signal?: AbortSignal;
}

/** A (query, passage) pair: a 2-tuple or an object. */
export type ScorePair = readonly [string, string] | { query: string; passage: string };

/** Scores pairs; returns one {@link ComputeScoreKeys} per pair, in order. */
export async function computeScore(encoder: M3Encoder, pairs: readonly ScorePair[], options: ComputeScoreOptions = {}): Promise<ComputeScoreKeys[]> {
  if (!Array.isArray(pairs)) throw new TypeError(`pairs must be an array of [query, passage], got ${typeof pairs}`);
  const queries: string[] = [];
  const passages: string[] = [];
  pairs.forEach((p, i) => {
    const q = Array.isArray(p) ? p[0] : (p as { query?: unknown })?.query;
    const d = Array.isArray(p) ? p[1] : (p as { passage?: unknown })?.passage;
    if (typeof q !== 'string' || typeof d !== 'string') {
      throw new TypeError(`pairs[${i}] must be [query, passage] or {query, passage} with string values`);
    }
    queries.push(q);
    passages.push(d);
  });
  // Checked before any encoding (and also when there are no pairs).
  const weights = checkM3Weights(options.weights, 'weights', FLAG_EMBEDDING_DEFAULT_WEIGHTS);
  const batchSize = options.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 0) invalidArgument(`batchSize must be an integer ≥ 0, got ${batchSize}`);
  const all = { dense: true, sparse: true, colbert: true };
  const [q, p] = [
    await encoder.encode(queries, { ...all, maxLength: options.maxQueryLength ?? 512, signal: options.signal }),
    await encoder.encode(passages, { ...all, maxLength: options.maxPassageLength ?? 8192, signal: options.signal }),
  ];
  return pairs.map((_, i) => {
    let floor = Number.NEGATIVE_INFINITY;
    if (batchSize > 0) {
      const start = i - (i % batchSize);
      const longest = Math.max(...p.slice(start, start + batchSize).map((r) => r.tokens));
      if (p[i].tokens < longest) floor = 0; // padded in FlagEmbedding's batch
    }
    return combineScores(
      {
        dense: denseScore(q[i].dense!, p[i].dense!),
        sparse: lexicalMatchingScore(q[i].sparse!, p[i].sparse!),
        colbert: colbertScore(q[i].colbert!, p[i].colbert!, floor),
      },
      weights,
    );
  });
}
