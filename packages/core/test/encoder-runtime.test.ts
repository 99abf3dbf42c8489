// The encoder as a server component: worker threads, event loop, exit, faults, abort, concurrency, cache, bad input.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Error } from '@bgem3/core';
import { FIXTURE, golden } from './helpers/fixture.ts';
import { paddingAcceptable, planBatches } from '../src/inference/batching.js';

const g = golden();
const SHORT: string[] = g.texts.slice(0, 25);

function sameResult(a: any, b: any): void {
  assert.deepEqual(Array.from(a.dense), Array.from(b.dense));
  assert.deepEqual(Array.from(a.sparse.indices), Array.from(b.sparse.indices));
  assert.deepEqual(Array.from(a.sparse.values), Array.from(b.sparse.values));
  assert.deepEqual(Array.from(a.colbert.data), Array.from(b.colbert.data));
}

describe('worker-thread encoder', () => {
  let enc: M3Encoder;
  before(async () => {
    enc = await M3Encoder.load(FIXTURE, { cache: false, workers: 1 });
  });
  after(() => enc.close());

  test('the event loop keeps ticking during a long encode', async () => {
    let ticks = 0;
    let worstGap = 0;
    let last = performance.now();
    const iv = setInterval(() => {
      const now = performance.now();
      worstGap = Math.max(worstGap, now - last);
      last = now;
      ticks++;
    }, 5);
    // Encode long texts until at least 150 ms have passed (how many that takes depends on the
    // machine; each text is new, so no cache answers it).
    const t0 = performance.now();
    for (let i = 0; performance.now() - t0 < 150; i++) {
      await enc.encode([`long ${i} `.repeat(1500), ...SHORT], { dense: true, sparse: true, colbert: true });
    }
    const elapsed = performance.now() - t0;
    clearInterval(iv);
    // A blocked loop would tick ~once; a free one ticks about every 5 ms.
    assert.ok(ticks >= elapsed / 5 / 4, `ticks ${ticks} in ${elapsed.toFixed(0)} ms`);
  });

  test('worker results equal in-thread results', async () => {
    const local = await M3Encoder.load(FIXTURE, { cache: false, workers: 0 });
    try {
      const a = await enc.encode(SHORT, { dense: true, sparse: true, colbert: true });
      const b = await local.encode(SHORT, { dense: true, sparse: true, colbert: true });
      a.forEach((r, i) => sameResult(r, b[i]));
    } finally {
      await local.close();
    }
  });

  test('200 concurrent encode calls return exactly what serial calls return', async () => {
    const texts = Array.from({ length: 200 }, (_, i) => `${SHORT[i % SHORT.length]} #${i}`);
    const serial = [];
    for (const t of texts.slice(0, 40)) serial.push((await enc.encode([t], { dense: true, sparse: true, colbert: true }))[0]);
    const concurrent = await Promise.all(texts.map((t) => enc.encode([t], { dense: true, sparse: true, colbert: true }).then((r) => r[0])));
    serial.forEach((r, i) => sameResult(concurrent[i], r));
    // and the rest agree with a batched call
    const batched = await enc.encode(texts, { dense: true, sparse: true, colbert: true });
    concurrent.forEach((r, i) => {
      for (let k = 0; k < r.dense!.length; k++) assert.ok(Math.abs(r.dense![k] - batched[i].dense![k]) < 1e-5);
    });
  });

  test('an aborted call stops its remaining batches and rejects with ABORTED', async () => {
    const texts = Array.from({ length: 64 }, (_, i) => `text number ${i} `.repeat(20));
    const small = await M3Encoder.load(FIXTURE, { cache: false, batchSize: 2 });
    try {
      const ac = new AbortController();
      const before = small.stats.forwardPasses;
      const p = small.encode(texts, { signal: ac.signal });
      setTimeout(() => ac.abort(new Error('user cancelled')), 5);
      await assert.rejects(p, (e: unknown) => e instanceof M3Error && e.code === 'ABORTED');
      const ran = small.stats.forwardPasses - before;
      assert.ok(ran < 32, `only part of the 32 batches ran (${ran})`);
      await assert.rejects(small.encode(['x'], { signal: AbortSignal.abort() }), /aborted/);
    } finally {
      await small.close();
    }
  });

  test('a worker that dies mid-batch is replaced; the batch is retried and the call resolves', async () => {
    const e2 = await M3Encoder.load(FIXTURE, { cache: false, workerFaults: { crashOnDispatch: [2] } });
    try {
      const want = await e2.encode(SHORT.slice(0, 3)); // dispatch 1
      const [r] = await e2.encode(['a text whose worker dies']); // dispatch 2 crashes, 3 retries
      assert.equal(r.dense!.length, 32);
      const again = await e2.encode(SHORT.slice(0, 3));
      again.forEach((r2, i) => assert.deepEqual(Array.from(r2.dense!), Array.from(want[i].dense!)));
    } finally {
      await e2.close();
    }
  });

  test('a batch whose worker dies twice rejects with WORKER_FAILED (never hangs); the encoder recovers', async () => {
    const e3 = await M3Encoder.load(FIXTURE, { cache: false, workerFaults: { crashOnDispatch: [1, 2] } });
    try {
      await assert.rejects(e3.encode(['x']), (e: unknown) => e instanceof M3Error && e.code === 'WORKER_FAILED');
      const [r] = await e3.encode(['x']);
      assert.equal(r.dense!.length, 32);
    } finally {
      await e3.close();
    }
  });

  test('close() waits for a running batch and rejects queued ones', async () => {
    const e4 = await M3Encoder.load(FIXTURE, { cache: false, batchSize: 1 });
    const running = e4.encode(['long '.repeat(3000), 'b', 'c']).then(
      () => undefined,
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 20));
    await e4.close();
    const err = await running;
    assert.ok(err instanceof M3Error && /closed/.test(err.message), `rejected because the encoder closed: ${err}`);
    await assert.rejects(e4.encode(['x']), /closed/);
  });
});

