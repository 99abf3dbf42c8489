/**
 * IEEE 754 binary16 ("half") conversion by hand: Node 20 has no Float16Array.
 *
 * float32 → float16 rounds to nearest, ties to even (like a hardware F16C convert and numpy's
 * `astype(float16)`), with subnormals, overflow to ±Infinity and NaN preserved. float16 → float32
 * is exact and goes through a 65,536-entry table (256 KiB, built on first use), which is faster
 * than bit twiddling per element in V8.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `x` (ties to even). */
export function toFloat16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0); // Inf / NaN (quiet)
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00; // too large: ±Infinity
  if (e <= 0) {
    // Subnormal half (or zero): value = m · 2^-24 with m = round(M · 2^(e-14)), M = 1.mant as an integer.
    if (e < -10) return sign; // below half of the smallest subnormal: ±0
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // Round to nearest even; a carry out of the mantissa correctly bumps the exponent (up to Inf).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

function decodeBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

let table: Float32Array | undefined;

/** The float16 → float32 table (exact values). */
export function float16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = decodeBits(h);
  }
  return table;
}

/** The value of a float16 bit pattern. */
export function fromFloat16Bits(h: number): number {
  return float16Table()[h & 0xffff];
}

/** Converts float32 values to float16 bit patterns (into `out` if given). */
export function encodeFloat16(src: ArrayLike<number>, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = toFloat16Bits(src[i]);
  return out;
}

/** Converts float16 bit patterns to float32 (into `out` if given). */
export function decodeFloat16(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const t = float16Table();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}
