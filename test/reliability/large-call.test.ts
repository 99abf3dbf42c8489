/**
 * One encode call with 100,000 texts (an ingestion job passing a whole corpus at once): results
 * come back complete and in input order, the call is processed in bounded chunks (the encoder
 * tokenises at most 1,024 texts at a time and runs them in batches), peak memory stays under a
 * stated bound, and an AbortSignal stops it promptly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { M3Encoder, M3Error, type TokenizedText } from '@bgem3/core';
import { FIXTURE } from './helpers.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MB = 2 ** 20;
const N = 100_000;
/**
 * The bound on peak RSS growth during the call. Measured on the 2-core dev machine: ~150 MB, nearly
 * all of it still held after the call by the 100,000 results it returns (an object and a
 * Float32Array each). The chunking itself is asserted directly (tokeniser call sizes, forward
 * passes); the RSS bound is a regression guard with ~1.7× headroom for allocator noise.
 */
const PEAK_GROWTH_MB = 256;
/** Tokeniser calls may not exceed this many texts (the encoder's chunk: memory per step is bounded). */
const CHUNK = 1024;

const texts = Array.from({ length: N }, (_, i) => `item ${i} of the corpus`);

describe(`one encode call with ${N.toLocaleString('en')} texts (cache off, in-thread)`, () => {
  let enc: M3Encoder;
  const tokenizerCalls: number[] = [];
  before(async () => {
    enc = await M3Encoder.load(FIXTURE, { workers: 0, cache: false, batchSize: 128 });
    const original = enc.tokenizer.encode.bind(enc.tokenizer);
    enc.tokenizer.encode = (t: readonly string[], maxLength: number): Promise<TokenizedText[]> => {
      tokenizerCalls.push(t.length);
      return original(t, maxLength);
    };
  });
  after(() => enc.close());

  test(`complete, in order, in chunks of ≤ ${CHUNK} texts, peak RSS growth < ${PEAK_GROWTH_MB} MB`, async (t) => {
    gc();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const t0 = performance.now();
    let results;
    try {
      results = await enc.encode(texts, { dense: true });
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(results.length, N);
    for (const r of results) assert.ok(r.dense!.length === 32 && Number.isFinite(r.dense![0]) && r.sparse === undefined);
    assert.ok(tokenizerCalls.length >= N / CHUNK && Math.max(...tokenizerCalls) <= CHUNK, `tokenised in chunks: ${tokenizerCalls.length} calls, largest ${Math.max(...tokenizerCalls)}`);
    assert.ok(enc.stats.forwardPasses >= N / 128, `${enc.stats.forwardPasses} forward passes of ≤ 128 texts`);
    // Input order: a few positions agree with the same texts encoded alone.
    const probe = [0, 1, 4242, 77777, N - 1];
    const alone = await enc.encode(probe.map((i) => texts[i]));
    probe.forEach((i, j) => {
      const d = results![i].dense!;
      for (let k = 0; k < 32; k++) assert.ok(Math.abs(d[k] - alone[j].dense![k]) < 1e-5, `result ${i} belongs to text ${i}`);
    });
    const growth = (peak - rss0) / MB;
    gc();
    const m = process.memoryUsage();
    const retained = (m.rss - rss0) / MB;
    t.diagnostic(
      `${N} texts in ${seconds.toFixed(1)} s; peak RSS growth ${growth.toFixed(0)} MB (bound ${PEAK_GROWTH_MB}); ` +
        `after the call, results held: RSS +${retained.toFixed(0)} MB, JS heap ${(m.heapUsed / MB).toFixed(0)} MB, array buffers ${(m.arrayBuffers / MB).toFixed(0)} MB`,
    );
    assert.ok(growth < PEAK_GROWTH_MB, `peak RSS grew ${growth.toFixed(0)} MB during the call (bound ${PEAK_GROWTH_MB} MB)`);
  });

  test('an AbortSignal stops the call promptly; its remaining batches never run', async () => {
    const before = enc.stats.forwardPasses;
    const ac = new AbortController();
    const t0 = performance.now();
    const p = enc.encode(texts, { dense: true, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('job cancelled')), 300);
    await assert.rejects(p, (e: unknown) => e instanceof M3Error && e.code === 'ABORTED' && /job cancelled/.test(e.message));
    const ms = performance.now() - t0;
    const ran = enc.stats.forwardPasses - before;
    assert.ok(ran < N / 128 / 4, `only a part of the ${Math.ceil(N / 128)} batches ran (${ran})`);
    assert.ok(ms < 15_000, `rejected ${ms.toFixed(0)} ms after the start (aborted at 300 ms)`);
    const [r] = await enc.encode(['still usable']);
    assert.equal(r.dense!.length, 32);
  });
});
