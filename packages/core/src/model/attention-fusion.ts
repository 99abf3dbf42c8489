/**
 * Load-time attention fusion: rewrites the exporter's unfused self-attention of each encoder layer
 * into onnxruntime's `com.microsoft.MultiHeadAttention`.
 *
 * Why: torch/optimum exports spell attention out as MatMul → scale → +mask → Softmax → MatMul,
 * which materialises heads × L × L floats per layer (4.3 GB at 8192 tokens, twice over during the
 * Add/Softmax), and onnxruntime does not fuse this pattern itself. Its CPU MultiHeadAttention has
 * a flash-attention kernel whose memory is O(L), but only when no mask is given
 * (contrib_ops/cpu/bert/multihead_attention.cc). So each layer becomes an `If`:
 *   - attention_mask all ones (one text, or texts of equal length): mask-free MHA (flash kernel);
 *   - otherwise: MHA with `key_padding_mask` (exact; it materialises scores, as the export did).
 * The encoder runs long texts alone, so a long input always takes the first branch.
 *
 * No library rewrites ONNX graphs in JS (onnxruntime's fusion tooling is Python), hence this
 * module. It matches the pattern by graph structure, not by node names, accepts the variants
 * exporters produce (scale by Mul or Div after the QK MatMul, or √scale on both Q and K as torch's
 * SDPA export does; K transposed in one or two steps; the mask Add in either order), and leaves the
 * model untouched unless every attention block matches.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Model = onnxProto.onnx.ModelProto;
type Node = onnxProto.onnx.INodeProto;
type Tensor = onnxProto.onnx.ITensorProto;

/** The result of a successful fusion. */
export interface FusedModel {
  /** Serialised model bytes (external-data references unchanged). */
  bytes: Uint8Array;
  /** Attention blocks rewritten (= encoder layers). */
  layers: number;
}

/** One matched attention block. */
interface AttentionMatch {
  q: string;
  k: string;
  v: string;
  /** The block's output ([B, L, hidden], the final Reshape's output). */
  out: string;
  /** The final Reshape node, whose place the fused node takes. */
  last: Node;
  heads: number;
  scale: number;
}

class GraphIndex {
  readonly producer = new Map<string, Node>();
  readonly consumers = new Map<string, Node[]>();
  readonly initializers = new Map<string, Tensor>();
  readonly graphOutputs: Set<string>;

  constructor(readonly graph: onnxProto.onnx.IGraphProto) {
    for (const n of graph.node ?? []) {
      for (const o of n.output ?? []) this.producer.set(o, n);
      for (const i of n.input ?? []) {
        if (!i) continue;
        const list = this.consumers.get(i) ?? [];
        list.push(n);
        this.consumers.set(i, list);
      }
    }
    for (const t of graph.initializer ?? []) if (t.name) this.initializers.set(t.name, t);
    this.graphOutputs = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  }

  /** The node producing `name` if it has operator `op` (default domain). */
  made(name: string | undefined, op: string): Node | undefined {
    const n = name ? this.producer.get(name) : undefined;
    return n && n.opType === op && !n.domain ? n : undefined;
  }

  /** True when `name` feeds exactly one node and is not a graph output (safe to fold away). */
  onlyFeedsOne(name: string): boolean {
    return (this.consumers.get(name)?.length ?? 0) === 1 && !this.graphOutputs.has(name);
  }

  /** The numeric values of a constant (initializer or Constant node), if it is one. */
  constant(name: string | undefined): number[] | undefined {
    if (!name) return undefined;
    const init = this.initializers.get(name);
    if (init) return tensorValues(init);
    const c = this.made(name, 'Constant');
    if (!c) return undefined;
    for (const a of c.attribute ?? []) {
      if (a.name === 'value' && a.t) return tensorValues(a.t);
      if (a.name === 'value_float' && a.f !== undefined && a.f !== null) return [a.f];
      if (a.name === 'value_int' && a.i !== undefined && a.i !== null) return [Number(a.i)];
      if (a.name === 'value_floats' && a.floats) return [...a.floats];
      if (a.name === 'value_ints' && a.ints) return a.ints.map(Number);
    }
    return undefined;
  }

  scalar(name: string | undefined): number | undefined {
    const v = this.constant(name);
    return v && v.length === 1 ? v[0] : undefined;
  }
}

