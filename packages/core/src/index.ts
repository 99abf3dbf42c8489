/**
 * @bgem3/core: BGE-M3 on onnxruntime-node. One forward pass gives the dense vector, the sparse
 * lexical weights and the ColBERT vectors, number-for-number with FlagEmbedding.
 */
export { M3Error, type M3ErrorCode } from './errors.js';
export type {
  SparseVector,
  ColbertMatrix,
  OutputSelection,
  EncodeOptions,
  EncodeResult,
  FullEncodeResult,
  TextEncoder3,
} from './types.js';
export { M3Encoder, assertTexts, type LoadOptions, type EncoderOptions, type EncoderStats, type BatchRunner } from './inference/encoder.js';
export type { SessionSettings } from './inference/engine.js';
export { M3Tokenizer, type TokenizedText, type SpecialIds } from './tokenizer/m3-tokenizer.js';
export { resolveModelPaths, detectGraphLayout, ONNX_CANDIDATES, type GraphLayout, type ModelPaths, type ModelDtype } from './model/layout.js';
export { readTorchStateDict, parseTorchStateDict, type TorchTensor } from './model/torch/pt-reader.js';
export {
  denseScore,
  lexicalMatchingScore,
  colbertScore,
  combineScores,
  checkWeights,
  type ModeScores,
  type ModeWeights,
} from './scoring/scores.js';
export { computeScore, type ComputeScoreOptions, type ScorePair } from './scoring/compute-score.js';
export { sparseToRecord, sparseFromRecord } from './scoring/sparse-convert.js';
