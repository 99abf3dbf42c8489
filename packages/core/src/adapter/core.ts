/**
 * The one door from the adapter kit to the rest of @bgem3/core. The build maps this module's
 * import of `../index.js` to the package's own main entry (`@bgem3/core`, see tsup.config.ts), so
 * `@bgem3/core/adapter` and `@bgem3/core` share one copy of every class (M3Encoder, M3Error,
 * M3Index) instead of the adapter bundle carrying a second one.
 */
export {
  DEFAULT_M3_WEIGHTS,
  DEFAULT_MODEL,
  M3Encoder,
  M3Error,
  assertTextEncoder3,
  checkM3Weights,
  checkFusionWeights,
  checkPositiveInt,
  ColbertCodec,
  COLBERT_STORAGES,
  DEFAULT_COLBERT_STORAGE,
  checkColbertStorage,
  colbertBytesPerVector,
  RemoteEncoder,
  m3Rerank,
  reciprocalRankFusion,
  weightedScoreFusion,
} from '../index.js';
export type {
  ColbertStorage,
  RemoteEncoderOptions,
  EncodeOptions,
  EncodeResult,
  EncoderOptions,
  HubOptions,
  LoadOptions,
  M3Encoded,
  M3ModeScores,
  M3Store,
  M3Weights,
  ModelDtype,
  TextEncoder3,
} from '../index.js';
