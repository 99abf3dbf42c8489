/**
 * Streams an ONNX model to disk, with or without an external-data file.
 *
 * Why not `buildOnnxModel` from core: that builder serialises the whole model in one buffer,
 * and a full-size fp32 BGE-M3 is 2.27 GB (over protobuf's 2 GB limit and too big to hold). Here:
 * - with `externalData`, every initializer of at least `externalThreshold` bytes is streamed to
 *   the sidecar file (offsets aligned to 4096) and referenced by `location`/`offset`/`length`
 *   entries, exactly as `onnx.save_model(..., save_as_external_data=True)` lays them out;
 * - without it (the 570 MB int8 model), big initializers are streamed into the .onnx file itself:
 *   a protobuf message may be written as several concatenated pieces (repeated fields append,
 *   embedded messages merge), so the skeleton graph is encoded with onnx-proto and each big
 *   tensor is appended as one more `GraphProto.initializer` field whose `raw_data` is written
 *   chunk by chunk.
 * It also supports graph-valued attributes (the `If` node of the fused-attention variant), which
 * the core builder does not.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import type { NodeSpec, OnnxTypeId, ValueSpec } from '../../packages/core/src/inference/onnx-graph.ts';
import { bytesOf } from '../../packages/core/src/inference/onnx-graph.ts';

// onnx-proto is a dependency of packages/core: resolve it from there (bench/ has no package.json).
const requireFromCore = createRequire(new URL('../../packages/core/package.json', import.meta.url));
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { onnx } = requireFromCore('onnx-proto') as typeof import('onnx-proto');
export { onnx };

/** A tensor whose bytes are produced on demand, in order. */
export interface TensorSource {
  name: string;
  type: OnnxTypeId;
  dims: number[];
  byteLength: number;
  /** Calls `write` with consecutive pieces of the little-endian raw data (byteLength in total). */
  emit(write: (bytes: Uint8Array) => void): void;
}

export function constTensor(
  name: string,
  type: OnnxTypeId,
  dims: number[],
  data: Float32Array | Int32Array | Int8Array | Uint8Array | BigInt64Array | Uint16Array,
): TensorSource {
  const bytes = bytesOf(data);
  return { name, type, dims, byteLength: bytes.byteLength, emit: (w) => w(bytes) };
}

/** A node; `graphs` holds graph-valued attributes (e.g. `then_branch` / `else_branch` of `If`). */
export interface GraphNode extends NodeSpec {
  graphs?: Record<string, SubGraph>;
}

/** A subgraph: no inputs of its own, reads outer-scope values by name. */
export interface SubGraph {
  name: string;
  nodes: GraphNode[];
  outputs: ValueSpec[];
}

export interface ModelGraph {
  name: string;
  inputs: ValueSpec[];
  outputs: ValueSpec[];
  nodes: GraphNode[];
  initializers: TensorSource[];
  opset: number;
  extraOpsets?: Record<string, number>;
  /** Stored as model metadata_props (e.g. the generator's config). */
  metadata?: Record<string, string>;
}

export interface WriteOptions {
  /** File name (relative to the model) of the external-data sidecar; omit for a single file. */
  externalData?: string;
  /** Initializers of at least this many bytes go to the sidecar / are streamed (default 1024). */
  externalThreshold?: number;
  /** Offset alignment in the sidecar (default 4096). */
  align?: number;
}

