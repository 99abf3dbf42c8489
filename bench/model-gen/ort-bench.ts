/**
 * Plain onnxruntime-node timing of a (generated or real) BGE-M3 graph: no tokenizer, no
 * post-processing, just `session.run` on fixed-length rows, so the figures are the kernel-time
 * ceiling an encoder built on the same file can approach.
 */
import * as ort from 'onnxruntime-node';

export interface OrtSessionOptions {
  threads?: number;
  /** onnxruntime graph optimisation level (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** CPU memory arena (default true, onnxruntime's default). */
  arena?: boolean;
}

export async function openSession(modelPath: string, o: OrtSessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: o.threads ?? 2,
    interOpNumThreads: 1,
    graphOptimizationLevel: o.optimization ?? 'all',
    enableCpuMemArena: o.arena ?? true,
    logSeverityLevel: 3,
  });
}

/** Rows of `len` ids: `<s>` + pseudo-random content ids in [4, maxId) + `</s>` (no padding). */
export function syntheticRows(rows: number, len: number, maxId = 3002, seed = 1): number[][] {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
  return Array.from({ length: rows }, () => {
    const r = new Array<number>(len);
    r[0] = 0;
    for (let i = 1; i < len - 1; i++) r[i] = 4 + (next() % (maxId - 4));
    if (len > 1) r[len - 1] = 2;
    return r;
  });
}

/** input_ids / attention_mask feeds for rows (right-padded with pad id 1). */
export function feedsFor(rows: number[][]): Record<string, ort.Tensor> {
  const L = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(rows.length * L).fill(1n);
  const mask = new BigInt64Array(rows.length * L);
  rows.forEach((r, b) =>
    r.forEach((id, t) => {
      ids[b * L + t] = BigInt(id);
      mask[b * L + t] = 1n;
    }),
  );
  return {
    input_ids: new ort.Tensor('int64', ids, [rows.length, L]),
    attention_mask: new ort.Tensor('int64', mask, [rows.length, L]),
  };
}

export interface OrtRunResult {
  batch: number;
  seqLen: number;
  runs: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  msPerBatchMedian: number;
  msPerBatchBest: number;
}

/** Times `runs` calls of `session.run` on `batch` rows of `seqLen` tokens, after `warmup` calls. */
export async function benchOrtRun(
  session: ort.InferenceSession,
  opts: {
    batch: number;
    seqLen: number;
    runs?: number;
    warmup?: number;
    maxId?: number;
    /** Awaited before each timed run (e.g. waiting for an idle machine). */
    beforeRun?: () => Promise<unknown>;
  },
): Promise<OrtRunResult> {
  const runs = opts.runs ?? 3;
  const feeds = feedsFor(syntheticRows(opts.batch, opts.seqLen, opts.maxId ?? 3002));
  for (let i = 0; i < (opts.warmup ?? 1); i++) await session.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (opts.beforeRun) await opts.beforeRun();
    const t0 = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t0);
  }
  const seconds = times.reduce((a, b) => a + b, 0) / 1000;
  const tokens = runs * opts.batch * opts.seqLen;
  const sorted = [...times].sort((a, b) => a - b);
  return {
    batch: opts.batch,
    seqLen: opts.seqLen,
    runs,
    tokens,
    seconds,
    tokensPerSecond: tokens / seconds,
    msPerBatchMedian: sorted[Math.floor(sorted.length / 2)],
    msPerBatchBest: sorted[0],
  };
}
