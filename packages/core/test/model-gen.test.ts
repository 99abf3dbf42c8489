/**
 * Validation of the benchmark model generator (bench/model-gen): the generated ONNX graphs must
 * compute BGE-M3's architecture exactly, not merely run. Every variant is generated at a tiny
 * shape and run with onnxruntime-node; a plain-loop JS forward pass written here from the
 * XLM-RoBERTa / FlagEmbedding definitions (docs/m3-reference.md §0–§2), fed with the generator's
 * own weights, must match it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unzipSync } from 'fflate';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import {
  f16BitsToF32,
  generateModel,
  layerPrefix,
  modelFileName,
  tinyConfig,
  Weights,
  type Attention,
  type Dtype,
  type ModelConfig,
  type Variant,
} from '../../../bench/model-gen/index.ts';

const { onnx } = onnxProto;
/** The benchmark default init (std 0.02): small LayerNorm inputs, so LayerNorm's eps (1e-5) shows. */
const config: ModelConfig = tinyConfig({ seed: 7 });
/** A wide init (std 0.4): peaked attention and FFN pre-activations in GELU's curved range, so the
 *  attention scale and exact-erf GELU show (at std 0.02 both are nearly linear at hidden 32). */
const wide: ModelConfig = tinyConfig({ seed: 11, std: 0.4 });
const H = config.hidden;

// ---------------------------------------------------------------- reference forward (plain loops)

function layerNorm(x: Float64Array, gamma: Float32Array, beta: Float32Array): Float64Array {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i] - mean) ** 2;
  v /= n;
  const inv = 1 / Math.sqrt(v + 1e-5);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
  return out;
}

/** y = x·W + b with W stored [in, out]. */
function linear(x: Float64Array, w: Float32Array, b: Float32Array, out: number): Float64Array {
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b[o];
    for (let i = 0; i < x.length; i++) s += x[i] * w[i * out + o];
    y[o] = s;
  }
  return y;
}

function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is only 1e-7 accurate; use a series / continued fraction instead.
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz)
  let f = t;
  let C = t;
  let Dd = 0;
  for (let n = 1; n < 200; n++) {
    const a = n / 2;
    Dd = t + a * Dd;
    Dd = 1 / Dd;
    C = t + a / C;
    const delta = C * Dd;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-t * t) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** `weights.get`, memoised (each call regenerates the tensor from the seed). */
const memo = new WeakMap<Weights, Map<string, Float32Array>>();
function tensorOf(w: Weights, name: string): Float32Array {
  let m = memo.get(w);
  if (!m) memo.set(w, (m = new Map()));
  let t = m.get(name);
  if (!t) m.set(name, (t = w.get(name)));
  return t;
}