export interface WriteResult {
  modelBytes: number;
  dataBytes: number;
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

function nodeProto(n: GraphNode, i: number, scope: string): import('onnx-proto').onnx.NodeProto {
  const attrs = Object.entries(n.attrs ?? {}).map(([k, v]) => attribute(k, v, n.floatAttrs?.includes(k) ?? false));
  for (const [k, g] of Object.entries(n.graphs ?? {})) {
    attrs.push(
      onnx.AttributeProto.create({ name: k, type: onnx.AttributeProto.AttributeType.GRAPH, g: subGraphProto(g) }),
    );
  }
  return onnx.NodeProto.create({
    name: n.name ?? `${scope}${n.op}_${i}`,
    opType: n.op,
    domain: n.domain ?? '',
    input: n.inputs,
    output: n.outputs,
    attribute: attrs,
  });
}

function subGraphProto(g: SubGraph) {
  return onnx.GraphProto.create({
    name: g.name,
    node: g.nodes.map((n, i) => nodeProto(n, i, `${g.name}/`)),
    output: g.outputs.map(valueInfo),
  });
}

function collect(t: TensorSource): Uint8Array {
  const out = new Uint8Array(t.byteLength);
  let off = 0;
  t.emit((b) => {
    out.set(b, off);
    off += b.byteLength;
  });
  if (off !== t.byteLength) throw new Error(`${t.name}: emitted ${off} bytes, expected ${t.byteLength}`);
  return out;
}

function varint(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return Uint8Array.from(bytes);
}

/** Buffered sequential writer over a file descriptor. */
class FileSink {
  private readonly fd: number;
  private readonly buf = Buffer.allocUnsafe(1 << 22);
  private used = 0;
  written = 0;
  constructor(path: string) {
    this.fd = openSync(path, 'w');
  }
  write(b: Uint8Array): void {
    this.written += b.byteLength;
    if (b.byteLength >= this.buf.length) {
      this.flush();
      let off = 0;
      while (off < b.byteLength) off += writeSync(this.fd, b, off, b.byteLength - off);
      return;
    }
    if (this.used + b.byteLength > this.buf.length) this.flush();
    this.buf.set(b, this.used);
    this.used += b.byteLength;
  }
  zeros(n: number): void {
    if (n > 0) this.write(new Uint8Array(n));
  }
  flush(): void {
    let off = 0;
    while (off < this.used) off += writeSync(this.fd, this.buf, off, this.used - off);
    this.used = 0;
  }
  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

/** Writes `graph` to `path` (and its sidecar next to it when `options.externalData` is set). */
export function writeOnnxModel(path: string, graph: ModelGraph, options: WriteOptions = {}): WriteResult {
  const threshold = options.externalThreshold ?? 1024;
  const align = options.align ?? 4096;
  const small: TensorSource[] = [];
  const big: TensorSource[] = [];
  for (const t of graph.initializers) (t.byteLength >= threshold ? big : small).push(t);

  const smallProtos = small.map((t) =>
    onnx.TensorProto.create({ name: t.name, dataType: t.type, dims: t.dims, rawData: collect(t) }),
  );
  const external: import('onnx-proto').onnx.TensorProto[] = [];
  let dataBytes = 0;
  if (options.externalData && big.length) {
    if (basename(options.externalData) !== options.externalData) throw new Error('externalData must be a file name');
    const dataPath = path.replace(/[^/]*$/, options.externalData);
    const sink = new FileSink(dataPath);
    for (const t of big) {
      const offset = Math.ceil(sink.written / align) * align;
      sink.zeros(offset - sink.written);
      const before = sink.written;
      t.emit((b) => sink.write(b));
      const length = sink.written - before;
      if (length !== t.byteLength) throw new Error(`${t.name}: emitted ${length} bytes, expected ${t.byteLength}`);
      external.push(
        onnx.TensorProto.create({
          name: t.name,
          dataType: t.type,
          dims: t.dims,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            onnx.StringStringEntryProto.create({ key: 'location', value: options.externalData }),
            onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
            onnx.StringStringEntryProto.create({ key: 'length', value: String(length) }),
          ],
        }),
      );
    }
    sink.close();
    dataBytes = sink.written;
  }
  const streamed = options.externalData ? [] : big;

  const graphProto = onnx.GraphProto.create({
    name: graph.name,
    input: graph.inputs.map(valueInfo),
    output: graph.outputs.map(valueInfo),
    initializer: [...smallProtos, ...external],
    node: graph.nodes.map((n, i) => nodeProto(n, i, '')),
  });
  const opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: graph.opset })];
  for (const [domain, version] of Object.entries(graph.extraOpsets ?? {})) {
    opsetImport.push(onnx.OperatorSetIdProto.create({ domain, version }));
  }
  const header = onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'bgem3-js bench/model-gen',
      producerVersion: '1',
      opsetImport,
      metadataProps: Object.entries(graph.metadata ?? {}).map(([key, value]) =>
        onnx.StringStringEntryProto.create({ key, value }),
      ),
    }),
  ).finish();
  const graphSkeleton = onnx.GraphProto.encode(graphProto).finish();

  // GraphProto.initializer = field 5; TensorProto.raw_data = field 9; ModelProto.graph = field 7.
  const pieces = streamed.map((t) => {
    const head = onnx.TensorProto.encode(
      onnx.TensorProto.create({ name: t.name, dataType: t.type, dims: t.dims }),
    ).finish();
    const rawHead = Uint8Array.of(0x4a, ...varint(t.byteLength));
    const tensorLen = head.byteLength + rawHead.byteLength + t.byteLength;
    const fieldHead = Uint8Array.of(0x2a, ...varint(tensorLen));
    return { t, head, rawHead, fieldHead, total: fieldHead.byteLength + tensorLen };
  });
  const graphLen = graphSkeleton.byteLength + pieces.reduce((a, p) => a + p.total, 0);

  const sink = new FileSink(path);
  sink.write(header);
  sink.write(Uint8Array.of(0x3a, ...varint(graphLen)));
  sink.write(graphSkeleton);
  for (const p of pieces) {
    sink.write(p.fieldHead);
    sink.write(p.head);
    sink.write(p.rawHead);
    const before = sink.written;
    p.t.emit((b) => sink.write(b));
    if (sink.written - before !== p.t.byteLength) throw new Error(`${p.t.name}: wrong byte count`);
  }
  sink.close();
  return { modelBytes: sink.written, dataBytes };
}