test('the process exits after encoding without close()', () => {
  const script = `import('@bgem3/core').then(async ({ M3Encoder }) => {
    const enc = await M3Encoder.load(${JSON.stringify(FIXTURE)});
    const r = await enc.encode(['hello'], { dense: true, sparse: true, colbert: true });
    console.log('encoded', r[0].dense.length);
  });`;
  const cwd = new URL('..', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, cwd });
  assert.equal(r.signal, null, 'the process was not killed by the timeout');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /encoded 32/);
});

test('worker threads run at a lower priority than the event loop (Linux, where nice is per thread)', () => {
  // In a child process, so that the threads counted are the encoder's alone.
  const script = `import('@bgem3/core').then(async ({ M3Encoder }) => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const nices = () => readdirSync('/proc/self/task').map((tid) => ({
      tid: Number(tid),
      nice: Number(readFileSync('/proc/self/task/' + tid + '/stat', 'utf8').split(') ')[1].split(' ')[16]),
    }));
    const before = nices();
    const enc = await M3Encoder.load(${JSON.stringify(FIXTURE)}, { workerNice: Number(process.argv[1]) });
    await enc.encode(['hello']);
    const after = nices();
    console.log(JSON.stringify({ pid: process.pid, before, after }));
    await enc.close();
  });`;
  const cwd = new URL('..', import.meta.url).pathname;
  for (const nice of [5, 0]) {
    const r = spawnSync(process.execPath, ['-e', script, String(nice)], { encoding: 'utf8', timeout: 60_000, cwd });
    assert.equal(r.status, 0, r.stderr);
    const { pid, before, after } = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const base = before.find((t: any) => t.tid === pid).nice;
    assert.equal(after.find((t: any) => t.tid === pid).nice, base, 'the event-loop thread keeps its priority');
    assert.ok(before.every((t: any) => t.nice === base));
    const lowered = after.filter((t: any) => t.nice === Math.min(19, base + nice) && t.nice !== base);
    if (nice === 0) assert.equal(after.filter((t: any) => t.nice !== base).length, 0, 'workerNice 0 changes nothing');
    else assert.ok(lowered.length >= 1, `the worker thread (and onnxruntime's pool threads) run at nice ${base + nice}: ${JSON.stringify(after)}`);
  }
});

describe('encode cache and one pass per text', () => {
  test('a text is encoded once for all outputs; repeats and other outputs hit the cache', async () => {
    const enc = await M3Encoder.load(FIXTURE, { workers: 0 });
    try {
      await enc.encode(SHORT, { dense: true });
      assert.equal(enc.stats.textsEncoded, SHORT.length);
      const passes = enc.stats.forwardPasses;
      const again = await enc.encode(SHORT, { sparse: true, colbert: true, dense: false });
      assert.equal(enc.stats.textsEncoded, SHORT.length, 'no new forward pass');
      assert.equal(enc.stats.forwardPasses, passes);
      assert.equal(again[0].dense, undefined);
      assert.ok(again[0].sparse && again[0].colbert);
      await enc.encode(['dup', 'dup', 'dup']);
      assert.equal(enc.stats.textsEncoded, SHORT.length + 1, 'duplicates in one call encode once');
      await enc.encode(SHORT.slice(0, 2), { maxLength: 12 });
      assert.equal(enc.stats.textsEncoded, SHORT.length + 3, 'another maxLength is another key');
      const [a, b] = await Promise.all([enc.encode(['concurrent']), enc.encode(['concurrent'], { sparse: true })]);
      assert.equal(enc.stats.textsEncoded, SHORT.length + 4, 'concurrent calls for one text share one pass');
      assert.deepEqual(Array.from(a[0].dense!), Array.from(b[0].dense!));
    } finally {
      await enc.close();
    }
  });
});

