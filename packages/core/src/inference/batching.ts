/**
 * Batch planning: sort texts by length (longest first, as FlagEmbedding does) and cut batches so
 * that padding stays small and a batch never exceeds a token budget (batch × padded length),
 * which bounds both wasted FLOPs and peak memory when input lengths vary.
 */

export interface BatchLimits {
  /** Most texts in one batch. */
  batchSize: number;
  /** Most padded tokens (texts × longest length) in one batch; a single longer text runs alone. */
  maxBatchTokens: number;
  /**
   * Texts longer than this run alone. A padded batch needs an attention mask, and with a mask
   * onnxruntime's attention materialises heads × L × L scores (4.3 GB at 8192 tokens); alone, a
   * text needs no mask and fused attention runs in O(L) memory. Batching long texts gains nothing:
   * their cost is per token. Default: no limit.
   */
  aloneAbove?: number;
}

/**
 * A batch runs padded to its longest text, so a text joins one only while the batch's padded
 * tokens stay within MAX_PADDING times its real tokens: one 512-token passage among 15 short
 * queries would otherwise make them cost 16 × 512 tokens (8× the work of running them apart).
 * Batches whose longest text has at most PAD_FREE_LENGTH tokens are exempt: there the cost of a
 * run outweighs the padding. Used by {@link planBatches} and by the server's batcher.
 */
export const MAX_PADDING = 1.5;
export const PAD_FREE_LENGTH = 64;

/** Whether a batch of `count` texts, `realTokens` in all, padded to `longest` each, keeps padding within bounds. */
export function paddingAcceptable(longest: number, count: number, realTokens: number): boolean {
  return longest <= PAD_FREE_LENGTH || longest * count <= MAX_PADDING * realTokens;
}

/** Returns batches of indices into `lengths`, longest texts first. */
export function planBatches(lengths: readonly number[], limits: BatchLimits): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  let longest = 0;
  let real = 0;
  for (const i of order) {
    const len = lengths[i];
    const l = Math.max(longest, len);
    const padded = l * (current.length + 1);
    const alone = limits.aloneAbove !== undefined && l > limits.aloneAbove;
    if (current.length > 0 && (alone || current.length >= limits.batchSize || padded > limits.maxBatchTokens || !paddingAcceptable(l, current.length + 1, real + len))) {
      batches.push(current);
      current = [];
      longest = 0;
      real = 0;
    }
    current.push(i);
    longest = Math.max(longest, len);
    real += len;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}
