/**
 * Exact (brute-force) dense search by inner product, for L2-normalised vectors such as M3's
 * dense output (inner product = cosine similarity).
 *
 * Why brute force: at the sizes an embedded index serves (≤ ~1M passages) an exact scan is a
 * memory-bandwidth-bound matrix-vector product — ~6 ms for 50k × 1024 and ~12 ms for
 * 100k × 1024 through onnxruntime's Gemm on 2 cores, versus ~60/150 ms as a tight JS loop
 * (bench/retrieval.bench.ts) — with perfect recall and no index build. Vectors live in one
 * contiguous Float32Array (row-major), so the scan passes it to onnxruntime as a view, with no
 * copy; deletes move the last row into the hole so the matrix stays dense.
 */
import { M3Error, invalidArgument } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import {
  bufferSource,
  bytesView,
  checkId,
  checkK,
  concatChunks,
  corrupt,
  decodeIds,
  encodeContainer,
  encodeIds,
  expectSection,
  fileSource,
  metaInt,
  metaString,
  openContainer,
  sectionOf,
  type ByteSource,
} from './binary-format.js';
import { matmulTransB, type MatmulOptions } from './onnx-matmul.js';
import { acquire, release } from './scratch.js';
import { TopK, type ScoredId } from './topk.js';

const MAGIC = 'BGM3DENS';
const VERSION = 1;
const MAX_DIM = 65536;
// Below this many multiply-adds a JS loop beats a session run.
const ONNX_MIN_MACS = 1 << 20;
// Rows per onnxruntime run are capped so one run reads at most 256 MiB of vectors.
const MAX_FLOATS_PER_RUN = 1 << 26;

/** Options of {@link DenseIndex}. */
export interface DenseIndexOptions extends MatmulOptions {
  /** Vector dimension (1024 for BGE-M3). */
  dim: number;
  /** Id of the model that produced the vectors (stored in saved files; default ''). */
  modelId?: string;
}

/** Options of {@link DenseIndex.search}. */
export interface DenseSearchOptions {
  /** Only documents for which this returns true are returned (exact top k among them). */
  filter?: (id: string) => boolean;
}

/**
 * Exact inner-product search over dense vectors keyed by string ids.
 *
 * {@link upsert} of an existing id replaces its vector. Mutations must not run while
 * {@link save} is pending (they throw INVALID_ARGUMENT then).
 */
export class DenseIndex {
  readonly dim: number;
  readonly modelId: string;
  private readonly matmul: MatmulOptions;
  private vecs: Float32Array;
  private rowIds: string[] = [];
  private readonly idToRow = new Map<string, number>();
  private saving = 0;
  // Bumped by every mutation: a search that awaited onnxruntime while rows moved starts over.
  private version = 0;

  constructor(options: DenseIndexOptions) {
    const { dim } = options;
    if (!Number.isSafeInteger(dim) || dim <= 0 || dim > MAX_DIM) invalidArgument(`dim must be an integer in 1..${MAX_DIM}, got ${dim}`);
    const modelId = options.modelId ?? '';
    if (typeof modelId !== 'string' || modelId.length > 4096) invalidArgument('modelId must be a string of at most 4096 characters');
    this.dim = dim;
    this.modelId = modelId;
    this.matmul = options.intraOpNumThreads !== undefined ? { intraOpNumThreads: options.intraOpNumThreads } : {};
    this.vecs = new Float32Array(16 * dim);
  }

  /** Number of vectors. */
  get size(): number {
    return this.rowIds.length;
  }

  has(id: string): boolean {
    return this.idToRow.has(id);
  }

  /** Ids (in storage order, which changes on delete). */
  ids(): IterableIterator<string> {
    return this.rowIds.values();
  }

  /** The stored vector of `id` as a view (valid until the next mutation; copy to keep), or undefined. */
  get(id: string): Float32Array | undefined {
    const r = this.idToRow.get(id);
    return r === undefined ? undefined : this.vecs.subarray(r * this.dim, (r + 1) * this.dim);
  }

  private assertWritable(): void {
    if (this.saving > 0) invalidArgument('DenseIndex is being saved; wait for save() to resolve before modifying it');
  }

