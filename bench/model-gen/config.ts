/**
 * Shapes and options of a generated BGE-M3-architecture model.
 *
 * Defaults are BAAI/bge-m3's own `config.json` (XLMRobertaModel, 24 × 1024, 16 heads, FFN 4096,
 * vocab 250002, 8194 positions, LayerNorm eps 1e-5, pad id 1), so a generated model has the real
 * model's FLOPs, weight bytes and activation memory; only the weight values are random.
 */
export interface ModelShape {
  layers: number;
  hidden: number;
  heads: number;
  ffn: number;
  vocab: number;
  /** `max_position_embeddings`: 8194 = 8192 + 2 (positions start at pad id + 1 = 2). */
  positions: number;
}

export interface ModelConfig extends ModelShape {
  /** Seed of every random weight: same seed + same shape = same weights, in any variant. */
  seed: number;
  /** Standard deviation of the random weights (linear, embedding and bias values). */
  std: number;
}

/** `backbone`: `last_hidden_state` only (BAAI/Xenova `onnx/model.onnx`).
 *  `three-output`: `dense_embeddings`, `sparse_weights`, `colbert_vectors` (yuniko-software/bge-m3-onnx). */
export type Variant = 'backbone' | 'three-output';
/** `fp32`: float weights (external data). `int8`: onnxruntime `quantize_dynamic` layout (Xenova `model_quantized.onnx`). */
export type Dtype = 'fp32' | 'int8';
/** `unfused`: the exporter's MatMul/Softmax subgraph. `fused`: `com.microsoft.MultiHeadAttention`. */
export type Attention = 'unfused' | 'fused';

export const PAD_ID = 1;
export const LAYER_NORM_EPS = 1e-5;
export const TYPE_VOCAB = 1;

export const FULL_SHAPE: ModelShape = {
  layers: 24,
  hidden: 1024,
  heads: 16,
  ffn: 4096,
  vocab: 250002,
  positions: 8194,
};

/** The shape the validation test uses (same vocab as the tiny-m3-A fixture tokenizer). */
export const TINY_SHAPE: ModelShape = {
  layers: 2,
  hidden: 32,
  heads: 4,
  ffn: 64,
  vocab: 3002,
  positions: 8194,
};

export const DEFAULT_SEED = 1;
export const DEFAULT_STD = 0.02;

export function fullConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return { ...FULL_SHAPE, seed: DEFAULT_SEED, std: DEFAULT_STD, ...overrides };
}

export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return { ...TINY_SHAPE, seed: DEFAULT_SEED, std: DEFAULT_STD, ...overrides };
}

export function validateConfig(c: ModelConfig): void {
  for (const k of ['layers', 'hidden', 'heads', 'ffn', 'vocab', 'positions'] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new Error(`${k} must be a positive integer, got ${c[k]}`);
  }
  if (c.hidden % c.heads !== 0) throw new Error(`hidden (${c.hidden}) must be divisible by heads (${c.heads})`);
  if (c.vocab <= 3) throw new Error('vocab must hold the special ids 0..3');
  if (c.positions < 3) throw new Error('positions must be at least 3 (pad id + 2)');
  if (!(c.std > 0)) throw new Error('std must be > 0');
}

/** Parameter count of the backbone (embeddings + layers), as in the peers doc §4.1 (568M at full size). */
export function parameterCount(c: ModelShape): number {
  const h = c.hidden;
  const emb = c.vocab * h + c.positions * h + TYPE_VOCAB * h + 2 * h;
  const layer = 4 * (h * h + h) + 2 * h + (h * c.ffn + c.ffn) + (c.ffn * h + h) + 2 * h;
  return emb + c.layers * layer;
}
