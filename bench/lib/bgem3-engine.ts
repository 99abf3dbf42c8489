/**
 * The project's own encoder as a benchmark engine, plus the measurements only it has: event-loop
 * lag while encoding, peak RSS of one long input, and time to the first embedding (the last two in
 * child processes, so each starts from a fresh process).
 */
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { M3Encoder } from '@bgem3/core';

export interface Bgem3Run {
  engine: string;
  batchSize: number;
  texts: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** Event-loop delay while the batches ran (worker threads keep it small). */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

export interface Bgem3RunOptions {
  dtype: 'fp32' | 'q8';
  threads: number;
  outputs: 'dense' | 'all';
  batchSize: number;
  /** Passes over the texts (the best one counts, to reduce the noise of a shared machine). */
  repeats?: number;
}

/** Loads M3Encoder as the benchmarks run it: one worker thread, cache off. */
export function openBgem3(modelDir: string, o: Pick<Bgem3RunOptions, 'dtype' | 'threads' | 'batchSize'>): Promise<M3Encoder> {
  return M3Encoder.load(modelDir, {
    dtype: o.dtype,
    intraOpNumThreads: o.threads,
    batchSize: o.batchSize,
    maxBatchTokens: o.batchSize * 8192,
    cache: false,
  });
}

/** One timed pass of `texts` through a loaded encoder, with the event-loop delay meanwhile. */
export async function bgem3Pass(enc: M3Encoder, texts: string[], o: Pick<Bgem3RunOptions, 'dtype' | 'outputs' | 'batchSize'>): Promise<Bgem3Run> {
  const want = o.outputs === 'all' ? { dense: true, sparse: true, colbert: true } : { dense: true };
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const t = performance.now();
  const res = await enc.encode(texts, want);
  const seconds = (performance.now() - t) / 1000;
  loop.disable();
  const tokens = res.reduce((a, x) => a + x.tokens, 0);
  return {
    engine: `bgem3 (${o.dtype}, ${o.outputs === 'all' ? 'dense+sparse+ColBERT' : 'dense only'})`,
    batchSize: o.batchSize,
    texts: texts.length,
    tokens,
    seconds,
    tokensPerSecond: tokens / seconds,
    loopDelayP99Ms: loop.percentile(99) / 1e6,
    loopDelayMaxMs: loop.max / 1e6,
  };
}

/** Encodes `texts` with M3Encoder (worker thread, cache off) and times it: the best of `repeats` passes. */
export async function benchBgem3(modelDir: string, texts: string[], o: Bgem3RunOptions): Promise<Bgem3Run> {
  const enc = await openBgem3(modelDir, o);
  try {
    await enc.encode(texts.slice(0, o.batchSize), o.outputs === 'all' ? { dense: true, sparse: true, colbert: true } : { dense: true }); // warm-up
    let best: Bgem3Run | undefined;
    for (let r = 0; r < (o.repeats ?? 1); r++) {
      const run = await bgem3Pass(enc, texts, o);
      if (!best || run.seconds < best.seconds) best = run;
    }
    return best!;
  } finally {
    await enc.close();
  }
}

/**
 * Runs a small ES module in a fresh plain Node process (no tsx loader) and returns its last stdout
 * line as JSON. The file is written into `cwd` so that `@bgem3/core` resolves from there.
 */
function child(script: string, cwd: string): Promise<Record<string, any>> {
  const file = join(cwd, `.bench-child-${process.pid}-${Date.now()}.mjs`);
  writeFileSync(file, script);
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return new Promise<Record<string, any>>((resolve, reject) => {
    execFile(process.execPath, [file], { cwd, env, encoding: 'utf8', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() as string));
    });
  }).finally(() => rmSync(file, { force: true }));
}

/**
 * The child's own peak RSS in KiB, as JS source. Not `process.resourceUsage().maxRSS`: Linux
 * carries ru_maxrss across exec, so a child spawned by a big parent (this bench, after loading
 * models) reports the parent's RSS at fork time. /proc/self/status's VmHWM is the child's own.
 */
const PEAK_RSS_KB = `(() => { try { return Number(/VmHWM:\\s+(\\d+)/.exec(readProcStatus('/proc/self/status', 'utf8'))[1]); } catch { return process.resourceUsage().maxRSS; } })()`;

/**
 * Peak RSS (process-wide, worker threads included) of encoding one input of `tokens` tokens with
 * all three outputs, in a fresh process; also the RSS after loading the model.
 */
export function peakRssOneInput(
  modelDir: string,
  onnxFile: string,
  tokens: number,
  cwd: string,
  opts: { fuseAttention?: boolean } = {},
): Promise<Record<string, any>> {
  return child(
    `import { M3Encoder } from '@bgem3/core';
     import { readFileSync as readProcStatus } from 'node:fs';
     const enc = await M3Encoder.load(${JSON.stringify(modelDir)}, { onnxFile: ${JSON.stringify(onnxFile)}, workers: 0, cache: false, fuseAttention: ${opts.fuseAttention !== false} });
     const afterLoad = process.memoryUsage().rss;
     const t = performance.now();
     const [r] = await enc.encode(['word '.repeat(${tokens} * 2)], { dense: true, sparse: true, colbert: true, maxLength: ${tokens} });
     console.log(JSON.stringify({ attention: enc.attention, tokens: r.tokens, seconds: (performance.now() - t) / 1000, rssAfterLoadMB: afterLoad / 2 ** 20, peakRssMB: ${PEAK_RSS_KB} / 1024 }));`,
    cwd,
  );
}

/** Seconds from process start to the first embedding (import + model load + one short text). */
export function timeToFirstEmbedding(modelDir: string, dtype: 'fp32' | 'q8', cwd: string): Promise<Record<string, any>> {
  return child(
    `const t0 = performance.now();
     const { M3Encoder } = await import('@bgem3/core');
     const enc = await M3Encoder.load(${JSON.stringify(modelDir)}, { dtype: ${JSON.stringify(dtype)} });
     const t1 = performance.now();
     await enc.encode(['What is BGE M3?'], { dense: true, sparse: true, colbert: true });
     const t2 = performance.now();
     await enc.close();
     console.log(JSON.stringify({ loadSeconds: (t1 - t0) / 1000, firstEmbeddingSeconds: (t2 - t0) / 1000 }));`,
    cwd,
  );
}
