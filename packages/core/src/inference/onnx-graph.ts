/**
 * A small builder for ONNX graphs made in memory (serialised with the `onnx-proto` schema).
 *
 * Why: the M3 heads and the ColBERT MaxSim are matrix multiplies that must run at BLAS speed,
 * and onnxruntime is the fast multithreaded matmul this package already ships. Building a
 * two-node graph and running it in its own session costs microseconds of setup and gives
 * onnxruntime's MatMul kernels to the rest of the code without another native dependency.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** ONNX element types used here (values of onnx.TensorProto.DataType). */
export const OnnxType = {
  float: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  float16: 10,
} as const;
export type OnnxTypeId = (typeof OnnxType)[keyof typeof OnnxType];

/** A graph input or output: a name, an element type and a shape (strings are symbolic dims). */
export interface ValueSpec {
  name: string;
  type: OnnxTypeId;
  shape: Array<number | string>;
}

/** A constant tensor stored in the graph. `data` holds the raw little-endian values. */
export interface InitializerSpec {
  name: string;
  type: OnnxTypeId;
  dims: number[];
  data: Float32Array | Int32Array | Int8Array | Uint8Array | BigInt64Array | Uint16Array;
}

/** One operator node. Attribute values: number (int or float, see `floatAttrs`), number[], string. */
export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attrs?: Record<string, number | number[] | string>;
  /** Names of numeric attributes to store as FLOAT rather than INT. */
  floatAttrs?: string[];
}

export interface GraphSpec {
  name: string;
  inputs: ValueSpec[];
  outputs: ValueSpec[];
  nodes: NodeSpec[];
  initializers?: InitializerSpec[];
  /** Default-domain opset (default 17). */
  opset?: number;
  /** Extra opset imports, e.g. `{ 'com.microsoft': 1 }`. */
  extraOpsets?: Record<string, number>;
}

function valueInfo(v: ValueSpec) {
  return onnx.ValueInfoProto.create({
    name: v.name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: v.type,
        shape: onnx.TensorShapeProto.create({
          dim: v.shape.map((d) =>
            typeof d === 'number'
              ? onnx.TensorShapeProto.Dimension.create({ dimValue: d })
              : onnx.TensorShapeProto.Dimension.create({ dimParam: d }),
          ),
        }),
      }),
    }),
  });
}

function attribute(name: string, value: number | number[] | string, asFloat: boolean) {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') {
    return onnx.AttributeProto.create({ name, type: A.STRING, s: new TextEncoder().encode(value) });
  }
  if (Array.isArray(value)) {
    return asFloat
      ? onnx.AttributeProto.create({ name, type: A.FLOATS, floats: value })
      : onnx.AttributeProto.create({ name, type: A.INTS, ints: value });
  }
  return asFloat
    ? onnx.AttributeProto.create({ name, type: A.FLOAT, f: value })
    : onnx.AttributeProto.create({ name, type: A.INT, i: value });
}

/** Raw bytes of a typed array (a view, no copy). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Serialises a graph into ONNX model bytes ready for `InferenceSession.create(bytes)`. */
export function buildOnnxModel(spec: GraphSpec): Uint8Array {
  const graph = onnx.GraphProto.create({
    name: spec.name,
    input: spec.inputs.map(valueInfo),
    output: spec.outputs.map(valueInfo),
    initializer: (spec.initializers ?? []).map((t) =>
      onnx.TensorProto.create({ name: t.name, dataType: t.type, dims: t.dims, rawData: bytesOf(t.data) }),
    ),
    node: spec.nodes.map((n, i) =>
      onnx.NodeProto.create({
        name: n.name ?? `${n.op}_${i}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs ?? {}).map(([k, v]) => attribute(k, v, n.floatAttrs?.includes(k) ?? false)),
      }),
    ),
  });
  const opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: spec.opset ?? 17 })];
  for (const [domain, version] of Object.entries(spec.extraOpsets ?? {})) {
    opsetImport.push(onnx.OperatorSetIdProto.create({ domain, version }));
  }
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'bgem3-js',
    opsetImport,
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}
