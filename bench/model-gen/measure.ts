#!/usr/bin/env node
/**
 * Measurements on generated models (plain onnxruntime-node, no tokenizer):
 *
 *   node --import tsx bench/model-gen/measure.ts throughput --model bench/.models/m3-full/onnx/model.onnx \
 *       [--batches 1,2,4,8] [--len 512] [--threads 2] [--runs 2] [--warmup 1] [--quiet]
 *   node --import tsx bench/model-gen/measure.ts peak --model bench/.models/m3-full/onnx/model_mha.onnx \
 *       [--len 8192] [--batch 1] [--threads 2] [--no-arena]
 *
 * `peak` runs the model once in a child process and reports that process's peak RSS
 * (VmHWM from /proc/self/status), its RSS after loading the session (≈ weights), and the time.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { machineBusyPercent, waitForQuiet } from '../lib/machine.ts';
import { benchOrtRun, feedsFor, openSession, syntheticRows } from './ort-bench.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string' },
    batches: { type: 'string', default: '1,2,4,8' },
    batch: { type: 'string', default: '1' },
    len: { type: 'string' },
    threads: { type: 'string', default: '2' },
    runs: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '1' },
    'no-arena': { type: 'boolean', default: false },
    /** Wait for an idle machine (≤ 15% busy) before each timed run. */
    quiet: { type: 'boolean', default: false },
  },
});
const cmd = positionals[0];
const model = values.model;
if (!model || !['throughput', 'peak', '_child'].includes(cmd ?? '')) {
  console.error('usage: measure.ts throughput|peak --model PATH [options]');
  process.exit(2);
}
const threads = Number(values.threads);
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

if (cmd === 'throughput') {
  const len = Number(values.len ?? 512);
  const t0 = performance.now();
  const session = await openSession(model, { threads, arena: !values['no-arena'] });
  console.error(`session created in ${((performance.now() - t0) / 1000).toFixed(1)} s; load avg ${load()}`);
  const results = [];
  for (const batch of values.batches!.split(',').map(Number)) {
    const busyBefore = values.quiet ? await waitForQuiet() : await machineBusyPercent(200);
    const r = await benchOrtRun(session, {
      batch,
      seqLen: len,
      runs: Number(values.runs),
      warmup: Number(values.warmup),
      beforeRun: values.quiet ? () => waitForQuiet(15, 60_000) : undefined,
    });
    const bestTokS = (batch * len) / (r.msPerBatchBest / 1000);
    results.push({ ...r, bestTokensPerSecond: bestTokS, busyBefore, loadavg: load() });
    console.error(
      `batch ${batch} × ${len}: ${r.tokensPerSecond.toFixed(1)} tok/s mean, ${bestTokS.toFixed(1)} tok/s best ` +
        `(median ${(r.msPerBatchMedian / 1000).toFixed(2)} s/batch, best ${(r.msPerBatchBest / 1000).toFixed(2)} s) ` +
        `busy before ${busyBefore.toFixed(0)}%, load ${load()}`,
    );
  }
  await session.release();
  console.log(JSON.stringify({ model, threads, results }));
} else if (cmd === 'peak') {
  const args = [
    '--import',
    'tsx',
    fileURLToPath(import.meta.url),
    '_child',
    '--model',
    model,
    '--len',
    values.len ?? '8192',
    '--batch',
    values.batch!,
    '--threads',
    values.threads!,
    ...(values['no-arena'] ? ['--no-arena'] : []),
    ...(values.quiet ? ['--quiet'] : []),
  ];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) {
    console.error(`child failed: status ${r.status} signal ${r.signal}`);
    process.exit(1);
  }
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.error(
    `${model} ${res.batch}×${res.len}: peak RSS ${(res.maxRssKB / 2 ** 20).toFixed(2)} GiB ` +
      `(after load ${(res.rssAfterLoadKB / 2 ** 20).toFixed(2)} GiB), run ${res.runSeconds.toFixed(1)} s`,
  );
  console.log(JSON.stringify(res));
} else {
  const len = Number(values.len);
  const batch = Number(values.batch);
  const session = await openSession(model, { threads, arena: !values['no-arena'] });
  const rssAfterLoadKB = Math.round(process.memoryUsage().rss / 1024);
  const feeds = feedsFor(syntheticRows(batch, len));
  if (values.quiet) await waitForQuiet();
  const t0 = performance.now();
  const out = await session.run(feeds);
  const runSeconds = (performance.now() - t0) / 1000;
  const first = Object.values(out)[0];
  const finite = (first.data as Float32Array).every(Number.isFinite);
  console.log(
    JSON.stringify({
      model,
      batch,
      len,
      threads,
      arena: !values['no-arena'],
      runSeconds,
      rssAfterLoadKB,
      // VmHWM, not resourceUsage().maxRSS: Linux carries ru_maxrss across exec (the parent's RSS).
      maxRssKB: peakRssKB(),
      outputDims: first.dims,
      finite,
      loadavg: load(),
    }),
  );
}

/** This process's own peak RSS in KiB (VmHWM; ru_maxrss would include the parent's before exec). */
function peakRssKB(): number {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
  } catch {
    return process.resourceUsage().maxRSS;
  }
}
