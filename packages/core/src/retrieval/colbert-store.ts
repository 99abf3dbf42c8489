/**
 * Storage of per-document ColBERT matrices, optionally compressed.
 *
 * M3's ColBERT output is 4 KiB per token in float32 (1024 floats): ~1 MiB for a 256-token
 * passage, which is why BAAI recommend it for reranking candidates rather than as a first-stage
 * index (peers-performance.md §5). Three precisions:
 *
 * - `fp32`: exact.
 * - `fp16`: half the memory; conversion by hand (Node 20 has no Float16Array).
 * - `int8`: a quarter of the memory (+4 bytes per vector); symmetric per-vector quantisation,
 *   q = round(x / s) with s = max|x| / 127, so x ≈ q·s.
 *
 * Measured MaxSim error against fp32 (bench/retrieval.bench.ts: dim 1024, 32-token queries,
 * 256-token documents, unit vectors clustered around per-text topics so that MaxSim is ≈ 0.43
 * for a document on the query's topic and ≈ 0.07–0.10 otherwise, rather than ≈ 0 for independent
 * random vectors; 4 queries × 100 documents = 400 pairs):
 *
 * | precision | bytes/vector | mean abs error | max abs error |
 * |-----------|--------------|----------------|---------------|
 * | fp32      | 4096         | 0              | 0             |
 * | fp16      | 2048         | 1.1e-6         | 6.8e-6        |
 * | int8      | 1028         | 4.1e-5         | 1.8e-4        |
 *
 * Both are orders of magnitude below the ~1e-3 gap between FlagEmbedding's fp16 GPU and fp32 CPU
 * runs (m3-reference.md §5), so fp16 is the recommended default and int8 is safe for reranking.
 */
import { M3Error, invalidArgument } from '../errors.js';
import type { ColbertMatrix } from '../types.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import {
  bufferSource,
  bytesView,
  checkId,
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
  type ByteSource,
  type SectionWriter,
} from './binary-format.js';
import { decodeFloat16, encodeFloat16 } from './float16.js';

/** Storage precision of ColBERT vectors. */
export type ColbertPrecision = 'fp32' | 'fp16' | 'int8';

/** Typed array holding vectors of a given precision. */
export type ColbertData = Float32Array | Uint16Array | Int8Array;

/** A stored matrix as kept in memory (views; do not modify). */
export interface RawColbert {
  precision: ColbertPrecision;
  /** Number of vectors. */
  count: number;
  dim: number;
  /** `count * dim` values: float32, float16 bit patterns, or int8 codes. */
  data: ColbertData;
  /** int8 only: one scale per vector (value = code · scale). */
  scales?: Float32Array;
}

/** Several documents' vectors concatenated in one buffer (what MaxSim consumes). */
export interface PackedColbert {
  precision: ColbertPrecision;
  dim: number;
  /** `total * dim` values, documents one after another. */
  data: ColbertData;
  /** int8 only: one scale per vector. */
  scales?: Float32Array;
  /** Vector offset of each document; document i spans vectors offsets[i] .. offsets[i+1]. */
  offsets: Int32Array;
}

/** Options of {@link ColbertStore}. */
export interface ColbertStoreOptions {
  /** Vector dimension (1024 for BGE-M3). */
  dim: number;
  /** Storage precision (default 'fp16'). */
  precision?: ColbertPrecision;
  /** Id of the model that produced the vectors (stored in saved files; default ''). */
  modelId?: string;
}

const MAGIC = 'BGM3COLB';
const VERSION = 1;
const PRECISIONS: readonly ColbertPrecision[] = ['fp32', 'fp16', 'int8'];
const MAX_DIM = 65536;

function bytesPer(p: ColbertPrecision): number {
  return p === 'fp32' ? 4 : p === 'fp16' ? 2 : 1;
}

/** Allocates a buffer of `n` values for a precision. */
export function allocColbertData(precision: ColbertPrecision, n: number): ColbertData {
  return precision === 'fp32' ? new Float32Array(n) : precision === 'fp16' ? new Uint16Array(n) : new Int8Array(n);
}

/**
 * Symmetric per-vector int8 quantisation of `count` vectors of `dim` floats: scale = max|x|/127,
 * code = round(x/scale). A zero vector gets scale 0 and zero codes.
 */