/** XLMRobertaModel.last_hidden_state for one padded row: [L][H]. */
function referenceBackbone(weights: Weights, ids: number[], mask: number[]): Float64Array[] {
  const w = { config: weights.config, get: (name: string) => tensorOf(weights, name) };
  const c = w.config;
  const L = ids.length;
  const D = c.hidden / c.heads;
  const word = w.get('embeddings.word_embeddings.weight');
  const posEmb = w.get('embeddings.position_embeddings.weight');
  const type0 = w.get('embeddings.token_type_embeddings.weight');
  // create_position_ids_from_input_ids: cumsum(ids != pad) * (ids != pad) + pad
  let count = 0;
  const positions = ids.map((id) => (id !== 1 ? ++count : 0) + 1);
  let x = ids.map((id, t) => {
    const e = new Float64Array(H);
    for (let j = 0; j < H; j++) e[j] = word[id * H + j] + type0[j] + posEmb[positions[t] * H + j];
    return layerNorm(e, w.get('embeddings.LayerNorm.weight'), w.get('embeddings.LayerNorm.bias'));
  });
  for (let l = 0; l < c.layers; l++) {
    const p = layerPrefix(l);
    const g = (n: string) => w.get(`${p}.${n}`);
    const q = x.map((v) => linear(v, g('attention.self.query.weight'), g('attention.self.query.bias'), H));
    const k = x.map((v) => linear(v, g('attention.self.key.weight'), g('attention.self.key.bias'), H));
    const v = x.map((t) => linear(t, g('attention.self.value.weight'), g('attention.self.value.bias'), H));
    const ctx = x.map(() => new Float64Array(H));
    for (let h = 0; h < c.heads; h++) {
      for (let i = 0; i < L; i++) {
        const s = new Float64Array(L);
        let max = -Infinity;
        for (let j = 0; j < L; j++) {
          if (!mask[j]) {
            s[j] = -Infinity;
            continue;
          }
          let d = 0;
          for (let e = 0; e < D; e++) d += q[i][h * D + e] * k[j][h * D + e];
          s[j] = d / Math.sqrt(D);
          max = Math.max(max, s[j]);
        }
        let z = 0;
        for (let j = 0; j < L; j++) z += s[j] === -Infinity ? 0 : Math.exp(s[j] - max);
        for (let j = 0; j < L; j++) {
          if (s[j] === -Infinity) continue;
          const pr = Math.exp(s[j] - max) / z;
          for (let e = 0; e < D; e++) ctx[i][h * D + e] += pr * v[j][h * D + e];
        }
      }
    }
    x = x.map((xi, t) => {
      const a = linear(ctx[t], g('attention.output.dense.weight'), g('attention.output.dense.bias'), H);
      for (let j = 0; j < H; j++) a[j] += xi[j];
      const x1 = layerNorm(a, g('attention.output.LayerNorm.weight'), g('attention.output.LayerNorm.bias'));
      const hdn = linear(x1, g('intermediate.dense.weight'), g('intermediate.dense.bias'), c.ffn);
      for (let j = 0; j < hdn.length; j++) hdn[j] = 0.5 * hdn[j] * (1 + erf(hdn[j] / Math.SQRT2));
      const o = linear(hdn, g('output.dense.weight'), g('output.dense.bias'), H);
      for (let j = 0; j < H; j++) o[j] += x1[j];
      return layerNorm(o, g('output.LayerNorm.weight'), g('output.LayerNorm.bias'));
    });
  }
  return x;
}

function normalize(v: ArrayLike<number>): Float64Array {
  let n = 0;
  for (let i = 0; i < v.length; i++) n += v[i] * v[i];
  const d = Math.max(Math.sqrt(n), 1e-12);
  return Float64Array.from(v, (x) => x / d);
}

/** FlagEmbedding's heads on a backbone output row (heads in torch layout [out, in]). */
function referenceHeads(w: Weights, hs: ArrayLike<number>[], mask: number[]) {
  const wc = tensorOf(w, 'colbert_linear.weight');
  const bc = tensorOf(w, 'colbert_linear.bias');
  const ws = tensorOf(w, 'sparse_linear.weight');
  const bs = tensorOf(w, 'sparse_linear.bias');
  const dense = normalize(hs[0]);
  const sparse = hs.map((h) => {
    let s = bs[0];
    for (let j = 0; j < H; j++) s += ws[j] * h[j];
    return Math.max(0, s);
  });
  const colbert = hs.slice(1).map((h, i) => {
    const y = new Float64Array(H);
    for (let o = 0; o < H; o++) {
      let s = bc[o];
      for (let j = 0; j < H; j++) s += wc[o * H + j] * h[j];
      y[o] = s * mask[i + 1];
    }
    return normalize(y);
  });
  return { dense, sparse, colbert };
}

// ---------------------------------------------------------------- helpers

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

/** Right-pads rows with pad id 1 / mask 0. */
function batch(rows: number[][]) {
  const L = Math.max(...rows.map((r) => r.length));
  const ids = rows.map((r) => [...r, ...new Array(L - r.length).fill(1)]);
  const mask = rows.map((r) => [...r.map(() => 1), ...new Array(L - r.length).fill(0)]);
  const t = (m: number[][]) => new ort.Tensor('int64', BigInt64Array.from(m.flat().map(BigInt)), [m.length, L]);
  return { ids, mask, L, feeds: { input_ids: t(ids), attention_mask: t(mask) } };
}

/** Row `b`, position `t` of a [B, L, H] output. */
function vec(out: ort.Tensor, b: number, t: number): Float32Array {
  const [, L, Hd] = out.dims as number[];
  return (out.data as Float32Array).subarray((b * L + t) * Hd, (b * L + t + 1) * Hd);
}

// Texts: the first tiny-m3-A golden tokenisations (real tokenizer ids), a short one, and a row with
// the pad id inside real text (mask 1): its position must not advance there, as in XLM-R.
const golden = JSON.parse(
  readFileSync(new URL('../../../test/fixtures/tiny-m3-A/golden.json', import.meta.url), 'utf8'),
) as { input_ids: number[][] };
const TEXTS: number[][] = [golden.input_ids[2].slice(0, 40), golden.input_ids[0], [0, 2], [0, 17, 1, 1, 33, 2]];

