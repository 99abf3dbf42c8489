/**
 * A worker thread that dies while many independent callers are waiting on the pool (a server
 * under load). encoder-runtime.test.ts covers one caller (a crash is retried once; a second
 * crash rejects with WORKER_FAILED; the encoder recovers); this checks the bystanders: every
 * other concurrent call still resolves with exactly the right result, only the batch that
 * crashed twice fails, and nothing hangs.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { M3Encoder, M3Error, type EncodeResult } from '@bgem3/core';
import { FIXTURE } from './helpers.ts';

const all = { dense: true, sparse: true, colbert: true } as const;
const texts = Array.from({ length: 40 }, (_, i) => `caller ${i} asks about ${['rivers', 'tea', 'Paris', '北京', 'Москва'][i % 5]} ${'and more '.repeat(i % 7)}`);

function same(a: EncodeResult, b: EncodeResult): boolean {
  const eq = (x?: ArrayLike<number>, y?: ArrayLike<number>) => !!x && !!y && x.length === y.length && Array.from(x).every((v, i) => Math.abs(v - y[i]) < 1e-5);
  return eq(a.dense, b.dense) && eq(a.sparse?.indices, b.sparse?.indices) && eq(a.sparse?.values, b.sparse?.values) && eq(a.colbert?.data, b.colbert?.data);
}

describe('a worker crash among concurrent callers', () => {
  test('40 independent calls, the worker dies twice on one batch: that call rejects WORKER_FAILED, the 39 others are exact', async () => {
    const reference = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
    const want = await Promise.all(texts.map(async (t) => (await reference.encode([t], all))[0]));
    await reference.close();
    // Dispatches 7 and 8: the 7th batch crashes its worker, its retry (the next dispatch) crashes the replacement.
    const enc = await M3Encoder.load(FIXTURE, { workers: 1, cache: false, workerFaults: { crashOnDispatch: [7, 8] } });
    try {
      const t0 = performance.now();
      const settled = await Promise.allSettled(texts.map((t) => enc.encode([t], all).then((r) => r[0])));
      const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [[i, s.reason] as const] : []));
      assert.equal(failed.length, 1, `exactly one call failed: ${failed.map(([i, e]) => `${i}: ${(e as Error).message}`).join('; ')}`);
      assert.ok(failed[0][1] instanceof M3Error && failed[0][1].code === 'WORKER_FAILED', String(failed[0][1]));
      assert.match((failed[0][1] as Error).message, /retried once/);
      settled.forEach((s, i) => {
        if (s.status === 'fulfilled') assert.ok(same(s.value, want[i]), `call ${i} got its own, exact result`);
      });
      assert.ok(performance.now() - t0 < 120_000, 'no hang');
      // The pool is whole again: the failed text and everything else work.
      const again = await enc.encode(texts, all);
      again.forEach((r, i) => assert.ok(same(r, want[i]), `after the crash, text ${i}`));
    } finally {
      await enc.close();
    }
  });

  test('two workers, one dies once mid-load: every call resolves exactly (the batch is retried on the replacement)', async () => {
    const reference = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
    const want = await reference.encode(texts, all);
    await reference.close();
    const enc = await M3Encoder.load(FIXTURE, { workers: 2, cache: false, workerFaults: { crashOnDispatch: [5] } });
    try {
      const got = await Promise.all(texts.map((t) => enc.encode([t], all).then((r) => r[0])));
      got.forEach((r, i) => assert.ok(same(r, want[i]), `call ${i}`));
    } finally {
      await enc.close();
    }
  });
});