/** Values of a small tensor (float32/float64/int32/int64), or undefined for other or external data. */
function tensorValues(t: Tensor): number[] | undefined {
  if (t.dataLocation === 1 || (t.externalData?.length ?? 0) > 0) return undefined;
  const T = onnx.TensorProto.DataType;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  const view = raw ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength) : undefined;
  switch (t.dataType) {
    case T.FLOAT:
      return view ? Array.from({ length: view.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true)) : [...(t.floatData ?? [])];
    case T.DOUBLE:
      return view ? Array.from({ length: view.byteLength / 8 }, (_, i) => view.getFloat64(i * 8, true)) : [...(t.doubleData ?? [])];
    case T.INT32:
      return view ? Array.from({ length: view.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true)) : [...(t.int32Data ?? [])];
    case T.INT64:
      return view
        ? Array.from({ length: view.byteLength / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)))
        : (t.int64Data ?? []).map(Number);
    default:
      return undefined;
  }
}

function intAttr(n: Node, name: string): number | undefined {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.i !== undefined && a?.i !== null ? Number(a.i) : undefined;
}

function permOf(n: Node): string {
  return (n.attribute?.find((x) => x.name === 'perm')?.ints ?? []).map(Number).join(',');
}

/** How a Reshape splits hidden into heads: [B, L, N, D], either of N and D possibly -1. */
interface HeadShape {
  heads: number | undefined;
  headDim: number | undefined;
}

/**
 * `[B, L, hidden] → Reshape [B, L, N, D] → Transpose(perm)`: returns the 3-D input and what the
 * shape says of N and D, or undefined if `name` is not made that way.
 */
function splitHeads(g: GraphIndex, name: string | undefined, perm: string): ({ input: string } & HeadShape) | undefined {
  const t = g.made(name, 'Transpose');
  if (!t || permOf(t) !== perm) return undefined;
  const r = g.made(t.input?.[0], 'Reshape');
  if (!r || !g.onlyFeedsOne(t.input![0])) return undefined;
  return { input: r.input![0], ...headShape(g, r.input![1]) };
}

/** N and D from a [B, L, N, D] shape: a constant, or a Concat of four parts (torch writes N as -1). */
function headShape(g: GraphIndex, shape: string | undefined): HeadShape {
  const positive = (x: number | undefined) => (x !== undefined && x > 0 ? x : undefined);
  const direct = g.constant(shape);
  if (direct?.length === 4) return { heads: positive(direct[2]), headDim: positive(direct[3]) };
  const concat = g.made(shape, 'Concat');
  if (concat?.input?.length === 4) return { heads: positive(g.scalar(concat.input[2])), headDim: positive(g.scalar(concat.input[3])) };
  return { heads: undefined, headDim: undefined };
}

/**
 * The width of a projection output `Add(bias, …)` / `MatMul(…, W)`, from the bias or weight's
 * dims (torch may route a shared initializer through Identity first).
 */
function widthOf(g: GraphIndex, name: string, depth = 0): number | undefined {
  const init = g.initializers.get(name);
  if (init) return init.dims?.length === 1 ? Number(init.dims[0]) : undefined;
  const n = g.producer.get(name);
  if (!n || n.domain || depth > 2) return undefined;
  if (n.opType === 'Identity') return widthOf(g, n.input?.[0] ?? '', depth + 1);
  if (n.opType === 'Add') {
    for (const i of n.input ?? []) {
      const w = widthOf(g, i, depth + 1);
      if (w) return w;
    }
  }
  if (n.opType === 'MatMul') {
    const dims = g.initializers.get(n.input?.[1] ?? '')?.dims;
    return dims?.length === 2 ? Number(dims[1]) : undefined;
  }
  return undefined;
}

/** A Mul by a constant scalar: [other input, factor]. */
function scaledBy(g: GraphIndex, name: string | undefined): [string, number] | undefined {
  const m = g.made(name, 'Mul');
  if (!m || m.input?.length !== 2) return undefined;
  for (const side of [0, 1]) {
    const f = g.scalar(m.input[side]);
    if (f !== undefined) return [m.input[1 - side], f];
  }
  return undefined;
}

