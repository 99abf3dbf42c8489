/**
 * Conversions between the core's typed arrays and what PostgreSQL stores.
 *
 * Writes use pgvector's text input (`[x,…]`, `{i:v,…}/dim`): it is what every driver can send.
 * Searches read scores, not vectors (pgvector computes the inner products), so the only vectors
 * that come back are ColBERT bytes, stored raw in the core ColbertStore's precisions. The
 * `sparsevec_send` decoder reads stored weights exactly (binary, no decimal parsing) for
 * inspection.
 */
import { ColbertStore, M3Error, maxSimPacked, type ColbertMatrix, type ColbertPrecision, type SparseVector } from '@bgem3/core';

/** pgvector's HNSW index accepts sparse vectors with at most this many non-zeros. */
export const HNSW_SPARSE_MAX_NNZ = 1000;

/** pgvector's `sparsevec` holds at most this many non-zeros (16,000). */
export const SPARSEVEC_MAX_NNZ = 16000;

/**
 * A float32 as decimal text that parses back (strtof) to the same float32: 9 significant digits
 * always suffice for binary32, and are shorter and faster to produce than `String(x)`, which
 * prints the 17 digits a double may need.
 */
function f32(x: number): string {
  return x === 0 ? '0' : x.toPrecision(9);
}

/** pgvector text of a dense vector: `[x1,x2,…]` (also valid input for `halfvec`). */
export function formatDense(v: Float32Array): string {
  const parts = new Array<string>(v.length);
  for (let i = 0; i < v.length; i++) parts[i] = f32(v[i]);
  return `[${parts.join(',')}]`;
}

/**
 * pgvector text of a sparse vector: `{i:v,…}/dim` with pgvector's 1-based indices (token id t is
 * written as t+1). Zero weights are left out: they contribute nothing to any score.
 */
export function formatSparse(s: SparseVector, dim: number): string {
  const parts: string[] = [];
  for (let i = 0; i < s.indices.length; i++) {
    const w = s.values[i];
    if (w !== 0) parts.push(`${s.indices[i] + 1}:${f32(w)}`);
  }
  return `{${parts.join(',')}}/${dim}`;
}

/** Number of non-zero weights of a sparse vector. */
export function nonZeros(s: SparseVector): number {
  let n = 0;
  for (let i = 0; i < s.values.length; i++) if (s.values[i] !== 0) n++;
  return n;
}

/**
 * The `limit` largest weights of `s` (ties: the lower token id), token ids ascending: what the
 * HNSW-indexed `sparse` column holds when a document has more distinct tokens than pgvector
 * can index. Returns `s` itself when it already fits.
 */
export function projectSparse(s: SparseVector, limit: number): SparseVector {
  if (nonZeros(s) <= limit) return s;
  const order = Array.from(s.indices.keys()).filter((i) => s.values[i] !== 0);
  order.sort((a, b) => s.values[b] - s.values[a] || s.indices[a] - s.indices[b]);
  const keep = order.slice(0, limit).sort((a, b) => a - b);
  return { indices: Uint32Array.from(keep, (i) => s.indices[i]), values: Float32Array.from(keep, (i) => s.values[i]) };
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function corrupt(what: string): never {
  throw new M3Error('INDEX_INVALID', `unexpected ${what} from the database`);
}

/**
 * Decodes `sparsevec_send(v)`: int32 dim, int32 nnz, int32 unused, nnz int32 0-based indices,
 * nnz float4 values, all big-endian. Indices come out ascending (pgvector keeps them sorted).
 */
export function decodeSparsevecSend(bytes: Uint8Array, dim: number): SparseVector {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength < 12) corrupt('sparsevec_send output');
  const dv = view(bytes);
  const nnz = dv.getInt32(4);
  if (dv.getInt32(0) !== dim || nnz < 0 || bytes.byteLength !== 12 + 8 * nnz) corrupt(`sparsevec (dimension ${dv.getInt32(0)}, ${nnz} non-zeros)`);
  const indices = new Uint32Array(nnz);
  const values = new Float32Array(nnz);
  for (let i = 0, o = 12, p = 12 + 4 * nnz; i < nnz; i++, o += 4, p += 4) {
    indices[i] = dv.getInt32(o);
    values[i] = dv.getFloat32(p);
  }
  return { indices, values };
}

