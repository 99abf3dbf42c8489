/**
 * The weights of a BGE-M3-architecture model, generated on demand from the seed.
 *
 * Nothing is stored: `get(name)` materialises a tensor (fine for the tiny test models and for
 * the small tensors of the full model), and `chunks(name)` streams a tensor of any size in
 * bounded memory (the 1 GB word-embedding matrix of the full model is never held at once).
 *
 * Layouts:
 * - Linear weights inside the encoder are stored as ONNX `MatMul` operands, i.e. `[in, out]`
 *   (the transpose of torch's `nn.Linear.weight`), as `torch.onnx.export` writes them.
 * - The M3 heads (`colbert_linear.*`, `sparse_linear.*`) use torch's layout `[out, in]`, as in
 *   `colbert_linear.pt` / `sparse_linear.pt`, and their values are rounded to fp16 because the
 *   real head files store fp16; the graph of the three-output variant uses the same rounded values,
 *   so backbone + head files reproduce it exactly.
 * - Rows of the pad id (1) in the word and position embeddings are zero, as `padding_idx` makes
 *   them in XLM-RoBERTa.
 */
import { PAD_ID, TYPE_VOCAB, type ModelConfig } from './config.ts';
import { NormalStream } from './rng.ts';
import { roundToFp16 } from './fp16.ts';

export type WeightInit = 'normal' | 'ones' | 'zeros';

export interface WeightInfo {
  name: string;
  dims: number[];
  init: WeightInit;
  /** A row (of the first dimension) forced to zero: the padding_idx of an embedding. */
  zeroRow?: number;
  /** Values rounded to fp16 (the M3 head files are fp16). */
  fp16?: boolean;
}

export function layerPrefix(i: number): string {
  return `encoder.layer.${i}`;
}

/** Every weight of the backbone and of the two M3 heads, in file order. */
export function weightCatalogue(c: ModelConfig): WeightInfo[] {
  const H = c.hidden;
  const F = c.ffn;
  const list: WeightInfo[] = [
    { name: 'embeddings.word_embeddings.weight', dims: [c.vocab, H], init: 'normal', zeroRow: PAD_ID },
    { name: 'embeddings.position_embeddings.weight', dims: [c.positions, H], init: 'normal', zeroRow: PAD_ID },
    { name: 'embeddings.token_type_embeddings.weight', dims: [TYPE_VOCAB, H], init: 'normal' },
    { name: 'embeddings.LayerNorm.weight', dims: [H], init: 'ones' },
    { name: 'embeddings.LayerNorm.bias', dims: [H], init: 'zeros' },
  ];
  for (let i = 0; i < c.layers; i++) {
    const p = layerPrefix(i);
    for (const lin of ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense']) {
      list.push({ name: `${p}.${lin}.weight`, dims: [H, H], init: 'normal' });
      list.push({ name: `${p}.${lin}.bias`, dims: [H], init: 'normal' });
    }
    list.push({ name: `${p}.attention.output.LayerNorm.weight`, dims: [H], init: 'ones' });
    list.push({ name: `${p}.attention.output.LayerNorm.bias`, dims: [H], init: 'zeros' });
    list.push({ name: `${p}.intermediate.dense.weight`, dims: [H, F], init: 'normal' });
    list.push({ name: `${p}.intermediate.dense.bias`, dims: [F], init: 'normal' });
    list.push({ name: `${p}.output.dense.weight`, dims: [F, H], init: 'normal' });
    list.push({ name: `${p}.output.dense.bias`, dims: [H], init: 'normal' });
    list.push({ name: `${p}.output.LayerNorm.weight`, dims: [H], init: 'ones' });
    list.push({ name: `${p}.output.LayerNorm.bias`, dims: [H], init: 'zeros' });
  }
  list.push({ name: 'colbert_linear.weight', dims: [H, H], init: 'normal', fp16: true });
  list.push({ name: 'colbert_linear.bias', dims: [H], init: 'normal', fp16: true });
  list.push({ name: 'sparse_linear.weight', dims: [1, H], init: 'normal', fp16: true });
  list.push({ name: 'sparse_linear.bias', dims: [1], init: 'normal', fp16: true });
  return list;
}

export function numel(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Default streaming chunk: 1M floats (4 MB). */
export const CHUNK_ELEMS = 1 << 20;

export class Weights {
  readonly config: ModelConfig;
  private readonly byName: Map<string, WeightInfo>;

  constructor(config: ModelConfig) {
    this.config = config;
    this.byName = new Map(weightCatalogue(config).map((w) => [w.name, w]));
  }

  list(): WeightInfo[] {
    return [...this.byName.values()];
  }

  info(name: string): WeightInfo {
    const w = this.byName.get(name);
    if (!w) throw new Error(`unknown weight ${name}`);
    return w;
  }

  /** The whole tensor (row-major). Use `chunks` for big tensors. */
  get(name: string): Float32Array {
    const w = this.info(name);
    const out = new Float32Array(numel(w.dims));
    let off = 0;
    for (const c of this.chunks(name)) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  /** The tensor in row-major chunks of at most `chunkElems` values. The yielded array is
   *  reused: copy it before asking for the next chunk. */
  *chunks(name: string, chunkElems = CHUNK_ELEMS): Generator<Float32Array> {
    const w = this.info(name);
    const n = numel(w.dims);
    const rowLen = w.dims.length > 1 ? n / w.dims[0] : 1;
    const buf = new Float32Array(Math.min(chunkElems, Math.max(n, 1)));
    const rng = w.init === 'normal' ? new NormalStream(this.config.seed, name) : null;
    for (let start = 0; start < n; start += buf.length) {
      const len = Math.min(buf.length, n - start);
      const c = buf.subarray(0, len);
      if (rng) rng.fill(c, this.config.std);
      else c.fill(w.init === 'ones' ? 1 : 0);
      if (w.zeroRow !== undefined) {
        const z0 = w.zeroRow * rowLen;
        const z1 = z0 + rowLen;
        const a = Math.max(z0, start);
        const b = Math.min(z1, start + len);
        if (a < b) c.fill(0, a - start, b - start);
      }
      if (w.fp16) roundToFp16(c);
      yield c;
    }
  }
}

/** Row-major transpose of a [rows, cols] matrix. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}
