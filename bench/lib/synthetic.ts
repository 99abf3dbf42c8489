/**
 * Deterministic synthetic data for the retrieval benchmark: passages drawn from a Zipfian token
 * distribution over the BGE-M3 vocabulary, M3-like lexical weights, and random unit vectors.
 */
import type { ColbertMatrix, SparseVector } from '../../packages/core/src/types.js';

/** mulberry32: a tiny, fast, seedable PRNG (uniform in [0, 1)). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal via Box–Muller. */
export function gaussian(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/**
 * A Zipf(s) sampler over `n` ranks mapped to token ids 4..vocab-1 through a fixed random
 * permutation (so frequent tokens are scattered over the id space, as in a real vocabulary).
 */
export function zipfTokens(rand: () => number, n = 250000, s = 1.0, vocab = 250002): () => number {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let r = 0; r < n; r++) {
    acc += 1 / Math.pow(r + 1, s);
    cdf[r] = acc;
  }
  for (let r = 0; r < n; r++) cdf[r] /= acc;
  const perm = new Uint32Array(vocab - 4);
  for (let i = 0; i < perm.length; i++) perm[i] = i + 4;
  const prand = rng(12345);
  for (let i = perm.length - 1; i > 0; i--) {
    const j = Math.floor(prand() * (i + 1));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return () => {
    const u = rand();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return perm[lo];
  };
}

/** A passage: its token ids (with repeats) and its M3-like lexical weights. */
export interface SyntheticDoc {
  tokens: Uint32Array;
  sparse: SparseVector;
}

/**
 * M3-like lexical weights of a token sequence: one weight per distinct token, uniform in
 * [0.01, 0.35) (the range of the weights in the BGE-M3 tutorial), ids ascending.
 */
export function weightsOf(tokens: ArrayLike<number>, rand: () => number): SparseVector {
  const distinct = [...new Set(Array.from(tokens))].sort((a, b) => a - b);
  const values = new Float32Array(distinct.length);
  for (let i = 0; i < values.length; i++) values[i] = 0.01 + 0.34 * rand();
  return { indices: Uint32Array.from(distinct), values };
}

/** `count` passages of `minLen..maxLen` tokens. */
export function makeCorpus(count: number, seed: number, minLen = 150, maxLen = 250): SyntheticDoc[] {
  const rand = rng(seed);
  const tok = zipfTokens(rand);
  const docs: SyntheticDoc[] = [];
  for (let d = 0; d < count; d++) {
    const len = minLen + Math.floor(rand() * (maxLen - minLen + 1));
    const tokens = new Uint32Array(len);
    for (let i = 0; i < len; i++) tokens[i] = tok();
    docs.push({ tokens, sparse: weightsOf(tokens, rand) });
  }
  return docs;
}

/** `count` queries of `minLen..maxLen` tokens drawn from the same distribution. */
export function makeQueries(count: number, seed: number, minLen = 4, maxLen = 16): SyntheticDoc[] {
  return makeCorpus(count, seed, minLen, maxLen);
}

/** Text of a token sequence for text-based retrievers (one "word" per token id). */
export function textOf(tokens: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < tokens.length; i++) s += (i ? ' ' : '') + 'w' + tokens[i];
  return s;
}

/** `count` random unit vectors of `dim` floats, row-major. */
export function unitVectors(count: number, dim: number, rand: () => number): Float32Array {
  const g = gaussian(rand);
  const out = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) {
    let n = 0;
    for (let j = 0; j < dim; j++) {
      const v = g();
      out[i * dim + j] = v;
      n += v * v;
    }
    const inv = 1 / Math.sqrt(n);
    for (let j = 0; j < dim; j++) out[i * dim + j] *= inv;
  }
  return out;
}

/**
 * ColBERT-like token vectors: unit vectors around a per-text "topic" direction (similarity to
 * the topic ≈ `coherence`), so that MaxSim values land in a realistic 0.3–0.8 range rather than
 * the ≈0 of independent random vectors in 1024 dimensions.
 */
export function colbertLike(count: number, dim: number, rand: () => number, topic?: Float32Array, coherence = 0.6): ColbertMatrix {
  const g = gaussian(rand);
  const t = topic ?? unitVectors(1, dim, rand);
  const data = new Float32Array(count * dim);
  const noise = Math.sqrt(1 - coherence * coherence) / Math.sqrt(dim);
  for (let i = 0; i < count; i++) {
    let n = 0;
    for (let j = 0; j < dim; j++) {
      const v = coherence * t[j] + noise * g();
      data[i * dim + j] = v;
      n += v * v;
    }
    const inv = 1 / Math.sqrt(n);
    for (let j = 0; j < dim; j++) data[i * dim + j] *= inv;
  }
  return { data, count, dim };
}
