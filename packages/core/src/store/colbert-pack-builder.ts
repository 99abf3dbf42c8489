/**
 * Stored ColBERT rows packed one by one, as they arrive, into one buffer: the input of
 * `maxSimPacked`. For rows streamed from a database whose driver reuses its read buffer (a row
 * must be copied before the next arrives), e.g. PgM3Store's binary COPY.
 *
 * The buffers come from the retrieval scratch pool and go back with {@link release}: a search
 * packs ~10 MB of candidates (40 × 256 × 1024 int8), and fresh memory costs a page fault per
 * 4 KiB page on first touch (see retrieval/scratch.ts; measured here as ~10 ms of a 40-row
 * PgM3Store search in allocation, first-touch copies and garbage collection).
 */
import { invalidArgument } from '../errors.js';
import type { ColbertData, PackedColbert } from '../retrieval/colbert-store.js';
import { acquire, release } from '../retrieval/scratch.js';
import type { ColbertCodec } from './colbert-codec.js';

type DataCtor = Int8ArrayConstructor | Uint16ArrayConstructor | Float32ArrayConstructor;

export class ColbertPackBuilder {
  private readonly ctor: DataCtor;
  private readonly offsets: number[] = [0];
  private data: ColbertData;
  private scales: Float32Array | undefined;
  private released = false;

  /**
   * @param codec the stored rows' codec (not `'none'`)
   * @param expectedVectors vectors to make room for at first (the buffers grow when needed)
   */
  constructor(
    private readonly codec: ColbertCodec,
    expectedVectors: number,
  ) {
    const p = codec.precision;
    if (p === 'none') invalidArgument('a store that keeps no ColBERT vectors has nothing to pack');
    this.ctor = p === 'int8' ? Int8Array : p === 'fp16' ? Uint16Array : Float32Array;
    const n = Math.max(1, expectedVectors);
    this.data = acquire(this.ctor, n * codec.dim);
    this.scales = p === 'int8' ? acquire(Float32Array, n) : undefined;
  }

  /** Documents added so far. */
  get length(): number {
    return this.offsets.length - 1;
  }

  /** Checks (INDEX_INVALID if they do not decode) and copies one document's stored bytes; returns its position. */
  add(bytes: Uint8Array): number {
    if (this.released) invalidArgument('this ColbertPackBuilder was released');
    const v = this.codec.view(bytes);
    const dim = this.codec.dim;
    const at = this.offsets[this.offsets.length - 1];
    const end = at + v.count;
    if (end * dim > this.data.length) this.data = this.grow(this.data, end * dim, this.ctor, at * dim);
    (this.data as Float32Array).set(v.data as Float32Array, at * dim);
    if (this.scales) {
      if (end > this.scales.length) this.scales = this.grow(this.scales, end, Float32Array, at);
      this.scales.set(v.scales as Float32Array, at);
    }
    this.offsets.push(end);
    return this.offsets.length - 2;
  }

  /** The documents added, packed (views of the builder's buffers: valid until {@link release}). */
  packed(): PackedColbert {
    const total = this.offsets[this.offsets.length - 1];
    const precision = this.codec.precision as PackedColbert['precision'];
    const dim = this.codec.dim;
    const data = this.data.subarray(0, total * dim);
    const offsets = Int32Array.from(this.offsets);
    return this.scales ? { precision, dim, data, scales: this.scales.subarray(0, total), offsets } : { precision, dim, data, offsets };
  }

  /** Gives the buffers back to the scratch pool; the builder and its packed views are unusable afterwards. */
  release(): void {
    if (this.released) return;
    this.released = true;
    release(this.data);
    if (this.scales) release(this.scales);
  }

  private grow<T extends ColbertData | Float32Array>(old: T, need: number, ctor: DataCtor | Float32ArrayConstructor, used: number): T {
    const bigger = acquire(ctor, Math.max(need, 2 * old.length)) as T;
    (bigger as Float32Array).set((old as Float32Array).subarray(0, used));
    release(old);
    return bigger;
  }
}
