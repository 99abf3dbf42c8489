/**
 * IEEE 754 binary16 → float32, by table. Node 20 has no Float16Array: onnxruntime hands float16
 * tensors over as raw Uint16Array bits, and torch files store float16 weights the same way.
 */

let table: Float32Array | undefined;

/** All 65536 float16 values as float32 (256 KiB, built once): faster than decoding per element. */
export function halfTable(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = halfToNumber(h);
  }
  return table;
}

/**
 * binary16 bits → number, exact for every value (float32 holds all of them): ±0, subnormals
 * (frac · 2^-24), normals ((1024 + frac) · 2^(exp-25)), ±Infinity and NaN.
 */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** Converts float16 bits (or an already-decoded float16 array) to a new Float32Array, exactly. */
export function float16ToFloat32(bits: ArrayLike<number>): Float32Array {
  const out = new Float32Array(bits.length);
  if (bits instanceof Uint16Array) {
    const t = halfTable();
    for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = bits[i];
  }
  return out;
}
