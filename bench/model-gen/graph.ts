/**
 * The ONNX graph of BGE-M3 (XLMRobertaModel + optional M3 heads), in four flavours:
 * fp32 / dynamic-int8 weights × exporter-style (unfused) / `com.microsoft.MultiHeadAttention` attention.
 *
 * The computation is FlagEmbedding's, op for op (docs/m3-reference.md §0–§3):
 * - positions = cumsum(ids != 1) * (ids != 1) + 1, so real tokens get 2, 3, … and pad gets 1;
 * - embeddings = word[ids] + token_type[0] + position[pos], then LayerNorm (eps 1e-5);
 * - each layer (post-LN): x = LN(x + O(attn(Qx, Kx, Vx))); x = LN(x + W2·gelu(W1·x)) with exact
 *   GELU 0.5·h·(1 + erf(h/√2)); attention = softmax(QKᵀ/√d + (1 − mask)·float_min)·V per head;
 * - three-output heads: dense = L2norm(H[:,0]); sparse = relu(H·Wsᵀ + bs) [B,L,1];
 *   colbert = L2norm((H[:,1:]·Wcᵀ + bc) · mask[:,1:]) [B,L−1,H]; L2norm(x) = x / max(‖x‖, 1e-12).
 *
 * int8 follows onnxruntime `quantize_dynamic` (see quantize.ts): MatMul → DynamicQuantizeLinear +
 * MatMulInteger + Cast + Mul(scales); embedding Gather → uint8 Gather + DequantizeLinear. The
 * QKᵀ and PV MatMuls (no constant operand) stay fp32, as quantize_dynamic leaves them.
 *
 * Fused attention: onnxruntime's CPU MultiHeadAttention runs its O(L)-memory flash kernel only
 * when no `key_padding_mask`/`attention_bias` is given (contrib_ops/cpu/bert/multihead_attention.cc),
 * so each layer has an `If`: when the whole attention_mask is 1 (one text, or equal lengths) the
 * mask-free MHA runs; otherwise MHA with `key_padding_mask` (exact, but it materialises the scores).
 */
import type { ValueSpec } from '../../packages/core/src/inference/onnx-graph.ts';
import { OnnxType, bytesOf } from '../../packages/core/src/inference/onnx-graph.ts';
import { LAYER_NORM_EPS, PAD_ID, type Attention, type Dtype, type Variant } from './config.ts';
import { constTensor, type GraphNode, type ModelGraph, type TensorSource } from './onnx-writer.ts';
import {
  asymmetricUint8Params,
  quantizeAsymmetricUint8,
  quantizeSymmetricInt8,
  rangeOf,
  symmetricInt8Params,
  type Range,
} from './quantize.ts';
import { layerPrefix, numel, transpose, Weights } from './weights.ts';

export interface VariantSpec {
  variant: Variant;
  dtype: Dtype;
  attention: Attention;
}

/** A float tensor that can be read in chunks (a stored weight or a derived one). */
interface FloatTensor {
  name: string;
  dims: number[];
  chunks(): Iterable<Float32Array>;
}

const FLOAT_MIN = -3.4028234663852886e38;
const INT64_MAX = 9223372036854775807n;