/** Matches the attention block ending in `softmax`, or returns undefined. */
function matchAttention(g: GraphIndex, softmax: Node, fallbackHeads: number | undefined): AttentionMatch | undefined {
  const axis = intAttr(softmax, 'axis') ?? -1;
  if (axis !== -1 && axis !== 3) return undefined;
  const probs = softmax.output![0];

  // probs · Vh → Transpose(0,2,1,3) → Reshape [B, L, hidden]
  const users = g.consumers.get(probs) ?? [];
  if (users.length !== 1 || users[0].opType !== 'MatMul' || users[0].input?.[0] !== probs || g.graphOutputs.has(probs)) return undefined;
  const ctx = users[0];
  const vh = splitHeads(g, ctx.input![1], '0,2,1,3');
  if (!vh || !g.onlyFeedsOne(ctx.input![1]) || !g.onlyFeedsOne(ctx.output![0])) return undefined;
  const merge = g.consumers.get(ctx.output![0])![0];
  if (merge.opType !== 'Transpose' || permOf(merge) !== '0,2,1,3' || !g.onlyFeedsOne(merge.output![0])) return undefined;
  const last = g.consumers.get(merge.output![0])![0];
  if (last.opType !== 'Reshape') return undefined;

  // Softmax input: [+ mask] of [scale ·] (Qh · Kt). The additive mask is computed from
  // attention_mask, which the fused node reads directly, so it is dropped.
  const scores = softmax.input![0];
  if (!g.onlyFeedsOne(scores)) return undefined;
  const add = g.made(scores, 'Add');
  const qkv = add ? (matchScores(g, add.input![0]) ?? matchScores(g, add.input![1])) : matchScores(g, scores);
  if (!qkv) return undefined;
  const headDim = qkv.q.headDim ?? qkv.k.headDim ?? vh.headDim;
  const width = widthOf(g, qkv.q.input);
  const fromDims = headDim && width && width % headDim === 0 ? width / headDim : undefined;
  const heads = qkv.q.heads ?? qkv.k.heads ?? vh.heads ?? fromDims ?? fallbackHeads;
  if (!heads) return undefined;
  // Unscaled exports (scale 1) must say so: MultiHeadAttention's default scale is 1/√D.
  return { q: qkv.q.input, k: qkv.k.input, v: vh.input, out: last.output![0], last, heads, scale: qkv.scale };
}

type Split = { input: string } & HeadShape;

/** `[scale ·] (Qh · Kt)` → the 3-D Q and K and the scale, or undefined. */
function matchScores(g: GraphIndex, name: string): { q: Split; k: Split; scale: number } | undefined {
  if (!g.onlyFeedsOne(name)) return undefined;
  let scores = name;
  let scale = 1;
  const mul = scaledBy(g, scores);
  const div = g.made(scores, 'Div');
  if (mul) {
    [scores, scale] = [mul[0], mul[1]];
  } else if (div) {
    const d = g.scalar(div.input![1]);
    if (d === undefined || d === 0) return undefined;
    [scores, scale] = [div.input![0], 1 / d];
  }
  if ((mul || div) && !g.onlyFeedsOne(scores)) return undefined;
  const qk = g.made(scores, 'MatMul');
  if (!qk) return undefined;

  // Qh and Kt, each optionally pre-scaled (√scale on both sides, as in SDPA exports).
  let [qh, kt] = qk.input as string[];
  const qPre = scaledBy(g, qh);
  if (qPre && g.onlyFeedsOne(qh)) [qh, scale] = [qPre[0], scale * qPre[1]];
  const kPre = scaledBy(g, kt);
  if (kPre && g.onlyFeedsOne(kt)) [kt, scale] = [kPre[0], scale * kPre[1]];
  if (!g.onlyFeedsOne(qh) || !g.onlyFeedsOne(kt)) return undefined;
  const q = splitHeads(g, qh, '0,2,1,3');
  let k = splitHeads(g, kt, '0,2,3,1');
  if (!k) {
    // Kᵀ in two steps: Transpose(0,1,3,2) of the heads split Transpose(0,2,1,3).
    const t = g.made(kt, 'Transpose');
    if (t && permOf(t) === '0,1,3,2' && g.onlyFeedsOne(t.input![0])) k = splitHeads(g, t.input![0], '0,2,1,3');
  }
  return q && k ? { q, k, scale } : undefined;
}

