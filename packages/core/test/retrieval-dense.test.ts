import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { DenseIndex } from '../src/retrieval/dense-index.js';

const dir = mkdtempSync(join(tmpdir(), 'bgem3-dense-'));
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

function unit(rand: () => number, dim: number): Float32Array {
  const v = Float32Array.from({ length: dim }, () => rand() - 0.5);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function brute(truth: Map<string, Float32Array>, q: Float32Array, k: number, filter?: (id: string) => boolean) {
  return [...truth]
    .filter(([id]) => !filter || filter(id))
    .map(([id, v]) => ({ id, score: dot(q, v) }))
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
    .slice(0, k);
}

function sameHits(got: { id: string; score: number }[], want: { id: string; score: number }[], tol: number): void {
  assert.deepEqual(got.map((h) => h.id), want.map((h) => h.id));
  got.forEach((h, i) => assert.ok(Math.abs(h.score - want[i].score) <= tol, `${h.id}: ${h.score} vs ${want[i].score}`));
}

describe('DenseIndex', () => {
  for (const [n, dim, path] of [
    [300, 32, 'JS loop'],
    [1500, 768, 'onnxruntime'], // ≥ 2^20 multiply-adds: the onnxruntime path
  ] as const) {
    test(`exact top-k equals brute force (${n} × ${dim}, ${path}), with updates and deletes`, async () => {
      const rand = rng(n);
      const index = new DenseIndex({ dim, modelId: 'm' });
      const truth = new Map<string, Float32Array>();
      for (let i = 0; i < n; i++) {
        const v = unit(rand, dim);
        index.upsert(`d${i}`, v);
        truth.set(`d${i}`, v);
      }
      for (let i = 0; i < n / 10; i++) {
        const id = `d${Math.floor(rand() * n)}`;
        if (i % 2) {
          assert.equal(index.delete([id]), truth.has(id) ? 1 : 0);
          truth.delete(id);
        } else {
          const v = unit(rand, dim);
          index.upsert(id, v);
          truth.set(id, v);
        }
      }
      assert.equal(index.size, truth.size);
      const queries = Array.from({ length: 5 }, () => unit(rand, dim));
      for (const q of queries) {
        for (const k of [1, 10, truth.size + 5]) sameHits(await index.search(q, k), brute(truth, q, k), 1e-5);
        const even = (id: string) => Number(id.slice(1)) % 2 === 0;
        sameHits(await index.search(q, 7, { filter: even }), brute(truth, q, 7, even), 1e-5);
      }
      const many = await index.searchMany(queries, 4);
      for (let i = 0; i < queries.length; i++) sameHits(many[i], brute(truth, queries[i], 4), 1e-5);
      const ids = [...truth.keys()].slice(0, 20);
      const exact = index.scoreIds(queries[0], ids);
      ids.forEach((id, i) => assert.equal(exact[i], dot(queries[0], truth.get(id) as Float32Array)));
      for (const [id, v] of [...truth].slice(0, 10)) assert.deepEqual(index.get(id), v);
    });
  }

  test('a delete while onnxruntime runs does not mix up rows', async () => {
    const rand = rng(5);
    const dim = 512;
    const index = new DenseIndex({ dim });
    const truth = new Map<string, Float32Array>();
    for (let i = 0; i < 4000; i++) {
      const v = unit(rand, dim);
      index.upsert(`d${i}`, v);
      truth.set(`d${i}`, v);
    }
    const q = unit(rand, dim);
    const victims = brute(truth, q, 5).map((h) => h.id); // deleting them moves the last rows
    const pending = index.search(q, 50);
    index.delete(victims.concat(['d3999', 'd3998'])); // while the search awaits onnxruntime
    for (const id of victims.concat(['d3999', 'd3998'])) truth.delete(id);
    const hits = await pending;
    for (const h of hits) {
      assert.ok(truth.has(h.id), `${h.id} was deleted`);
      assert.ok(Math.abs(h.score - dot(q, truth.get(h.id) as Float32Array)) < 1e-5);
    }
  });

  test('validation: k, dimensions, non-finite values, empty index', async () => {
    const index = new DenseIndex({ dim: 4 });
    assert.deepEqual(await index.search(new Float32Array(4), 3), []);
    index.upsert('a', new Float32Array([1, 0, 0, 0]));
    for (const k of [0, -2, 2.5, Number.NaN]) await assert.rejects(index.search(new Float32Array(4), k), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
    await assert.rejects(index.search(new Float32Array(3), 1), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
    assert.throws(() => index.upsert('b', new Float32Array(5)), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
    assert.throws(() => index.upsert('b', new Float32Array([0, Number.NaN, 0, 0])), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
    assert.throws(() => index.upsert('', new Float32Array(4)), (e: M3Error) => e.code === 'INVALID_ARGUMENT');
    assert.equal(index.size, 1);
    assert.deepEqual(await index.search(new Float32Array([1, 0, 0, 0]), 10), [{ id: 'a', score: 1 }]);
  });

  test('save/load round trip, corruption and mismatch', async () => {
    const rand = rng(9);
    const index = new DenseIndex({ dim: 16, modelId: 'model-d' });
    for (let i = 0; i < 50; i++) index.upsert(`d${i}`, unit(rand, 16));
    index.delete(['d3', 'd10']);
    const path = join(dir, 'dense.bin');
    await index.save(path);
    const loaded = await DenseIndex.load(path, { dim: 16, modelId: 'model-d' });
    assert.equal(loaded.size, 48);
    const q = unit(rand, 16);
    assert.deepEqual(await loaded.search(q, 48), await index.search(q, 48));
    assert.deepEqual(await DenseIndex.fromBytes(index.toBytes()).search(q, 5), await index.search(q, 5));
    loaded.upsert('new', unit(rand, 16));
    assert.equal(loaded.size, 49);
    await assert.rejects(DenseIndex.load(path, { dim: 8 }), (e: M3Error) => e.code === 'INDEX_MISMATCH');
    await assert.rejects(DenseIndex.load(path, { modelId: 'x' }), (e: M3Error) => e.code === 'INDEX_MISMATCH');
    const bytes = index.toBytes();
    const cut = join(dir, 'dense-cut.bin');
    writeFileSync(cut, bytes.subarray(0, 200));
    await assert.rejects(DenseIndex.load(cut), (e: M3Error) => e.code === 'INDEX_INVALID' && e.file === cut);
    const flipped = bytes.slice();
    flipped[bytes.length - 10] ^= 1;
    assert.throws(() => DenseIndex.fromBytes(flipped), (e: M3Error) => e.code === 'INDEX_INVALID');
  });
});

describe('DenseIndex.appendBytes (a store loading its rows)', () => {
  test('stored bytes go straight into the matrix; searches equal upserts; non-finite or wrong-sized bytes change nothing', async () => {
    const rand = rng(77);
    const dim = 24;
    const truth = new Map<string, Float32Array>();
    const loaded = new DenseIndex({ dim });
    loaded.reserve(10); // fewer than added: the matrix grows
    for (let i = 0; i < 50; i++) {
      const v = unit(rand, dim);
      truth.set(`v${i}`, v);
      const bytes = new Uint8Array(v.buffer.slice(0));
      assert.equal(loaded.appendBytes(`v${i}`, bytes), true);
    }
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      const v = unit(rand, dim);
      v[5] = bad;
      assert.equal(loaded.appendBytes('bad', new Uint8Array(v.buffer)), false);
    }
    assert.equal(loaded.appendBytes('short', new Uint8Array(4 * dim - 4)), false);
    assert.equal(loaded.size, 50);
    assert.equal(loaded.has('bad'), false);
    for (const [id, v] of truth) assert.deepEqual(loaded.get(id), v);
    for (let i = 0; i < 5; i++) {
      const q = unit(rand, dim);
      sameHits(await loaded.search(q, 7), brute(truth, q, 7), 1e-6);
    }
    // It stays an ordinary index: upserts and deletes after the load.
    loaded.upsert('v3', unit(rand, dim));
    loaded.delete('v4');
    assert.equal(loaded.size, 49);
  });
});
