import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { ColbertStore, type ColbertPrecision } from '../src/retrieval/colbert-store.js';
import { decodeFloat16, encodeFloat16, fromFloat16Bits, toFloat16Bits } from '../src/retrieval/float16.js';
import { maxSim, maxSimPacked, maxSimReference, maxSimStored } from '../src/retrieval/maxsim.js';
import type { ColbertMatrix } from '../src/types.js';

const dir = mkdtempSync(join(tmpdir(), 'bgem3-colbert-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

// Unit vectors around a shared topic (cosine to the topic ≈ 0.6): MaxSim values then fall in a
// realistic 0.4–0.5 range instead of the ≈0.1 of independent random vectors in 1024 dimensions.
function colbertLike(rand: () => number, count: number, dim: number, topic: Float32Array): ColbertMatrix {
  const data = new Float32Array(count * dim);
  const noise = 0.8 / Math.sqrt(dim);
  for (let i = 0; i < count; i++) {
    let n = 0;
    for (let j = 0; j < dim; j++) {
      const v = 0.6 * topic[j] + noise * gauss(rand);
      data[i * dim + j] = v;
      n += v * v;
    }
    const inv = 1 / Math.sqrt(n);
    for (let j = 0; j < dim; j++) data[i * dim + j] *= inv;
  }
  return { data, count, dim };
}

function topicOf(rand: () => number, dim: number): Float32Array {
  const t = Float32Array.from({ length: dim }, () => gauss(rand));
  const n = Math.hypot(...t);
  return t.map((x) => x / n);
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof M3Error ? err.code : `not M3Error: ${String(err)}`;
  }
  return undefined;
}

describe('float16 conversion', () => {
  test('every finite half survives a round trip; NaN stays NaN', () => {
    for (let h = 0; h < 65536; h++) {
      const x = fromFloat16Bits(h);
      if (Number.isNaN(x)) {
        assert.ok(Number.isNaN(fromFloat16Bits(toFloat16Bits(x))));
        continue;
      }
      assert.equal(toFloat16Bits(x), h, `half 0x${h.toString(16)}`);
    }
    assert.equal(fromFloat16Bits(0x3c00), 1);
    assert.equal(fromFloat16Bits(0x7bff), 65504);
    assert.equal(fromFloat16Bits(0x0001), 2 ** -24);
    assert.equal(fromFloat16Bits(0xfc00), Number.NEGATIVE_INFINITY);
  });

  test('rounds to nearest, ties to even, over normal, subnormal and overflow ranges', () => {
    // Reference: binary search among the positive halves (bit order = value order), treating
    // the pattern after 65504 as 65536 so that overflow rounds like IEEE (to Infinity).
    const val = (h: number) => (h === 0x7c00 ? 65536 : fromFloat16Bits(h));
    const nearest = (x: number) => {
      const a = Math.abs(x);
      let lo = 0;
      let hi = 0x7c00;
      if (a >= 65536) return 0x7c00;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (val(mid) <= a) lo = mid;
        else hi = mid;
      }
      const dl = a - val(lo);
      const dh = val(hi) - a;
      const h = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
      return (x < 0 || Object.is(x, -0) ? 0x8000 : 0) | h;
    };
    const r = rng(7);
    const f = new Float32Array(1);
    for (let i = 0; i < 20000; i++) {
      f[0] = (r() - 0.5) * 2 ** Math.floor(r() * 44 - 28);
      assert.equal(toFloat16Bits(f[0]), nearest(f[0]), `x = ${f[0]}`);
    }
    // exact midpoints
    for (let h = 0; h < 0x7bff; h += 97) {
      f[0] = (fromFloat16Bits(h) + fromFloat16Bits(h + 1)) / 2;
      assert.equal(toFloat16Bits(f[0]), nearest(f[0]), `midpoint after 0x${h.toString(16)}`);
    }
    assert.equal(toFloat16Bits(65520), 0x7c00); // midpoint to 65536 rounds to even: Infinity
    assert.equal(toFloat16Bits(65519), 0x7bff);
    assert.equal(toFloat16Bits(1e-9), 0);
    assert.equal(toFloat16Bits(-0), 0x8000);
    assert.deepEqual([...decodeFloat16(encodeFloat16([1, -2, 0.5]))], [1, -2, 0.5]);
  });
});