/** Storage precision of ColBERT vectors in the database; `'none'` stores none. */
export type PgColbertPrecision = ColbertPrecision | 'none';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes per stored ColBERT vector of `dim` values. */
export function colbertBytesPerVector(precision: ColbertPrecision, dim: number): number {
  return precision === 'fp32' ? 4 * dim : precision === 'fp16' ? 2 * dim : dim + 4;
}

/**
 * Encodes ColBERT matrices exactly as the core's ColbertStore stores them (its fp16 rounding and
 * int8 per-vector quantisation: one implementation, so MaxSim scores match the embedded index
 * bit for bit). Byte layout, little-endian:
 *
 * - `fp32`: count·dim float32;
 * - `fp16`: count·dim IEEE half bit patterns (uint16);
 * - `int8`: count float32 scales, then count·dim int8 codes (value = code · scale).
 */
export class ColbertCodec {
  readonly precision: ColbertPrecision;
  readonly dim: number;
  private readonly store: ColbertStore;

  constructor(precision: ColbertPrecision, dim: number) {
    if (!LITTLE_ENDIAN) throw new M3Error('INVALID_ARGUMENT', 'the ColBERT byte layout assumes a little-endian host');
    this.precision = precision;
    this.dim = dim;
    this.store = new ColbertStore({ dim, precision });
  }

  /** The stored bytes of one matrix (validated by ColbertStore: dimension, finite values). */
  encode(m: ColbertMatrix): Buffer {
    this.store.upsert('m', m);
    try {
      const raw = this.store.getRaw('m');
      if (!raw) throw new Error('unreachable');
      const data = Buffer.from(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
      // The store allocates a fresh array per upsert and forgets it on delete: no copy needed.
      if (!raw.scales) return data;
      return Buffer.concat([Buffer.from(raw.scales.buffer, raw.scales.byteOffset, raw.scales.byteLength), data]);
    } finally {
      this.store.delete('m');
    }
  }

  /** Number of vectors in stored bytes; INDEX_INVALID if the length fits no whole number. */
  count(bytes: Uint8Array): number {
    const per = colbertBytesPerVector(this.precision, this.dim);
    if (!(bytes instanceof Uint8Array) || bytes.byteLength % per !== 0) corrupt(`ColBERT bytes (${bytes?.byteLength} is not a multiple of ${per})`);
    return bytes.byteLength / per;
  }

  /**
   * Packs several documents' stored bytes into one buffer in the stored precision, the input of
   * core's `maxSimPacked` (which widens fp16/int8 inside onnxruntime, as the embedded M3Index
   * does): no float32 copy of the candidates is ever made.
   */
  pack(rows: readonly Uint8Array[]): PackedColbert {
    const dim = this.dim;
    const offsets = new Int32Array(rows.length + 1);
    rows.forEach((r, i) => (offsets[i + 1] = offsets[i] + this.count(r)));
    const total = offsets[rows.length];
    const precision = this.precision;
    if (precision === 'int8') {
      const data = new Int8Array(total * dim);
      const scales = new Float32Array(total);
      const scaleBytes = new Uint8Array(scales.buffer);
      const codeBytes = new Uint8Array(data.buffer);
      rows.forEach((r, i) => {
        const n = offsets[i + 1] - offsets[i];
        scaleBytes.set(r.subarray(0, 4 * n), 4 * offsets[i]);
        codeBytes.set(r.subarray(4 * n), offsets[i] * dim);
      });
      return { precision, dim, data, scales, offsets };
    }
    const data = precision === 'fp16' ? new Uint16Array(total * dim) : new Float32Array(total * dim);
    const bytes = new Uint8Array(data.buffer);
    const width = data.BYTES_PER_ELEMENT * dim;
    rows.forEach((r, i) => bytes.set(r, offsets[i] * width));
    return { precision, dim, data, offsets };
  }
}

/** Several documents' ColBERT vectors in one buffer: core's `maxSimPacked` input. */
export type PackedColbert = Parameters<typeof maxSimPacked>[1];
