#!/usr/bin/env node
/**
 * Soak test of the encoder: many encode calls from independent async callers on one M3Encoder,
 * with the process's memory sampled as it goes. A leak anywhere on the encode path (tokenizer,
 * batching, worker messages, onnxruntime tensors, in-flight bookkeeping, the cache) shows up as
 * RSS that keeps growing once the process has warmed up; a correct encoder levels off.
 *
 *   node --import tsx scripts/soak.ts [--n 20000] [--json out.json] [options]
 *
 * Options:
 *   --n <count>              encode calls in total (default 20000)
 *   --every <count>          sample memory every this many completed encodes (default n/40, at least 50)
 *   --concurrency <count>    independent callers, each awaiting its own encode calls (default 4)
 *   --workers <count>        encoder worker threads, 0 = in-thread (default 1, the library default)
 *   --cache <off|MB>         encode cache: off (default; measures the encode path itself) or a budget in MB
 *   --max-growth-mb <MB>     the bound: RSS growth over the last half of the run (default 32)
 *   --model <dir>            model directory (default the tiny fixture test/fixtures/tiny-m3-A)
 *   --json <file>            write every sample and the summary as JSON
 *   --progress               print each sample as it is taken (long runs)
 *   --aborting <count>       extra callers that abort (default 0; see below)
 *   --simulate-leak-kb <KB>  keep KB of garbage per encode (tests that the bound trips; default 0)
 *
 * Texts: the 24 short multilingual golden texts of the fixture (≤ 200 characters), repeated 1–20
 * times (about 5–800 tokens) and suffixed with their call number, so every call is a distinct text (no cache hits,
 * no shared in-flight passes) and result sizes vary as in real ingestion. All three outputs are
 * requested. Every sample also re-encodes a fixed probe text and checks it is bit-identical to
 * its first encoding, so the soak also checks that results stay correct under sustained load.
 *
 * Aborting callers (`--aborting`): each repeatedly encodes the next three texts the regular callers
 * are about to ask for, plus one of its own, with an AbortSignal, and aborts after 0–4 ms (or at
 * once). With the cache on, regular callers then share those in-flight passes: an abort must leave
 * them exact, and must itself reject with ABORTED (or resolve, when it came too late); anything
 * else is a failed call. They run until the regular callers are done, and do not count in `--n`.
 *
 * "Growth of the last half" = RSS at the end minus RSS at the first sample of the second half
 * (memory is sampled after a forced GC), less what the encode cache gained over the same span (its
 * budget bounds it). Warm-up is kept out of it: one full batch of the longest texts runs before the
 * first sample (onnxruntime's arena reaches its largest shape), and the first half absorbs the rest
 * (JIT, allocator pools). Exit status: 0 within the bound, 1 over it
 * (or on a wrong result), 2 on bad arguments.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { EncodeResult } from '../packages/core/dist/index.js';

const FIXTURE = fileURLToPath(new URL('../test/fixtures/tiny-m3-A', import.meta.url));
const MB = 2 ** 20;

function usage(message: string): never {
  process.stderr.write(`soak: ${message.split('\n')[0]}\nusage: node --import tsx scripts/soak.ts [--n 20000] [--json out.json] (see the file header for all options)\n`);
  process.exit(2);
}

function intOption(value: string | undefined, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) usage(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  return n;
}

let args: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      n: { type: 'string' },
      every: { type: 'string' },
      concurrency: { type: 'string' },
      workers: { type: 'string' },
      cache: { type: 'string' },
      'max-growth-mb': { type: 'string' },
      model: { type: 'string' },
      json: { type: 'string' },
      progress: { type: 'boolean' },
      'simulate-leak-kb': { type: 'string' },
      aborting: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
}
try {
  args = parse();
} catch (e) {
  usage((e as Error).message);
}
const v = args.values;
const n = intOption(v.n, 'n', 20000, 2);
const every = intOption(v.every, 'every', Math.max(50, Math.round(n / 40)), 1);
const concurrency = intOption(v.concurrency, 'concurrency', 4, 1);
const workers = intOption(v.workers, 'workers', 1, 0);
const leakKb = intOption(v['simulate-leak-kb'], 'simulate-leak-kb', 0, 0);
const aborting = intOption(v.aborting, 'aborting', 0, 0);
const maxGrowthMb = v['max-growth-mb'] === undefined ? 32 : Number(v['max-growth-mb']);
if (!Number.isFinite(maxGrowthMb) || maxGrowthMb < 0) usage(`--max-growth-mb must be a number ≥ 0, got ${JSON.stringify(v['max-growth-mb'])}`);
let cache: false | { maxBytes: number } = false;
if (v.cache !== undefined && v.cache !== 'off') {
  const mb = Number(v.cache);
  if (!Number.isFinite(mb) || mb <= 0) usage(`--cache must be "off" or a budget in MB, got ${JSON.stringify(v.cache)}`);
  cache = { maxBytes: Math.round(mb * MB) };
}
if (n < 2 * every) usage(`--n (${n}) must be at least twice --every (${every}) to compare the two halves`);
const model = v.model ?? FIXTURE;

// A forced GC before each sample, so the figures are live memory rather than GC timing.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

interface Sample {
  encodes: number;
  seconds: number;
  rssMb: number;
  heapUsedMb: number;
  externalMb: number;
  arrayBuffersMb: number;
  /** What the encode cache holds (bounded by its budget, so not a leak however it grows). */
  cacheMb: number;
}

