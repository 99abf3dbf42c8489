/**
 * Turns what a user passes as "the model" into local file paths: a directory on disk, or a
 * Hugging Face repo id that is downloaded (or found in the cache) first.
 */
import { existsSync } from 'node:fs';
import { M3Error } from '../errors.js';
import { BGE_M3_REPO, presetFiles } from '../hub/presets.js';
import { isRepoId, resolveModelFiles } from '../hub/resolve-model.js';
import type { HubOptions, ModelFileSpec } from '../hub/types.js';
import { localModelId } from './identity.js';
import { ONNX_CANDIDATES, resolveModelPaths, type ModelDtype, type ModelPaths } from './layout.js';

/** The default model: BAAI/bge-m3 from the Hugging Face Hub. */
export const DEFAULT_MODEL = BGE_M3_REPO;

export interface ResolveOptions {
  /** ONNX file inside the model directory or repo (default: detected). */
  onnxFile?: string;
  /** `fp32` (default) or `q8`, the int8 backbone. */
  dtype?: ModelDtype;
  /** Hub settings (endpoint, token, cache, offline, revision, progress). */
  hub?: HubOptions;
}

export interface ResolvedModel {
  paths: ModelPaths;
  /**
   * Stable id for caches and index manifests: `hub:<repo>@<commit>:<graph>` for a Hub model, and
   * for a local directory `local:sha256-…`, a hash of the model's files (see model/identity.ts), so
   * the same model in another directory has the same id.
   */
  modelId: string;
}

const SUPPORT: readonly ModelFileSpec['path'][] = ['tokenizer.json', 'tokenizer_config.json', 'config.json', 'colbert_linear.pt', 'sparse_linear.pt'];
const REQUIRED_SUPPORT = new Set(['tokenizer.json']);

/** Files of a non-preset repo: the graph, its possible external-data sidecars, tokenizer, config and heads. */
function repoSpecs(repo: string, onnx: string, revision: string | undefined): ModelFileSpec[] {
  const spec = (path: string, optional: boolean): ModelFileSpec => ({ repo, path, optional, ...(revision ? { revision } : {}) });
  const dir = onnx.includes('/') ? onnx.slice(0, onnx.lastIndexOf('/') + 1) : '';
  return [
    spec(onnx, false),
    spec(`${onnx}_data`, true),
    spec(`${onnx}.data`, true),
    ...SUPPORT.map((p) => spec(p, !REQUIRED_SUPPORT.has(p))),
    // heads/tokenizer next to a graph in a sub-folder (e.g. onnx/) are also looked for
    ...(dir ? ['tokenizer.json', 'tokenizer_config.json', 'config.json'].map((p) => spec(dir + p, true)) : []),
  ];
}

function pathsFromFiles(files: Record<string, string>, onnx: string, where: string): ModelPaths {
  const pick = (name: string) => files[name] ?? Object.entries(files).find(([k]) => k.endsWith(`/${name}`))?.[1];
  const tokenizer = pick('tokenizer.json');
  if (!tokenizer) throw new M3Error('MODEL_NOT_FOUND', `${where} has no tokenizer.json`);
  return {
    onnx: files[onnx],
    tokenizer,
    colbertHead: pick('colbert_linear.pt'),
    sparseHead: pick('sparse_linear.pt'),
    config: pick('config.json'),
  };
}

/**
 * Resolves a model directory or Hub repo id to local paths. A string that names an existing
 * directory is always taken as local; otherwise `org/name` is a repo id. `BAAI/bge-m3` uses the
 * presets (fp32, or `dtype: 'q8'` = Xenova's int8 graph with BAAI's heads and tokenizer); any
 * other repo downloads only the files its layout needs.
 */
export async function resolveModel(model: string, options: ResolveOptions = {}): Promise<ResolvedModel> {
  if (typeof model !== 'string' || model.length === 0) {
    throw new TypeError(`model must be a directory path or a Hugging Face repo id such as "${DEFAULT_MODEL}", got ${JSON.stringify(model)}`);
  }
  if (existsSync(model)) {
    const paths = resolveModelPaths(model, options);
    return { paths, modelId: localModelId(paths) };
  }
  if (!isRepoId(model)) {
    throw new M3Error('MODEL_NOT_FOUND', `model not found: ${model} is neither an existing directory nor a Hugging Face repo id (org/name)`);
  }
  const hub = options.hub ?? {};
  const revision = hub.revision;
  if (model.toLowerCase() === BGE_M3_REPO.toLowerCase() && options.onnxFile === undefined) {
    const dtype = options.dtype ?? 'fp32';
    const specs = presetFiles(model, dtype, revision);
    const got = await resolveModelFiles(specs, hub);
    const onnx = specs[0].path;
    return { paths: pathsFromFiles(got.files, onnx, model), modelId: `hub:${specs[0].repo}@${got.commit}:${onnx}` };
  }
  const candidates = options.onnxFile ? [options.onnxFile] : options.dtype === 'q8' ? ONNX_CANDIDATES.q8 : ONNX_CANDIDATES.fp32;
  const tried: string[] = [];
  for (const onnx of candidates) {
    tried.push(onnx);
    // Probe the graph alone first, so a miss costs one request and no large download.
    const probe = await resolveModelFiles([{ repo: model, path: onnx, optional: true, ...(revision ? { revision } : {}) }], hub).catch((e: unknown) => {
      if (e instanceof M3Error && e.code === 'MODEL_NOT_FOUND') return undefined;
      throw e;
    });
    if (!probe || !probe.files[onnx]) continue;
    const got = await resolveModelFiles(repoSpecs(model, onnx, revision), hub);
    return { paths: pathsFromFiles(got.files, onnx, model), modelId: `hub:${model}@${got.commit}:${onnx}` };
  }
  throw new M3Error(
    'MODEL_NOT_FOUND',
    `${model} has none of the ONNX files looked for (${tried.join(', ')}); pass onnxFile / --onnx with the graph's path in the repo`,
  );
}