  private checkVector(v: Float32Array, what: string): void {
    if (!(v instanceof Float32Array)) invalidArgument(`${what} must be a Float32Array`);
    if (v.length !== this.dim) invalidArgument(`${what} has ${v.length} dimensions, the index holds ${this.dim}`);
    for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) invalidArgument(`${what}: value ${v[i]} at ${i} is not finite`);
  }

  /** Makes room for `n` vectors in all (one allocation before a bulk load instead of repeated growth). */
  reserve(n: number): void {
    this.assertWritable();
    if (!Number.isSafeInteger(n) || n < 0) invalidArgument(`reserve(n) needs a non-negative integer, got ${n}`);
    if (n * this.dim <= this.vecs.length) return;
    const bigger = new Float32Array(n * this.dim);
    bigger.set(this.vecs.subarray(0, this.rowIds.length * this.dim));
    this.vecs = bigger;
  }

  /** Adds or replaces the vector of `id` (copied). */
  upsert(id: string, vector: Float32Array): void {
    this.upsertMany([{ id, vector }]);
  }

  /** Adds or replaces many vectors; all are validated first. A repeated id: the last wins. */
  upsertMany(docs: Iterable<{ id: string; vector: Float32Array }>, options: { checked?: boolean } = {}): void {
    this.assertWritable();
    const list = Array.isArray(docs) ? (docs as { id: string; vector: Float32Array }[]) : [...docs];
    // `checked`: the caller (M3Index) validated every id and vector already (at its boundary, or
    // when it read them back); the same checks twice are what a 100k-document load spends most on.
    if (options.checked !== true) {
      list.forEach((d, i) => {
        checkId(d?.id, `docs[${i}].id`);
        this.checkVector(d.vector, `docs[${i}].vector`);
      });
    }
    this.version++;
    for (const { id, vector } of list) {
      let r = this.idToRow.get(id);
      if (r === undefined) {
        r = this.rowIds.length;
        if ((r + 1) * this.dim > this.vecs.length) {
          const bigger = new Float32Array(Math.ceil(Math.max(r + 1, this.vecs.length / this.dim * 1.5)) * this.dim);
          bigger.set(this.vecs.subarray(0, r * this.dim));
          this.vecs = bigger;
        }
        this.rowIds.push(id);
        this.idToRow.set(id, r);
      }
      this.vecs.set(vector, r * this.dim);
    }
  }

  /**
   * Appends the vector of a NEW id given as its stored bytes (`dim` float32 values, little-endian
   * as this platform's): copied straight into the matrix, without an intermediate array, for a
   * store loading thousands of rows. Returns false, changing nothing, when the bytes are not
   * `dim` finite values. The caller guarantees the id is valid and not indexed yet.
   */
  appendBytes(id: string, bytes: Uint8Array): boolean {
    this.assertWritable();
    const dim = this.dim;
    if (bytes.byteLength !== 4 * dim) return false;
    const r = this.rowIds.length;
    if ((r + 1) * dim > this.vecs.length) {
      const bigger = new Float32Array(Math.ceil(Math.max(r + 1, (this.vecs.length / dim) * 1.5)) * dim);
      bigger.set(this.vecs.subarray(0, r * dim));
      this.vecs = bigger;
    }
    new Uint8Array(this.vecs.buffer, this.vecs.byteOffset + r * dim * 4, dim * 4).set(bytes);
    const v = this.vecs;
    for (let i = r * dim, e = i + dim; i < e; i++) {
      // x - x is 0 for finite x, NaN for ±Infinity and NaN.
      if (v[i] - v[i] !== 0) {
        v.fill(0, r * dim, (r + 1) * dim);
        return false;
      }
    }
    this.version++;
    this.rowIds.push(id);
    this.idToRow.set(id, r);
    return true;
  }

  /** Removes vectors; unknown ids are ignored. Returns how many were removed. */
  delete(ids: string | Iterable<string>): number {
    this.assertWritable();
    this.version++;
    let n = 0;
    const D = this.dim;
    for (const id of typeof ids === 'string' ? [ids] : ids) {
      const r = this.idToRow.get(id);
      if (r === undefined) continue;
      const last = this.rowIds.length - 1;
      if (r !== last) {
        // Move the last row into the hole: O(dim), keeps the matrix dense for the scan.
        this.vecs.copyWithin(r * D, last * D, (last + 1) * D);
        const moved = this.rowIds[last];
        this.rowIds[r] = moved;
        this.idToRow.set(moved, r);
      }
      this.rowIds.pop();
      this.idToRow.delete(id);
      n++;
    }
    // Give memory back once three quarters of the buffer are unused.
    if (this.vecs.length > 64 * D && this.rowIds.length * 4 * D < this.vecs.length) {
      this.vecs = this.vecs.slice(0, Math.max(16, this.rowIds.length * 2) * D);
    }
    return n;
  }

  private checkQuery(q: Float32Array, what = 'query'): void {
    if (!(q instanceof Float32Array)) invalidArgument(`${what} must be a Float32Array`);
    if (q.length !== this.dim) invalidArgument(`${what} has ${q.length} dimensions, the index holds ${this.dim}`);
  }

  /**
   * The exact top-k ids by inner product with `query`, best first (ties: id ascending). Scores
   * are accumulated in float32 (onnxruntime's Gemm) above ~1M multiply-adds, in float64 below;
   * use {@link scoreIds} for float64 scores of chosen ids.
   */
  async search(query: Float32Array, k: number, options: DenseSearchOptions = {}): Promise<ScoredId[]> {
    return (await this.searchMany([query], k, options))[0];
  }

  /** {@link search} for several queries with one matrix product (higher throughput). */
  async searchMany(queries: readonly Float32Array[], k: number, options: DenseSearchOptions = {}): Promise<ScoredId[][]> {
    checkK(k);
    queries.forEach((q, i) => this.checkQuery(q, `queries[${i}]`));
    const filter = options.filter;
    if (filter !== undefined && typeof filter !== 'function') invalidArgument('filter must be a function');
    // A mutation while onnxruntime runs can move rows under the scores: start over (the last
    // attempt runs synchronously in JS, which nothing can interleave with).
    for (let attempt = 0; ; attempt++) {
      const hits = await this.scan(queries, k, filter, attempt < 3);
      if (hits) return hits;
    }
  }

  private async scan(
    queries: readonly Float32Array[],
    k: number,
    filter: ((id: string) => boolean) | undefined,
    useOnnx: boolean,
  ): Promise<ScoredId[][] | undefined> {
    const version = this.version;
    const n = this.rowIds.length;
    const nq = queries.length;
    if (n === 0 || nq === 0) return queries.map(() => []);
    const D = this.dim;
    const heaps = queries.map(() => new TopK(Math.min(k, n), this.rowIds));
    const rowsPerRun = Math.max(1, Math.floor(MAX_FLOATS_PER_RUN / D));
    const qs = new Float32Array(nq * D);
    queries.forEach((q, i) => qs.set(q, i * D));
    for (let r0 = 0; r0 < n; r0 += rowsPerRun) {
      const m = Math.min(rowsPerRun, n - r0);
      const scoresBuf = acquire(Float32Array, nq * m);
      try {
        const scores = scoresBuf.subarray(0, nq * m);
        if (!useOnnx || nq * m * D < ONNX_MIN_MACS) {
          const v = this.vecs;
          for (let i = 0; i < nq; i++) {
            for (let r = 0; r < m; r++) {
              let s = 0;
              for (let j = 0, qo = i * D, o = (r0 + r) * D; j < D; j++) s += qs[qo + j] * v[o + j];
              scores[i * m + r] = s;
            }
          }
        } else {
          await matmulTransB(qs, nq, this.vecs.subarray(r0 * D, (r0 + m) * D), m, D, this.matmul, scores);
          if (this.version !== version) return undefined;
        }
        for (let i = 0; i < nq; i++) {
          const heap = heaps[i];
          const base = i * m;
          for (let r = 0; r < m; r++) {
            const s = scores[base + r];
            const row = r0 + r;
            if (heap.accepts(s, row) && (filter === undefined || filter(this.rowIds[row]))) heap.push(s, row);
          }
        }
      } finally {
        release(scoresBuf);
      }
    }
    return heaps.map((h) => h.toHits());
  }

  /** Inner products of `query` with the vectors of `ids`, in float64. Unknown ids throw INVALID_ARGUMENT. */
  scoreIds(query: Float32Array, ids: readonly string[]): Float64Array {
    this.checkQuery(query);
    const out = new Float64Array(ids.length);
    const D = this.dim;
    const v = this.vecs;
    ids.forEach((id, i) => {
      const r = this.idToRow.get(id);
      if (r === undefined) invalidArgument(`unknown document id ${JSON.stringify(id)}`);
      let s = 0;
      for (let j = 0, o = r * D; j < D; j++) s += query[j] * v[o + j];
      out[i] = s;
    });
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  private encode() {
    const [idLens, idBytes] = encodeIds(this.rowIds);
    return encodeContainer(MAGIC, VERSION, { kind: 'dense', modelId: this.modelId, dim: this.dim, count: this.rowIds.length }, [
      idLens,
      idBytes,
      sectionOf(bytesView(this.vecs.subarray(0, this.rowIds.length * this.dim))),
    ]);
  }

  /** Serialises the index (format in {@link DenseIndex.save}). */
  toBytes(): Uint8Array {
    const c = this.encode();
    return concatChunks(c.byteLength, c.chunks());
  }

  /**
   * Saves atomically to `path`. Format: the retrieval container (binary-format.ts) with magic
   * `BGM3DENS`, version 1, meta `{kind:'dense', modelId, dim, count}` and sections 0 u32 id byte
   * lengths · 1 UTF-8 ids · 2 f32[count·dim] vectors (row-major); little-endian, CRC-32 checked.
   */
  async save(path: string): Promise<void> {
    const c = this.encode();
    this.saving++;
    try {
      await writeFileAtomic(path, c.chunks());
    } finally {
      this.saving--;
    }
  }

  /**
   * Loads an index saved by {@link save}: INDEX_INVALID for a damaged or foreign file (naming it),
   * INDEX_MISMATCH when `expected.dim`/`expected.modelId` differ from the file's.
   */
  static async load(path: string, expected: Partial<DenseIndexOptions> = {}): Promise<DenseIndex> {
    const src = fileSource(path);
    try {
      return DenseIndex.read(src, expected);
    } finally {
      src.close();
    }
  }

  /** Deserialises bytes produced by {@link toBytes} (same checks as {@link load}). */
  static fromBytes(bytes: Uint8Array, expected: Partial<DenseIndexOptions> = {}, name = '<dense index bytes>'): DenseIndex {
    return DenseIndex.read(bufferSource(bytes, name), expected);
  }

  private static read(src: ByteSource, expected: Partial<DenseIndexOptions>): DenseIndex {
    const file = src.name;
    const c = openContainer(src, MAGIC, [VERSION], 'dense index');
    const m = c.meta;
    const L = c.sectionLengths;
    if (m.kind !== 'dense') corrupt(file, `invalid header field kind: ${JSON.stringify(m.kind)}`);
    if (L.length !== 3) corrupt(file, `expected 3 sections, found ${L.length}`);
    const modelId = metaString(file, m, 'modelId');
    const dim = metaInt(file, m, 'dim', MAX_DIM);
    if (dim === 0) corrupt(file, 'invalid header field dim: 0');
    const count = metaInt(file, m, 'count', 0x7fffffff);
    if (expected.dim !== undefined && expected.dim !== dim) {
      throw new M3Error('INDEX_MISMATCH', `${file}: the dense index holds ${dim}-dimensional vectors, expected ${expected.dim}`, { file });
    }
    if (expected.modelId !== undefined && expected.modelId !== modelId) {
      throw new M3Error('INDEX_MISMATCH', `${file}: the dense index was built with model ${JSON.stringify(modelId)}, expected ${JSON.stringify(expected.modelId)}`, { file });
    }
    expectSection(file, L, 0, count * 4, 'id lengths');
    expectSection(file, L, 2, count * dim * 4, 'vectors');
    const idLens = new Uint32Array(count);
    c.readSection(0, bytesView(idLens));
    const idBytes = new Uint8Array(L[1]);
    c.readSection(1, idBytes);
    const vecs = new Float32Array(Math.max(count, 16) * dim);
    c.readSection(2, bytesView(vecs.subarray(0, count * dim)));
    c.finish();
    const ids = decodeIds(file, idLens, idBytes);
    for (let i = 0; i < count * dim; i++) if (!Number.isFinite(vecs[i])) corrupt(file, `vector value ${i} is not finite`);
    const index = new DenseIndex({ dim, modelId, ...(expected.intraOpNumThreads !== undefined ? { intraOpNumThreads: expected.intraOpNumThreads } : {}) });
    index.vecs = vecs;
    index.rowIds = ids;
    ids.forEach((id, r) => index.idToRow.set(id, r));
    return index;
  }
}