export function quantizeColbertInt8(data: Float32Array, count: number, dim: number): { codes: Int8Array; scales: Float32Array } {
  const codes = new Int8Array(count * dim);
  const scales = new Float32Array(count);
  for (let v = 0; v < count; v++) {
    const o = v * dim;
    let max = 0;
    for (let j = 0; j < dim; j++) {
      const a = Math.abs(data[o + j]);
      if (a > max) max = a;
    }
    if (max === 0) continue;
    const scale = Math.fround(max / 127);
    scales[v] = scale;
    const inv = 1 / scale;
    for (let j = 0; j < dim; j++) {
      const q = Math.round(data[o + j] * inv);
      codes[o + j] = q > 127 ? 127 : q < -127 ? -127 : q;
    }
  }
  return { codes, scales };
}

/** float32 values of stored vectors (dequantised), into `out` if given. */
export function dequantizeColbert(raw: { precision: ColbertPrecision; data: ColbertData; scales?: Float32Array; dim: number }, out?: Float32Array): Float32Array {
  const n = raw.data.length;
  const dst = out ?? new Float32Array(n);
  if (raw.precision === 'fp32') dst.set(raw.data as Float32Array);
  else if (raw.precision === 'fp16') decodeFloat16(raw.data as Uint16Array, dst);
  else {
    const codes = raw.data as Int8Array;
    const scales = raw.scales as Float32Array;
    const dim = raw.dim;
    for (let v = 0, o = 0; o < n; v++, o += dim) {
      const s = scales[v];
      for (let j = 0; j < dim; j++) dst[o + j] = codes[o + j] * s;
    }
  }
  return dst;
}

function checkMatrix(m: ColbertMatrix, dim: number, what: string): void {
  if (m === null || typeof m !== 'object' || !(m.data instanceof Float32Array)) invalidArgument(`${what} must be a ColbertMatrix {data: Float32Array, count, dim}`);
  if (m.dim !== dim) invalidArgument(`${what}: dimension ${m.dim}, the store holds ${dim}-dimensional vectors`);
  if (!Number.isSafeInteger(m.count) || m.count < 0 || m.data.length !== m.count * dim) {
    invalidArgument(`${what}: data has ${m.data.length} values for ${m.count} vectors of ${dim}`);
  }
  for (let i = 0; i < m.data.length; i++) {
    if (!Number.isFinite(m.data[i])) invalidArgument(`${what}: value ${m.data[i]} at ${i} is not finite`);
  }
}

interface Entry {
  count: number;
  data: ColbertData;
  scales?: Float32Array;
}

/**
 * Per-document ColBERT matrices keyed by string id, stored in fp32, fp16 or int8.
 *
 * {@link upsert} of an existing id replaces its matrix; mutations must not run while
 * {@link save} is pending (they throw INVALID_ARGUMENT then).
 */
export class ColbertStore {
  readonly dim: number;
  readonly precision: ColbertPrecision;
  readonly modelId: string;
  private readonly entries = new Map<string, Entry>();
  private vectors = 0;
  private saving = 0;

  constructor(options: ColbertStoreOptions) {
    const { dim } = options;
    if (!Number.isSafeInteger(dim) || dim <= 0 || dim > MAX_DIM) invalidArgument(`dim must be an integer in 1..${MAX_DIM}, got ${dim}`);
    const precision = options.precision ?? 'fp16';
    if (!PRECISIONS.includes(precision)) invalidArgument(`precision must be one of ${PRECISIONS.join(', ')}, got ${String(precision)}`);
    const modelId = options.modelId ?? '';
    if (typeof modelId !== 'string' || modelId.length > 4096) invalidArgument('modelId must be a string of at most 4096 characters');
    this.dim = dim;
    this.precision = precision;
    this.modelId = modelId;
  }

  /** Number of documents. */
  get size(): number {
    return this.entries.size;
  }

  /** Total number of stored vectors. */
  get vectorCount(): number {
    return this.vectors;
  }

