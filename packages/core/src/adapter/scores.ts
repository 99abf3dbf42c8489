/**
 * The one mapping of scores to [0, 1] used by every `relevanceScore` of both adapters (LangChain
 * metadata, LlamaIndex postprocessor scores): (s + 1) / 2, clamped. It suits the scores of M3's
 * cosine-like modes (dense inner product, ColBERT MaxSim and the M3 All score of them, all in
 * [-1, 1] up to float rounding), keeps their order, and keeps them positive, so cut-offs such as
 * LlamaIndex's `SimilarityPostprocessor` (which drops scores ≤ 0) work. The raw score is always
 * kept beside it.
 */
export function unitScore(score: number): number {
  if (!Number.isFinite(score)) return 0;
  return Math.min(1, Math.max(0, (score + 1) / 2));
}
