/**
 * Hugging Face Hub download with huggingface_hub's cache layout: resume, integrity checks,
 * cross-process locking, offline mode and progress. Re-exported by the package index.
 */
export type { DownloadProgress, HubOptions, HubTransferLimits, ModelDtype, ModelFileSpec, ResolvedModelFiles } from './types.js';
export { downloadFiles, isRepoId, resolveModelFiles } from './resolve-model.js';
export {
  BGE_M3_ONNX,
  BGE_M3_ONNX_SIDECARS,
  BGE_M3_Q8_ONNX,
  BGE_M3_Q8_REPO,
  BGE_M3_REPO,
  BGE_M3_SUPPORT_FILES,
  presetFiles,
} from './presets.js';
export { createCliProgress, type CliProgress, type CliProgressOptions } from './cli-progress.js';
export { defaultCacheDir } from './config.js';
