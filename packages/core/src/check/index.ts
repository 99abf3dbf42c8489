/**
 * The model check: does this installation compute what FlagEmbedding computes? BAAI's published
 * example for BAAI/bge-m3 (stored once, in published.ts), reference files for other models,
 * tolerances per dtype, and the properties every model's outputs must have.
 */
export { checkModel, OUTPUT_NAMES } from './check-model.js';
export { formatCheckReport } from './report.js';
export { decidePublishedReference, hubRepoOf, type ReferenceDecision } from './identity.js';
export {
  BGE_M3_REFERENCE,
  BGE_M3_SHAPE,
  BGE_M3_WEIGHT_REPOS,
  MODEL_CARD_SENTENCES_1,
  MODEL_CARD_SENTENCES_2,
  MODEL_CARD_TOKENS,
} from './published.js';
export {
  loadCheckReference,
  parseCheckReference,
  parseTextRef,
  type CheckReference,
  type CheckTextRef,
  type ReferencePairFigure,
  type ReferencePrecision,
} from './reference.js';
export {
  checkTolerance,
  judgeFigure,
  toleranceClass,
  Q8_CPU_MARGIN,
  Q8_MEASURED_DRIFT,
  REFERENCE_ALLOWANCE,
  type CheckOutput,
  type CheckTolerance,
  type FigureVerdict,
  type ToleranceClass,
} from './tolerance.js';
export { checkOutputs, judgeOnePass, UNIT_NORM_TOLERANCE, type LabelledEncoding, type PassCounters, type UniversalCheck, type UniversalCheckName } from './universal.js';
export { measureDrift, type DriftReport } from './drift.js';
export type { CheckEncoder, CheckFigure, CheckOptions, CheckResult, ReferenceBasis } from './types.js';
