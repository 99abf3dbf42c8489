/**
 * `@bgem3/core/adapter`: the kit the framework adapters (@bgem3/langchain, @bgem3/llamaindex) and
 * @bgem3/pgvector are built from, so that what they share exists once:
 *
 * - the encoder source and the process-wide encoder registry (one model load per process, across
 *   the ESM and CJS builds): {@link EncoderSource}, {@link sharedEncoder};
 * - option checks (unknown options are errors): {@link checkOptions} and friends;
 * - weight defaults ({@link DEFAULT_M3_WEIGHTS}) and LlamaIndex's alpha ({@link weightsFromAlpha});
 * - the [0, 1] score mapping of every `relevanceScore` ({@link unitScore});
 * - the ensemble over an application's own retrievers ({@link fuseAndRerank});
 * - brands, to recognise classes across copies ({@link setBrand}, {@link hasBrand});
 * - the ColBERT byte codec of the stores ({@link ColbertCodec});
 * - the refusal of the 0.1 adapters' single-file formats ({@link refuseLegacyFile}).
 *
 * @packageDocumentation
 */
export { EncoderSource, MODEL_PARAM_KEYS, type M3ModelParams, type ModelBase } from './encoder-source.js';
export { sharedEncoder, sharedEncoderCount, registryKey, modelFromId, loadedEncoderOf } from './registry.js';
export { checkOptions, invalid, positiveInt, optionalPositiveInt, oneOf, nonNegative, bool, queryString } from './checks.js';
export { DEFAULT_M3_WEIGHTS, checkM3Weights, weightsFromAlpha } from './weights.js';
export { unitScore } from './scores.js';
export { refuseLegacyFile } from './legacy-files.js';
export { fuseAndRerank, dedupe, type EnsembleEntry, type EnsembleHit, type EnsembleOptions, type StoredRef } from './ensemble.js';
export { brandSymbol, setBrand, hasBrand, attachSource, sourceOf, attachStored, storedOf } from './brand.js';
export {
  ColbertCodec,
  COLBERT_STORAGES,
  DEFAULT_COLBERT_STORAGE,
  checkColbertStorage,
  colbertBytesPerVector,
  type ColbertStorage,
} from './core.js';
export type { RemoteEncoderOptions } from './core.js';
