// Load-time attention fusion: every fixture layout is rewritten to fused MultiHeadAttention, the
// outputs equal the graph as exported, the exporter variants we accept are computed exactly, and
// graphs we do not recognise are left alone.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { M3Encoder, fuseAttention } from '@bgem3/core';
import { FIXTURE, golden } from './helpers/fixture.ts';

const { onnx } = onnxProto;
const g = golden();
const SHORT: string[] = g.texts.slice(0, 25);
const ALL = { dense: true, sparse: true, colbert: true } as const;
const LAYERS = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8')).num_hidden_layers as number;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Asserts two result lists agree within `tol` on all three outputs. */
function assertClose(a: any[], b: any[], tol: number): void {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => {
    assert.ok(maxDiff(x.dense, b[i].dense) <= tol, `dense of text ${i}`);
    assert.deepEqual(Array.from(x.sparse.indices), Array.from(b[i].sparse.indices), `sparse keys of text ${i}`);
    assert.ok(maxDiff(x.sparse.values, b[i].sparse.values) <= tol, `sparse weights of text ${i}`);
    assert.ok(maxDiff(x.colbert.data, b[i].colbert.data) <= tol, `colbert of text ${i}`);
  });
}

async function encodeWith(dir: string, onnxFile: string, fuse: boolean, texts: string[]) {
  const enc = await M3Encoder.load(dir, { onnxFile, fuseAttention: fuse, cache: false, workers: 0 });
  try {
    const batched = await enc.encode(texts, ALL);
    const alone = [];
    for (const t of texts.slice(0, 5)) alone.push((await enc.encode([t], ALL))[0]);
    return { attention: enc.attention, batched, alone, passes: enc.stats.forwardPasses };
  } finally {
    await enc.close();
  }
}

describe('fuseAttention on the fixture layouts', () => {
  for (const file of ['onnx/model.onnx', 'onnx-st/model.onnx', 'm3-onnx/bge_m3_model.onnx', 'm3-onnx-alt/model.onnx', 'onnx/model_quantized.onnx']) {
    test(`${file}: every layer becomes one If over two MultiHeadAttention branches`, () => {
      const fused = fuseAttention(readFileSync(join(FIXTURE, file)));
      assert.ok(fused, 'the exporter pattern is recognised');
      assert.equal(fused.layers, LAYERS);
      const model = onnx.ModelProto.decode(fused.bytes);
      const nodes = model.graph!.node!;
      assert.equal(nodes.filter((n) => n.opType === 'Softmax').length, 0, 'no unfused attention left');
      const ifs = nodes.filter((n) => n.opType === 'If');
      assert.equal(ifs.length, LAYERS);
      for (const n of ifs) {
        const [thenB, elseB] = ['then_branch', 'else_branch'].map((k) => n.attribute!.find((a) => a.name === k)!.g!.node![0]);
        assert.equal(thenB.opType, 'MultiHeadAttention');
        assert.equal(thenB.input!.length, 3, 'the no-padding branch has no mask (flash kernel)');
        assert.equal(elseB.input![4], 'bgem3_fused_attention/key_padding_mask');
      }
      assert.ok(model.opsetImport!.some((o) => o.domain === 'com.microsoft'));
      // Fusing again finds nothing to do.
      assert.equal(fuseAttention(fused.bytes), undefined);
    });
  }

  test('fp32: fused outputs equal the graph as exported (batched with padding, and alone)', async () => {
    const fused = await encodeWith(FIXTURE, 'onnx/model.onnx', true, SHORT);
    const plain = await encodeWith(FIXTURE, 'onnx/model.onnx', false, SHORT);
    assert.equal(fused.attention, 'fused');
    assert.equal(plain.attention, 'as-exported');
    assertClose(fused.batched, plain.batched, 1e-5);
    assertClose(fused.alone, plain.alone, 1e-5);
    assertClose(fused.alone, fused.batched.slice(0, 5), 1e-5);
    g.dense.slice(0, 25).forEach((d: number[], i: number) => assert.ok(maxDiff(fused.batched[i].dense, d) <= 1e-5, `golden dense ${i}`));
  });

  test('three-output export: fused outputs equal the graph as exported', async () => {
    const fused = await encodeWith(FIXTURE, 'm3-onnx/bge_m3_model.onnx', true, SHORT);
    const plain = await encodeWith(FIXTURE, 'm3-onnx/bge_m3_model.onnx', false, SHORT);
    assert.equal(fused.attention, 'fused');
    assertClose(fused.batched, plain.batched, 1e-5);
  });

  test('int8: the fused graph runs and stays within int8 noise of the graph as exported', async () => {
    const fused = await encodeWith(FIXTURE, 'onnx/model_quantized.onnx', true, SHORT);
    const plain = await encodeWith(FIXTURE, 'onnx/model_quantized.onnx', false, SHORT);
    assert.equal(fused.attention, 'fused');
    fused.batched.forEach((r: any, i: number) => {
      let dot = 0;
      for (let j = 0; j < r.dense.length; j++) dot += r.dense[j] * plain.batched[i].dense[j];
      assert.ok(dot > 0.999, `dense cosine of text ${i}: ${dot}`);
    });
  });
});

