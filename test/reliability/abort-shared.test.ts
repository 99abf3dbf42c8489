/**
 * One caller's abort never hurts another (issue 17). With the encode cache on (the default),
 * concurrent calls share the forward pass of a text they both asked for. Caller A passes an
 * AbortSignal and aborts while caller B, without one, waits for one of A's texts: A must reject
 * with its own ABORTED, B must get exactly its result, and nothing may be left unhandled (before
 * the fix the process died: an unhandled rejection, then `terminate called … Napi::Error`, 134).
 *
 * The trials run in a child process with no `unhandledRejection` handler, so an unhandled
 * rejection ends it with a non-zero status, exactly as it would end a server.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { M3Encoder, M3Error, type EncodeResult } from '@bgem3/core';
import { FIXTURE, ROOT, tempDir } from './helpers.ts';

const all = { dense: true, sparse: true, colbert: true } as const;
const TRIALS = 10;

function same(a: EncodeResult | undefined, b: EncodeResult | undefined): boolean {
  const eq = (x?: ArrayLike<number>, y?: ArrayLike<number>) => !!x && !!y && x.length === y.length && Array.from(x).every((v, i) => Math.abs(v - y[i]) < 1e-5);
  return !!a && !!b && eq(a.dense, b.dense) && eq(a.sparse?.indices, b.sparse?.indices) && eq(a.sparse?.values, b.sparse?.values) && eq(a.colbert?.data, b.colbert?.data);
}

/** Texts of one trial: A's 40 (three batches, longest first), of which B shares the shortest. */
function trialTexts(t: number): { a: string[]; shared: string; own: string } {
  const a = Array.from({ length: 40 }, (_, i) => `trial ${t} text ${i}: ${'rivers and tea in Paris, 北京 и Москва '.repeat(1 + (i % 9))}`);
  return { a, shared: a[0], own: `trial ${t}: B's own text` };
}

const settle = (p: Promise<EncodeResult[]>) =>
  p.then(
    (r) => ({ ok: true as const, r }),
    (e: unknown) => ({ ok: false as const, code: e instanceof M3Error ? e.code : `non-M3Error ${(e as Error)?.name}`, message: String((e as Error)?.message) }),
  );

/** The child: the trials, reported as one JSON line on stdout. */
async function child(workers: number): Promise<void> {
  const reference = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
  const enc = await M3Encoder.load(FIXTURE, { workers });
  const report: unknown[] = [];
  for (let t = 0; t < TRIALS; t++) {
    const { a, shared, own } = trialTexts(t);
    const [wantShared, wantOwn] = await reference.encode([shared, own], all);
    const ac = new AbortController();
    const pa = settle(enc.encode(a, { ...all, signal: ac.signal }));
    // B joins A's in-flight shared text (not a cache hit: A has not run its last batch yet).
    const pb = settle(enc.encode([shared, own], all));
    // Abort at a different moment each trial: synchronously, after a microtask, after timers.
    if (t % 3 === 0) ac.abort(new Error('client went away'));
    else if (t % 3 === 1) queueMicrotask(() => ac.abort(new Error('client went away')));
    else setTimeout(() => ac.abort(new Error('client went away')), t);
    const [ra, rb] = await Promise.all([pa, pb]);
    // A second aborting caller C on the same text, aborting too: it alone is ABORTED.
    const ac2 = new AbortController();
    const pc = settle(enc.encode([`trial ${t}: C`, shared], { ...all, signal: ac2.signal }));
    ac2.abort();
    const rc = await pc;
    // Aborted after it finished: no effect, and no late rejection.
    const ac3 = new AbortController();
    const rd = await settle(enc.encode([shared], { ...all, signal: ac3.signal }));
    ac3.abort();
    report.push({
      a: ra.ok ? 'resolved' : ra.code,
      aMessage: ra.ok ? '' : ra.message,
      b: rb.ok ? (same(rb.r[0], wantShared) && same(rb.r[1], wantOwn) ? 'exact' : 'WRONG') : rb.code,
      c: rc.ok ? 'resolved' : rc.code,
      d: rd.ok ? (same(rd.r[0], wantShared) ? 'exact' : 'WRONG') : rd.code,
    });
  }
  // Both of two callers abort: the shared work is cancelled (its remaining batches never run).
  const texts = Array.from({ length: 64 }, (_, i) => `cancel all ${i} ${'word '.repeat(20 + (i % 5))}`);
  const before = enc.stats.forwardPasses;
  const x = new AbortController();
  const y = new AbortController();
  const px = settle(enc.encode(texts, { signal: x.signal }));
  const py = settle(enc.encode(texts.slice(32), { signal: y.signal }));
  x.abort();
  y.abort();
  const [rx, ry] = await Promise.all([px, py]);
  await new Promise((r) => setTimeout(r, 200)); // a running batch may finish; nothing else may start
  const passes = enc.stats.forwardPasses - before;
  // A batch queued behind another caller's long one, whose only caller aborts, never runs.
  const before2 = enc.stats.forwardPasses;
  let longDone = false;
  const pLong = settle(enc.encode(['long text '.repeat(5000)])).finally(() => (longDone = true)); // 8,192 tokens
  await new Promise((r) => setTimeout(r, 100)); // tokenised and running
  const q = new AbortController();
  const pq = settle(enc.encode(['queued one', 'queued two'], { signal: q.signal }));
  await new Promise((r) => setTimeout(r, 20));
  const longRunningAtAbort = !longDone;
  q.abort();
  const [rLong, rq] = await Promise.all([pLong, pq]);
  await new Promise((r) => setTimeout(r, 100));
  const queued = { long: rLong.ok ? 'resolved' : rLong.code, aborted: rq.ok ? 'resolved' : rq.code, passes: enc.stats.forwardPasses - before2, longRunningAtAbort };
  // One signal shared by 40 concurrent calls (a server's shutdown signal): no listener-leak warning,
  // and after they finish the signal holds no per-call listener.
  const warnings: string[] = [];
  process.on('warning', (w) => warnings.push(w.name));
  const shared = new AbortController();
  await Promise.all(Array.from({ length: 40 }, (_, i) => enc.encode([`shared signal ${i}`], { signal: shared.signal })));
  const late = settle(enc.encode(['after the shared abort', 'x'.repeat(50)], { signal: shared.signal }));
  shared.abort();
  const lateResult = await late;
  await new Promise((r) => setTimeout(r, 50));
  await enc.close();
  await reference.close();
  process.stdout.write(
    `${JSON.stringify({ report, cancelled: { x: rx.ok ? 'resolved' : rx.code, y: ry.ok ? 'resolved' : ry.code, passes }, warnings, late: lateResult.ok ? 'resolved' : lateResult.code, queued })}\n`,
  );
}