describe('bad input', () => {
  let enc: M3Encoder;
  before(async () => {
    enc = await M3Encoder.load(FIXTURE, { workers: 0 });
  });
  after(() => enc.close());

  test('non-strings are a TypeError naming the index', async () => {
    for (const bad of [undefined, null, 42, { text: 'x' }, ['x']]) {
      await assert.rejects(enc.encode(['ok', bad as never]), (e: unknown) => e instanceof TypeError && /texts\[1\]/.test((e as Error).message));
    }
    await assert.rejects(enc.encode('not an array' as never), TypeError);
    await assert.rejects(enc.encode(null as never), TypeError);
  });

  test('empty array, empty and whitespace strings, NUL, lone surrogates, a 1 MB string', async () => {
    assert.deepEqual(await enc.encode([]), []);
    const [empty, ws, nul, lone, huge] = await enc.encode(['', '   \n\t', 'a\u0000b', 'x\uD800y', 'word '.repeat(200_000)], {
      dense: true,
      sparse: true,
      colbert: true,
    });
    assert.equal(empty.tokens, 2);
    assert.equal(empty.colbert!.count, 1, 'only </s>');
    assert.equal(ws.tokens, 2);
    for (const r of [empty, ws, nul, lone, huge]) assert.ok(r.dense!.every(Number.isFinite));
    const [replaced] = await enc.encode(['x\uFFFDy']);
    const [loneIds, replacedIds] = await enc.tokenize(['x\uD800y', 'x\uFFFDy']);
    assert.deepEqual(Array.from(loneIds.ids), Array.from(replacedIds.ids), 'a lone surrogate tokenizes as U+FFFD');
    // Encoded in a padded batch vs alone: the masked and mask-free attention kernels differ in the last bits.
    lone.dense!.forEach((v, i) => assert.ok(Math.abs(v - replaced.dense![i]) < 1e-6, 'a lone surrogate encodes as U+FFFD'));
    assert.equal(huge.tokens, 8192);
    assert.equal(huge.truncated, true);
  });

  test('weights corrupted in place (same size, NaN values) are refused with the file named, not returned as NaN vectors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bgem3-nan-'));
    try {
      cpSync(FIXTURE, dir, { recursive: true });
      const data = join(dir, 'onnx/model.onnx_data');
      const b = readFileSync(data);
      for (let i = 3; i < b.length; i += 4) b[i] = 0x7f; // every float becomes NaN or huge
      writeFileSync(data, b);
      const bad = await M3Encoder.load(dir, { workers: 0 });
      try {
        await assert.rejects(bad.encode(['hello'], { sparse: true, dense: false }), (e: unknown) => e instanceof M3Error && e.code === 'MODEL_FILE_INVALID' && /model\.onnx/.test(e.message));
      } finally {
        await bad.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('maxLength, batchSize, workers and workerNice out of range are clear errors', async () => {
    for (const maxLength of [0, 1, 1.5, 8193, Number.NaN]) {
      await assert.rejects(enc.encode(['x'], { maxLength }), /maxLength must be an integer from 2 to 8192/);
    }
    await assert.rejects(M3Encoder.load(FIXTURE, { batchSize: 0 }), /batchSize must be a positive integer/);
    await assert.rejects(M3Encoder.load(FIXTURE, { workers: -1 }), /workers must be an integer/);
    for (const workerNice of [-1, 20, 1.5]) {
      await assert.rejects(M3Encoder.load(FIXTURE, { workerNice }), /workerNice must be an integer from 0 to 19/);
    }
  });
});

describe('batch planning (planBatches)', () => {
  test('a long text does not pad short ones to its length; similar lengths share batches; budgets hold', () => {
    const limits = { batchSize: 16, maxBatchTokens: 16384 };
    // One 512-token passage and 15 queries of 30 tokens: the passage runs alone (16 × 512 padded
    // tokens for 962 real ones is 8.5×), the queries together.
    const mixed = [30, 30, 512, ...Array.from({ length: 13 }, () => 30)];
    assert.deepEqual(planBatches(mixed, limits), [[2], [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]);
    // Lengths within the padding bound share a batch, longest first.
    assert.deepEqual(planBatches([400, 512, 450, 480], limits), [[1, 3, 2, 0]]);
    // Short texts (≤ 64 tokens) batch whatever their spread.
    assert.deepEqual(planBatches([4, 60, 12, 33], limits), [[1, 3, 2, 0]]);
    // Every batch of a random mix keeps the bounds.
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const lengths = Array.from({ length: 300 }, () => 2 + Math.floor(rand() ** 3 * 2000));
    const batches = planBatches(lengths, { ...limits, aloneAbove: 1024 });
    assert.deepEqual(batches.flat().sort((a, b) => a - b), lengths.map((_, i) => i), 'every text exactly once');
    for (const b of batches) {
      const ls = b.map((i) => lengths[i]);
      const longest = Math.max(...ls);
      assert.ok(b.length <= 16);
      if (b.length > 1) {
        assert.ok(longest * b.length <= 16384 && longest <= 1024);
        assert.ok(paddingAcceptable(longest, b.length, ls.reduce((x, y) => x + y, 0)), `padding of ${JSON.stringify(ls)}`);
      }
    }
  });
});
