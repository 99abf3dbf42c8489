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

/** Returns batches of indices into `lengths`, longest texts first. */
export function planBatches(lengths: readonly number[], limits: BatchLimits): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  let longest = 0;
  for (const i of order) {
    const len = lengths[i];
    const padded = Math.max(longest, len) * (current.length + 1);
    const alone = limits.aloneAbove !== undefined && Math.max(longest, len) > limits.aloneAbove;
    if (current.length > 0 && (alone || current.length >= limits.batchSize || padded > limits.maxBatchTokens)) {
      batches.push(current);
      current = [];
      longest = 0;
    }
    current.push(i);
    longest = Math.max(longest, len);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}
