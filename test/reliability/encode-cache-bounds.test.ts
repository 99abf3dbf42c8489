/**
 * The encode cache stays inside its budget and never shares its arrays with callers (issue 17):
 * - its keys count (they are a hash of the text, not the text: 50 KB texts no longer fill the heap
 *   behind an 8 MB budget);
 * - what `encode()` returns is the caller's own: changing it changes nothing for later callers,
 *   nor for another slot of the same call.
 */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, test } from 'node:test';
import { M3Encoder } from '@bgem3/core';
import { FIXTURE } from './helpers.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const all = { dense: true, sparse: true, colbert: true } as const;

/** Live JavaScript memory: the heap (keys, objects) plus array buffers (the cached vectors). */
function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

describe('encode cache bounds', () => {
  test('an 8 MB cache of 50 KB texts keeps the heap within the budget (keys counted)', async (t) => {
    const budget = 8 * 2 ** 20;
    const enc = await M3Encoder.load(FIXTURE, { workers: 0, cache: { maxBytes: budget }, maxLength: 64 });
    try {
      await enc.encode(['warm up'], all);
      const before = heapUsed();
      // 1,200 distinct 50 KB texts (60 MB of text): before the fix the keys alone were ~190 MB.
      for (let batch = 0; batch < 30; batch++) {
        const texts = Array.from({ length: 40 }, (_, i) => `${batch}-${i} ${'a long passage about rivers and tea '.repeat(1400)}`);
        await enc.encode(texts, all);
      }
      const growth = heapUsed() - before;
      t.diagnostic(`heap and array buffers +${(growth / 2 ** 20).toFixed(1)} MB after 1,200 texts of 50 KB with an 8 MB cache`);
      // The cache itself (~budget) plus a few MB of baseline; before the fix its keys alone were ~48 MB here.
      assert.ok(growth < budget + 8 * 2 ** 20, `heap and array buffers grew by ${(growth / 2 ** 20).toFixed(1)} MB with an 8 MB cache`);
      // stats.cacheBytes reports what the cache holds: filled to near its budget, never over it.
      assert.ok(enc.stats.cacheBytes <= budget && enc.stats.cacheBytes > budget / 2, `cacheBytes ${enc.stats.cacheBytes} of ${budget}`);
      // The cache is in use: a repeat of a recent text is a hit.
      const hits = enc.stats.cacheHits;
      await enc.encode([`29-39 ${'a long passage about rivers and tea '.repeat(1400)}`], all);
      assert.equal(enc.stats.cacheHits, hits + 1);
    } finally {
      await enc.close();
    }
  });

  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: a caller changing its vectors changes nothing for later callers or other slots`, async () => {
      const enc = await M3Encoder.load(FIXTURE, { workers });
      try {
        const text = 'a text whose vectors the caller scribbles over';
        const [first, twin] = await enc.encode([text, text], all);
        assert.notEqual(first.dense, twin.dense, 'two slots of one call get separate arrays');
        const want = { dense: Array.from(first.dense!), idx: Array.from(first.sparse!.indices), val: Array.from(first.sparse!.values), col: Array.from(first.colbert!.data) };
        first.dense!.fill(0);
        first.sparse!.values.fill(-1);
        first.sparse!.indices.fill(0);
        first.colbert!.data.fill(7);
        assert.deepEqual(Array.from(twin.dense!), want.dense);
        for (const sel of [all, { dense: true }, { sparse: true }, { colbert: true }]) {
          const [again] = await enc.encode([text], sel);
          if (again.dense) assert.deepEqual(Array.from(again.dense), want.dense);
          if (again.sparse) assert.deepEqual([Array.from(again.sparse.indices), Array.from(again.sparse.values)], [want.idx, want.val]);
          if (again.colbert) assert.deepEqual(Array.from(again.colbert.data), want.col);
          again.dense?.fill(1); // and scribble again
        }
        assert.ok(enc.stats.cacheHits >= 4, 'the later calls were cache hits');
      } finally {
        await enc.close();
      }
    });
  }
});