if (process.env.BGEM3_ABORT_CHILD !== undefined) {
  await child(Number(process.env.BGEM3_ABORT_CHILD));
} else {
  describe('one caller’s abort never hurts another (encode cache on, child process, real onnxruntime)', () => {
    for (const workers of [1, 0]) {
      test(`${workers ? 'worker thread' : 'in-thread'}: ${TRIALS} trials of A aborting while B shares A's text: A is ABORTED, B exact, no unhandled rejection`, () => {
        const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
          env: { ...process.env, BGEM3_ABORT_CHILD: String(workers) },
          encoding: 'utf8',
          timeout: 120_000,
        });
        assert.equal(r.status, 0, `child exited with ${r.status} (${r.signal ?? ''}):\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, /terminate called|Unhandled|unhandled/);
        const out = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{')) as string);
        assert.equal(out.report.length, TRIALS);
        for (const [i, t] of out.report.entries()) {
          assert.equal(t.b, 'exact', `trial ${i}: B got ${t.b}`);
          assert.equal(t.a, 'ABORTED', `trial ${i}: A got ${t.a}`);
          assert.match(t.aMessage, /client went away/, 'A is rejected with its own reason');
          assert.equal(t.c, 'ABORTED', `trial ${i}: C got ${t.c}`);
          assert.equal(t.d, 'exact', `trial ${i}: an abort after the call finished changed its result (${t.d})`);
        }
        assert.deepEqual([out.cancelled.x, out.cancelled.y], ['ABORTED', 'ABORTED']);
        // 64 texts are 4+ batches; with both callers gone at most the batch already running finishes.
        assert.ok(out.cancelled.passes <= 1, `${out.cancelled.passes} batches ran after every caller aborted`);
        assert.deepEqual(out.warnings, [], 'no MaxListenersExceededWarning for a signal shared by 40 calls');
        assert.equal(out.late, 'ABORTED');
        assert.equal(out.queued.long, 'resolved');
        assert.ok(['ABORTED', 'resolved'].includes(out.queued.aborted), out.queued.aborted); // resolved: it ran before its abort (in-thread, the long run blocks the timers)
        // With a worker the aborted call's batch waited in the pool's queue and was dropped there.
        if (workers > 0 && out.queued.longRunningAtAbort) {
          assert.equal(out.queued.aborted, 'ABORTED');
          assert.equal(out.queued.passes, 1, `${out.queued.passes} batches ran; the aborted call's should not have`);
        }
      });
    }
  });

  test('a signal that is not an AbortSignal is a TypeError before any work', async () => {
    const enc = await M3Encoder.load(FIXTURE, { workers: 0 });
    try {
      for (const bad of [null, {}, { aborted: false }, 'stop', 1]) {
        await assert.rejects(enc.encode(['x'], { signal: bad as unknown as AbortSignal }), (e: unknown) => e instanceof TypeError && /signal must be an AbortSignal/.test(e.message));
      }
      assert.equal(enc.stats.forwardPasses, 0);
    } finally {
      await enc.close();
    }
  });

  describe('scripts/soak.ts with the cache on and aborting callers in the mix', () => {
    test('400 encodes, 2 aborting callers sharing the regular callers\' texts: within the RSS bound, every result correct, every aborted call ABORTED', async (t) => {
      const json = join(tempDir('bgem3-rel-soak-abort-'), 'soak.json');
      const r = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
        execFile(
          process.execPath,
          ['--import', 'tsx', join(ROOT, 'scripts/soak.ts'), '--n', '400', '--every', '40', '--cache', '16', '--aborting', '2', '--json', json],
          { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 << 20 },
          (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        ),
      );
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      const { summary } = JSON.parse(readFileSync(json, 'utf8'));
      assert.equal(summary.ok, true);
      assert.equal(summary.wrongResults, 0);
      assert.equal(summary.failedCalls, 0);
      assert.ok(summary.aborting.aborted > 10, `${summary.aborting.aborted} calls aborted`);
      t.diagnostic(r.stdout.trim().split('\n').join(' | '));
    });
  });
}
