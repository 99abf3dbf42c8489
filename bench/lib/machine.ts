/**
 * What the benchmark ran on, and how fast this machine's onnxruntime MatMul is: the ceiling
 * every encoder throughput figure should be read against (docs/peers-performance.md §4.2:
 * tokens/s ≤ MatMul FLOP/s ÷ FLOPs per token).
 *
 *   node --import tsx bench/lib/machine.ts   # prints both as JSON
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { OnnxType, buildOnnxModel, type GraphSpec } from '../../packages/core/src/inference/onnx-graph.ts';

export interface MachineInfo {
  cpuModel: string;
  /** Logical CPUs visible to the process. */
  cores: number;
  /** SIMD features that decide MLAS kernels (fp32: AVX2/AVX-512; int8: VNNI/AMX). */
  simd: string[];
  ramGB: number;
  platform: string;
  node: string;
  onnxruntime: string;
}

export function describeMachine(): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  let flags: string[] = [];
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpuModel;
    flags = (/^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? '').split(/\s+/);
  } catch {
    /* not Linux */
  }
  const interesting = ['avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_int8', 'amx_bf16'];
  const require = createRequire(import.meta.url);
  let onnxruntime = 'unknown';
  try {
    onnxruntime = (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    /* exports map may hide package.json */
    onnxruntime = ort.env.versions?.common ?? 'unknown';
  }
  return {
    cpuModel,
    cores: os.availableParallelism?.() ?? os.cpus().length,
    simd: interesting.filter((f) => flags.includes(f)),
    ramGB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    onnxruntime,
  };
}

/** Share of CPU time (0–100) spent busy by the whole machine over `ms` (Linux /proc/stat). */
export async function machineBusyPercent(ms = 1000): Promise<number> {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const idle = f[3] + f[4];
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    await new Promise((r) => setTimeout(r, ms));
    const b = read();
    const total = b.total - a.total;
    return total > 0 ? (100 * (total - (b.idle - a.idle))) / total : 0;
  } catch {
    return 0;
  }
}

/**
 * Waits until other processes leave the CPU alone (busy ≤ `maxBusy`% over a 1 s window), up to
 * `timeoutMs`. Shared machines make single timings meaningless otherwise; returns the last busy %.
 */
export async function waitForQuiet(maxBusy = 15, timeoutMs = 180_000): Promise<number> {
  const t0 = Date.now();
  let busy = await machineBusyPercent();
  while (busy > maxBusy && Date.now() - t0 < timeoutMs) busy = await machineBusyPercent();
  return busy;
}

export interface MatMulOptions {
  m?: number;
  k?: number;
  n?: number;
  /** intra-op threads (default 2). */
  threads?: number;
  /** fp32 MatMul, or int8 as quantize_dynamic emits it (DynamicQuantizeLinear + MatMulInteger, fused by ORT). */
  dtype?: 'fp32' | 'int8';
  /** Timed runs after warm-up: at least this many (default 30) and at least 2 s of them. */
  runs?: number;
  /** Warm-up runs: at least this many (default 3) and at least 1 s of them (thread pools and clocks ramp up). */
  warmup?: number;
  /** Wait for an idle machine before timing (see waitForQuiet; default false). */
  quiet?: boolean;
}

export interface MatMulResult {
  m: number;
  k: number;
  n: number;
  threads: number;
  dtype: 'fp32' | 'int8';
  /** 2·m·k·n */
  flopPerRun: number;
  msMedian: number;
  msBest: number;
  /** Machine busy % (all processes) measured just before timing. */
  busyBefore: number;
  /** GFLOP/s at the median and best run. */
  gflopsMedian: number;
  gflopsBest: number;
}

function pseudoRandom(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * scale;
  }
  return a;
}

/** Times `[m,k] × [k,n]` (a constant weight, like a linear layer) in an onnxruntime session. */
export async function measureMatMulFlops(opts: MatMulOptions = {}): Promise<MatMulResult> {
  const m = opts.m ?? 512;
  const k = opts.k ?? 1024;
  const n = opts.n ?? 4096;
  const threads = opts.threads ?? 2;
  const dtype = opts.dtype ?? 'fp32';
  const runs = opts.runs ?? 30;
  const warmup = opts.warmup ?? 3;
  const w = pseudoRandom(k * n, 7, 0.04);
  let spec: GraphSpec;
  if (dtype === 'fp32') {
    spec = {
      name: 'matmul',
      inputs: [{ name: 'a', type: OnnxType.float, shape: [m, k] }],
      outputs: [{ name: 'y', type: OnnxType.float, shape: [m, n] }],
      initializers: [{ name: 'w', type: OnnxType.float, dims: [k, n], data: w }],
      nodes: [{ op: 'MatMul', inputs: ['a', 'w'], outputs: ['y'] }],
    };
  } else {
    const scale = 0.02 / 127;
    const wq = Int8Array.from(w, (v) => Math.max(-127, Math.min(127, Math.round(v / scale))));
    spec = {
      name: 'matmul_int8',
      inputs: [{ name: 'a', type: OnnxType.float, shape: [m, k] }],
      outputs: [{ name: 'y', type: OnnxType.float, shape: [m, n] }],
      initializers: [
        { name: 'wq', type: OnnxType.int8, dims: [k, n], data: wq },
        { name: 'ws', type: OnnxType.float, dims: [], data: Float32Array.of(scale) },
        { name: 'wz', type: OnnxType.int8, dims: [], data: Int8Array.of(0) },
      ],
      nodes: [
        { op: 'DynamicQuantizeLinear', inputs: ['a'], outputs: ['aq', 'as', 'az'] },
        { op: 'MatMulInteger', inputs: ['aq', 'wq', 'az', 'wz'], outputs: ['acc'] },
        { op: 'Cast', inputs: ['acc'], outputs: ['accf'], attrs: { to: OnnxType.float } },
        { op: 'Mul', inputs: ['as', 'ws'], outputs: ['s'] },
        { op: 'Mul', inputs: ['accf', 's'], outputs: ['y'] },
      ],
    };
  }
  const session = await ort.InferenceSession.create(buildOnnxModel(spec), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  try {
    const a = new ort.Tensor('float32', pseudoRandom(m * k, 3, 2), [m, k]);
    const warmStart = performance.now();
    for (let i = 0; i < warmup || performance.now() - warmStart < 1000; i++) await session.run({ a });
    const busyBefore = opts.quiet ? await waitForQuiet() : await machineBusyPercent(200);
    const times: number[] = [];
    const runStart = performance.now();
    for (let i = 0; i < runs || performance.now() - runStart < 2000; i++) {
      const t0 = performance.now();
      await session.run({ a });
      times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    const med = times[Math.floor(times.length / 2)];
    const best = times[0];
    const flop = 2 * m * k * n;
    return {
      m,
      k,
      n,
      threads,
      dtype,
      flopPerRun: flop,
      msMedian: med,
      msBest: best,
      busyBefore,
      gflopsMedian: flop / med / 1e6,
      gflopsBest: flop / best / 1e6,
    };
  } finally {
    await session.release();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const machine = describeMachine();
  const results = [];
  for (const dtype of ['fp32', 'int8'] as const) {
    for (const threads of [1, 2]) results.push(await measureMatMulFlops({ dtype, threads, runs: 20, quiet: true }));
  }
  console.log(JSON.stringify({ machine, matmul: results }, null, 2));
}
