/**
 * The ColBERT byte codec shared by every store (the embedded M3Index, PgM3Store, the adapters):
 * one encoding of a document's ColBERT matrix as bytes, so the same vectors give the same MaxSim
 * scores, bit for bit, whichever store holds them.
 *
 * Precisions ({@link ColbertStorage}):
 * - `int8`: symmetric per-vector quantisation, q = round(x / s) with s = max|x| / 127 (x ≈ q·s);
 *   a quarter of fp32 plus 4 bytes of scale per vector;
 * - `fp16`: IEEE half floats (round to nearest even), half of fp32;
 * - `fp32`: exact;
 * - `none`: no ColBERT vectors are kept (the store ranks by dense + sparse only).
 *
 * Byte layout of one matrix of `count` vectors of `dim` values, little-endian:
 * - `fp32`: count·dim float32;
 * - `fp16`: count·dim half-float bit patterns (uint16);
 * - `int8`: count float32 scales, then count·dim int8 codes (value = code · scale);
 * - `none`: zero bytes.
 *
 * Decoding checks what a damaged or crafted row could break: the length must be a whole number
 * of vectors, int8 scales finite and ≥ 0, fp16/fp32 values finite (INDEX_INVALID otherwise).
 */
import { M3Error, invalidArgument } from '../errors.js';
import { dequantizeColbert, quantizeColbertInt8, type ColbertData, type ColbertPrecision, type PackedColbert, type RawColbert } from '../retrieval/colbert-store.js';
import { encodeFloat16 } from '../retrieval/float16.js';
import type { ColbertMatrix } from '../types.js';

/** How a store keeps ColBERT vectors: a {@link ColbertPrecision}, or `'none'` (not kept). */
export type ColbertStorage = ColbertPrecision | 'none';

/** Every {@link ColbertStorage}, the default first. */
export const COLBERT_STORAGES: readonly ColbertStorage[] = Object.freeze(['int8', 'fp16', 'fp32', 'none'] as const);

/**
 * Default ColBERT precision of new stores: int8. Measured against fp32 (bench/store.bench.ts,
 * "ColBERT precision" rows, and the fixture model in the store tests): MaxSim mean abs error
 * ~4e-5 and the same top-10 ranking, at a quarter of the bytes to store and read per candidate.
 */
export const DEFAULT_COLBERT_STORAGE: ColbertStorage = 'int8';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Checks a `colbertPrecision` option (undefined gives the default); INVALID_ARGUMENT naming it. */
export function checkColbertStorage(value: unknown, what = 'colbertPrecision'): ColbertStorage {
  if (value === undefined) return DEFAULT_COLBERT_STORAGE;
  if (typeof value !== 'string' || !COLBERT_STORAGES.includes(value as ColbertStorage)) {
    invalidArgument(`${what} must be one of ${COLBERT_STORAGES.map((p) => `'${p}'`).join(', ')}, got ${JSON.stringify(value) ?? String(value)}`);
  }
  return value as ColbertStorage;
}

/** Bytes per stored ColBERT vector of `dim` values (0 for `'none'`). */
export function colbertBytesPerVector(precision: ColbertStorage, dim: number): number {
  return precision === 'fp32' ? 4 * dim : precision === 'fp16' ? 2 * dim : precision === 'int8' ? dim + 4 : 0;
}

function corrupt(what: string): never {
  throw new M3Error('INDEX_INVALID', what);
}

/** Encodes and decodes ColBERT matrices of one precision and dimension (see the file comment). */
export class ColbertCodec {
  readonly precision: ColbertStorage;
  readonly dim: number;

  constructor(precision: ColbertStorage, dim: number) {
    if (!LITTLE_ENDIAN) invalidArgument('the ColBERT byte layout assumes a little-endian host');
    checkColbertStorage(precision, 'precision');
    if (!Number.isSafeInteger(dim) || dim <= 0 || dim > 65536) invalidArgument(`dim must be an integer in 1..65536, got ${dim}`);
    this.precision = precision;
    this.dim = dim;
  }

  /** Bytes per vector (0 for `'none'`). */
  get bytesPerVector(): number {
    return colbertBytesPerVector(this.precision, this.dim);
  }

