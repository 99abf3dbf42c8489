/**
 * Facts read from an ONNX graph's structure before it runs, which onnxruntime's session metadata
 * does not give: how many rows the word-embedding table has, i.e. the largest token id + 1 the
 * model can look up. A tokenizer with more tokens than that would make onnxruntime fail (or worse)
 * on the first text that uses one, far from the file that is wrong.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** Ops that pass a table through unchanged in shape (a quantised table is dequantised first). */
const PASS_THROUGH = new Set(['Cast', 'DequantizeLinear', 'Identity']);

/**
 * Rows of the word-embedding table: the initializer that a `Gather` indexed by `input_ids` (or a
 * cast of it) reads, followed through casts and dequantisation. Undefined when the graph does not
 * say (unparsable bytes, or another structure).
 */
export function embeddingRows(modelBytes: Uint8Array): number | undefined {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(modelBytes);
  } catch {
    return undefined;
  }
  const graph = model.graph;
  if (!graph) return undefined;
  const initializers = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  const producer = new Map<string, onnxProto.onnx.INodeProto>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  const ids = new Set(['input_ids']);
  for (const n of graph.node ?? []) {
    if (n.opType === 'Cast' && ids.has(n.input?.[0] ?? '')) for (const o of n.output ?? []) ids.add(o);
  }
  for (const n of graph.node ?? []) {
    if (n.opType !== 'Gather' || n.domain || !ids.has(n.input?.[1] ?? '')) continue;
    let name = n.input?.[0] ?? '';
    for (let depth = 0; depth < 4; depth++) {
      const t = initializers.get(name);
      if (t) {
        const rows = Number(t.dims?.[0]);
        return (t.dims?.length ?? 0) === 2 && Number.isSafeInteger(rows) && rows > 0 ? rows : undefined;
      }
      const p = producer.get(name);
      if (!p || !PASS_THROUGH.has(p.opType ?? '')) break;
      name = p.input?.[0] ?? '';
    }
  }
  return undefined;
}