  /** Bytes used by the stored vectors (and int8 scales). */
  get byteSize(): number {
    return this.vectors * (this.dim * bytesPer(this.precision) + (this.precision === 'int8' ? 4 : 0));
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** Ids in insertion order. */
  ids(): IterableIterator<string> {
    return this.entries.keys();
  }

  private assertWritable(): void {
    if (this.saving > 0) invalidArgument('ColbertStore is being saved; wait for save() to resolve before modifying it');
  }

  /** Adds or replaces the matrix of `id` (converted to the store's precision; the input is not kept). */
  upsert(id: string, matrix: ColbertMatrix): void {
    this.assertWritable();
    checkId(id);
    checkMatrix(matrix, this.dim, `ColBERT matrix of ${JSON.stringify(id)}`);
    const entry = this.encodeEntry(matrix);
    this.remove(id);
    this.entries.set(id, entry);
    this.vectors += entry.count;
  }

  private encodeEntry(m: ColbertMatrix): Entry {
    if (this.precision === 'fp32') return { count: m.count, data: m.data.slice() };
    if (this.precision === 'fp16') return { count: m.count, data: encodeFloat16(m.data) };
    const { codes, scales } = quantizeColbertInt8(m.data, m.count, this.dim);
    return { count: m.count, data: codes, scales };
  }

  private remove(id: string): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    this.vectors -= e.count;
    return true;
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. */
  delete(ids: string | Iterable<string>): number {
    this.assertWritable();
    let n = 0;
    for (const id of typeof ids === 'string' ? [ids] : ids) if (this.remove(id)) n++;
    return n;
  }

  /** The matrix of `id` dequantised to float32 (a new array), or undefined. */
  get(id: string): ColbertMatrix | undefined {
    const raw = this.getRaw(id);
    if (!raw) return undefined;
    return { data: dequantizeColbert(raw), count: raw.count, dim: this.dim };
  }

  /** The stored representation of `id` (views into the store: do not modify), or undefined. */
  getRaw(id: string): RawColbert | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    const raw: RawColbert = { precision: this.precision, count: e.count, dim: this.dim, data: e.data };
    if (e.scales) raw.scales = e.scales;
    return raw;
  }

