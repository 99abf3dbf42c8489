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
export type { AttentionMode, SessionSettings } from './inference/engine.js';
export { M3Tokenizer, type TokenizedText, type SpecialIds } from './tokenizer/m3-tokenizer.js';
export { resolveModelPaths, detectGraphLayout, ONNX_CANDIDATES, type GraphLayout, type ModelPaths, type ModelDtype } from './model/layout.js';
export { fuseAttention, type FusedModel } from './model/attention-fusion.js';
export { readTorchStateDict, parseTorchStateDict, type TorchTensor } from './model/torch/pt-reader.js';
export { denseScore, lexicalMatchingScore, colbertScore } from './scoring/scores.js';
export {
  DEFAULT_M3_WEIGHTS,
  FLAG_EMBEDDING_DEFAULT_WEIGHTS,
  checkM3Weights,
  m3AllScore,
  combineScores,
  type M3Weights,
  type M3ModeScores,
  type ComputeScoreKeys,
} from './scoring/weights.js';
export { computeScore, type ComputeScoreOptions, type ScorePair } from './scoring/compute-score.js';
export * from './store/index.js';
export { ColbertCodec, COLBERT_STORAGES, DEFAULT_COLBERT_STORAGE, checkColbertStorage, colbertBytesPerVector, type ColbertStorage } from './store/colbert-codec.js';
export { ColbertPackBuilder } from './store/colbert-pack-builder.js';
export { sparseToRecord, sparseFromRecord } from './scoring/sparse-convert.js';
export { resolveModel, DEFAULT_MODEL, type ResolveOptions, type ResolvedModel } from './model/resolve.js';
export {
  downloadFiles,
  resolveModelFiles,
  isRepoId,
  presetFiles,
  createCliProgress,
  defaultCacheDir,
  type DownloadProgress,
  type HubOptions,
  type HubTransferLimits,
  type ModelFileSpec,
  type ResolvedModelFiles,
  type CliProgress,
} from './hub/index.js';
export { SparseIndex, M3_VOCAB_SIZE, type SparseIndexOptions, type SparseSearchOptions, type SparseDoc } from './retrieval/sparse-index.js';
export { DenseIndex, type DenseIndexOptions, type DenseSearchOptions } from './retrieval/dense-index.js';
export { ColbertStore, type ColbertPrecision, type ColbertStoreOptions, type PackedColbert, type RawColbert } from './retrieval/colbert-store.js';
export { maxSim, maxSimStored, maxSimPacked, maxSimReference, type MaxSimOptions } from './retrieval/maxsim.js';
export { M3Index, assertTextEncoder3, type M3IndexOptions, type M3IndexLoadOptions, type M3IndexOpenOptions, type M3IndexSettings } from './retrieval/m3-index.js';
export { releaseScratchMemory } from './retrieval/scratch.js';
export {
  reciprocalRankFusion,
  weightedScoreFusion,
  checkFusionWeights,
  type RankedEntry,
  type RrfOptions,
  type WeightedFusionOptions,
} from './retrieval/fusion.js';
export { type ScoredId } from './retrieval/topk.js';
export { m3Rerank, type M3Encoded, type M3RerankHit, type M3RerankOptions } from './retrieval/m3-rerank.js';
export { writeFileAtomic, fsyncDirectory } from './util/atomic-file.js';
export { RemoteEncoder, type RemoteEncoderOptions } from './remote/index.js';
export {
  checkModel,
  formatCheckReport,
  loadCheckReference,
  parseCheckReference,
  checkTolerance,
  judgeFigure,
  measureDrift,
  BGE_M3_REFERENCE,
  MODEL_CARD_SENTENCES_1,
  MODEL_CARD_SENTENCES_2,
  Q8_MEASURED_DRIFT,
  Q8_CPU_MARGIN,
  REFERENCE_ALLOWANCE,
  UNIT_NORM_TOLERANCE,
  type CheckEncoder,
  type CheckFigure,
  type CheckOptions,
  type CheckResult,
  type CheckReference,
  type CheckTextRef,
  type CheckTolerance,
  type CheckOutput,
  type DriftReport,
  type ReferenceBasis,
  type ReferencePairFigure,
  type ReferencePrecision,
  type UniversalCheck,
  type UniversalCheckName,
} from './check/index.js';
