/**
 * `A · Bᵀ` through onnxruntime, for the retrieval engine's hot matrix products (ColBERT MaxSim,
 * exact dense search).
 *
 * Why: a JS triple loop runs at ~1 GFLOP/s; onnxruntime's MLAS Gemm is multithreaded SIMD (≈40×
 * faster on the 100 × 256 × 1024 MaxSim; see the peers-performance notes on MaxSim). A small
 * graph (optional Casts, then Gemm with transB=1) is built in memory once per pair of element
 * types and thread count, and its session is cached for the life of the process. Either operand
 * may be float32, float16 or int8, so compressed ColBERT vectors are widened inside onnxruntime
 * instead of in JS. Inputs are passed as views: onnxruntime-node reads the JS buffers without an
 * extra copy.
 *
 * Note: `session.run` executes on the calling thread and blocks the event loop for its duration
 * (see the peers-performance notes on onnxruntime-node); keep single products to tens of
 * milliseconds.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildOnnxModel, OnnxType, type NodeSpec } from '../inference/onnx-graph.js';
import { invalidArgument } from '../errors.js';

/** Element type of an operand. */
export type MatElement = 'float32' | 'float16' | 'int8';

/** Options of the onnxruntime matrix products. */
export interface MatmulOptions {
  /**
   * onnxruntime intra-op threads (default: all cores as reported by `os.availableParallelism()`).
   * One session is cached per (element type, thread count).
   */
  intraOpNumThreads?: number;
}

const sessions = new Map<string, Promise<ort.InferenceSession>>();

function elemType(e: MatElement) {
  return e === 'float32' ? OnnxType.float : e === 'float16' ? OnnxType.float16 : OnnxType.int8;
}

function elemOf(x: Float32Array | Uint16Array | Int8Array): MatElement {
  return x instanceof Float32Array ? 'float32' : x instanceof Uint16Array ? 'float16' : 'int8';
}

function threadsOf(options: MatmulOptions | undefined): number {
  const t = options?.intraOpNumThreads ?? availableParallelism();
  if (!Number.isSafeInteger(t) || t < 1 || t > 1024) invalidArgument(`intraOpNumThreads must be a positive integer, got ${t}`);
  return t;
}

function session(aElem: MatElement, bElem: MatElement, threads: number): Promise<ort.InferenceSession> {
  const key = `${aElem}/${bElem}/${threads}`;
  let s = sessions.get(key);
  if (!s) {
    const nodes: NodeSpec[] = [];
    const widened = (name: 'a' | 'b', elem: MatElement): string => {
      if (elem === 'float32') return name;
      nodes.push({ op: 'Cast', inputs: [name], outputs: [`${name}f`], attrs: { to: OnnxType.float } });
      return `${name}f`;
    };
    const a = widened('a', aElem);
    const b = widened('b', bElem);
    nodes.push({ op: 'Gemm', inputs: [a, b], outputs: ['c'], attrs: { transB: 1 } });
    const bytes = buildOnnxModel({
      name: `bgem3_matmul_${aElem}_${bElem}`,
      inputs: [
        { name: 'a', type: elemType(aElem), shape: ['N', 'D'] },
        { name: 'b', type: elemType(bElem), shape: ['M', 'D'] },
      ],
      outputs: [{ name: 'c', type: OnnxType.float, shape: ['N', 'M'] }],
      nodes,
    });
    s = ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      // The plain product writes straight into the caller's output buffer and needs no arena.
      // A widening Cast needs a rows×D float buffer per run: the arena keeps it (already
      // touched) between runs instead of mapping fresh pages every time (see scratch.ts);
      // callers bound the rows per run, which bounds what the arena keeps.
      enableCpuMemArena: aElem !== 'float32' || bElem !== 'float32',
      // No spinning after a run: a hybrid search runs the dense and the MaxSim sessions back to
      // back, and one session's pool spinning for its next job took the cores from the other's.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    s.catch(() => sessions.delete(key));
    sessions.set(key, s);
  }
  return s;
}

/**
 * C = A · Bᵀ with A `[aRows, dim]` and B `[bRows, dim]` (row-major, each any {@link MatElement};
 * float16 as raw bit patterns in a Uint16Array; a non-float32 operand is widened inside
 * onnxruntime). C `[aRows, bRows]` row-major float32 (accumulated in float32 by MLAS) is written
 * into `out` when given (exactly aRows·bRows long; onnxruntime writes into it directly), else
 * into a new array. Returns C.
 *
 * Orientation matters: MLAS packs B for every product and streams A, so put the large matrix
 * (candidate vectors, an index) in A and the small one (the query) in B: for 51,200 × 1024
 * vectors against 32 query vectors that roughly halves the time.
 */
export async function matmulTransB(
  a: Float32Array | Uint16Array | Int8Array,
  aRows: number,
  b: Float32Array | Uint16Array | Int8Array,
  bRows: number,
  dim: number,
  options?: MatmulOptions,
  out?: Float32Array,
): Promise<Float32Array> {
  const aElem = elemOf(a);
  const bElem = elemOf(b);
  if (a.length !== aRows * dim || b.length !== bRows * dim) invalidArgument('matmulTransB: buffer sizes do not match the shapes');
  if (out !== undefined && out.length !== aRows * bRows) invalidArgument('matmulTransB: output buffer size does not match the shape');
  if (aRows === 0 || bRows === 0) return out ?? new Float32Array(aRows * bRows);
  const s = await session(aElem, bElem, threadsOf(options));
  const feeds = {
    a: new ort.Tensor(aElem, a, [aRows, dim]),
    b: new ort.Tensor(bElem, b, [bRows, dim]),
  };
  if (out === undefined) return (await s.run(feeds)).c.data as Float32Array;
  await s.run(feeds, { c: new ort.Tensor('float32', out, [aRows, bRows]) });
  return out;
}
