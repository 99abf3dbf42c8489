/**
 * FlagEmbedding's output rules (m3-reference §0), applied to one text's rows of a batch.
 * These loops touch O(tokens × dim) floats, negligible next to the encoder's O(tokens × 0.6 GFLOP).
 */
import type { ColbertMatrix, SparseVector } from '../types.js';

/** `x / max(‖x‖₂, 1e-12)` into a new Float32Array (torch's F.normalize). */
export function l2Normalized(src: Float32Array, offset: number, dim: number): Float32Array {
  let ss = 0;
  for (let i = 0; i < dim; i++) {
    const v = src[offset + i];
    ss += v * v;
  }
  const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) out[i] = src[offset + i] * inv;
  return out;
}

/**
 * Lexical weights: for each position, weight w (already relu'd) of token id; drop the special ids
 * and w ≤ 0; keep the max per id. Returned sorted by id.
 */
export function aggregateSparse(ids: Int32Array, weightAt: (pos: number) => number, skip: ReadonlySet<number>): SparseVector {
  const best = new Map<number, number>();
  for (let pos = 0; pos < ids.length; pos++) {
    const id = ids[pos];
    if (skip.has(id)) continue;
    const w = weightAt(pos);
    if (!(w > 0)) continue;
    const prev = best.get(id);
    if (prev === undefined || w > prev) best.set(id, w);
  }
  const keys = [...best.keys()].sort((a, b) => a - b);
  const indices = new Uint32Array(keys.length);
  const values = new Float32Array(keys.length);
  keys.forEach((k, i) => {
    indices[i] = k;
    values[i] = best.get(k) as number;
  });
  return { indices, values };
}

/**
 * `relu(w · h + b)` for one position of a [*, hidden] row-major buffer, rounded to float32 as
 * torch computes it.
 */
export function sparseWeightAt(hiddenStates: Float32Array, rowOffset: number, weight: Float32Array, bias: number): number {
  let s = 0;
  for (let i = 0; i < weight.length; i++) s += weight[i] * hiddenStates[rowOffset + i];
  const v = Math.fround(Math.fround(s) + bias);
  return v > 0 ? v : 0;
}

/** Copies `count` rows starting at `firstRowOffset` (stride `dim`) and L2-normalises each. */
export function normalizedRows(src: Float32Array, firstRowOffset: number, count: number, dim: number): ColbertMatrix {
  const data = new Float32Array(count * dim);
  for (let r = 0; r < count; r++) {
    const off = firstRowOffset + r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += src[off + i] * src[off + i];
    const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
    const o = r * dim;
    for (let i = 0; i < dim; i++) data[o + i] = src[off + i] * inv;
  }
  return { data, count, dim };
}
