/**
 * The two small BGE-M3 heads that turn token states into sparse weights and ColBERT vectors,
 * read from FlagEmbedding's `sparse_linear.pt` and `colbert_linear.pt`.
 *
 * FlagEmbedding silently uses randomly initialised heads when these files are missing; we refuse
 * instead, since random heads give plausible-looking but meaningless sparse and ColBERT outputs.
 */
import { M3Error } from '../errors.js';
import { readTorchStateDict, type TorchTensor } from './torch/pt-reader.js';

/** `colbert_linear`: Linear(hidden → colbertDim) with bias; weight row-major [colbertDim, hidden]. */
export interface ColbertHead {
  weight: Float32Array;
  bias: Float32Array;
  hidden: number;
  dim: number;
}

/** `sparse_linear`: Linear(hidden → 1) with bias. */
export interface SparseHead {
  weight: Float32Array;
  bias: number;
  hidden: number;
}

export interface M3Heads {
  colbert: ColbertHead;
  sparse: SparseHead;
}

/** Largest ColBERT dimension read (BGE-M3: 1,024). */
const MAX_COLBERT_DIM = 8192;
/** Hidden size assumed for the read bound when the graph and config.json do not say. */
const MAX_HIDDEN_GUESS = 8192;

function tensor(dict: Record<string, TorchTensor>, key: string, file: string): TorchTensor {
  // Tolerate the prefixed keys of a state dict saved from the parent module.
  const t = dict[key] ?? Object.entries(dict).find(([k]) => k.endsWith(`.${key}`))?.[1];
  if (!t) {
    throw new M3Error('MODEL_FILE_INVALID', `${file} has no '${key}' tensor (keys: ${Object.keys(dict).join(', ') || 'none'})`, { file });
  }
  return t;
}

function shapeError(file: string, what: string, got: number[], want: string): never {
  throw new M3Error('MODEL_FILE_INVALID', `${file}: ${what} has shape [${got.join(', ')}], expected ${want}`, { file });
}

/** Reads and checks both head files against the backbone's hidden size. */
export async function loadHeads(
  colbertPath: string | undefined,
  sparsePath: string | undefined,
  hidden: number | undefined,
  modelDir: string,
): Promise<M3Heads> {
  const missing = [!colbertPath && 'colbert_linear.pt', !sparsePath && 'sparse_linear.pt'].filter(Boolean);
  if (missing.length > 0 || !colbertPath || !sparsePath) {
    throw new M3Error(
      'MODEL_NOT_FOUND',
      `${missing.join(' and ')} not found in ${modelDir}: a backbone-only ONNX graph (last_hidden_state/token_embeddings) needs ` +
        `BGE-M3's head files from the BAAI/bge-m3 repository root for sparse and ColBERT outputs ` +
        `(or use a three-output export such as yuniko-software/bge-m3-onnx)`,
      { file: missing[0] as string },
    );
  }
  // Read no more than the heads can need (float64 at worst): a small damaged or hostile file
  // cannot make the reader inflate gigabytes.
  const h0 = hidden ?? MAX_HIDDEN_GUESS;
  const [c, s] = await Promise.all([
    readTorchStateDict(colbertPath, { maxBytes: 8 * (h0 + 1) * MAX_COLBERT_DIM }),
    readTorchStateDict(sparsePath, { maxBytes: 8 * (h0 + 1) }),
  ]);
  const cw = tensor(c, 'weight', colbertPath);
  const cb = tensor(c, 'bias', colbertPath);
  const sw = tensor(s, 'weight', sparsePath);
  const sb = tensor(s, 'bias', sparsePath);
  const h = hidden ?? cw.shape[1];
  if (cw.shape.length !== 2 || cw.shape[1] !== h) shapeError(colbertPath, 'weight', cw.shape, `[dim, ${h}]`);
  if (cb.shape.length !== 1 || cb.shape[0] !== cw.shape[0]) shapeError(colbertPath, 'bias', cb.shape, `[${cw.shape[0]}]`);
  if (sw.data.length !== h || (sw.shape.length === 2 && sw.shape[0] !== 1)) shapeError(sparsePath, 'weight', sw.shape, `[1, ${h}]`);
  if (sb.data.length !== 1) shapeError(sparsePath, 'bias', sb.shape, '[1]');
  return {
    colbert: { weight: cw.data, bias: cb.data, hidden: h, dim: cw.shape[0] },
    sparse: { weight: sw.data, bias: sb.data[0], hidden: h },
  };
}
