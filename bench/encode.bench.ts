#!/usr/bin/env node
/**
 * Encode benchmark: tokens/s on 512-token chunks, engines side by side on the same ONNX file.
 *
 *   node --import tsx bench/encode.bench.ts --quick            # tiny fixture model, seconds
 *   node --import tsx bench/encode.bench.ts [--model bench/.models/m3-full] [--dtype fp32|q8]
 *        [--batches 1,2,4,8] [--chunk 512] [--texts 8] [--threads 2] [--json out.json] [--flops] [--quiet]
 *
 * --quiet waits for an idle CPU before every timed batch (shared machines); --flops also times
 * the machine's onnxruntime MatMul (the ceiling: tokens/s ≤ FLOP/s ÷ ~654 MFLOP per token at 512).
 *
 * The full model is the generated random-weight BGE-M3 (same FLOPs/memory as the real one):
 *   node --import tsx bench/model-gen/generate.ts --out bench/.models/m3-full [--dtype int8]
 *
 * Engines:
 * - `transformers.js`: `pipeline('feature-extraction', dir, { pooling: 'cls', normalize: true })`
 *   (bench/lib/transformersjs.ts), tokenizer and post-processing included;
 * - `onnxruntime (session.run only)`: the same file, pre-tokenised ids, no post-processing: the
 *   kernel-time floor both engines share;
 * - the project's own encoder: to be added to `ENGINES` below (same texts, same file).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { describeMachine, measureMatMulFlops, waitForQuiet } from './lib/machine.ts';
import { benchTransformersJs, disposeTransformersJs, loadTransformersJs } from './lib/transformersjs.ts';
import { feedsFor, openSession } from './model-gen/ort-bench.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const QUICK_MODEL = join(ROOT, 'test/fixtures/tiny-m3-A');
const FULL_MODEL = join(ROOT, 'bench/.models/m3-full');

export interface EngineResult {
  engine: string;
  batchSize: number;
  texts: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  msPerBatchMedian: number;
}

/** An engine encodes the same texts in batches of `batchSize`; it reports real tokens encoded. */
export type Engine = (modelDir: string, texts: string[], batchSize: number, o: BenchOptions) => Promise<EngineResult>;

export interface BenchOptions {
  dtype: 'fp32' | 'q8';
  threads: number;
  /** Awaited before each timed batch, outside the timing (waitForQuiet with --quiet). */
  beforeBatch?: () => Promise<unknown>;
}

/** Multilingual source text: the fixture's golden texts (the same tokenizer family as BGE-M3). */
function corpus(): string {
  const g = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/tiny-m3-A/golden.json'), 'utf8')) as { texts: string[] };
  return g.texts.filter((t) => t.trim().length > 0).join('\n');
}

/**
 * `n` texts that each tokenise to `chunk` tokens or just under (incl. <s> and </s>): windows of
 * the corpus ids decoded back to text, shrunk until re-tokenisation fits.
 */
export async function chunkTexts(modelDir: string, n: number, chunk: number): Promise<string[]> {
  const { extractor } = await loadTransformersJs(modelDir, { dtype: 'fp32' });
  const tok = extractor.tokenizer;
  let text = corpus();
  let ids: number[] = tok.encode(text, { add_special_tokens: false });
  while (ids.length < n * chunk) {
    text += '\n' + text;
    ids = tok.encode(text, { add_special_tokens: false });
  }
  const out: string[] = [];
  let pos = 0;
  while (out.length < n) {
    let take = chunk - 2;
    for (;;) {
      const t = tok.decode(ids.slice(pos, pos + take), { skip_special_tokens: true });
      const len = tok.encode(t).length;
      if (len <= chunk || take < chunk / 2) {
        out.push(t);
        break;
      }
      take -= len - chunk + 1;
    }
    pos += take;
  }
  return out;
}

const transformersJs: Engine = async (dir, texts, batchSize, o) => {
  const r = await benchTransformersJs(dir, texts, {
    dtype: o.dtype,
    batchSize,
    threads: o.threads,
    warmup: 1,
    beforeBatch: o.beforeBatch,
  });
  return { ...r, engine: `transformers.js (${o.dtype})` };
};

