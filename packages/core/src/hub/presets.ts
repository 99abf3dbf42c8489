/**
 * File lists of the known BGE-M3 distributions. Only the listed files are downloaded: BAAI/bge-m3
 * also holds a 2.3 GB `pytorch_model.bin` and other exports that this package never reads.
 */
import { M3Error } from '../errors.js';
import type { ModelDtype, ModelFileSpec } from './types.js';

/** The reference repo: fp32 ONNX export, M3 heads, tokenizer and config. */
export const BGE_M3_REPO = 'BAAI/bge-m3';
/** transformers.js' export of the same model; holds the int8 (`q8`) ONNX graph. */
export const BGE_M3_Q8_REPO = 'Xenova/bge-m3';

/** The fp32 ONNX graph of BAAI/bge-m3. */
export const BGE_M3_ONNX = 'onnx/model.onnx';
/**
 * External-data sidecars of {@link BGE_M3_ONNX}, listed explicitly because onnxruntime opens
 * them by name next to the graph: the weights file, and `Constant_7_attr__value`, a constant
 * that the BAAI export stores outside the graph. The second is optional so that a copy of the
 * repo whose graph does not reference it (re-exports, mirrors, the test fixture) still works.
 */
export const BGE_M3_ONNX_SIDECARS: readonly { path: string; optional: boolean }[] = [
  { path: 'onnx/model.onnx_data', optional: false },
  { path: 'onnx/Constant_7_attr__value', optional: true },
];
/** The int8 graph in {@link BGE_M3_Q8_REPO} (a single file, no external data). */
export const BGE_M3_Q8_ONNX = 'onnx/model_quantized.onnx';
/** Heads, tokenizer and config, always from {@link BGE_M3_REPO}. */
export const BGE_M3_SUPPORT_FILES: readonly string[] = [
  'colbert_linear.pt',
  'sparse_linear.pt',
  'tokenizer.json',
  'tokenizer_config.json',
  'config.json',
];

/**
 * The files to download for BAAI/bge-m3 at a given dtype.
 *
 * - `fp32`: `onnx/model.onnx` with its sidecars, plus heads, tokenizer and config, all from BAAI/bge-m3.
 * - `q8`: `onnx/model_quantized.onnx` from Xenova/bge-m3, plus heads, tokenizer and config from BAAI/bge-m3.
 *
 * The ONNX graph comes first, so `resolveModelFiles(...).dir` is the graph's snapshot directory.
 * `revision` pins BAAI/bge-m3 only (a commit of one repo means nothing in another); the Xenova
 * file follows `HubOptions.revision`. Other repos have no preset: pass {@link ModelFileSpec}
 * lists to `downloadFiles` directly.
 *
 * @throws M3Error INVALID_ARGUMENT for another repo id or an unknown dtype.
 */
export function presetFiles(repoId: string, dtype: ModelDtype, revision?: string): ModelFileSpec[] {
  // Repo ids are case-insensitive on the Hub; the cache folder uses the canonical spelling.
  if (typeof repoId !== 'string' || repoId.toLowerCase() !== BGE_M3_REPO.toLowerCase()) {
    throw new M3Error(
      'INVALID_ARGUMENT',
      `no file preset for ${JSON.stringify(repoId)}: presets exist for ${BGE_M3_REPO} only; pass an explicit list of files (ModelFileSpec[]) for other repos`,
    );
  }
  const main = (path: string, optional = false): ModelFileSpec => ({
    repo: BGE_M3_REPO,
    path,
    ...(revision !== undefined ? { revision } : {}),
    ...(optional ? { optional } : {}),
  });
  const support = BGE_M3_SUPPORT_FILES.map((p) => main(p));
  if (dtype === 'fp32') {
    return [main(BGE_M3_ONNX), ...BGE_M3_ONNX_SIDECARS.map((s) => main(s.path, s.optional)), ...support];
  }
  if (dtype === 'q8') {
    return [{ repo: BGE_M3_Q8_REPO, path: BGE_M3_Q8_ONNX }, ...support];
  }
  throw new M3Error('INVALID_ARGUMENT', `unknown dtype ${JSON.stringify(dtype)}: expected 'fp32' or 'q8'`);
}
