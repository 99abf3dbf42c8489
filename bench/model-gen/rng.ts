/**
 * Deterministic random streams, one per (seed, tensor name).
 *
 * Why per tensor: the generator streams tensors to disk in any order, the int8 path reads a
 * tensor twice (range pass, then quantise pass), and the validation test regenerates single
 * tensors — all must see the same values. A stream keyed by name gives that without storing
 * anything, and the values do not depend on the chunk size used to read them.
 */

/** FNV-1a over the UTF-16 code units of `s`, folded with `seed`. */
function hash32(seed: number, s: string): number {
  let h = (0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function splitmix32(x: number): () => number {
  let a = x >>> 0;
  return () => {
    a = (a + 0x9e3779b9) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** xoshiro128** generator producing standard-normal floats (Box–Muller, pairs kept across calls). */
export class NormalStream {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare = 0;
  private hasSpare = false;

  constructor(seed: number, name: string) {
    const sm = splitmix32(hash32(seed, name));
    this.s0 = sm();
    this.s1 = sm();
    this.s2 = sm();
    this.s3 = sm();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next uint32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Fills `out` with `std` × N(0, 1). */
  fill(out: Float32Array, std: number): Float32Array {
    let i = 0;
    const n = out.length;
    if (n > 0 && this.hasSpare) {
      out[i++] = this.spare * std;
      this.hasSpare = false;
    }
    const TWO_PI = 2 * Math.PI;
    const INV = 1 / 4294967296;
    while (i < n) {
      const u1 = (this.nextU32() + 1) * INV; // (0, 1]
      const u2 = this.nextU32() * INV; // [0, 1)
      const r = Math.sqrt(-2 * Math.log(u1));
      const a = TWO_PI * u2;
      out[i++] = r * Math.cos(a) * std;
      if (i < n) out[i++] = r * Math.sin(a) * std;
      else {
        this.spare = r * Math.sin(a);
        this.hasSpare = true;
      }
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A decimal string of `digits` digits derived from `seed` (used for torch's serialization_id). */
export function digitString(seed: number, name: string, digits: number): string {
  const s = new NormalStream(seed, name);
  let out = '';
  while (out.length < digits) out += String(s.nextU32() % 10);
  return out;
}