class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly inits: TensorSource[] = [];
  private readonly initNames = new Set<string>();
  private readonly counters = new Map<string, number>();

  add(
    scope: string,
    op: string,
    inputs: string[],
    opts: {
      outputs?: number | string[];
      attrs?: GraphNode['attrs'];
      floatAttrs?: string[];
      domain?: string;
      graphs?: GraphNode['graphs'];
    } = {},
  ): string[] {
    const key = `${scope}/${op}`;
    const k = this.counters.get(key) ?? 0;
    this.counters.set(key, k + 1);
    const name = k === 0 ? key : `${key}_${k}`;
    const outs =
      typeof opts.outputs === 'object'
        ? opts.outputs
        : Array.from({ length: opts.outputs ?? 1 }, (_, i) => `${name}_output_${i}`);
    this.nodes.push({
      op,
      name,
      inputs,
      outputs: outs,
      attrs: opts.attrs,
      floatAttrs: opts.floatAttrs,
      domain: opts.domain,
      graphs: opts.graphs,
    });
    return outs;
  }

  one(scope: string, op: string, inputs: string[], opts: Parameters<GraphBuilder['add']>[3] = {}): string {
    return this.add(scope, op, inputs, opts)[0];
  }

  init(t: TensorSource): string {
    if (!this.initNames.has(t.name)) {
      this.initNames.add(t.name);
      this.inits.push(t);
    }
    return t.name;
  }

  i64(name: string, values: Array<number | bigint>, dims: number[] = [values.length]): string {
    return this.init(constTensor(name, OnnxType.int64, dims, BigInt64Array.from(values.map((v) => BigInt(v)))));
  }

  f32(name: string, values: number[], dims: number[] = [values.length]): string {
    return this.init(constTensor(name, OnnxType.float, dims, Float32Array.from(values)));
  }
}

function lazy<T>(f: () => T): () => T {
  let done = false;
  let v: T;
  return () => {
    if (!done) {
      v = f();
      done = true;
    }
    return v;
  };
}

function fp32Source(t: FloatTensor): TensorSource {
  return {
    name: t.name,
    type: OnnxType.float,
    dims: t.dims,
    byteLength: numel(t.dims) * 4,
    emit: (write) => {
      for (const c of t.chunks()) write(bytesOf(c));
    },
  };
}

