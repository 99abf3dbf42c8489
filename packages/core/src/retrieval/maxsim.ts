/**
 * ColBERT MaxSim reranking with FlagEmbedding's `colbert_score` semantics:
 * score(q, p) = (1/N_q) Σ_i max_j q_i·p_j over the unpadded vectors (N_q counts every query
 * vector, `</s>` included; see m3-reference.md §1.4).
 *
 * Why one matrix product: scoring 100 candidates of 256 tokens against a 32-token query is
 * 100 · 256 · 32 · 1024 ≈ 0.84 G multiply-adds. As nested JS loops that is ~1.5 s; as ONE
 * onnxruntime Gemm of all candidate vectors concatenated [ΣL_p, D] against the query [N_q, D]
 * it is ~20–40 ms. The per-document max over its row range and the mean over query tokens
 * are then a cheap JS pass over the [ΣL_p, N_q] result. Tiny inputs (below `onnxMinMacs`) use a
 * plain loop, where a session run would cost more than it saves.
 */
import { invalidArgument } from '../errors.js';
import type { ColbertMatrix } from '../types.js';
import { dequantizeColbert, type ColbertData, type ColbertPrecision, type ColbertStore, type PackedColbert } from './colbert-store.js';
import { acquire, release } from './scratch.js';
import { matmulTransB, type MatmulOptions } from './onnx-matmul.js';

/** Options of the MaxSim functions. */
export interface MaxSimOptions extends MatmulOptions {
  /** Products below this many multiply-adds run as a JS loop (default 1e6). */
  onnxMinMacs?: number;
  /**
   * Maximum candidate vectors per onnxruntime run (default 32,768): bounds the scratch buffers
   * (packed candidates, the [M, N_q] result, onnxruntime's widened copy for fp16/int8) and the
   * event-loop block of one run; larger candidate sets are split into several runs, whole
   * documents per run (a single longer document gets a run of its own).
   */
  maxVectorsPerRun?: number;
}

function checkQuery(query: ColbertMatrix, dim?: number): void {
  if (query === null || typeof query !== 'object' || !(query.data instanceof Float32Array)) invalidArgument('query must be a ColbertMatrix {data: Float32Array, count, dim}');
  if (!Number.isSafeInteger(query.count) || query.count < 0 || query.data.length !== query.count * query.dim) {
    invalidArgument(`query: data has ${query.data.length} values for ${query.count} vectors of ${query.dim}`);
  }
  if (dim !== undefined && query.dim !== dim) invalidArgument(`query vectors have dimension ${query.dim}, documents ${dim}`);
}

/**
 * The reference: FlagEmbedding `colbert_score` of one pair in plain JS (float64 accumulation).
 * An empty query or document scores 0.
 */
export function maxSimReference(query: ColbertMatrix, doc: ColbertMatrix): number {
  checkQuery(query, doc.dim);
  const D = query.dim;
  if (query.count === 0 || doc.count === 0) return 0;
  let total = 0;
  for (let i = 0; i < query.count; i++) {
    let best = Number.NEGATIVE_INFINITY;
    const qo = i * D;
    for (let j = 0; j < doc.count; j++) {
      const po = j * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += query.data[qo + d] * doc.data[po + d];
      if (s > best) best = s;
    }
    total += best;
  }
  return total / query.count;
}

// For documents docStart..docEnd-1, whose vectors are the rows of sim[M, N_q] (row 0 is vector
// offsets[docStart]): per query vector the max over the document's rows (times scales[row] for
// int8), summed over the query vectors, divided by N_q.
function reduce(
  sim: Float32Array,
  nq: number,
  offsets: Int32Array,
  docStart: number,
  docEnd: number,
  scales: Float32Array | undefined,
  out: Float64Array,
): void {
  const base = offsets[docStart];
  const best = new Float64Array(nq);
  for (let d = docStart; d < docEnd; d++) {
    const lo = offsets[d] - base;
    const hi = offsets[d + 1] - base;
    if (hi === lo) {
      out[d] = 0;
      continue;
    }
    best.fill(Number.NEGATIVE_INFINITY);
    for (let j = lo; j < hi; j++) {
      const row = j * nq;
      const sc = scales ? scales[j] : 1;
      for (let i = 0; i < nq; i++) {
        const x = sim[row + i] * sc;
        if (x > best[i]) best[i] = x;
      }
    }
    let total = 0;
    for (let i = 0; i < nq; i++) total += best[i];
    out[d] = total / nq;
  }
}