  /**
   * The stored bytes of one matrix (a new buffer: nothing aliases `m`). Checks the dimension and
   * that every value is finite (INVALID_ARGUMENT). `'none'` gives zero bytes.
   */
  encode(m: ColbertMatrix): Buffer {
    const dim = this.dim;
    if (m === null || typeof m !== 'object' || !(m.data instanceof Float32Array)) invalidArgument('a ColBERT matrix must be {data: Float32Array, count, dim}');
    if (m.dim !== dim || !Number.isSafeInteger(m.count) || m.count < 0 || m.data.length !== m.count * dim) {
      invalidArgument(`a ColBERT matrix needs count × ${dim} values (got dim ${m.dim}, count ${m.count}, ${m.data.length} values)`);
    }
    for (let i = 0; i < m.data.length; i++) if (!Number.isFinite(m.data[i])) invalidArgument(`ColBERT value ${i} is ${m.data[i]}, not finite`);
    switch (this.precision) {
      case 'none':
        return Buffer.alloc(0);
      case 'fp32':
        return Buffer.from(m.data.slice().buffer);
      case 'fp16': {
        const h = encodeFloat16(m.data);
        return Buffer.from(h.buffer, h.byteOffset, h.byteLength);
      }
      case 'int8': {
        const { codes, scales } = quantizeColbertInt8(m.data, m.count, dim);
        const out = Buffer.allocUnsafe(4 * m.count + codes.length);
        out.set(new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength), 0);
        out.set(new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength), 4 * m.count);
        return out;
      }
    }
  }

  /** Number of vectors in stored bytes; INDEX_INVALID if the length is no whole number of vectors. */
  count(bytes: Uint8Array): number {
    if (!(bytes instanceof Uint8Array)) corrupt('ColBERT bytes must be a byte array');
    const per = this.bytesPerVector;
    if (per === 0) {
      if (bytes.byteLength !== 0) corrupt(`${bytes.byteLength} ColBERT bytes in a store that keeps none`);
      return 0;
    }
    if (bytes.byteLength % per !== 0) corrupt(`ColBERT bytes: ${bytes.byteLength} is not a multiple of ${per} (one ${this.precision} vector of ${this.dim})`);
    return bytes.byteLength / per;
  }

  /**
   * The stored representation of `bytes` as typed-array views where alignment allows (copies
   * otherwise), checked (see the file comment). The views share `bytes`: do not modify. For
   * `'none'`, an empty fp32 matrix.
   */
  view(bytes: Uint8Array): RawColbert {
    const n = this.count(bytes);
    const dim = this.dim;
    const p = this.precision;
    if (p === 'none') return { precision: 'fp32', count: 0, dim, data: new Float32Array(0) };
    const typed = <T extends ColbertData | Float32Array>(C: { new (b: ArrayBufferLike, o: number, l: number): T; new (l: number): T; BYTES_PER_ELEMENT: number }, offset: number, length: number): T => {
      const byteOffset = bytes.byteOffset + offset;
      if (byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(bytes.buffer, byteOffset, length);
      const copy = new C(length);
      new Uint8Array(copy.buffer).set(bytes.subarray(offset, offset + length * C.BYTES_PER_ELEMENT));
      return copy;
    };
    if (p === 'int8') {
      const scales = typed(Float32Array, 0, n);
      for (let i = 0; i < n; i++) if (!(scales[i] >= 0) || scales[i] === Infinity) corrupt(`int8 ColBERT scale ${i} is ${scales[i]}`);
      return { precision: p, count: n, dim, data: new Int8Array(bytes.buffer, bytes.byteOffset + 4 * n, n * dim), scales };
    }
    if (p === 'fp16') {
      const data = typed(Uint16Array, 0, n * dim);
      for (let i = 0; i < data.length; i++) if ((data[i] & 0x7c00) === 0x7c00) corrupt(`fp16 ColBERT value ${i} is not finite`);
      return { precision: p, count: n, dim, data };
    }
    const data = typed(Float32Array, 0, n * dim);
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) corrupt(`fp32 ColBERT value ${i} is not finite`);
    return { precision: p, count: n, dim, data };
  }

  /** The float32 matrix of stored bytes (dequantised; a new array). */
  decode(bytes: Uint8Array): ColbertMatrix {
    const raw = this.view(bytes);
    return { data: raw.count === 0 ? new Float32Array(0) : dequantizeColbert(raw), count: raw.count, dim: this.dim };
  }

  /**
   * Packs several documents' stored bytes into one buffer in the stored precision, the input of
   * core's `maxSimPacked` (which widens fp16/int8 inside onnxruntime): no float32 copy of the
   * candidates is made. INDEX_INVALID for a row that does not decode; not for `'none'`.
   */
  pack(rows: readonly Uint8Array[]): PackedColbert {
    const precision = this.precision;
    if (precision === 'none') invalidArgument('a store that keeps no ColBERT vectors has nothing to pack');
    const dim = this.dim;
    const views = rows.map((r) => this.view(r));
    const offsets = new Int32Array(rows.length + 1);
    views.forEach((v, i) => (offsets[i + 1] = offsets[i] + v.count));
    const total = offsets[rows.length];
    const data = precision === 'int8' ? new Int8Array(total * dim) : precision === 'fp16' ? new Uint16Array(total * dim) : new Float32Array(total * dim);
    const scales = precision === 'int8' ? new Float32Array(total) : undefined;
    views.forEach((v, i) => {
      (data as Float32Array).set(v.data as Float32Array, offsets[i] * dim);
      if (scales) scales.set(v.scales as Float32Array, offsets[i]);
    });
    return scales ? { precision, dim, data, scales, offsets } : { precision, dim, data, offsets };
  }
}