/** Builds the ModelGraph of a variant. All weights come from `weights` (streamed at write time). */
export function buildGraph(weights: Weights, spec: VariantSpec): ModelGraph {
  const c = weights.config;
  const H = c.hidden;
  const N = c.heads;
  const D = H / N;
  const int8 = spec.dtype === 'int8';
  const b = new GraphBuilder();
  const ranges = new Map<string, () => Range>();
  const rangeFor = (t: FloatTensor) => {
    let r = ranges.get(t.name);
    if (!r) {
      r = lazy(() => rangeOf(t.chunks()));
      ranges.set(t.name, r);
    }
    return r();
  };

  const stored = (name: string): FloatTensor => ({
    name,
    dims: weights.info(name).dims,
    chunks: () => weights.chunks(name),
  });
  const fp32 = (name: string) => b.init(fp32Source(stored(name)));

  /** y = x·W + bias, W given as [in, out]; `dq` caches DynamicQuantizeLinear per activation. */
  const dq = new Map<string, string[]>();
  const linear = (scope: string, x: string, w: FloatTensor, bias: string): string => {
    let y: string;
    if (!int8) {
      y = b.one(scope, 'MatMul', [x, b.init(fp32Source(w))]);
    } else {
      let xq = dq.get(x);
      if (!xq) {
        xq = b.add(scope, 'DynamicQuantizeLinear', [x], {
          outputs: [`${x}_quantized`, `${x}_scale`, `${x}_zero_point`],
        });
        dq.set(x, xq);
      }
      const params = () => symmetricInt8Params(rangeFor(w));
      const n = numel(w.dims);
      const wq = b.init({
        name: `${w.name}_quantized`,
        type: OnnxType.int8,
        dims: w.dims,
        byteLength: n,
        emit: (write) => {
          const p = params();
          let buf: Int8Array | null = null;
          for (const ch of w.chunks()) {
            if (!buf || buf.length < ch.length) buf = new Int8Array(ch.length);
            write(bytesOf(quantizeSymmetricInt8(ch, p, buf.subarray(0, ch.length))));
          }
        },
      });
      const ws = b.init({
        name: `${w.name}_scale`,
        type: OnnxType.float,
        dims: [],
        byteLength: 4,
        emit: (write) => write(bytesOf(Float32Array.of(params().scale))),
      });
      const wz = b.init(constTensor(`${w.name}_zero_point`, OnnxType.int8, [], Int8Array.of(0)));
      const acc = b.one(scope, 'MatMulInteger', [xq[0], wq, xq[2], wz]);
      const accF = b.one(scope, 'Cast', [acc], { attrs: { to: OnnxType.float } });
      const s = b.one(scope, 'Mul', [xq[1], ws]);
      y = b.one(scope, 'Mul', [accF, s]);
    }
    return b.one(scope, 'Add', [y, bias]);
  };

  const embedding = (scope: string, name: string, ids: string): string => {
    if (!int8) return b.one(scope, 'Gather', [fp32(name), ids]);
    const w = stored(name);
    const params = () => asymmetricUint8Params(rangeFor(w));
    const wq = b.init({
      name: `${name}_quantized`,
      type: OnnxType.uint8,
      dims: w.dims,
      byteLength: numel(w.dims),
      emit: (write) => {
        const p = params();
        let buf: Uint8Array | null = null;
        for (const ch of w.chunks()) {
          if (!buf || buf.length < ch.length) buf = new Uint8Array(ch.length);
          write(quantizeAsymmetricUint8(ch, p, buf.subarray(0, ch.length)));
        }
      },
    });
    const ws = b.init({
      name: `${name}_scale`,
      type: OnnxType.float,
      dims: [],
      byteLength: 4,
      emit: (write) => write(bytesOf(Float32Array.of(params().scale))),
    });
    const wz = b.init({
      name: `${name}_zero_point`,
      type: OnnxType.uint8,
      dims: [],
      byteLength: 1,
      emit: (write) => write(Uint8Array.of(params().zeroPoint)),
    });
    const g = b.one(scope, 'Gather', [wq, ids]);
    return b.one(scope, 'DequantizeLinear', [g, ws, wz]);
  };

  const layerNorm = (scope: string, x: string, prefix: string, outputs?: string[]): string =>
    b.one(scope, 'LayerNormalization', [x, fp32(`${prefix}.weight`), fp32(`${prefix}.bias`)], {
      attrs: { axis: -1, epsilon: LAYER_NORM_EPS },
      floatAttrs: ['epsilon'],
      outputs,
    });

  const l2normalize = (scope: string, x: string, outputs?: string[]): string => {
    const n = b.one(scope, 'ReduceL2', [x], { attrs: { axes: [-1], keepdims: 1 } });
    const m = b.one(scope, 'Max', [n, b.f32('l2norm_eps', [1e-12], [])]);
    return b.one(scope, 'Div', [x, m], { outputs });
  };

  // ---- embeddings and positions
  const ids = 'input_ids';
  const mask = 'attention_mask';
  const padId = b.i64('pad_token_id', [PAD_ID], []);
  const one64 = b.i64('one_i64', [1], []);
  let s = '/embeddings';
  const notPad = b.one(s, 'Not', [b.one(s, 'Equal', [ids, padId])]);
  const notPadI = b.one(s, 'Cast', [notPad], { attrs: { to: OnnxType.int64 } });
  const cum = b.one(s, 'CumSum', [notPadI, one64]);
  const positions = b.one(s, 'Add', [b.one(s, 'Mul', [cum, notPadI]), padId]);
  const words = embedding('/embeddings/word_embeddings', 'embeddings.word_embeddings.weight', ids);
  const pos = embedding('/embeddings/position_embeddings', 'embeddings.position_embeddings.weight', positions);
  const withType = b.one(s, 'Add', [words, fp32('embeddings.token_type_embeddings.weight')]);
  let x = layerNorm('/embeddings/LayerNorm', b.one(s, 'Add', [withType, pos]), 'embeddings.LayerNorm');

  // ---- attention masks (computed once)
  s = '/mask';
  let maskAdd = '';
  let maskI32 = '';
  let noPadding = '';
  if (spec.attention === 'unfused') {
    const mf = b.one(s, 'Cast', [mask], { attrs: { to: OnnxType.float } });
    const inv = b.one(s, 'Sub', [b.f32('one_f32', [1], []), mf]);
    const add = b.one(s, 'Mul', [inv, b.f32('float_min', [FLOAT_MIN], [])]);
    maskAdd = b.one(s, 'Unsqueeze', [add, b.i64('axes_1_2', [1, 2])]); // [B,1,1,L]
  } else {
    maskI32 = b.one(s, 'Cast', [mask], { attrs: { to: OnnxType.int32 } });
    const minMask = b.one(s, 'ReduceMin', [mask], { attrs: { keepdims: 0 } });
    noPadding = b.one(s, 'Equal', [minMask, one64]);
  }
  const sqrt2 = b.f32('sqrt2', [Math.SQRT2], []);
  const oneF = b.f32('one_f32', [1], []);
  const halfF = b.f32('half_f32', [0.5], []);

  const attention = (scope: string, q: string, k: string, v: string): string => {
    if (spec.attention === 'fused') {
      const hidden: ValueSpec = { name: '', type: OnnxType.float, shape: ['batch_size', 'sequence_length', H] };
      const thenOut = `${scope}/MultiHeadAttention_output_0`;
      const elseOut = `${scope}/MultiHeadAttention_masked_output_0`;
      return b.one(scope, 'If', [noPadding], {
        graphs: {
          then_branch: {
            name: `${scope}/no_padding`,
            nodes: [
              {
                op: 'MultiHeadAttention',
                domain: 'com.microsoft',
                name: `${scope}/MultiHeadAttention`,
                inputs: [q, k, v],
                outputs: [thenOut],
                attrs: { num_heads: N },
              },
            ],
            outputs: [{ ...hidden, name: thenOut }],
          },
          else_branch: {
            name: `${scope}/padded`,
            nodes: [
              {
                op: 'MultiHeadAttention',
                domain: 'com.microsoft',
                name: `${scope}/MultiHeadAttention_masked`,
                inputs: [q, k, v, '', maskI32],
                outputs: [elseOut],
                attrs: { num_heads: N },
              },
            ],
            outputs: [{ ...hidden, name: elseOut }],
          },
        },
      });
    }
    const shape4 = b.i64('shape_b_l_heads_headdim', [0, 0, N, D]);
    const shape3 = b.i64('shape_b_l_hidden', [0, 0, H]);
    const scale = b.f32('attention_scale', [1 / Math.sqrt(D)], []);
    const heads = (t: string, perm: number[]) =>
      b.one(scope, 'Transpose', [b.one(scope, 'Reshape', [t, shape4])], { attrs: { perm } });
    const qh = heads(q, [0, 2, 1, 3]); // [B,N,L,D]
    const kh = heads(k, [0, 2, 3, 1]); // [B,N,D,L]
    const vh = heads(v, [0, 2, 1, 3]); // [B,N,L,D]
    const scores = b.one(scope, 'Mul', [b.one(scope, 'MatMul', [qh, kh]), scale]);
    const probs = b.one(scope, 'Softmax', [b.one(scope, 'Add', [scores, maskAdd])], { attrs: { axis: -1 } });
    const ctx = b.one(scope, 'Transpose', [b.one(scope, 'MatMul', [probs, vh])], { attrs: { perm: [0, 2, 1, 3] } });
    return b.one(scope, 'Reshape', [ctx, shape3]);
  };

  // ---- encoder layers
  const last = c.layers - 1;
  for (let i = 0; i < c.layers; i++) {
    const p = layerPrefix(i);
    const sc = `/encoder/layer.${i}`;
    const q = linear(`${sc}/attention/self/query`, x, stored(`${p}.attention.self.query.weight`), fp32(`${p}.attention.self.query.bias`));
    const k = linear(`${sc}/attention/self/key`, x, stored(`${p}.attention.self.key.weight`), fp32(`${p}.attention.self.key.bias`));
    const v = linear(`${sc}/attention/self/value`, x, stored(`${p}.attention.self.value.weight`), fp32(`${p}.attention.self.value.bias`));
    const ctx = attention(`${sc}/attention/self`, q, k, v);
    const ao = linear(`${sc}/attention/output/dense`, ctx, stored(`${p}.attention.output.dense.weight`), fp32(`${p}.attention.output.dense.bias`));
    const x1 = layerNorm(`${sc}/attention/output/LayerNorm`, b.one(`${sc}/attention/output`, 'Add', [ao, x]), `${p}.attention.output.LayerNorm`);
    const h = linear(`${sc}/intermediate/dense`, x1, stored(`${p}.intermediate.dense.weight`), fp32(`${p}.intermediate.dense.bias`));
    const ga = `${sc}/intermediate/intermediate_act_fn`;
    const erf = b.one(ga, 'Erf', [b.one(ga, 'Div', [h, sqrt2])]);
    const gelu = b.one(ga, 'Mul', [b.one(ga, 'Mul', [h, b.one(ga, 'Add', [erf, oneF])]), halfF]);
    const o = linear(`${sc}/output/dense`, gelu, stored(`${p}.output.dense.weight`), fp32(`${p}.output.dense.bias`));
    const outName = i === last && spec.variant === 'backbone' ? ['last_hidden_state'] : undefined;
    x = layerNorm(`${sc}/output/LayerNorm`, b.one(`${sc}/output`, 'Add', [o, x1]), `${p}.output.LayerNorm`, outName);
  }

  let outputs: ValueSpec[];
  if (spec.variant === 'backbone') {
    outputs = [{ name: 'last_hidden_state', type: OnnxType.float, shape: ['batch_size', 'sequence_length', H] }];
  } else {
    // Heads in torch layout [out, in] (fp16-rounded values); the MatMul operands are their transposes.
    const headWeight = (name: string, out: number): FloatTensor => ({
      name: `${name}.T`,
      dims: [H, out],
      chunks: () => [transpose(weights.get(name), out, H)],
    });
    const headBias = (name: string) => b.init(fp32Source(stored(name)));
    const cls = b.one('/dense', 'Gather', [x, b.i64('index_0', [0], [])], { attrs: { axis: 1 } });
    l2normalize('/dense', cls, ['dense_embeddings']);
    const sw = linear('/sparse_linear', x, headWeight('sparse_linear.weight', 1), headBias('sparse_linear.bias'));
    b.one('/sparse', 'Relu', [sw], { outputs: ['sparse_weights'] });
    const from1 = [b.i64('slice_start_1', [1]), b.i64('slice_end_max', [INT64_MAX]), b.i64('slice_axis_1', [1])];
    const tokens = b.one('/colbert', 'Slice', [x, ...from1]);
    const cw = linear('/colbert_linear', tokens, headWeight('colbert_linear.weight', H), headBias('colbert_linear.bias'));
    const m1 = b.one('/colbert', 'Slice', [mask, ...from1]);
    const m1f = b.one('/colbert', 'Unsqueeze', [b.one('/colbert', 'Cast', [m1], { attrs: { to: OnnxType.float } }), b.i64('axes_2', [2])]);
    l2normalize('/colbert', b.one('/colbert', 'Mul', [cw, m1f]), ['colbert_vectors']);
    outputs = [
      { name: 'dense_embeddings', type: OnnxType.float, shape: ['batch_size', H] },
      { name: 'sparse_weights', type: OnnxType.float, shape: ['batch_size', 'sequence_length', 1] },
      { name: 'colbert_vectors', type: OnnxType.float, shape: ['batch_size', 'sequence_length_minus_1', H] },
    ];
  }

  return {
    name: spec.variant === 'backbone' ? 'bge_m3_backbone' : 'bge_m3_three_output',
    inputs: [
      { name: 'input_ids', type: OnnxType.int64, shape: ['batch_size', 'sequence_length'] },
      { name: 'attention_mask', type: OnnxType.int64, shape: ['batch_size', 'sequence_length'] },
    ],
    outputs,
    nodes: b.nodes,
    initializers: b.inits,
    opset: 17,
    extraOpsets: spec.attention === 'fused' ? { 'com.microsoft': 1 } : undefined,
  };
}
