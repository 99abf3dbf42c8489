/**
 * The M3 "All" rerank of a candidate set: every candidate rescored exactly by dense, sparse and
 * ColBERT against the query, combined with FlagEmbedding's weighted formula. Shared by M3Index and
 * the LangChain/LlamaIndex ensemble retrievers so the scoring logic lives once.
 */
import { invalidArgument } from '../errors.js';
import { denseScore, lexicalMatchingScore } from '../scoring/scores.js';
import type { ColbertMatrix, SparseVector } from '../types.js';
import { checkM3Weights, type M3ModeScores, type M3Weights } from '../scoring/weights.js';
import { maxSim, type MaxSimOptions } from './maxsim.js';

/** What a query or a candidate must carry: the three M3 outputs. */
export interface M3Encoded {
  dense: Float32Array;
  sparse: SparseVector;
  colbert: ColbertMatrix;
}

/** One rescored candidate. */
export interface M3RerankHit {
  /** Index of the candidate in the input array. */
  index: number;
  /** The fused M3 All score. */
  score: number;
  /** Each mode's own score. */
  scores: M3ModeScores;
}

export interface M3RerankOptions extends MaxSimOptions {
  /** `[dense, sparse, colbert]` weights (default `DEFAULT_M3_WEIGHTS`, [0.4, 0.2, 0.4]). */
  weights?: M3Weights;
  /** Keep the best `k` (default: all). */
  k?: number;
}

/** Rescores candidates against the query; returns hits sorted by fused score (ties: input order). */
export async function m3Rerank(query: M3Encoded, candidates: readonly M3Encoded[], options: M3RerankOptions = {}): Promise<M3RerankHit[]> {
  const w = checkM3Weights(options.weights);
  if (options.k !== undefined && (!Number.isInteger(options.k) || options.k < 1)) invalidArgument(`k must be a positive integer, got ${options.k}`);
  if (candidates.length === 0) return [];
  // ColBERT only when its weight counts: it is the one costly mode.
  const colbert = w[2] > 0 ? await maxSim(query.colbert, candidates.map((c) => c.colbert), options) : undefined;
  const hits = candidates.map((c, index): M3RerankHit => {
    const scores = {
      dense: denseScore(query.dense, c.dense),
      sparse: lexicalMatchingScore(query.sparse, c.sparse),
      colbert: colbert ? colbert[index] : 0,
    };
    const score = (w[0] * scores.dense + w[1] * scores.sparse + w[2] * scores.colbert) / (w[0] + w[1] + w[2]);
    return { index, score, scores };
  });
  hits.sort((a, b) => b.score - a.score || a.index - b.index);
  return options.k !== undefined ? hits.slice(0, options.k) : hits;
}