/** One document's vectors in some precision (int8: with per-vector scales). */
interface Source {
  count: number;
  data: ColbertData;
  scales?: Float32Array;
}

function ctorOf(p: ColbertPrecision) {
  return p === 'fp32' ? Float32Array : p === 'fp16' ? Uint16Array : Int8Array;
}

/**
 * The engine behind every MaxSim entry point. `contiguous` (optional) gives the vectors of
 * documents d0..d1-1 as one view when they already sit back to back (a packed buffer); otherwise
 * each run's documents are copied into a pooled scratch buffer.
 */
async function score(
  query: ColbertMatrix,
  precision: ColbertPrecision,
  dim: number,
  sources: readonly Source[],
  options: MaxSimOptions,
  contiguous?: (v0: number, v1: number) => { data: ColbertData; scales?: Float32Array },
): Promise<Float64Array> {
  const nDocs = sources.length;
  const out = new Float64Array(nDocs);
  const offsets = new Int32Array(nDocs + 1);
  for (let i = 0; i < nDocs; i++) offsets[i + 1] = offsets[i] + sources[i].count;
  const total = offsets[nDocs];
  const nq = query.count;
  if (nq === 0 || total === 0) return out;
  const minMacs = options.onnxMinMacs ?? 1e6;
  const perRun = options.maxVectorsPerRun ?? 32768;
  if (!Number.isSafeInteger(perRun) || perRun < 1) invalidArgument('maxVectorsPerRun must be a positive integer');

  if (nq * total * dim < minMacs) {
    // Small: a JS loop, float64 dot products, dequantising one document at a time.
    const q = query.data;
    for (let d = 0; d < nDocs; d++) {
      const src = sources[d];
      if (src.count === 0) continue;
      const v = precision === 'fp32' ? (src.data as Float32Array) : dequantizeColbert({ precision, dim, data: src.data, scales: src.scales });
      let totalMax = 0;
      for (let i = 0; i < nq; i++) {
        let best = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < src.count; j++) {
          let s = 0;
          for (let k = 0, qo = i * dim, po = j * dim; k < dim; k++) s += q[qo + k] * v[po + k];
          if (s > best) best = s;
        }
        totalMax += best;
      }
      out[d] = totalMax / nq;
    }
    return out;
  }

  let d0 = 0;
  while (d0 < nDocs) {
    let d1 = d0 + 1;
    while (d1 < nDocs && offsets[d1 + 1] - offsets[d0] <= perRun) d1++;
    const v0 = offsets[d0];
    const m = offsets[d1] - v0;
    if (m > 0) {
      let data: ColbertData;
      let scales: Float32Array | undefined;
      let pooled: ColbertData | undefined;
      let pooledScales: Float32Array | undefined;
      if (contiguous) {
        ({ data, scales } = contiguous(v0, v0 + m));
      } else {
        pooled = acquire(ctorOf(precision), m * dim);
        data = pooled.subarray(0, m * dim);
        if (precision === 'int8') {
          pooledScales = acquire(Float32Array, m);
          scales = pooledScales.subarray(0, m);
        }
        for (let d = d0; d < d1; d++) {
          const src = sources[d];
          (data as Float32Array).set(src.data as Float32Array, (offsets[d] - v0) * dim);
          if (scales) scales.set(src.scales as Float32Array, offsets[d] - v0);
        }
      }
      const simBuf = acquire(Float32Array, nq * m);
      try {
        // Candidates as A, the query as B: see matmulTransB on orientation.
        const sim = await matmulTransB(data, m, query.data, nq, dim, options, simBuf.subarray(0, nq * m));
        reduce(sim, nq, offsets, d0, d1, precision === 'int8' ? scales : undefined, out);
      } finally {
        release(simBuf);
        if (pooled) release(pooled);
        if (pooledScales) release(pooledScales);
      }
    }
    d0 = d1;
  }
  return out;
}

