/** The parts of core's adapter kit this package uses, plus the checks only LangChain needs. */
import { checkFusionWeights } from '@bgem3/core';
export * from '@bgem3/core/adapter';

/** One RRF weight per retriever (default 1 each); INVALID_ARGUMENT otherwise. */
export function checkFusionWeightsFor(weights: unknown, n: number): number[] {
  if (n === 0) return [];
  if (weights === undefined) return new Array<number>(n).fill(1);
  return checkFusionWeights(weights as number[], n, 'weights');
}