/**
 * Variants of the exported attention that other exporters write, made by editing the fixture's
 * graph: each must be fused and give the same numbers as the edited graph run as exported.
 */
describe('fuseAttention on exporter variants', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bgem3-fusion-'));
    cpSync(FIXTURE, dir, { recursive: true });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  type Graph = onnxProto.onnx.IGraphProto;
  const base = () => onnx.ModelProto.decode(readFileSync(join(FIXTURE, 'onnx/model.onnx')));
  const producer = (graph: Graph, name: string) => graph.node!.find((n) => n.output!.includes(name))!;
  const scalar = (graph: Graph, name: string, value: number) =>
    graph.initializer!.push(onnx.TensorProto.create({ name, dataType: onnx.TensorProto.DataType.FLOAT, dims: [], floatData: [value] }));
  /** The scaling Mul of each layer and the constant it multiplies by. */
  function scaleMuls(graph: Graph) {
    return graph.node!
      .filter((n) => n.opType === 'Softmax')
      .map((sm) => {
        const add = producer(graph, sm.input![0]);
        const mul = add.input!.map((i) => producer(graph, i)).find((n) => n?.opType === 'Mul')!;
        const c = producer(graph, mul.input![1]);
        const t = c.attribute![0].t!;
        const value = t.rawData?.length ? new DataView(t.rawData.buffer, t.rawData.byteOffset, 4).getFloat32(0, true) : t.floatData![0];
        return { add, mul, value, qk: producer(graph, mul.input![0]) };
      });
  }
  async function check(name: string, edit: (graph: Graph) => void) {
    const model = base();
    edit(model.graph!);
    const file = `onnx/${name}.onnx`;
    writeFileSync(join(dir, file), onnx.ModelProto.encode(model).finish());
    // The edited graph references onnx/model.onnx_data, which sits beside it.
    const fused = await encodeWith(dir, file, true, SHORT);
    const plain = await encodeWith(dir, file, false, SHORT);
    assert.equal(fused.attention, 'fused', `${name} is fused`);
    assert.equal(plain.attention, 'as-exported');
    assertClose(fused.batched, plain.batched, 1e-5);
    assertClose(fused.alone, plain.alone, 1e-5);
    return { fused, plain };
  }

  test('scale as Div by √D after the QK MatMul', async () => {
    const { fused } = await check('div-scale', (graph) => {
      scaleMuls(graph).forEach(({ mul, value }, i) => {
        scalar(graph, `sqrt_d_${i}`, 1 / value);
        mul.opType = 'Div';
        mul.input = [mul.input![0], `sqrt_d_${i}`];
      });
    });
    g.dense.slice(0, 25).forEach((d: number[], i: number) => assert.ok(maxDiff(fused.batched[i].dense, d) <= 1e-5, `golden dense ${i}`));
  });

  test('√scale on Q and on Kᵀ before the MatMul (torch SDPA export)', async () => {
    const { fused } = await check('sdpa-scale', (graph) => {
      for (const [i, { add, mul, value, qk }] of scaleMuls(graph).entries()) {
        scalar(graph, `sqrt_scale_${i}`, Math.sqrt(value));
        const [qh, kt] = qk.input!;
        const at = graph.node!.indexOf(qk);
        graph.node!.splice(
          at,
          0,
          onnx.NodeProto.create({ name: `q_scale_${i}`, opType: 'Mul', input: [qh, `sqrt_scale_${i}`], output: [`qs_${i}`] }),
          onnx.NodeProto.create({ name: `k_scale_${i}`, opType: 'Mul', input: [kt, `sqrt_scale_${i}`], output: [`ks_${i}`] }),
        );
        qk.input = [`qs_${i}`, `ks_${i}`];
        add.input = add.input!.map((x) => (x === mul.output![0] ? qk.output![0] : x));
        graph.node!.splice(graph.node!.indexOf(mul), 1);
      }
    });
    g.dense.slice(0, 25).forEach((d: number[], i: number) => assert.ok(maxDiff(fused.batched[i].dense, d) <= 1e-5, `golden dense ${i}`));
  });

  test('Kᵀ in two Transposes, and no scale at all (MultiHeadAttention must not apply its default 1/√D)', async () => {
    await check('two-step-k-unscaled', (graph) => {
      for (const [i, { add, mul, qk }] of scaleMuls(graph).entries()) {
        const kt = producer(graph, qk.input![1]);
        kt.attribute![0].ints = [0, 2, 1, 3];
        const at = graph.node!.indexOf(qk);
        graph.node!.splice(
          at,
          0,
          onnx.NodeProto.create({
            name: `k_t_${i}`,
            opType: 'Transpose',
            input: [kt.output![0]],
            output: [`kt2_${i}`],
            attribute: [onnx.AttributeProto.create({ name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: [0, 1, 3, 2] })],
          }),
        );
        qk.input = [qk.input![0], `kt2_${i}`];
        add.input = add.input!.map((x) => (x === mul.output![0] ? qk.output![0] : x));
        graph.node!.splice(graph.node!.indexOf(mul), 1);
      }
    });
  });

  test('a graph with an unrecognised block is left exactly as exported', async () => {
    const model = base();
    const graph = model.graph!;
    // The probabilities also feed a second consumer: folding the block would lose that value.
    const sm = graph.node!.find((n) => n.opType === 'Softmax')!;
    graph.node!.push(onnx.NodeProto.create({ name: 'extra', opType: 'Identity', input: [sm.output![0]], output: ['probs_copy'] }));
    graph.output!.push(onnx.ValueInfoProto.create({ name: 'probs_copy' }));
    assert.equal(fuseAttention(onnx.ModelProto.encode(model).finish()), undefined);
    // Without an attention_mask input there is nothing to drive the padding branch.
    const noMask = base();
    noMask.graph!.input = noMask.graph!.input!.filter((i) => i.name !== 'attention_mask');
    assert.equal(fuseAttention(onnx.ModelProto.encode(noMask).finish()), undefined);
  });
});

describe('long texts run alone', () => {
  test('each text over 1024 tokens is its own forward pass (no padding, so no mask)', async () => {
    const enc = await M3Encoder.load(FIXTURE, { cache: false, workers: 0 });
    try {
      assert.equal(enc.attention, 'fused');
      const long = ['alpha '.repeat(1500), 'beta gamma '.repeat(800), 'delta '.repeat(1100)];
      const before = enc.stats.forwardPasses;
      const res = await enc.encode([...long, ...SHORT.slice(0, 4)], { dense: true });
      assert.ok(res.slice(0, 3).every((r) => r.tokens > 1024));
      assert.equal(enc.stats.forwardPasses - before, 4, 'three long texts alone, the four short ones together');
    } finally {
      await enc.close();
    }
  });
});