/**
 * MaxSim scores of `query` against documents already packed in one buffer (see
 * `ColbertStore.pack`), in any stored precision: float16 and int8 vectors are widened inside
 * onnxruntime, int8 scales are applied per column in the reduction. The packed buffer is used in
 * place (no copy). Returns one score per document, in order.
 */
export async function maxSimPacked(query: ColbertMatrix, packed: PackedColbert, options: MaxSimOptions = {}): Promise<Float64Array> {
  const dim = packed.dim;
  checkQuery(query, dim);
  const nDocs = packed.offsets.length - 1;
  if (nDocs < 0 || packed.offsets[0] !== 0) invalidArgument('packed ColBERT offsets must start with 0');
  for (let d = 0; d < nDocs; d++) {
    if (packed.offsets[d + 1] < packed.offsets[d]) invalidArgument('packed ColBERT offsets must be non-decreasing');
  }
  if (packed.data.length !== (packed.offsets[nDocs] ?? 0) * dim) invalidArgument('packed ColBERT data does not match its offsets');
  if (packed.precision === 'int8' && packed.scales?.length !== packed.offsets[nDocs]) invalidArgument('packed int8 ColBERT data needs one scale per vector');
  const view = (v0: number, v1: number) => ({
    data: packed.data.subarray(v0 * dim, v1 * dim),
    scales: packed.scales?.subarray(v0, v1),
  });
  // Per-document views (the small path dequantises document by document).
  const sources: Source[] = [];
  for (let d = 0; d < nDocs; d++) sources.push({ count: packed.offsets[d + 1] - packed.offsets[d], ...view(packed.offsets[d], packed.offsets[d + 1]) });
  return score(query, packed.precision, dim, sources, options, view);
}

/**
 * MaxSim scores of `query` against the documents `ids` of a {@link ColbertStore}, in the store's
 * precision, packing the candidates run by run into pooled scratch buffers (no per-call
 * allocation of the ~100 MB a 100 × 256 × 1024 candidate set occupies). Unknown ids throw
 * INVALID_ARGUMENT.
 */
export async function maxSimStored(query: ColbertMatrix, store: ColbertStore, ids: readonly string[], options: MaxSimOptions = {}): Promise<Float64Array> {
  checkQuery(query, store.dim);
  const sources: Source[] = ids.map((id) => {
    const raw = store.getRaw(id);
    if (!raw) invalidArgument(`unknown document id ${JSON.stringify(id)}`);
    return raw;
  });
  return score(query, store.precision, store.dim, sources, options);
}

/**
 * MaxSim scores of `query` against documents given in their stored precision (e.g. views of rows
 * read from disk by `ColbertCodec.view`), all of `precision` and `dim`; packed run by run into
 * pooled scratch buffers, as {@link maxSimStored}. Returns one score per document, in order.
 */
export async function maxSimRaw(
  query: ColbertMatrix,
  precision: ColbertPrecision,
  dim: number,
  docs: readonly { count: number; data: ColbertData; scales?: Float32Array }[],
  options: MaxSimOptions = {},
): Promise<Float64Array> {
  checkQuery(query, dim);
  return score(query, precision, dim, docs, options);
}

/**
 * MaxSim scores of `query` against each document (float32 matrices), in order: FlagEmbedding's
 * `colbert_score` for every pair, computed with one onnxruntime matrix product over all
 * candidate vectors (see the file comment). Empty documents score 0.
 */
export async function maxSim(query: ColbertMatrix, docs: readonly ColbertMatrix[], options: MaxSimOptions = {}): Promise<Float64Array> {
  checkQuery(query);
  const dim = query.dim;
  docs.forEach((d, i) => {
    if (d === null || typeof d !== 'object' || !(d.data instanceof Float32Array)) invalidArgument(`docs[${i}] must be a ColbertMatrix`);
    if (d.dim !== dim) invalidArgument(`docs[${i}] has dimension ${d.dim}, the query ${dim}`);
    if (!Number.isSafeInteger(d.count) || d.count < 0 || d.data.length !== d.count * dim) invalidArgument(`docs[${i}]: data has ${d.data.length} values for ${d.count} vectors`);
  });
  return score(query, 'fp32', dim, docs, options);
}