/** Keeps only nodes that contribute to the graph outputs (the unfused blocks and mask math go). */
function pruneDeadNodes(graph: onnxProto.onnx.IGraphProto): void {
  const nodes = graph.node ?? [];
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.output?.forEach((o) => producer.set(o, i)));
  const live = new Set<number>();
  const stack = (graph.output ?? []).map((o) => o.name ?? '');
  const seen = new Set<string>();
  const needs = (n: Node): string[] => {
    // Subgraphs (If branches) read outer-scope values by name.
    const inner: string[] = [];
    for (const a of n.attribute ?? []) {
      for (const sub of [a.g, ...(a.graphs ?? [])]) {
        for (const sn of sub?.node ?? []) inner.push(...(sn.input ?? []), ...needs(sn));
      }
    }
    return [...(n.input ?? []), ...inner];
  };
  while (stack.length) {
    const name = stack.pop() as string;
    if (!name || seen.has(name)) continue;
    seen.add(name);
    const i = producer.get(name);
    if (i === undefined || live.has(i)) continue;
    live.add(i);
    stack.push(...needs(nodes[i]));
  }
  graph.node = nodes.filter((_, i) => live.has(i));
  const produced = new Set(graph.node.flatMap((n) => n.output ?? []));
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => produced.has(v.name ?? ''));
  // Constants only the removed blocks used (onnxruntime would warn about each one at load).
  const used = new Set([...graph.node.flatMap(needs), ...[...(graph.output ?? []), ...(graph.input ?? [])].map((o) => o.name ?? '')]);
  graph.initializer = (graph.initializer ?? []).filter((t) => used.has(t.name ?? ''));
}

function floatValue(name: string, elemType: number, shape: string[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        shape: onnx.TensorShapeProto.create({ dim: shape.map((d) => onnx.TensorShapeProto.Dimension.create({ dimParam: d })) }),
      }),
    }),
  });
}

function mhaNode(name: string, inputs: string[], output: string, m: AttentionMatch) {
  const A = onnx.AttributeProto.AttributeType;
  const attribute = [
    onnx.AttributeProto.create({ name: 'num_heads', type: A.INT, i: m.heads }),
    onnx.AttributeProto.create({ name: 'scale', type: A.FLOAT, f: m.scale }),
  ];
  return onnx.NodeProto.create({ name, opType: 'MultiHeadAttention', domain: 'com.microsoft', input: inputs, output: [output], attribute });
}

/** Options of {@link fuseAttention}. */
export interface FuseOptions {
  /** Heads per layer (config.json's `num_attention_heads`), used when the graph's shapes do not say. */
  numHeads?: number;
  /**
   * The file name of `modelBytes` inside the folder its session will resolve external data from.
   * Given, weights stored inside the model become external-data references to their bytes in that
   * file, so the rewritten model is small and onnxruntime reads the weights from the original file
   * instead of from a re-encoded copy (the int8 model is 570 MB; this saves its copy and seconds).
   */
  selfFileName?: string;
}

/** Replaces large in-model initializers by references to their own bytes in the model file. */
function referenceWeightsInPlace(graph: onnxProto.onnx.IGraphProto, modelBytes: Uint8Array, fileName: string): void {
  for (const t of graph.initializer ?? []) {
    const raw = t.rawData;
    // Only views into modelBytes have a known file offset (protobufjs slices Buffers without copying).
    if (!raw || raw.length < 4096 || raw.buffer !== modelBytes.buffer) continue;
    const offset = raw.byteOffset - modelBytes.byteOffset;
    if (offset < 0 || offset + raw.length > modelBytes.length) continue;
    t.rawData = new Uint8Array(0);
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.externalData = [
      onnx.StringStringEntryProto.create({ key: 'location', value: fileName }),
      onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
      onnx.StringStringEntryProto.create({ key: 'length', value: String(raw.length) }),
    ];
  }
}

/**
 * Rewrites every self-attention block of an exported encoder graph into fused attention (see the
 * module comment). Returns undefined, leaving the caller to use the model as is, when the graph has
 * no `attention_mask` input, when any Softmax-based block does not match, or when it is already
 * fused. `numHeads` (config.json's `num_attention_heads`) is used when the graph's shapes do not say.
 */
