/**
 * ColBERT storage precisions on the fixture model, through the durable store (written to disk,
 * loaded back): fp32 keeps FlagEmbedding's `compute_score` parity (within 1e-5); fp16 and int8
 * (the default) are measured against it — MaxSim error and final ranking — the figures behind the
 * default (bench/store.bench.ts measures the same at BGE-M3's real sizes).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { M3Encoder } from '../src/inference/encoder.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import type { ColbertStorage } from '../src/store/colbert-codec.js';
import { FIXTURE, golden } from './helpers/fixture.ts';

const g = golden();
const tmp = mkdtempSync(join(tmpdir(), 'bgem3-store-precision-'));
let enc: M3Encoder;
before(async () => {
  enc = await M3Encoder.load(FIXTURE, { workers: 0 });
});
after(async () => {
  await enc.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('fp32 keeps FlagEmbedding parity after a round trip through disk; fp16 and int8 stay within their measured error', async (t) => {
  const docs = g.passages.map((text: string, i: number) => ({ id: `p${i}`, text, metadata: { i } }));
  const loaded = new Map<ColbertStorage, M3Index>();
  for (const p of ['fp32', 'fp16', 'int8'] as const) {
    const dir = join(tmp, p);
    const w = await M3Index.open(dir, { encoder: enc, colbertPrecision: p });
    await w.add(docs);
    await w.close();
    loaded.set(p, await M3Index.load(dir, { encoder: enc, readOnly: true }));
  }
  const n = g.passages.length;
  const table = g['compute_score_weights_0.4_0.2_0.4'];
  const err: Record<string, { sum: number; max: number; pairs: number; sameRanking: number }> = {};
  for (let q = 0; q < g.queries.length; q++) {
    const ref = await (loaded.get('fp32') as M3Index).search(g.queries[q], { k: n, fetchK: n });
    for (const r of ref) {
      const pair = q * n + Number(r.id.slice(1));
      assert.ok(Math.abs(r.scores.colbert - g.encode_scores.colbert[q][Number(r.id.slice(1))]) <= 1e-5, `fp32 colbert q${q} ${r.id}`);
      assert.ok(Math.abs(r.score - table['colbert+sparse+dense'][pair]) <= 1e-5, `fp32 fused q${q} ${r.id}`);
    }
    const want = new Map(ref.map((r) => [r.id, r.scores.colbert]));
    for (const p of ['fp16', 'int8'] as const) {
      const got = await (loaded.get(p) as M3Index).search(g.queries[q], { k: n, fetchK: n });
      const e = (err[p] ??= { sum: 0, max: 0, pairs: 0, sameRanking: 0 });
      for (const r of got) {
        const d = Math.abs(r.scores.colbert - (want.get(r.id) as number));
        e.sum += d;
        e.max = Math.max(e.max, d);
        e.pairs++;
      }
      if (got.map((r) => r.id).join() === ref.map((r) => r.id).join()) e.sameRanking++;
      assert.equal(got[0].id, ref[0].id, `${p}: the same best passage for query ${q}`);
    }
  }
  t.diagnostic(Object.entries(err).map(([p, e]) => `${p}: MaxSim mean abs error ${(e.sum / e.pairs).toExponential(1)}, max ${e.max.toExponential(1)}, identical full ranking for ${e.sameRanking}/${g.queries.length} queries`).join('; '));
  assert.ok(err.fp16.max < 1e-4, `fp16 max error ${err.fp16.max}`);
  assert.ok(err.int8.max < 2e-3, `int8 max error ${err.int8.max}`);
  for (const x of loaded.values()) await x.close();
});