let dir = '';
const sessions = new Map<string, ort.InferenceSession>();
const wideSessions = new Map<Attention, ort.InferenceSession>();
const weights = new Weights(config);
const wideWeights = new Weights(wide);
const key = (v: Variant, d: Dtype, a: Attention) => `${v}/${d}/${a}`;
const session = (v: Variant, d: Dtype, a: Attention) => sessions.get(key(v, d, a))!;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'model-gen-test-'));
  for (const variant of ['backbone', 'three-output'] as const) {
    for (const dtype of ['fp32', 'int8'] as const) {
      for (const attention of ['unfused', 'fused'] as const) {
        const res = generateModel({ out: dir, config, variant, dtype, attention });
        sessions.set(
          key(variant, dtype, attention),
          await ort.InferenceSession.create(res.modelPath, { intraOpNumThreads: 1, logSeverityLevel: 3 }),
        );
      }
    }
  }
  for (const attention of ['unfused', 'fused'] as const) {
    const res = generateModel({ out: join(dir, 'wide'), config: wide, attention, extras: false });
    wideSessions.set(attention, await ort.InferenceSession.create(res.modelPath, { intraOpNumThreads: 1, logSeverityLevel: 3 }));
  }
});

after(async () => {
  for (const s of [...sessions.values(), ...wideSessions.values()]) await s.release();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('model-gen: files and I/O', () => {
  test('every variant has BGE-M3 I/O names and shapes', async () => {
    const { feeds, L } = batch(TEXTS);
    for (const [k, s] of sessions) {
      assert.deepEqual(s.inputNames, ['input_ids', 'attention_mask'], k);
      const out = await s.run(feeds);
      if (k.startsWith('backbone')) {
        assert.deepEqual(s.outputNames, ['last_hidden_state'], k);
        assert.deepEqual(out.last_hidden_state.dims, [TEXTS.length, L, H], k);
      } else {
        assert.deepEqual(s.outputNames, ['dense_embeddings', 'sparse_weights', 'colbert_vectors'], k);
        assert.deepEqual(out.dense_embeddings.dims, [TEXTS.length, H], k);
        assert.deepEqual(out.sparse_weights.dims, [TEXTS.length, L, 1], k);
        assert.deepEqual(out.colbert_vectors.dims, [TEXTS.length, L - 1, H], k);
      }
      for (const t of Object.values(out)) assert.ok((t.data as Float32Array).every(Number.isFinite), k);
    }
  });

  test('fp32 weights live in an external-data file with aligned offsets; int8 is a single file', () => {
    const m = onnx.ModelProto.decode(readFileSync(join(dir, modelFileName('backbone', 'fp32', 'unfused'))));
    const graph = m.graph as InstanceType<typeof onnx.GraphProto>;
    const ext = graph.initializer.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
    assert.ok(ext.length >= 2 + 6 * config.layers, `${ext.length} external tensors`);
    const dataSize = readFileSync(join(dir, 'onnx/model.onnx_data')).length;
    for (const t of ext) {
      const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
      assert.equal(kv.location, 'model.onnx_data');
      assert.equal(Number(kv.offset) % 4096, 0);
      assert.ok(Number(kv.offset) + Number(kv.length) <= dataSize);
    }
    const q = onnx.ModelProto.decode(readFileSync(join(dir, modelFileName('backbone', 'int8', 'unfused'))))
      .graph as InstanceType<typeof onnx.GraphProto>;
    assert.equal(q.initializer.filter((t) => t.dataLocation === 1).length, 0);
    const ops = new Set(q.node.map((n) => n.opType));
    for (const op of ['DynamicQuantizeLinear', 'MatMulInteger', 'DequantizeLinear']) assert.ok(ops.has(op), op);
    const wq = q.initializer.find((t) => t.name === `${layerPrefix(0)}.attention.self.query.weight_quantized`)!;
    assert.equal(wq.dataType, 3); // int8, like quantize_dynamic's QInt8 weights
    const eq = q.initializer.find((t) => t.name === 'embeddings.word_embeddings.weight_quantized')!;
    assert.equal(eq.dataType, 2); // uint8 Gather weights
  });

  test('config.json carries the model shape; head .pt files hold the generator fp16 heads', () => {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal(cfg.hidden_size, H);
    assert.equal(cfg.vocab_size, config.vocab);
    assert.equal(cfg.max_position_embeddings, 8194);
    assert.equal(cfg.pad_token_id, 1);
    assert.equal(cfg.layer_norm_eps, 1e-5);
    assert.deepEqual(cfg['transformers.js_config'].use_external_data_format['model.onnx'], 1);
    for (const head of ['colbert_linear', 'sparse_linear']) {
      const files = unzipSync(readFileSync(join(dir, `${head}.pt`)));
      const pkl = new TextDecoder('latin1').decode(files[`${head}/data.pkl`]);
      assert.ok(pkl.startsWith('\x80\x02ccollections\nOrderedDict\n'), 'OrderedDict pickle, protocol 2');
      assert.ok(pkl.includes('torch\nHalfStorage\n') && pkl.includes('_rebuild_tensor_v2'));
      for (const [rec, name] of [
        ['0', 'weight'],
        ['1', 'bias'],
      ]) {
        const raw = files[`${head}/data/${rec}`];
        const half = new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
        const expected = weights.get(`${head}.${name}`);
        assert.equal(half.length, expected.length);
        assert.equal(maxAbsDiff(Float32Array.from(half, f16BitsToF32), expected), 0);
      }
    }
  });

  test('weights are deterministic and independent of the streaming chunk size', () => {
    const name = `${layerPrefix(1)}.intermediate.dense.weight`;
    const a = weights.get(name);
    const parts: number[] = [];
    for (const ch of new Weights(config).chunks(name, 7)) parts.push(...ch);
    assert.equal(maxAbsDiff(a, parts), 0);
    const word = weights.get('embeddings.word_embeddings.weight');
    assert.ok(word.subarray(H, 2 * H).every((v) => v === 0), 'pad row (padding_idx 1) is zero');
    assert.notEqual(maxAbsDiff(a, new Weights({ ...config, seed: 8 }).get(name)), 0);
  });
});

describe('model-gen: numerics', () => {
  test('fp32 backbone matches a plain-loop XLM-R forward pass (embeddings, positions, mask, post-LN, GELU)', async () => {
    const { ids, mask, feeds } = batch(TEXTS);
    for (const [label, w, get] of [
      ['std 0.02', weights, (a: Attention) => session('backbone', 'fp32', a)],
      ['std 0.4', wideWeights, (a: Attention) => wideSessions.get(a)!],
    ] as const) {
      const refs = ids.map((row, b) => referenceBackbone(w, row, mask[b]));
      for (const attention of ['unfused', 'fused'] as const) {
        const out = (await get(attention).run(feeds)).last_hidden_state;
        let worst = 0;
        refs.forEach((ref, b) => ref.forEach((r, t) => (worst = Math.max(worst, maxAbsDiff(vec(out, b, t), r)))));
        if (process.env.MODEL_GEN_DEBUG) console.log(label, attention, 'max |ort - reference|', worst);
        assert.ok(worst < 1e-4, `${label} ${attention}: max |ort - reference| = ${worst}`);
      }
    }
  });

  test('padding invariance: a text padded in a batch gives the same outputs as alone', async () => {
    const all = batch(TEXTS);
    for (const attention of ['unfused', 'fused'] as const) {
      const bb = session('backbone', 'fp32', attention);
      const tri = session('three-output', 'fp32', attention);
      const outB = (await bb.run(all.feeds)).last_hidden_state;
      const outT = await tri.run(all.feeds);
      for (let b = 0; b < TEXTS.length; b++) {
        const one = batch([TEXTS[b]]);
        const aloneB = (await bb.run(one.feeds)).last_hidden_state;
        const aloneT = await tri.run(one.feeds);
        for (let t = 0; t < TEXTS[b].length; t++) {
          assert.ok(maxAbsDiff(vec(outB, b, t), vec(aloneB, 0, t)) < 1e-4, `${attention} text ${b} pos ${t}`);
        }
        const dense = (o: ort.InferenceSession.OnnxValueMapType, i: number) =>
          (o.dense_embeddings.data as Float32Array).subarray(i * H, (i + 1) * H);
        assert.ok(maxAbsDiff(dense(outT, b), dense(aloneT, 0)) < 1e-4);
        for (let t = 0; t < TEXTS[b].length - 1; t++) {
          assert.ok(maxAbsDiff(vec(outT.colbert_vectors, b, t), vec(aloneT.colbert_vectors, 0, t)) < 1e-4);
        }
        // padded ColBERT rows are exactly zero
        for (let t = TEXTS[b].length - 1; t < all.L - 1; t++) {
          assert.ok(vec(outT.colbert_vectors, b, t).every((v) => v === 0), `colbert pad row ${b},${t}`);
        }
      }
    }
  });

  test('fused MultiHeadAttention equals the unfused subgraph (padded batch and single unpadded text)', async () => {
    for (const rows of [TEXTS, [TEXTS[0]], [TEXTS[0], TEXTS[0]]]) {
      const { feeds } = batch(rows);
      for (const variant of ['backbone', 'three-output'] as const) {
        const u = await session(variant, 'fp32', 'unfused').run(feeds);
        const f = await session(variant, 'fp32', 'fused').run(feeds);
        for (const name of Object.keys(u)) {
          const d = maxAbsDiff(u[name].data as Float32Array, f[name].data as Float32Array);
          assert.ok(d < 1e-4, `${variant} ${name} rows=${rows.length}: ${d}`);
        }
      }
      const u = (await wideSessions.get('unfused')!.run(feeds)).last_hidden_state;
      const f = (await wideSessions.get('fused')!.run(feeds)).last_hidden_state;
      const d = maxAbsDiff(u.data as Float32Array, f.data as Float32Array);
      assert.ok(d < 1e-4, `std 0.4 rows=${rows.length}: ${d}`);
    }
  });

  test('three-output variant = backbone + FlagEmbedding heads (dense = normalised CLS, relu sparse, masked normalised ColBERT)', async () => {
    const { mask, feeds, L } = batch(TEXTS);
    for (const attention of ['unfused', 'fused'] as const) {
      const hs = (await session('backbone', 'fp32', attention).run(feeds)).last_hidden_state;
      const tri = await session('three-output', 'fp32', attention).run(feeds);
      for (let b = 0; b < TEXTS.length; b++) {
        const rows = Array.from({ length: L }, (_, t) => vec(hs, b, t));
        const ref = referenceHeads(weights, rows, mask[b]);
        const dense = (tri.dense_embeddings.data as Float32Array).subarray(b * H, (b + 1) * H);
        assert.ok(maxAbsDiff(dense, ref.dense) < 1e-5, 'dense');
        const sparse = (tri.sparse_weights.data as Float32Array).subarray(b * L, (b + 1) * L);
        assert.ok(maxAbsDiff(sparse, ref.sparse) < 1e-5, 'sparse');
        ref.colbert.forEach((r, t) => assert.ok(maxAbsDiff(vec(tri.colbert_vectors, b, t), r) < 1e-5, 'colbert'));
      }
    }
  });

  test('int8 (dynamic quantisation) stays close to fp32: cosine ≥ 0.99', async () => {
    const { feeds } = batch(TEXTS);
    for (const attention of ['unfused', 'fused'] as const) {
      const f = (await session('backbone', 'fp32', attention).run(feeds)).last_hidden_state;
      const q = (await session('backbone', 'int8', attention).run(feeds)).last_hidden_state;
      let worst = 1;
      TEXTS.forEach((row, b) => {
        for (let t = 0; t < row.length; t++) worst = Math.min(worst, cosine(vec(f, b, t), vec(q, b, t)));
      });
      if (process.env.MODEL_GEN_DEBUG) console.log(attention, 'int8 worst token cosine', worst);
      assert.ok(worst >= 0.99, `${attention} backbone worst token cosine ${worst}`);
      const fd = (await session('three-output', 'fp32', attention).run(feeds)).dense_embeddings;
      const qd = (await session('three-output', 'int8', attention).run(feeds)).dense_embeddings;
      for (let b = 0; b < TEXTS.length; b++) {
        const c = cosine(
          (fd.data as Float32Array).subarray(b * H, (b + 1) * H),
          (qd.data as Float32Array).subarray(b * H, (b + 1) * H),
        );
        assert.ok(c >= 0.99, `${attention} dense cosine ${c}`);
      }
      assert.ok(maxAbsDiff(f.data as Float32Array, q.data as Float32Array) > 0, 'int8 really differs from fp32');
    }
  });
});
