/**
 * How far a computed figure may be from a reference figure, per model dtype and reference
 * precision, and the comparison itself.
 *
 * Two classes of figures:
 * - **dense**: dense similarities and ColBERT scores, inner products of unit vectors (|x| ≤ 1);
 * - **weights**: lexical weights and lexical matching scores, unnormalised relu outputs and sums
 *   of their products, which scale with the weights and so carry larger absolute errors.
 */
import type { ModelDtype } from '../model/layout.js';
import type { ReferencePrecision } from './reference.js';

/** Tolerance class of a figure. */
export type ToleranceClass = 'dense' | 'weights';

/** The outputs a check compares. */
export type CheckOutput = 'dense_similarity' | 'lexical_weight' | 'lexical_matching_score' | 'colbert_score';

/** Which tolerance applies to an output. */
export function toleranceClass(output: CheckOutput): ToleranceClass {
  return output === 'dense_similarity' || output === 'colbert_score' ? 'dense' : 'weights';
}

/** Absolute tolerances for the two classes, with the reasoning that produced them. */
export interface CheckTolerance {
  dense: number;
  weights: number;
  /** Why these numbers (printed with the result). */
  basis: string;
}

/**
 * What an fp32 model may deviate from a reference computed in `precision`.
 *
 * - `fp16` reference (BAAI's published example: `use_fp16=True` on a GPU): 1e-3 for dense-type
 *   and 2e-3 for weight-type figures. fp16 keeps 11 significant bits, so every stored value is
 *   rounded by up to 2.4e-4 at 0.5–1 and every one of the 24 layers computes in that precision;
 *   two published fp16 runs of the same model (the model card and FlagEmbedding's tutorial)
 *   already differ by up to 6e-4 in dense similarity and 1.6e-4 in lexical weights. Weights get
 *   twice the dense figure because they are not normalised (their error scales with them) and
 *   the lexical score sums products of several of them. Tighter agreement is not expected.
 * - `fp32` reference (FlagEmbedding on a CPU, or `use_fp16=False`): 1e-4 and 2e-4. The fixture
 *   model reproduces FlagEmbedding's fp32 figures within 2.4e-7 here; the margin (≈400×) covers
 *   a 24-layer model's longer accumulation and other CPUs' kernels.
 */
export const REFERENCE_ALLOWANCE: Readonly<Record<ReferencePrecision, { readonly dense: number; readonly weights: number }>> = Object.freeze({
  fp16: Object.freeze({ dense: 1e-3, weights: 2e-3 }),
  fp32: Object.freeze({ dense: 1e-4, weights: 2e-4 }),
});

/**
 * The drift of an int8 (`q8`) backbone from its fp32 original, measured here with
 * {@link measureDrift} (onnxruntime-node 1.30, `onnx/model_quantized.onnx` vs `onnx/model.onnx`,
 * golden.json's first 25 texts at max length 512, every ordered pair):
 *
 * | figure | tiny-m3-A fixture | full-size random BGE-M3, seed 1 | seed 2 |
 * |---|---|---|---|
 * | dense similarity | 1.09e-3 | 3.05e-3 | 3.77e-3 |
 * | ColBERT score | 4.45e-3 | 4.81e-3 | **7.00e-3** |
 * | lexical weight (per token) | 3.52e-2 | **6.64e-2** ¹ | 3.68e-2 |
 *
 * ¹ Seed 1's random sparse head gives every token a weight ≤ 0, so its figure is the drift of
 * `sparse_linear.pt` applied to both backbones' `last_hidden_state` before the relu.
 * The full-size models are `node --import tsx bench/model-gen/generate.ts --out DIR --seed N`
 * plus the same with `--dtype int8` (BGE-M3's exact shape, random weights).
 *
 * `dense` is the largest dense-type drift, `weights` the largest weight drift, each rounded up
 * to two digits. The tests re-measure the fixture and fail if it exceeds these. Real
 * BAAI/bge-m3 int8 drift could not be measured (its weights cannot be downloaded on the
 * development machines): random weights lack the outlier activations that make trained models
 * harder to quantise, so a real model may drift more. If `bgem3 check --dtype q8` on the real
 * model exceeds these, the deviation it prints is the measurement to revise them with.
 */
export const Q8_MEASURED_DRIFT = Object.freeze({ dense: 7.1e-3, weights: 6.7e-2 });

/**
 * Widening of {@link Q8_MEASURED_DRIFT}: the same int8 file computes differently on CPUs with
 * other int8 kernels. On the fixture, this machine's q8 results and those of the machine that
 * made `golden_q8.json` differ by up to 1.5e-3 in dense similarity, 1.4× this machine's own
 * drift from fp32 (1.09e-3); 1.5 covers that.
 */
export const Q8_CPU_MARGIN = 1.5;

/**
 * The tolerance of a check: {@link REFERENCE_ALLOWANCE} of the reference's precision, plus for a
 * `q8` model {@link Q8_CPU_MARGIN} × {@link Q8_MEASURED_DRIFT}. `override` (a reference file's
 * `tolerance`) replaces a class's value.
 *
 * fp32 vs an fp16 reference: dense 1e-3, weights 2e-3. q8 vs an fp16 reference: dense 0.01165,
 * weights 0.1025. q8 vs an fp32 reference: dense 0.01075, weights 0.1007.
 */
export function checkTolerance(dtype: ModelDtype, precision: ReferencePrecision, override?: { dense?: number; weights?: number }): CheckTolerance {
  const base = REFERENCE_ALLOWANCE[precision];
  let dense = base.dense;
  let weights = base.weights;
  let basis =
    dtype === 'q8'
      ? `q8 model vs ${precision} reference: ${precision} allowance (${base.dense} dense, ${base.weights} weights) + ${Q8_CPU_MARGIN} × measured int8 drift (${Q8_MEASURED_DRIFT.dense}, ${Q8_MEASURED_DRIFT.weights})`
      : `fp32 model vs ${precision} reference`;
  if (dtype === 'q8') {
    dense = round(dense + Q8_CPU_MARGIN * Q8_MEASURED_DRIFT.dense);
    weights = round(weights + Q8_CPU_MARGIN * Q8_MEASURED_DRIFT.weights);
  }
  if (override?.dense !== undefined || override?.weights !== undefined) {
    dense = override.dense ?? dense;
    weights = override.weights ?? weights;
    basis += `; set by the reference file (${[override.dense !== undefined && 'dense', override.weights !== undefined && 'weights'].filter(Boolean).join(', ')})`;
  }
  return { dense, weights, basis };
}

/** Rounds away float noise from sums such as 1e-3 + 1.5 × 4.9e-3. */
function round(x: number): number {
  return Number(x.toPrecision(6));
}

/** The result of comparing one figure with its reference value. */
export interface FigureVerdict {
  /** |value − published| (Infinity when value is not finite). */
  deviation: number;
  ok: boolean;
}

/**
 * Compares a computed figure with its published value: ok when the absolute deviation is at
 * most `tolerance`. A deviation equal to the tolerance passes, also when float64 subtraction
 * of the decimal figures lands a few ulps above it (e.g. 0.6275 − 0.6265 vs 1e-3). A value that
 * is NaN or infinite never passes.
 */
export function judgeFigure(value: number, published: number, tolerance: number): FigureVerdict {
  if (!Number.isFinite(value)) return { deviation: Number.POSITIVE_INFINITY, ok: false };
  const deviation = Math.abs(value - published);
  const slack = 4 * Number.EPSILON * Math.max(1, Math.abs(value), Math.abs(published));
  return { deviation, ok: deviation <= tolerance + slack };
}
