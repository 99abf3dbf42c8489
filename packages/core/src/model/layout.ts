/**
 * Finding a model's files in a local directory and recognising which of the public BGE-M3
 * layouts an ONNX graph follows. The layout is decided from the graph's inputs and outputs, not
 * from file names, so a renamed export still loads.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { M3Error } from '../errors.js';

/** The ONNX layouts we run. */
export type GraphLayout =
  /** Token states only (`last_hidden_state`, or `token_embeddings` in the sentence-transformers export); heads applied by us. */
  | { kind: 'backbone'; hiddenOutput: string }
  /** FlagEmbedding's model exported with its heads: dense, raw per-token sparse, ColBERT. */
  | { kind: 'three-output'; dense: string; sparse: string; colbert: string };

/** Which precision of backbone to prefer when the directory has several. */
export type ModelDtype = 'fp32' | 'q8';

/** Candidate ONNX files, in order of preference, per dtype (the real distributions' names). */
export const ONNX_CANDIDATES: Record<ModelDtype, readonly string[]> = {
  fp32: [
    'onnx/model.onnx', // BAAI/bge-m3 onnx/, Xenova/bge-m3
    'model.onnx', // aapot/bge-m3-onnx and derivatives
    'bge_m3_model.onnx', // yuniko-software/bge-m3-onnx
    'onnx/bge_m3_model.onnx',
    'onnx/sentence_transformers.onnx', // Xenova/bge-m3 sentence-transformers export
  ],
  q8: ['onnx/model_quantized.onnx', 'model_quantized.onnx', 'onnx/sentence_transformers_quantized.onnx'],
};

/** Output-name triples of the known three-output exports. */
const THREE_OUTPUT_NAMES = [
  { dense: 'dense_embeddings', sparse: 'sparse_weights', colbert: 'colbert_vectors' }, // yuniko-software
  { dense: 'dense_vecs', sparse: 'sparse_vecs', colbert: 'colbert_vecs' }, // aapot
] as const;

const HIDDEN_OUTPUT_NAMES = ['last_hidden_state', 'token_embeddings'] as const;

/** Decides the layout from a session's input and output names. */
export function detectGraphLayout(onnxPath: string, inputNames: readonly string[], outputNames: readonly string[]): GraphLayout {
  for (const need of ['input_ids', 'attention_mask']) {
    if (!inputNames.includes(need)) {
      throw new M3Error(
        'LAYOUT_UNSUPPORTED',
        `${onnxPath}: the graph has no '${need}' input (inputs: ${inputNames.join(', ')}); expected an XLM-RoBERTa/BGE-M3 export with input_ids and attention_mask`,
        { file: onnxPath },
      );
    }
  }
  for (const names of THREE_OUTPUT_NAMES) {
    if (outputNames.includes(names.dense) && outputNames.includes(names.sparse) && outputNames.includes(names.colbert)) {
      return { kind: 'three-output', ...names };
    }
  }
  const hidden = HIDDEN_OUTPUT_NAMES.find((n) => outputNames.includes(n));
  if (hidden) return { kind: 'backbone', hiddenOutput: hidden };
  throw new M3Error(
    'LAYOUT_UNSUPPORTED',
    `${onnxPath}: unsupported outputs (${outputNames.join(', ')}). Supported: a backbone with last_hidden_state or token_embeddings, ` +
      `or a three-output export with ${THREE_OUTPUT_NAMES.map((n) => `${n.dense}/${n.sparse}/${n.colbert}`).join(' or ')}`,
    { file: onnxPath },
  );
}

/** Paths of the files a model needs (some only for some layouts). */
export interface ModelPaths {
  onnx: string;
  tokenizer: string;
  /** Candidate head files: used only when the graph is a backbone. */
  colbertHead: string | undefined;
  sparseHead: string | undefined;
  /** `config.json`, when present. */
  config: string | undefined;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Looks for `name` in the model directory, then next to the ONNX file, then one level above it. */
function findBeside(dir: string, onnxPath: string, name: string): string | undefined {
  const onnxDir = dirname(onnxPath);
  for (const d of [dir, onnxDir, dirname(onnxDir)]) {
    const p = join(d, name);
    if (isFile(p)) return p;
  }
  return undefined;
}

/**
 * Resolves the files of a model directory. `onnxFile` (relative to `dir`, or absolute) picks the
 * graph explicitly; otherwise the first existing candidate for `dtype` is taken (fp32 falls back to
 * q8 when only a quantised graph is present).
 */
export function resolveModelPaths(dir: string, options: { onnxFile?: string; dtype?: ModelDtype } = {}): ModelPaths {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new M3Error('MODEL_NOT_FOUND', `model directory not found: ${root}`, { file: root });
  }
  let onnx: string | undefined;
  if (options.onnxFile !== undefined) {
    const p = isAbsolute(options.onnxFile) ? options.onnxFile : join(root, options.onnxFile);
    if (!isFile(p)) throw new M3Error('MODEL_NOT_FOUND', `ONNX file not found: ${p}`, { file: p });
    onnx = p;
  } else {
    const order = options.dtype === 'q8' ? ONNX_CANDIDATES.q8 : [...ONNX_CANDIDATES.fp32, ...(options.dtype ? [] : ONNX_CANDIDATES.q8)];
    onnx = order.map((c) => join(root, c)).find(isFile);
    if (!onnx) {
      throw new M3Error(
        'MODEL_NOT_FOUND',
        `no ONNX model in ${root}: looked for ${order.join(', ')}. Pass the file explicitly (onnxFile / --onnx) if it has another name`,
        { file: root },
      );
    }
  }
  const tokenizer = findBeside(root, onnx, 'tokenizer.json');
  if (!tokenizer) {
    throw new M3Error(
      'MODEL_NOT_FOUND',
      `tokenizer.json not found in ${root} or next to ${onnx}; BGE-M3 needs the Hugging Face fast tokenizer file (tokenizer.json from BAAI/bge-m3)`,
      { file: join(root, 'tokenizer.json') },
    );
  }
  return {
    onnx,
    tokenizer,
    colbertHead: findBeside(root, onnx, 'colbert_linear.pt'),
    sparseHead: findBeside(root, onnx, 'sparse_linear.pt'),
    config: findBeside(root, onnx, 'config.json'),
  };
}
