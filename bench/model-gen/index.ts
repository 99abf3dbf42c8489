/**
 * Benchmark model generator: a randomly initialised model with BGE-M3's exact architecture,
 * I/O and file layout, written on demand (never committed) because the real 2.3 GB weights
 * cannot be downloaded here.
 *
 * Layout of an output directory (every variant can live in the same one):
 *   config.json, tokenizer.json, tokenizer_config.json, colbert_linear.pt, sparse_linear.pt
 *   onnx/model.onnx (+ model.onnx_data)            backbone fp32            (BAAI / Xenova onnx/)
 *   onnx/model_quantized.onnx                      backbone int8            (Xenova q8)
 *   onnx/model_mha.onnx (+ _data), onnx/model_mha_quantized.onnx   fused attention
 *   m3-onnx/bge_m3_model[_mha][_quantized].onnx (+ _data)           three outputs (yuniko-software)
 *   generator.json                                 seed, shape, files written
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  LAYER_NORM_EPS,
  PAD_ID,
  TYPE_VOCAB,
  parameterCount,
  validateConfig,
  type Attention,
  type Dtype,
  type ModelConfig,
  type Variant,
} from './config.ts';
import { toFp16Bits } from './fp16.ts';
import { buildGraph } from './graph.ts';
import { writeOnnxModel } from './onnx-writer.ts';
import { digitString } from './rng.ts';
import { writeTorchLinear } from './torch-pt.ts';
import { Weights } from './weights.ts';

export * from './config.ts';
export { Weights, weightCatalogue, layerPrefix, transpose, numel, type WeightInfo } from './weights.ts';
export { buildGraph, type VariantSpec } from './graph.ts';
export { f16BitsToF32, f32ToF16Bits, roundToFp16 } from './fp16.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Tokenizer files copied into every generated model (vocab 3002: ids stay below any vocab ≥ 3002). */
export const DEFAULT_TOKENIZER_DIR = join(REPO_ROOT, 'test/fixtures/tiny-m3-A');

export interface GenerateOptions {
  /** Output directory (created). */
  out: string;
  config: ModelConfig;
  variant?: Variant;
  dtype?: Dtype;
  attention?: Attention;
  /** Also write config.json, tokenizer files and the head .pt files (default true). */
  extras?: boolean;
  /** Where tokenizer.json / tokenizer_config.json are copied from. */
  tokenizerDir?: string;
  /** Force external data on/off; default: on for fp32, off for int8 (as the real exports). */
  externalData?: boolean;
  log?: (msg: string) => void;
}

export interface GeneratedFile {
  path: string;
  bytes: number;
}

export interface GenerateResult {
  /** Absolute path of the .onnx file. */
  modelPath: string;
  /** Path of the .onnx relative to `out` (what a loader is pointed at). */
  modelFile: string;
  files: GeneratedFile[];
  seconds: number;
  parameters: number;
  /** The weights of this model (regenerated from the seed on demand). */
  weights: Weights;
}

/** Model file (relative to the output directory) of a variant. */
export function modelFileName(variant: Variant = 'backbone', dtype: Dtype = 'fp32', attention: Attention = 'unfused'): string {
  const base = variant === 'backbone' ? 'onnx/model' : 'm3-onnx/bge_m3_model';
  return `${base}${attention === 'fused' ? '_mha' : ''}${dtype === 'int8' ? '_quantized' : ''}.onnx`;
}