/** session.run only, on the ids transformers.js' tokenizer produced (so the same tokens). */
const ortOnly: Engine = async (dir, texts, batchSize, o) => {
  const file = join(dir, o.dtype === 'q8' ? 'onnx/model_quantized.onnx' : 'onnx/model.onnx');
  const { extractor } = await loadTransformersJs(dir, { dtype: 'fp32' });
  const rows = texts.map((t) => extractor.tokenizer.encode(t) as number[]);
  const session = await openSession(file, { threads: o.threads });
  try {
    const batches: number[][][] = [];
    for (let i = 0; i < rows.length; i += batchSize) batches.push(rows.slice(i, i + batchSize));
    await session.run(feedsFor(batches[0]));
    const times: number[] = [];
    for (const b of batches) {
      if (o.beforeBatch) await o.beforeBatch();
      const t = performance.now();
      await session.run(feedsFor(b));
      times.push(performance.now() - t);
    }
    const seconds = times.reduce((a, b) => a + b, 0) / 1000;
    const tokens = rows.reduce((a, r) => a + r.length, 0);
    times.sort((a, b) => a - b);
    return {
      engine: `onnxruntime session.run only (${o.dtype})`,
      batchSize,
      texts: rows.length,
      tokens,
      seconds,
      tokensPerSecond: tokens / seconds,
      msPerBatchMedian: times[Math.floor(times.length / 2)],
    };
  } finally {
    await session.release();
  }
};

/** Engines compared; add the project's encoder here when it is wired in. */
export const ENGINES: Engine[] = [transformersJs, ortOnly];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      model: { type: 'string' },
      dtype: { type: 'string', default: 'fp32' },
      batches: { type: 'string' },
      chunk: { type: 'string', default: '512' },
      texts: { type: 'string' },
      threads: { type: 'string', default: '2' },
      json: { type: 'string' },
      flops: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
    },
  });
  const quick = values.quick!;
  const modelDir = resolve(values.model ?? (quick ? QUICK_MODEL : FULL_MODEL));
  const dtype = values.dtype as 'fp32' | 'q8';
  const file = join(modelDir, dtype === 'q8' ? 'onnx/model_quantized.onnx' : 'onnx/model.onnx');
  if (!existsSync(file)) {
    console.error(
      `${file} not found. Generate the benchmark model first:\n` +
        `  node --import tsx bench/model-gen/generate.ts --out ${modelDir}${dtype === 'q8' ? ' --dtype int8' : ''}`,
    );
    process.exit(1);
  }
  const batchSizes = (values.batches ?? (quick ? '1,4' : '1,2,4,8')).split(',').map(Number);
  const nTexts = Number(values.texts ?? (quick ? 16 : 8));
  const chunk = Number(values.chunk);
  const opts: BenchOptions = {
    dtype,
    threads: Number(values.threads),
    beforeBatch: values.quiet ? () => waitForQuiet(15, 60_000) : undefined,
  };

  const machine = describeMachine();
  console.error(`${machine.cpuModel} · ${machine.cores} cores · ${machine.ramGB} GB · node ${machine.node} · onnxruntime ${machine.onnxruntime}`);
  const matmul = values.flops ? await measureMatMulFlops({ threads: opts.threads, quiet: values.quiet }) : undefined;
  if (matmul) console.error(`MatMul ${matmul.m}×${matmul.k}×${matmul.n} fp32: ${matmul.gflopsMedian.toFixed(1)} GFLOP/s`);

  const texts = await chunkTexts(modelDir, nTexts, chunk);
  console.error(`model ${modelDir} (${dtype}), ${texts.length} texts of ≤ ${chunk} tokens, threads ${opts.threads}`);
  const results: EngineResult[] = [];
  for (const engine of ENGINES) {
    for (const bs of batchSizes) {
      const r = await engine(modelDir, texts, bs, opts);
      results.push(r);
      console.error(
        `${r.engine.padEnd(40)} batch ${String(bs).padStart(2)}: ${r.tokensPerSecond.toFixed(1).padStart(9)} tok/s  ` +
          `(${r.tokens} tokens in ${r.seconds.toFixed(2)} s, median ${r.msPerBatchMedian.toFixed(0)} ms/batch)`,
      );
    }
  }
  await disposeTransformersJs();
  const report = { machine, matmul, modelDir, dtype, chunk, threads: opts.threads, results };
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
  console.log(JSON.stringify(report));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
