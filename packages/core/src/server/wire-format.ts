/**
 * How encodings travel as JSON. Floats as JSON numbers are exact (a float32 printed by JS parses
 * back to the same float32); base64 is the little-endian bytes of the typed array (OpenAI's
 * `encoding_format: "base64"` is float32 this way), a quarter of the size of the decimal text.
 */
import { decodeFloat16, encodeFloat16 } from '../retrieval/float16.js';
import type { ColbertMatrix, SparseVector } from '../types.js';

function bytesOf(a: Float32Array | Uint16Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A float32 vector as base64 of its little-endian bytes. */
export function float32ToBase64(v: Float32Array): string {
  return bytesOf(v).toString('base64');
}

/** Decodes {@link float32ToBase64}; `expected` (values) is checked when given. */
export function base64ToFloat32(s: string, expected?: number): Float32Array {
  const buf = Buffer.from(s, 'base64');
  if (buf.byteLength % 4 !== 0 || (expected !== undefined && buf.byteLength !== expected * 4)) {
    throw new RangeError(`base64 float32 data has ${buf.byteLength} bytes, expected ${expected !== undefined ? expected * 4 : 'a multiple of 4'}`);
  }
  const out = new Float32Array(buf.byteLength / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

/** Wire form of a ColBERT matrix: `shape` [vectors, dim], `dtype`, and base64 row-major data. */
export interface ColbertWire {
  shape: [number, number];
  dtype: 'float32' | 'float16';
  data: string;
}

export function colbertToWire(m: ColbertMatrix, dtype: 'float32' | 'float16'): ColbertWire {
  const data = dtype === 'float32' ? float32ToBase64(m.data) : bytesOf(encodeFloat16(m.data)).toString('base64');
  return { shape: [m.count, m.dim], dtype, data };
}

export function colbertFromWire(w: ColbertWire): ColbertMatrix {
  const [count, dim] = w.shape;
  if (w.dtype === 'float32') return { data: base64ToFloat32(w.data, count * dim), count, dim };
  const buf = Buffer.from(w.data, 'base64');
  if (buf.byteLength !== count * dim * 2) throw new RangeError(`base64 float16 ColBERT data has ${buf.byteLength} bytes, expected ${count * dim * 2}`);
  const h = new Uint16Array(count * dim);
  new Uint8Array(h.buffer).set(buf);
  return { data: decodeFloat16(h), count, dim };
}

/** Sparse weights as `{indices, values}` (the form Qdrant, pgvector's sparsevec and Milvus take). */
export function sparseToWire(v: SparseVector): { indices: number[]; values: number[] } {
  return { indices: Array.from(v.indices), values: Array.from(v.values) };
}

export function sparseFromWire(w: { indices: number[]; values: number[] }): SparseVector {
  return { indices: Uint32Array.from(w.indices), values: Float32Array.from(w.values) };
}