describe('ColbertStore', () => {
  const dim = 64;
  const rand = rng(1);
  const topic = topicOf(rand, dim);
  const docs = Array.from({ length: 12 }, (_, i) => colbertLike(rand, 3 + i * 5, dim, topic));

  for (const precision of ['fp32', 'fp16', 'int8'] as const) {
    test(`${precision}: upsert/get/delete and the quantisation error bound`, () => {
      const store = new ColbertStore({ dim, precision, modelId: 'm' });
      docs.forEach((d, i) => store.upsert(`d${i}`, d));
      assert.equal(store.size, docs.length);
      assert.equal(store.vectorCount, docs.reduce((a, d) => a + d.count, 0));
      docs.forEach((d, i) => {
        const got = store.get(`d${i}`) as ColbertMatrix;
        assert.equal(got.count, d.count);
        const raw = store.getRaw(`d${i}`);
        assert.equal(raw?.precision, precision);
        for (let v = 0; v < d.count; v++) {
          const scale = raw?.scales?.[v] ?? 0;
          for (let j = 0; j < dim; j++) {
            const x = d.data[v * dim + j];
            const y = got.data[v * dim + j];
            if (precision === 'fp32') assert.equal(y, x);
            else if (precision === 'fp16') assert.ok(Math.abs(y - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25);
            else assert.ok(Math.abs(y - x) <= scale / 2 + 1e-7, `int8 error ${Math.abs(y - x)} > ${scale / 2}`);
          }
        }
      });
      store.upsert('d0', docs[5]); // replace
      assert.equal(store.get('d0')?.count, docs[5].count);
      assert.equal(store.delete(['d1', 'zz', 'd1']), 1);
      assert.equal(store.has('d1'), false);
      assert.equal(store.get('d1'), undefined);
      // zero vector (int8 scale 0) and empty matrix
      store.upsert('zero', { data: new Float32Array(dim), count: 1, dim });
      assert.deepEqual([...(store.get('zero') as ColbertMatrix).data], new Array(dim).fill(0));
      store.upsert('empty', { data: new Float32Array(0), count: 0, dim });
      assert.equal(store.get('empty')?.count, 0);
    });

    test(`${precision}: bytes and file round trip, corruption and mismatch`, async () => {
      const store = new ColbertStore({ dim, precision, modelId: 'model-x' });
      docs.forEach((d, i) => store.upsert(`d${i}`, d));
      store.upsert('empty', { data: new Float32Array(0), count: 0, dim });
      const bytes = store.toBytes();
      const back = ColbertStore.fromBytes(bytes);
      assert.equal(back.precision, precision);
      assert.equal(back.dim, dim);
      assert.equal(back.modelId, 'model-x');
      assert.deepEqual([...back.ids()], [...store.ids()]);
      for (const id of store.ids()) assert.deepEqual(back.getRaw(id), store.getRaw(id));
      const path = join(dir, `store-${precision}.bin`);
      await store.save(path);
      const loaded = await ColbertStore.load(path, { dim, precision, modelId: 'model-x' });
      for (const id of store.ids()) assert.deepEqual(loaded.get(id), store.get(id));
      // loaded stores stay writable
      loaded.upsert('d0', docs[3]);
      assert.equal(loaded.get('d0')?.count, docs[3].count);

      await assert.rejects(ColbertStore.load(path, { dim: 128 }), (e: M3Error) => e.code === 'INDEX_MISMATCH');
      const other: ColbertPrecision = precision === 'fp32' ? 'int8' : 'fp32';
      await assert.rejects(ColbertStore.load(path, { precision: other }), (e: M3Error) => e.code === 'INDEX_MISMATCH' && /precision/.test(e.message));
      const cut = join(dir, `cut-${precision}.bin`);
      writeFileSync(cut, bytes.subarray(0, bytes.length - 5));
      await assert.rejects(ColbertStore.load(cut), (e: M3Error) => e.code === 'INDEX_INVALID' && e.file === cut);
      const flipped = bytes.slice();
      flipped[bytes.length - 3] ^= 0x40;
      assert.equal(code(() => ColbertStore.fromBytes(flipped)), 'INDEX_INVALID');
      const huge = bytes.slice();
      new DataView(huge.buffer).setBigUint64(24 + 8 * 3, 1n << 45n, true);
      assert.equal(code(() => ColbertStore.fromBytes(huge)), 'INDEX_INVALID');
    });
  }

  test('invalid matrices are rejected', () => {
    const store = new ColbertStore({ dim: 4 });
    assert.equal(code(() => store.upsert('a', { data: new Float32Array(8), count: 2, dim: 8 })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.upsert('a', { data: new Float32Array(7), count: 2, dim: 4 })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.upsert('a', { data: new Float32Array([1, 2, Number.NaN, 0]), count: 1, dim: 4 })), 'INVALID_ARGUMENT');
    assert.equal(code(() => new ColbertStore({ dim: 4, precision: 'fp8' as ColbertPrecision })), 'INVALID_ARGUMENT');
    assert.equal(code(() => store.pack(['nope'])), 'INVALID_ARGUMENT');
    assert.equal(store.size, 0);
  });
});

describe('MaxSim', () => {
  test('onnxruntime MaxSim equals the naive JS reference within 1e-5 (32 × 256 × 1024)', async () => {
    const rand = rng(2);
    const dim = 1024;
    const topic = topicOf(rand, dim);
    const q = colbertLike(rand, 32, dim, topic);
    const docs = Array.from({ length: 6 }, (_, i) => colbertLike(rand, 256 - i * 40, dim, topicOf(rand, dim).map((x, j) => (i % 2 ? x : topic[j]))));
    const got = await maxSim(q, docs);
    const small = await maxSim(q, docs, { onnxMinMacs: Number.POSITIVE_INFINITY });
    docs.forEach((d, i) => {
      const ref = maxSimReference(q, d);
      assert.ok(Math.abs(got[i] - ref) < 1e-5, `doc ${i}: ${got[i]} vs ${ref}`);
      assert.ok(Math.abs(small[i] - ref) < 1e-12);
    });
  });

  test('packed, stored, chunked and small paths agree; empty inputs score 0', async () => {
    const rand = rng(3);
    const dim = 96;
    const topic = topicOf(rand, dim);
    const q = colbertLike(rand, 9, dim, topic);
    const docs = Array.from({ length: 30 }, (_, i) => colbertLike(rand, i === 4 ? 0 : 1 + ((i * 37) % 120), dim, topic));
    const ref = docs.map((d) => maxSimReference(q, d));
    assert.equal(ref[4], 0);
    for (const precision of ['fp32', 'fp16', 'int8'] as const) {
      const store = new ColbertStore({ dim, precision });
      docs.forEach((d, i) => store.upsert(`d${i}`, d));
      const ids = docs.map((_, i) => `d${i}`);
      const tol = precision === 'fp32' ? 1e-5 : precision === 'fp16' ? 1e-3 : 5e-3;
      const variants = [
        await maxSimStored(q, store, ids, { onnxMinMacs: 0 }),
        await maxSimStored(q, store, ids, { onnxMinMacs: 0, maxVectorsPerRun: 100 }), // many runs, one doc > 100 vectors alone
        await maxSimStored(q, store, ids, { onnxMinMacs: Number.POSITIVE_INFINITY }),
        await maxSimPacked(q, store.pack(ids), { onnxMinMacs: 0, maxVectorsPerRun: 250 }),
        await maxSimPacked(q, store.pack(ids), { onnxMinMacs: Number.POSITIVE_INFINITY }),
      ];
      for (const v of variants) ref.forEach((r, i) => assert.ok(Math.abs(v[i] - r) < tol, `${precision} doc ${i}: ${v[i]} vs ${r}`));
      // The exact fp32 path must match the packed path of the same precision to float noise.
      variants.slice(1).forEach((v) => v.forEach((x, i) => assert.ok(Math.abs(x - variants[0][i]) < 1e-5)));
    }
    assert.deepEqual([...(await maxSim(q, []))], []);
    assert.deepEqual([...(await maxSim({ data: new Float32Array(0), count: 0, dim }, docs.slice(0, 2)))], [0, 0]);
    await assert.rejects(maxSim(q, [{ data: new Float32Array(4), count: 1, dim: 4 }]), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
  });

  test('fp16 and int8 MaxSim error vs fp32 (dim 1024, 32-token queries, 256-token docs)', async (t) => {
    const rand = rng(4);
    const dim = 1024;
    const stores = {
      fp32: new ColbertStore({ dim, precision: 'fp32' }),
      fp16: new ColbertStore({ dim, precision: 'fp16' }),
      int8: new ColbertStore({ dim, precision: 'int8' }),
    };
    const topics = Array.from({ length: 4 }, () => topicOf(rand, dim));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const d = colbertLike(rand, 256, dim, topics[i % 4]);
      for (const s of Object.values(stores)) s.upsert(`d${i}`, d);
      ids.push(`d${i}`);
    }
    const errs: Record<string, number[]> = { fp16: [], int8: [] };
    for (let qi = 0; qi < 3; qi++) {
      const q = colbertLike(rand, 32, dim, topics[qi]);
      const exact = await maxSimStored(q, stores.fp32, ids);
      for (const p of ['fp16', 'int8'] as const) {
        const got = await maxSimStored(q, stores[p], ids);
        got.forEach((x, i) => errs[p].push(Math.abs(x - exact[i])));
      }
    }
    const stat = (a: number[]) => ({ mean: a.reduce((x, y) => x + y, 0) / a.length, max: Math.max(...a) });
    const f16 = stat(errs.fp16);
    const i8 = stat(errs.int8);
    t.diagnostic(`fp16 |Δ| mean ${f16.mean.toExponential(2)} max ${f16.max.toExponential(2)}; int8 |Δ| mean ${i8.mean.toExponential(2)} max ${i8.max.toExponential(2)} (${errs.fp16.length} pairs)`);
    assert.ok(f16.max < 2e-5, `fp16 max error ${f16.max}`);
    assert.ok(i8.max < 1e-3, `int8 max error ${i8.max}`);
  });
});