  /**
   * Concatenates the matrices of `ids` (in order) into one buffer in the stored precision, for
   * {@link maxSimPacked}. Unknown ids throw INVALID_ARGUMENT.
   */
  pack(ids: readonly string[]): PackedColbert {
    const offsets = new Int32Array(ids.length + 1);
    const list: Entry[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const e = this.entries.get(ids[i]);
      if (!e) invalidArgument(`unknown document id ${JSON.stringify(ids[i])}`);
      list[i] = e;
      offsets[i + 1] = offsets[i] + e.count;
    }
    const total = offsets[ids.length];
    const data = allocColbertData(this.precision, total * this.dim);
    const scales = this.precision === 'int8' ? new Float32Array(total) : undefined;
    for (let i = 0; i < list.length; i++) {
      (data as Float32Array).set(list[i].data as Float32Array, offsets[i] * this.dim);
      if (scales) scales.set(list[i].scales as Float32Array, offsets[i]);
    }
    const packed: PackedColbert = { precision: this.precision, dim: this.dim, data, offsets };
    if (scales) packed.scales = scales;
    return packed;
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  private encode(): { byteLength: number; chunks: () => Iterable<Uint8Array> } {
    const ids = [...this.entries.keys()];
    const entries = [...this.entries.values()];
    const counts = Uint32Array.from(entries, (e) => e.count);
    const bpe = bytesPer(this.precision);
    const dataSection: SectionWriter = {
      byteLength: this.vectors * this.dim * bpe,
      chunks: () => entries.map((e) => bytesView(e.data)),
    };
    const scaleSection: SectionWriter = {
      byteLength: this.precision === 'int8' ? this.vectors * 4 : 0,
      chunks: () => (this.precision === 'int8' ? entries.map((e) => bytesView(e.scales as Float32Array)) : []),
    };
    const [idLens, idBytes] = encodeIds(ids);
    return encodeContainer(
      MAGIC,
      VERSION,
      { kind: 'colbert', modelId: this.modelId, dim: this.dim, precision: this.precision, docCount: ids.length, vectorCount: this.vectors },
      [idLens, idBytes, { byteLength: counts.byteLength, chunks: () => [bytesView(counts)] }, dataSection, scaleSection],
    );
  }

  /** Serialises the store (format in {@link ColbertStore.save}). */
  toBytes(): Uint8Array {
    const c = this.encode();
    return concatChunks(c.byteLength, c.chunks());
  }

  /**
   * Saves atomically to `path`. Format: the retrieval container (binary-format.ts) with magic
   * `BGM3COLB`, version 1, meta `{kind:'colbert', modelId, dim, precision, docCount,
   * vectorCount}` and sections 0 u32 id byte lengths · 1 UTF-8 ids · 2 u32[docCount] vector
   * counts · 3 vectors (vectorCount·dim values: f32, f16 bits or i8) · 4 f32[vectorCount] int8
   * scales (empty otherwise); little-endian, CRC-32 checked.
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
   * Loads a store saved by {@link save}: INDEX_INVALID for a damaged or foreign file (naming it),
   * INDEX_MISMATCH when `expected` dim/precision/model differ from the file's.
   */
  static async load(path: string, expected: Partial<ColbertStoreOptions> = {}): Promise<ColbertStore> {
    const src = fileSource(path);
    try {
      return ColbertStore.read(src, expected);
    } finally {
      src.close();
    }
  }

  /** Deserialises bytes produced by {@link toBytes} (same checks as {@link load}). */
  static fromBytes(bytes: Uint8Array, expected: Partial<ColbertStoreOptions> = {}, name = '<colbert store bytes>'): ColbertStore {
    return ColbertStore.read(bufferSource(bytes, name), expected);
  }

  private static read(src: ByteSource, expected: Partial<ColbertStoreOptions>): ColbertStore {
    const file = src.name;
    const c = openContainer(src, MAGIC, [VERSION], 'ColBERT store');
    const m = c.meta;
    const L = c.sectionLengths;
    if (m.kind !== 'colbert') corrupt(file, `invalid header field kind: ${JSON.stringify(m.kind)}`);
    if (L.length !== 5) corrupt(file, `expected 5 sections, found ${L.length}`);
    const modelId = metaString(file, m, 'modelId');
    const dim = metaInt(file, m, 'dim', MAX_DIM);
    if (dim === 0) corrupt(file, 'invalid header field dim: 0');
    const precision = m.precision as ColbertPrecision;
    if (!PRECISIONS.includes(precision)) corrupt(file, `invalid header field precision: ${JSON.stringify(m.precision)}`);
    const docCount = metaInt(file, m, 'docCount', 0x7fffffff);
    const vectorCount = metaInt(file, m, 'vectorCount');
    for (const key of ['dim', 'precision', 'modelId'] as const) {
      const want = expected[key];
      const got = key === 'dim' ? dim : key === 'precision' ? precision : modelId;
      if (want !== undefined && want !== got) {
        throw new M3Error('INDEX_MISMATCH', `${file}: the ColBERT store has ${key} ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`, { file });
      }
    }
    const bpe = bytesPer(precision);
    expectSection(file, L, 0, docCount * 4, 'id lengths');
    expectSection(file, L, 2, docCount * 4, 'vector counts');
    expectSection(file, L, 3, vectorCount * dim * bpe, 'vectors');
    expectSection(file, L, 4, precision === 'int8' ? vectorCount * 4 : 0, 'int8 scales');

    const idLens = new Uint32Array(docCount);
    c.readSection(0, bytesView(idLens));
    const idBytes = new Uint8Array(L[1]);
    c.readSection(1, idBytes);
    const counts = new Uint32Array(docCount);
    c.readSection(2, bytesView(counts));
    let sum = 0;
    for (let i = 0; i < docCount; i++) sum += counts[i];
    if (sum !== vectorCount) corrupt(file, `vector counts add up to ${sum}, the header says ${vectorCount}`);
    const data = allocColbertData(precision, vectorCount * dim);
    c.readSection(3, bytesView(data));
    const scales = new Float32Array(precision === 'int8' ? vectorCount : 0);
    c.readSection(4, bytesView(scales));
    c.finish();

    const ids = decodeIds(file, idLens, idBytes);
    if (precision === 'fp32') {
      const d = data as Float32Array;
      for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) corrupt(file, `vector value ${i} is not finite`);
    } else if (precision === 'fp16') {
      const d = data as Uint16Array;
      for (let i = 0; i < d.length; i++) if ((d[i] & 0x7c00) === 0x7c00) corrupt(file, `vector value ${i} is not finite`);
    } else {
      for (let i = 0; i < scales.length; i++) if (!(scales[i] >= 0) || scales[i] === Infinity) corrupt(file, `int8 scale ${i} is invalid`);
    }
    const store = new ColbertStore({ dim, precision, modelId });
    // Entries are views into the loaded buffers (no per-document copy).
    let v = 0;
    for (let i = 0; i < docCount; i++) {
      const n = counts[i];
      const entry: Entry = { count: n, data: data.subarray(v * dim, (v + n) * dim) };
      if (precision === 'int8') entry.scales = scales.subarray(v, v + n);
      store.entries.set(ids[i], entry);
      v += n;
    }
    store.vectors = vectorCount;
    return store;
  }
}