// The short golden texts (the fixture also has 7–61 KB texts: with the repeats below they would
// all be cut at 8,192 tokens and make the soak measure long-input throughput instead).
const base: string[] = (JSON.parse(readFileSync(`${FIXTURE}/golden.json`, 'utf8')).texts as string[]).filter((t) => t.length > 0 && t.length <= 200);
function textOf(i: number): string {
  const repeat = 1 + ((i * 7919) % 20);
  return `${Array.from({ length: repeat }, () => base[i % base.length]).join(' ')} #${i}`;
}

const all = { dense: true, sparse: true, colbert: true } as const;
const PROBE = 'BGE-M3 soak probe: the same text must always give the same numbers.';

function sameEncoding(a: EncodeResult, b: EncodeResult): boolean {
  const eq = (x: ArrayLike<number> | undefined, y: ArrayLike<number> | undefined) => {
    if (!x || !y || x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return false;
    return true;
  };
  return eq(a.dense, b.dense) && eq(a.sparse?.indices, b.sparse?.indices) && eq(a.sparse?.values, b.sparse?.values) && eq(a.colbert?.data, b.colbert?.data);
}

// Imported after the arguments are checked: a usage error costs no model runtime start-up.
const { M3Encoder } = await import('../packages/core/dist/index.js');
const t0 = performance.now();
const encoder = await M3Encoder.load(model, { workers, cache });
const loadSeconds = (performance.now() - t0) / 1000;
const [probe] = await encoder.encode([PROBE], all);
// Warm-up before the first sample: one full batch (16 texts, the encoder's default batchSize) of
// the longest texts the run will ask for, so onnxruntime's arena and the allocators reach the
// largest shape now, not at whatever moment the callers first happen to form it. Without it a
// short run could see that one-off step (tens of MB) in its last half and call it a leak.
const longest = [...base].sort((a, b) => b.length - a.length);
await encoder.encode(
  Array.from({ length: 16 }, (_, j) => `${Array.from({ length: 20 }, () => longest[j % longest.length]).join(' ')} warm-up ${j}`),
  all,
);
const leaked: Uint8Array[] = [];
const samples: Sample[] = [];
let wrong = 0;
let failures = 0;
let done = 0;
let next = 0;
let sampling: Promise<void> = Promise.resolve();
const start = performance.now();

function sample(): Sample {
  gc();
  const m = process.memoryUsage();
  return {
    encodes: done,
    seconds: (performance.now() - start) / 1000,
    rssMb: m.rss / MB,
    heapUsedMb: m.heapUsed / MB,
    externalMb: m.external / MB,
    arrayBuffersMb: m.arrayBuffers / MB,
    cacheMb: encoder.stats.cacheBytes / MB,
  };
}

async function takeSample(): Promise<void> {
  const [again] = await encoder.encode([PROBE], all);
  if (!sameEncoding(again, probe)) wrong++;
  const s = sample();
  samples.push(s);
  if (v.progress) console.log(`soak: ${s.encodes} encodes, ${s.seconds.toFixed(0)} s, RSS ${s.rssMb.toFixed(1)} MB, heap ${s.heapUsedMb.toFixed(1)} MB, external ${s.externalMb.toFixed(1)} MB, cache ${s.cacheMb.toFixed(1)} MB`);
}

samples.push(sample());
async function caller(): Promise<void> {
  while (next < n) {
    const i = next++;
    try {
      const [r] = await encoder.encode([textOf(i)], all);
      if (!r.dense || r.dense.length !== encoder.dim || !r.dense.every(Number.isFinite) || !r.colbert || r.colbert.count !== r.tokens - 1) wrong++;
    } catch (e) {
      failures++;
      if (failures <= 3) process.stderr.write(`soak: encode ${i} failed: ${(e as Error).message}\n`);
    }
    if (leakKb > 0) leaked.push(new Uint8Array(leakKb * 1024).fill(1));
    done++;
    if (done % every === 0 || done === n) sampling = sampling.then(takeSample);
  }
}
let aborted = 0;
let abortLate = 0;
let regularDone = false;
async function abortingCaller(id: number): Promise<void> {
  for (let k = 0; !regularDone; k++) {
    const ac = new AbortController();
    const from = next;
    const texts = [textOf(from), textOf(from + 1), textOf(from + 2), `aborting caller ${id} call ${k} ${base[k % base.length]}`];
    const p = encoder.encode(texts, { ...all, signal: ac.signal });
    const when = (id + k) % 6;
    if (when === 5) ac.abort(new Error('gone'));
    else setTimeout(() => ac.abort(new Error('gone')), when);
    try {
      await p;
      abortLate++;
    } catch (e) {
      if ((e as { code?: string }).code === 'ABORTED') aborted++;
      else {
        failures++;
        if (failures <= 3) process.stderr.write(`soak: aborting call failed with something else than ABORTED: ${(e as Error).message}\n`);
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
const abortingCallers = Array.from({ length: aborting }, (_, id) => abortingCaller(id));
await Promise.all(Array.from({ length: concurrency }, caller));
regularDone = true;
await Promise.all(abortingCallers);
await sampling;
const seconds = (performance.now() - start) / 1000;
await encoder.close();

const rss = samples.map((s) => s.rssMb);
const half = samples.findIndex((s) => s.encodes >= n / 2);
const final = samples[samples.length - 1];
const rssGrowth = final.rssMb - samples[half].rssMb;
// The cache's own growth is bounded by its budget, so it is not counted as a leak.
const cacheGrowth = final.cacheMb - samples[half].cacheMb;
const growth = rssGrowth - cacheGrowth;
const summary = {
  n,
  every,
  concurrency,
  workers,
  cache: cache ? `${cache.maxBytes / MB} MB` : 'off',
  aborting: { callers: aborting, aborted, finishedBeforeTheAbort: abortLate },
  model,
  node: process.version,
  loadSeconds: round(loadSeconds),
  seconds: round(seconds),
  encodesPerSecond: round(n / seconds),
  samples: samples.length,
  rssMb: { start: round(samples[0].rssMb), min: round(Math.min(...rss)), max: round(Math.max(...rss)), final: round(final.rssMb) },
  heapUsedMb: { start: round(samples[0].heapUsedMb), max: round(Math.max(...samples.map((s) => s.heapUsedMb))), final: round(final.heapUsedMb) },
  lastHalf: { fromEncodes: samples[half].encodes, rssFromMb: round(samples[half].rssMb), rssGrowthMb: round(rssGrowth), cacheGrowthMb: round(cacheGrowth), growthMb: round(growth) },
  maxGrowthMb,
  wrongResults: wrong,
  failedCalls: failures,
  simulatedLeakKb: leakKb,
  ok: growth <= maxGrowthMb && wrong === 0 && failures === 0,
};

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

const fmt = (x: number) => `${x.toFixed(1)} MB`;
console.log(
  `soak: ${n} encodes (${concurrency} callers, ${workers} worker${workers === 1 ? '' : 's'}, cache ${summary.cache}) in ${seconds.toFixed(1)} s ` +
    `(${summary.encodesPerSecond} encodes/s; model load ${loadSeconds.toFixed(2)} s)`,
);
console.log(`soak: RSS start ${fmt(samples[0].rssMb)}, min ${fmt(Math.min(...rss))}, max ${fmt(Math.max(...rss))}, final ${fmt(final.rssMb)} (${samples.length} samples, every ${every} encodes)`);
console.log(`soak: heap used start ${fmt(samples[0].heapUsedMb)}, final ${fmt(final.heapUsedMb)}`);
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)} MB`;
console.log(
  `soak: RSS growth over the last half (encodes ${samples[half].encodes}–${n}): ${signed(rssGrowth)}` +
    (cache ? `, of which the cache ${signed(cacheGrowth)}: ${signed(growth)} beyond it` : '') +
    ` (bound ${maxGrowthMb} MB)`,
);
if (aborting) console.log(`soak: ${aborting} aborting callers: ${aborted} calls aborted, ${abortLate} finished before their abort`);
if (wrong || failures) console.log(`soak: ${wrong} wrong results, ${failures} failed calls`);
if (v.json) writeFileSync(v.json, `${JSON.stringify({ summary, samples }, null, 2)}\n`);
if (!summary.ok) {
  console.log(`soak: FAIL${growth > maxGrowthMb ? ` (RSS grew ${growth.toFixed(1)} MB${cache ? ' beyond the cache' : ''} > ${maxGrowthMb} MB)` : ''}${wrong || failures ? ' (wrong or failed results)' : ''}`);
  process.exit(1);
}
console.log('soak: OK');
