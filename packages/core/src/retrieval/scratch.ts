/**
 * Reusable scratch buffers for the hot paths (MaxSim packing, matrix-product outputs).
 *
 * Why: touching freshly allocated memory costs a page fault per 4 KiB page. On some hosts
 * (sandboxed VMs among them) that is tens of microseconds per page: packing 100 candidates ×
 * 256 × 1024 floats into a *new* 105 MB buffer measured ~700 ms here, against ~10 ms into a
 * buffer that was already touched. Buffers are therefore borrowed from a small pool and given
 * back after use. The pool keeps at most {@link SCRATCH_RETAIN_BYTES} in total (larger buffers are
 * dropped on release); {@link releaseScratchMemory} empties it.
 */

type Ctor = Float32ArrayConstructor | Uint16ArrayConstructor | Int8ArrayConstructor | Float64ArrayConstructor;
type Buf = Float32Array | Uint16Array | Int8Array | Float64Array;

/** Upper bound of the memory the pool keeps between calls (256 MiB). */
export const SCRATCH_RETAIN_BYTES = 256 << 20;

const free = new Map<Ctor, Buf[]>();
let retained = 0;

/** Borrows a buffer of at least `n` elements (contents undefined). Give it back with {@link release}. */
export function acquire<C extends Ctor>(ctor: C, n: number): InstanceType<C> {
  const list = free.get(ctor);
  if (list) {
    let best = -1;
    for (let i = 0; i < list.length; i++) {
      if (list[i].length >= n && (best < 0 || list[i].length < list[best].length)) best = i;
    }
    if (best >= 0) {
      const b = list[best];
      list.splice(best, 1);
      retained -= b.byteLength;
      return b as InstanceType<C>;
    }
  }
  // Round up so that slowly growing requests do not allocate every time.
  const size = Math.max(1024, Math.ceil(n * 1.25));
  return new ctor(size) as InstanceType<C>;
}

/** Returns a buffer obtained from {@link acquire} to the pool. */
export function release(buf: Buf): void {
  if (buf.byteLength + retained > SCRATCH_RETAIN_BYTES) return; // let GC have it
  const ctor = buf.constructor as Ctor;
  let list = free.get(ctor);
  if (!list) free.set(ctor, (list = []));
  list.push(buf);
  retained += buf.byteLength;
}

/** Drops every pooled buffer (e.g. after a one-off large rerank). */
export function releaseScratchMemory(): void {
  free.clear();
  retained = 0;
}