/** BAAI/bge-m3's config.json for this shape, plus what transformers.js needs to find external data. */
export function configJson(c: ModelConfig): Record<string, unknown> {
  const external: Record<string, number> = {};
  for (const attention of ['unfused', 'fused'] as const) {
    external[modelFileName('backbone', 'fp32', attention).replace(/^onnx\//, '')] = 1;
  }
  return {
    _name_or_path: 'bgem3-js/bench-random-m3',
    architectures: ['XLMRobertaModel'],
    attention_probs_dropout_prob: 0.1,
    bos_token_id: 0,
    classifier_dropout: null,
    eos_token_id: 2,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0.1,
    hidden_size: c.hidden,
    initializer_range: c.std,
    intermediate_size: c.ffn,
    layer_norm_eps: LAYER_NORM_EPS,
    max_position_embeddings: c.positions,
    model_type: 'xlm-roberta',
    num_attention_heads: c.heads,
    num_hidden_layers: c.layers,
    output_past: true,
    pad_token_id: PAD_ID,
    position_embedding_type: 'absolute',
    torch_dtype: 'float32',
    transformers_version: '4.37.2',
    type_vocab_size: TYPE_VOCAB,
    use_cache: true,
    vocab_size: c.vocab,
    'transformers.js_config': { use_external_data_format: external },
  };
}

function fileSize(p: string): number {
  return statSync(p).size;
}

/** Writes the head files (fp16 torch.save archives) and returns their paths. */
export function writeHeads(out: string, weights: Weights): GeneratedFile[] {
  const files: GeneratedFile[] = [];
  for (const head of ['colbert_linear', 'sparse_linear']) {
    const w = weights.info(`${head}.weight`);
    const bInfo = weights.info(`${head}.bias`);
    const p = join(out, `${head}.pt`);
    const bytes = writeTorchLinear(
      p,
      head,
      { data: toFp16Bits(weights.get(w.name)), shape: w.dims },
      { data: toFp16Bits(weights.get(bInfo.name)), shape: bInfo.dims },
      digitString(weights.config.seed, `${head}.serialization_id`, 40),
    );
    files.push({ path: p, bytes });
  }
  return files;
}

export function generateModel(opts: GenerateOptions): GenerateResult {
  const t0 = performance.now();
  const config = opts.config;
  validateConfig(config);
  const variant = opts.variant ?? 'backbone';
  const dtype = opts.dtype ?? 'fp32';
  const attention = opts.attention ?? 'unfused';
  const log = opts.log ?? (() => {});
  const weights = new Weights(config);
  const modelFile = modelFileName(variant, dtype, attention);
  const modelPath = join(opts.out, modelFile);
  mkdirSync(dirname(modelPath), { recursive: true });
  const files: GeneratedFile[] = [];

  if (opts.extras ?? true) {
    const cfgPath = join(opts.out, 'config.json');
    writeFileSync(cfgPath, JSON.stringify(configJson(config), null, 2) + '\n');
    files.push({ path: cfgPath, bytes: fileSize(cfgPath) });
    const tokDir = opts.tokenizerDir ?? DEFAULT_TOKENIZER_DIR;
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      const src = join(tokDir, f);
      if (!existsSync(src)) throw new Error(`missing ${src}`);
      const dst = join(opts.out, f);
      copyFileSync(src, dst);
      files.push({ path: dst, bytes: fileSize(dst) });
    }
    files.push(...writeHeads(opts.out, weights));
  }

  const external = opts.externalData ?? dtype === 'fp32';
  const dataName = `${modelFile.split('/').pop()}_data`;
  const graph = buildGraph(weights, { variant, dtype, attention });
  graph.metadata = {
    'bgem3.generator': JSON.stringify({ ...config, variant, dtype, attention }),
  };
  log(`writing ${modelFile} (${graph.nodes.length} nodes, ${graph.initializers.length} initializers)`);
  const res = writeOnnxModel(modelPath, graph, external ? { externalData: dataName } : {});
  files.push({ path: modelPath, bytes: res.modelBytes });
  if (res.dataBytes) files.push({ path: join(dirname(modelPath), dataName), bytes: res.dataBytes });

  const seconds = (performance.now() - t0) / 1000;
  const manifestPath = join(opts.out, 'generator.json');
  let manifest: { models?: Record<string, unknown> } = {};
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch {
    /* first model in this directory */
  }
  manifest = {
    ...manifest,
    models: {
      ...(manifest.models ?? {}),
      [modelFile]: {
        config,
        variant,
        dtype,
        attention,
        seconds: Math.round(seconds * 10) / 10,
        files: files.map((f) => ({ path: relative(opts.out, f.path), bytes: f.bytes })),
      },
    },
  };
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2) + '\n');
  return { modelPath, modelFile, files, seconds, parameters: parameterCount(config), weights };
}
