#!/usr/bin/env node
/**
 * Smoke check of generated full-size models: every model present in a directory loads, runs one
 * batch, and agrees with its siblings (fused vs unfused, int8 vs fp32, three-output vs backbone).
 *
 *   node --import tsx bench/model-gen/check.ts [--dir bench/.models/m3-full] [--batch 2] [--len 512]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type * as ort from 'onnxruntime-node';
import { modelFileName, type Attention, type Dtype, type Variant } from './index.ts';
import { feedsFor, openSession, syntheticRows } from './ort-bench.ts';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: 'bench/.models/m3-full' },
    batch: { type: 'string', default: '2' },
    len: { type: 'string', default: '512' },
    threads: { type: 'string', default: '2' },
  },
});
const dir = values.dir!;
const batch = Number(values.batch);
const len = Number(values.len);
// Row 0 full length, the others shorter (padded), so the masked paths run too.
const rows = syntheticRows(batch, len).map((r, i) => (i === 0 ? r : [...r.slice(0, len - 37 * i - 1), 2]));
const feeds = feedsFor(rows);
const outputs = new Map<string, Record<string, ort.Tensor>>();

for (const variant of ['backbone', 'three-output'] as Variant[]) {
  for (const dtype of ['fp32', 'int8'] as Dtype[]) {
    for (const attention of ['unfused', 'fused'] as Attention[]) {
      const file = modelFileName(variant, dtype, attention);
      const path = join(dir, file);
      if (!existsSync(path)) continue;
      let t = performance.now();
      const s = await openSession(path, { threads: Number(values.threads) });
      const loadS = (performance.now() - t) / 1000;
      t = performance.now();
      const out = await s.run(feeds);
      const runS = (performance.now() - t) / 1000;
      const shapes = Object.entries(out).map(([k, v]) => `${k}[${v.dims.join(',')}]`).join(' ');
      const finite = Object.values(out).every((v) => (v.data as Float32Array).every(Number.isFinite));
      console.log(`${file}: load ${loadS.toFixed(1)} s, run ${batch}×${len} ${runS.toFixed(1)} s, ${shapes}, finite=${finite}`);
      outputs.set(file, out);
      await s.release();
    }
  }
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function minRowCosine(a: Float32Array, b: Float32Array, width: number, rowsValid: (r: number) => boolean): number {
  let worst = 1;
  for (let r = 0; r * width < a.length; r++) {
    if (!rowsValid(r)) continue;
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = r * width; i < (r + 1) * width; i++) {
      ab += a[i] * b[i];
      aa += a[i] * a[i];
      bb += b[i] * b[i];
    }
    worst = Math.min(worst, ab / Math.sqrt(aa * bb));
  }
  return worst;
}
const data = (file: string, name: string) => outputs.get(file)?.[name]?.data as Float32Array | undefined;
const L = Math.max(...rows.map((r) => r.length));
const validToken = (r: number) => (r % L) < rows[Math.floor(r / L)].length;

for (const [a, b, name] of [
  [modelFileName('backbone', 'fp32', 'unfused'), modelFileName('backbone', 'fp32', 'fused'), 'last_hidden_state'],
  [modelFileName('backbone', 'int8', 'unfused'), modelFileName('backbone', 'int8', 'fused'), 'last_hidden_state'],
  [modelFileName('three-output', 'fp32', 'unfused'), modelFileName('three-output', 'fp32', 'fused'), 'colbert_vectors'],
] as const) {
  const x = data(a, name);
  const y = data(b, name);
  if (x && y) console.log(`${a} vs ${b}: max |Δ ${name}| = ${maxAbs(x, y).toExponential(2)}`);
}
const f = data(modelFileName('backbone', 'fp32', 'unfused'), 'last_hidden_state');
const q = data(modelFileName('backbone', 'int8', 'unfused'), 'last_hidden_state');
if (f && q) {
  const H = f.length / (batch * L);
  console.log(`int8 vs fp32 backbone: worst token cosine ${minRowCosine(f, q, H, validToken).toFixed(5)}`);
}
const d = data(modelFileName('three-output', 'fp32', 'unfused'), 'dense_embeddings');
if (f && d) {
  const H = d.length / batch;
  let m = 0;
  for (let r = 0; r < batch; r++) {
    const cls = f.subarray(r * L * H, r * L * H + H);
    const n = Math.max(Math.hypot(...cls), 1e-12);
    for (let i = 0; i < H; i++) m = Math.max(m, Math.abs(cls[i] / n - d[r * H + i]));
  }
  console.log(`three-output dense vs normalised backbone CLS: max |Δ| = ${m.toExponential(2)}`);
}
