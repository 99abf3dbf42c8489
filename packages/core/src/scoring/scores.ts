/**
 * FlagEmbedding's relevance scores between encodings (m3-reference §0.6, §1.3–1.5).
 * Accumulation is in float64, so results match the reference to float32 rounding.
 */
import { invalidArgument } from '../errors.js';
import type { ColbertMatrix, SparseVector } from '../types.js';

/** Inner product of two dense vectors (cosine for the normalised M3 vectors). */
export function denseScore(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) invalidArgument(`dense vectors differ in dimension: ${a.length} vs ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * FlagEmbedding `compute_lexical_matching_score`: Σ over shared token ids of w_a·w_b.
 * No shared token gives 0.
 */
export function lexicalMatchingScore(a: SparseVector, b: SparseVector): number {
  let i = 0;
  let j = 0;
  let s = 0;
  const ai = a.indices;
  const bi = b.indices;
  while (i < ai.length && j < bi.length) {
    if (ai[i] === bi[j]) {
      s += a.values[i] * b.values[j];
      i++;
      j++;
    } else if (ai[i] < bi[j]) i++;
    else j++;
  }
  return s;
}

/**
 * FlagEmbedding `colbert_score`: (1/N_q) Σ_i max_j q_i·p_j over the unpadded vectors.
 * `floor` (used by {@link computeScore}'s padded-batch emulation) is included in every max.
 */
export function colbertScore(q: ColbertMatrix, p: ColbertMatrix, floor = Number.NEGATIVE_INFINITY): number {
  if (q.dim !== p.dim) invalidArgument(`ColBERT vectors differ in dimension: ${q.dim} vs ${p.dim}`);
  if (q.count === 0) return 0;
  const D = q.dim;
  let total = 0;
  for (let i = 0; i < q.count; i++) {
    let best = floor;
    const qo = i * D;
    for (let j = 0; j < p.count; j++) {
      const po = j * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += q.data[qo + d] * p.data[po + d];
      if (s > best) best = s;
    }
    total += best === Number.NEGATIVE_INFINITY ? 0 : best;
  }
  return total / q.count;
}
