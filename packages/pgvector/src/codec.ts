/**
 * Conversions between the core's typed arrays and what PostgreSQL stores.
 *
 * Writes use pgvector's text input (`[x,…]`, `{i:v,…}/dim`): it is what every driver can send.
 * Searches read scores, not vectors (pgvector computes the inner products), so the only vectors
 * that come back are ColBERT bytes, in core's ColbertCodec layout (one codec for every store). The
 * `sparsevec_send` decoder reads stored weights exactly (binary, no decimal parsing) for
 * inspection.
 */
import { M3Error, type ColbertStorage, type SparseVector } from '@bgem3/core';

/** pgvector's HNSW index accepts sparse vectors with at most this many non-zeros. */
export const HNSW_SPARSE_MAX_NNZ = 1000;

/** pgvector's `sparsevec` holds at most this many non-zeros (16,000). */
export const SPARSEVEC_MAX_NNZ = 16000;

/**
 * A float32 as decimal text that parses back (strtof) to the same float32: 9 significant digits
 * always suffice for binary32, and are shorter and faster to produce than `String(x)`, which
 * prints the 17 digits a double may need.
 */
export function f32(x: number): string {
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

/** Storage precision of ColBERT vectors in the database (core's {@link ColbertStorage}); `'none'` stores none. */
export type PgColbertPrecision = ColbertStorage;
