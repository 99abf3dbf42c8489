/**
 * The arithmetic of onnxruntime's `quantize_dynamic` (onnxruntime/python/tools/quantization,
 * defaults: per-tensor, `weight_type=QInt8`, `reduce_range=False`), which produced Xenova's
 * `model_quantized.onnx` and the tiny fixture's `onnx/model_quantized.onnx`:
 * - MatMul weights: int8, symmetric (zero point 0), scale = max|w| / 127, q = clip(round(w/scale), -127, 127);
 * - Gather (embedding) weights: uint8, asymmetric over [min(w,0), max(w,0)],
 *   scale = (rmax - rmin) / 255, zero point = round(-rmin / scale), q = clip(round(w/scale) + zp, 0, 255).
 * Activations are quantised at run time by `DynamicQuantizeLinear` (uint8, asymmetric).
 */

export interface Range {
  min: number;
  max: number;
}

export function rangeOf(chunks: Iterable<Float32Array>): Range {
  let min = Infinity;
  let max = -Infinity;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++) {
      const v = c[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  return { min, max };
}

export interface SymmetricParams {
  scale: number;
}

export function symmetricInt8Params(r: Range): SymmetricParams {
  const absmax = Math.max(Math.abs(r.min), Math.abs(r.max));
  return { scale: absmax > 0 ? Math.fround(absmax / 127) : 1 };
}

export function quantizeSymmetricInt8(
  src: Float32Array,
  p: SymmetricParams,
  out: Int8Array = new Int8Array(src.length),
): Int8Array {
  const inv = p.scale;
  for (let i = 0; i < src.length; i++) {
    const q = Math.round(Math.fround(src[i] / inv));
    out[i] = q > 127 ? 127 : q < -127 ? -127 : q;
  }
  return out;
}

export interface AsymmetricParams {
  scale: number;
  zeroPoint: number;
}

export function asymmetricUint8Params(r: Range): AsymmetricParams {
  const rmin = Math.min(r.min, 0);
  const rmax = Math.max(r.max, 0);
  const scale = rmax > rmin ? Math.fround((rmax - rmin) / 255) : 1;
  const zp = Math.min(255, Math.max(0, Math.round(-rmin / scale)));
  return { scale, zeroPoint: zp };
}

export function quantizeAsymmetricUint8(
  src: Float32Array,
  p: AsymmetricParams,
  out: Uint8Array = new Uint8Array(src.length),
): Uint8Array {
  for (let i = 0; i < src.length; i++) {
    const q = Math.round(Math.fround(src[i] / p.scale)) + p.zeroPoint;
    out[i] = q > 255 ? 255 : q < 0 ? 0 : q;
  }
  return out;
}