export function fuseAttention(modelBytes: Uint8Array, options: FuseOptions = {}): FusedModel | undefined {
  const model: Model = onnx.ModelProto.decode(modelBytes);
  const graph = model.graph;
  if (!graph) return undefined;
  const maskInput = graph.input?.find((i) => i.name === 'attention_mask');
  if (!maskInput) return undefined;
  if (graph.node?.some((n) => n.domain === 'com.microsoft' && /Attention/.test(n.opType ?? ''))) return undefined;
  const g = new GraphIndex(graph);
  const softmaxes = (graph.node ?? []).filter((n) => n.opType === 'Softmax' && !n.domain);
  if (softmaxes.length === 0) return undefined;
  const matches: AttentionMatch[] = [];
  for (const s of softmaxes) {
    const m = matchAttention(g, s, options.numHeads);
    if (!m) return undefined; // an unrecognised block: do not half-fuse a graph
    matches.push(m);
  }

  const hiddenType = onnx.TensorProto.DataType.FLOAT;
  const prefix = 'bgem3_fused_attention';
  const maskI32 = `${prefix}/key_padding_mask`;
  const maskMin = `${prefix}/mask_min`;
  const one = `${prefix}/one`;
  const noPadding = `${prefix}/no_padding`;
  const A = onnx.AttributeProto.AttributeType;
  const maskNodes = [
    onnx.NodeProto.create({
      name: `${prefix}/Cast`,
      opType: 'Cast',
      input: ['attention_mask'],
      output: [maskI32],
      attribute: [onnx.AttributeProto.create({ name: 'to', type: A.INT, i: onnx.TensorProto.DataType.INT32 })],
    }),
    onnx.NodeProto.create({
      name: `${prefix}/ReduceMin`,
      opType: 'ReduceMin',
      input: [maskI32],
      output: [maskMin],
      attribute: [onnx.AttributeProto.create({ name: 'keepdims', type: A.INT, i: 0 })],
    }),
    onnx.NodeProto.create({
      name: `${prefix}/One`,
      opType: 'Constant',
      output: [one],
      attribute: [
        onnx.AttributeProto.create({
          name: 'value',
          type: A.TENSOR,
          t: onnx.TensorProto.create({ dataType: onnx.TensorProto.DataType.INT32, dims: [], int32Data: [1] }),
        }),
      ],
    }),
    onnx.NodeProto.create({ name: `${prefix}/Equal`, opType: 'Equal', input: [maskMin, one], output: [noPadding] }),
  ];

  const replaced = new Map<Node, Node>();
  matches.forEach((m, i) => {
    const scope = `${prefix}/layer_${i}`;
    const thenOut = `${scope}/no_padding_output`;
    const elseOut = `${scope}/padded_output`;
    const shape = ['batch', 'sequence', 'hidden'];
    const branch = (name: string, node: Node, out: string) =>
      onnx.GraphProto.create({ name, node: [node], output: [floatValue(out, hiddenType, shape)] });
    replaced.set(
      m.last,
      onnx.NodeProto.create({
        name: `${scope}/If`,
        opType: 'If',
        input: [noPadding],
        output: [m.out],
        attribute: [
          onnx.AttributeProto.create({
            name: 'then_branch',
            type: A.GRAPH,
            g: branch(`${scope}/then`, mhaNode(`${scope}/MultiHeadAttention`, [m.q, m.k, m.v], thenOut, m), thenOut),
          }),
          onnx.AttributeProto.create({
            name: 'else_branch',
            type: A.GRAPH,
            g: branch(`${scope}/else`, mhaNode(`${scope}/MultiHeadAttention_masked`, [m.q, m.k, m.v, '', maskI32], elseOut, m), elseOut),
          }),
        ],
      }),
    );
  });
  graph.node = [...maskNodes, ...(graph.node ?? []).map((n) => replaced.get(n) ?? n)];
  pruneDeadNodes(graph);
  const ops = model.opsetImport ?? [];
  if (!ops.some((o) => o.domain === 'com.microsoft')) ops.push(onnx.OperatorSetIdProto.create({ domain: 'com.microsoft', version: 1 }));
  model.opsetImport = ops;
  if (options.selfFileName) referenceWeightsInPlace(graph, modelBytes, options.selfFileName);
  return { bytes: onnx.ModelProto.encode(model).finish(), layers: matches.length };
}
