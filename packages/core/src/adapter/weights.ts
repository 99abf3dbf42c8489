/**
 * The weights of the adapters: the suite's M3 weights (`DEFAULT_M3_WEIGHTS`, [0.4, 0.2, 0.4]) and
 * LlamaIndex's `alpha`, mapped onto them.
 */
import { DEFAULT_M3_WEIGHTS, checkM3Weights, type M3Weights } from './core.js';
import { invalid } from './checks.js';

export { DEFAULT_M3_WEIGHTS, checkM3Weights };

/**
 * `[dense, sparse, colbert]` weights for a hybrid query with `alpha` (LlamaIndex's convention:
 * 1 is dense only, 0 is sparse only): the dense + sparse share of `base` (default
 * DEFAULT_M3_WEIGHTS, 0.6 of 1) is split as alpha : 1 − alpha, and ColBERT keeps its weight. The
 * default weights correspond to alpha = 2/3. Undefined alpha gives `base` unchanged.
 */
export function weightsFromAlpha(alpha: unknown, base: M3Weights = DEFAULT_M3_WEIGHTS): M3Weights {
  const w = checkM3Weights(base);
  if (alpha === undefined) return w;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > 1) invalid(`alpha must be a number from 0 to 1, got ${String(alpha)}`);
  const share = w[0] + w[1];
  return checkM3Weights([share * alpha, share * (1 - alpha), w[2]]);
}
