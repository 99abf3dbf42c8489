/**
 * The transformers.js side of the encode benchmark: BGE-M3 dense embeddings the way a
 * transformers.js user gets them (`pipeline('feature-extraction', …, { pooling: 'cls', normalize: true })`),
 * from a local model directory only.
 *
 * What transformers.js 4.3.1 needs in the directory (read from its source):
 * - `config.json` (model_type xlm-roberta), `tokenizer.json`, `tokenizer_config.json`;
 * - `onnx/model.onnx` for dtype fp32 or `onnx/model_quantized.onnx` for q8
 *   (`DEFAULT_DTYPE_SUFFIX_MAPPING`, `subfolder` 'onnx');
 * - the weights sidecar `onnx/model.onnx_data`: in Node the session is created from the file
 *   path, so onnxruntime finds the sidecar by itself; `config.json`'s
 *   `transformers.js_config.use_external_data_format` (`{"model.onnx": 1}`) makes transformers.js
 *   check for / fetch it as well (needed in browsers and when loading from buffers).
 * The pipeline tokenises with `padding: true, truncation: true` (truncation at the tokenizer's
 * model_max_length, 8192), runs the model and slices the CLS row, then L2-normalises.
 */
import { basename, dirname, resolve } from 'node:path';
import { env, pipeline, type FeatureExtractionPipeline } from '@huggingface/transformers';

export interface TransformersJsOptions {
  /** 'fp32' → onnx/model.onnx, 'q8' → onnx/model_quantized.onnx. */
  dtype?: 'fp32' | 'q8';
  /** Texts per pipeline call (default 1). */
  batchSize?: number;
  /** onnxruntime intra-op threads (default: onnxruntime's own default, all cores). */
  threads?: number;
  /** Batches run before timing (default 1). */
  warmup?: number;
  /** Repeat the whole text list this many times (default 1). */
  repeat?: number;
  /** onnx file base name (without suffix / .onnx), e.g. 'model_mha' for the fused-attention file. */
  modelFileName?: string;
  /** Awaited before each timed batch, outside the timing (e.g. waiting for an idle machine). */
  beforeBatch?: () => Promise<unknown>;
}

export interface TransformersJsResult {
  engine: 'transformers.js';
  dtype: 'fp32' | 'q8';
  batchSize: number;
  texts: number;
  /** Real (unpadded) tokens encoded, from the pipeline's own tokenizer. */
  tokens: number;
  /** Padded positions the model actually computed (batch × longest). */
  paddedTokens: number;
  seconds: number;
  tokensPerSecond: number;
  msPerBatchMedian: number;
  loadSeconds: number;
  /** The first embedding (to compare engines). */
  firstEmbedding: Float32Array;
}

let loaded: { key: string; extractor: FeatureExtractionPipeline; loadSeconds: number } | null = null;

/** Loads (and caches) the pipeline of a local model directory. */
export async function loadTransformersJs(
  modelDir: string,
  opts: Pick<TransformersJsOptions, 'dtype' | 'threads' | 'modelFileName'> = {},
): Promise<{ extractor: FeatureExtractionPipeline; loadSeconds: number }> {
  const dir = resolve(modelDir);
  const dtype = opts.dtype ?? 'fp32';
  const key = `${dir}|${dtype}|${opts.threads ?? ''}|${opts.modelFileName ?? ''}`;
  if (loaded?.key === key) return loaded;
  if (loaded) await loaded.extractor.dispose();
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(dir) + '/';
  const t0 = performance.now();
  const extractor = (await pipeline('feature-extraction', basename(dir), {
    dtype,
    device: 'cpu',
    local_files_only: true,
    ...(opts.modelFileName ? { model_file_name: opts.modelFileName } : {}),
    session_options: opts.threads ? { intraOpNumThreads: opts.threads, interOpNumThreads: 1 } : {},
  })) as FeatureExtractionPipeline;
  loaded = { key, extractor, loadSeconds: (performance.now() - t0) / 1000 };
  return loaded;
}

/** Encodes `texts` (dense, CLS + L2) with transformers.js and reports tokens/s. */
export async function benchTransformersJs(
  modelDir: string,
  texts: string[],
  opts: TransformersJsOptions = {},
): Promise<TransformersJsResult> {
  const dtype = opts.dtype ?? 'fp32';
  const batchSize = opts.batchSize ?? 1;
  const { extractor, loadSeconds } = await loadTransformersJs(modelDir, opts);
  const batches: string[][] = [];
  for (let r = 0; r < (opts.repeat ?? 1); r++) {
    for (let i = 0; i < texts.length; i += batchSize) batches.push(texts.slice(i, i + batchSize));
  }
  for (let i = 0; i < (opts.warmup ?? 1) && batches.length; i++) {
    await extractor(batches[i % batches.length], { pooling: 'cls', normalize: true });
  }
  let tokens = 0;
  let paddedTokens = 0;
  for (const b of batches) {
    const enc = extractor.tokenizer(b, { padding: true, truncation: true });
    const dims = enc.attention_mask.dims as number[];
    paddedTokens += dims[0] * dims[1];
    for (const v of enc.attention_mask.data as BigInt64Array) tokens += Number(v);
  }
  const times: number[] = [];
  let first: Float32Array | null = null;
  for (const b of batches) {
    if (opts.beforeBatch) await opts.beforeBatch();
    const t = performance.now();
    const out = await extractor(b, { pooling: 'cls', normalize: true });
    times.push(performance.now() - t);
    if (!first) first = Float32Array.from((out.data as Float32Array).subarray(0, out.dims[1] as number));
  }
  const seconds = times.reduce((a, b) => a + b, 0) / 1000;
  times.sort((a, b) => a - b);
  return {
    engine: 'transformers.js',
    dtype,
    batchSize,
    texts: batches.reduce((a, b) => a + b.length, 0),
    tokens,
    paddedTokens,
    seconds,
    tokensPerSecond: tokens / seconds,
    msPerBatchMedian: times[Math.floor(times.length / 2)] ?? 0,
    loadSeconds,
    firstEmbedding: first ?? new Float32Array(0),
  };
}

export async function disposeTransformersJs(): Promise<void> {
  if (loaded) await loaded.extractor.dispose();
  loaded = null;
}
