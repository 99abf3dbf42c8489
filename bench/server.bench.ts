#!/usr/bin/env node
/**
 * `bgem3 serve` benchmark: the server (a child process, as deployed) under load from autocannon on
 * loopback, against in-process `encode` of the same texts in the same run.
 *
 *   node --import tsx bench/server.bench.ts --quick      # the tiny fixture model (CI smoke, seconds)
 *   node --import tsx bench/server.bench.ts              # bench/.models/m3-full if generated, else the fixture
 *
 * Figures (issue 19's targets):
 * - throughput at saturation, tokens/s, server ÷ in-process on the same texts of 128 tokens, one
 *   per request (≥ 90%), and the same texts 16 per request;
 * - 200 concurrent connections: errors (0) and the server's peak RSS (VmHWM);
 * - latency p50/p99: single short queries, 512-token passages, a mix;
 * - event-loop lag p99 of the server while saturated (≤ 20 ms), from its own Prometheus metrics.
 * Both sides use the same settings: one worker thread, 2 intra-op threads, batches of 16, cache off.
 *
 * On the full-size model a 128-token text costs the encoder about 1 s on this 2-core machine (a
 * 512-token one 3–5 s), so its sizes are small enough to finish in under 10 minutes: 32 texts
 * of 128 tokens per saturation pass (two full batches; 3 rounds of in-process, one per request, 16
 * per request), 4 passages of 512 tokens for their latency, short queries for the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { M3Encoder } from '@bgem3/core';
import { describeMachine } from './lib/machine.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'packages/core/dist/cli/main.js');
const FULL = join(ROOT, 'bench/.models/m3-full');
// Read only when this file is run (run-all.ts imports serverMarkdown and has its own flags).
const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
const { values } = isMain
  ? parseArgs({ options: { quick: { type: 'boolean', default: false }, threads: { type: 'string', default: '2' }, json: { type: 'string' } } })
  : { values: { quick: true, threads: '2', json: undefined as string | undefined } };
const full = !values.quick && existsSync(join(FULL, 'onnx/model.onnx'));
const modelDir = full ? FULL : join(ROOT, 'test/fixtures/tiny-m3-A');
const threads = Number(values.threads);
const BATCH = 16;
const log = (s: string) => process.stderr.write(`${s}\n`);

// Sizes: the full model runs 100–500 tokens/s on 2 cores (with or without other jobs), the
// fixture ~40k (seconds in all). Saturation: `satTexts` texts of `satChunk` tokens, each
// `satCopies` times, one per request from `saturationConnections` callers.
const sizes = full
  ? { satTexts: 32, satChunk: 128, satCopies: 1, saturationConnections: 32, rounds: 3, passages: 4, shortAmount: 20, passageAmount: 4, mixAmount: 48, wideAmount: 400, timeoutS: 900 }
  : { satTexts: 32, satChunk: 128, satCopies: 4, saturationConnections: 64, rounds: 4, passages: 16, shortAmount: 100, passageAmount: 50, mixAmount: 200, wideAmount: 600, timeoutS: 120 };

interface Served {
  proc: ChildProcess;
  url: string;
  exited: Promise<number | null>;
}

async function startServer(): Promise<Served> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--model', modelDir, '--port', '0', '--no-model-check', '--threads', String(threads), '--batch-size', String(BATCH)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr!.setEncoding('utf8');
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stderr!.on('data', (d: string) => {
      err += d;
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) resolve(m[1]);
    });
    void exited.then((code) => reject(new Error(`bgem3 serve exited (${code}): ${err}`)));
  });
  return { proc, url, exited };
}

/**
 * Reads the counters and gauges this bench needs from the server's /metrics. The event-loop lag
 * figures cover the time since the previous scrape (prom-client resets its histogram on each).
 */
async function scrape(url: string): Promise<{ tokens: number; lagP99Ms: number; lagMaxMs: number; rssBytes: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const num = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)`, 'm').exec(text)?.[1] ?? NaN);
  return {
    tokens: num('bgem3_tokens_total'),
    lagP99Ms: num('bgem3_nodejs_eventloop_lag_p99_seconds') * 1000,
    lagMaxMs: num('bgem3_nodejs_eventloop_lag_max_seconds') * 1000,
    rssBytes: num('bgem3_process_resident_memory_bytes'),
  };
}

/** Multilingual source text: the fixture's golden texts (the same tokenizer family as BGE-M3). */
function corpus(): string {
  const g = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/tiny-m3-A/golden.json'), 'utf8')) as { texts: string[] };
  return g.texts.filter((t) => t.trim().length > 0).join('\n');
}

/**
 * `n` consecutive windows of the corpus (repeated as needed) that each tokenise to `chunk` tokens
 * or just under (<s> and </s> included), measured with the encoder's own tokenizer: the longest
 * prefix that fits, found by bisection, cut back to a space when there is one near its end.
 */
async function chunkTexts(enc: M3Encoder, n: number, chunk: number): Promise<string[]> {
  const base = corpus();
  let text = base;
  const count = async (s: string) => (await enc.tokenize([s], enc.maxPositions))[0].ids.length;
  const out: string[] = [];
  let pos = 0;
  while (out.length < n) {
    while (text.length - pos < chunk * 16) text += '\n' + base;
    let lo = pos + 1;
    let hi = pos + chunk * 16;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if ((await count(text.slice(pos, mid))) <= chunk) lo = mid;
      else hi = mid - 1;
    }
    let end = lo;
    const space = text.lastIndexOf(' ', end);
    if (space > pos && end - space < 24) end = space;
    if (/[\uD800-\uDBFF]/.test(text[end - 1] ?? '')) end--; // never split a surrogate pair
    out.push(text.slice(pos, end).trim());
    pos = end;
  }
  return out;
}

function peakRssMB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Load {
  connections: number;
  amount: number;
  bodies: string[];
}

interface LoadResult {
  requests: number;
  seconds: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  p50Ms: number;
  p99Ms: number;
}

/** autocannon against POST /v1/embeddings, each request one text picked in turn from `bodies`. */
async function load(url: string, l: Load): Promise<LoadResult> {
  let next = 0;
  const r = await autocannon({
    url: `${url}/v1/embeddings`,
    connections: l.connections,
    amount: l.amount,
    timeout: sizes.timeoutS,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req: Record<string, unknown>) => ({ ...req, body: l.bodies[next++ % l.bodies.length] }),
      },
    ],
  });
  return {
    requests: r.requests.total,
    seconds: r.duration,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
  };
}

/**
 * Throughput runs: `count` requests from `connections` concurrent callers (fetch, keep-alive),
 * timed by the wall clock around them. (autocannon's `duration` for a fixed `amount` is rounded
 * up to its once-a-second sampling tick, which on short runs is most of the figure.)
 */
async function pump(url: string, connections: number, count: number, bodies: string[]): Promise<{ seconds: number; failed: number }> {
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (next < count) {
      const b = bodies[next++ % bodies.length];
      const res = await fetch(`${url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: b });
      await res.arrayBuffer();
      if (res.status !== 200) failed++;
    }
  };
  await Promise.all(Array.from({ length: connections }, lane));
  return { seconds: (performance.now() - t0) / 1000, failed };
}

const bodyOf = (input: string | string[]) => JSON.stringify({ model: 'bge-m3', input, encoding_format: 'float' });
const body = (text: string) => bodyOf(text);
const groupsOf = <T>(a: T[], n: number): T[][] => Array.from({ length: Math.ceil(a.length / n) }, (_, i) => a.slice(i * n, (i + 1) * n));

async function main(): Promise<void> {
  const machine = describeMachine();
  const loadAtStart = loadavg();
  log(`server bench on ${full ? 'the generated full-size model' : 'the fixture model'}: ${machine.cpuModel}, ${machine.cores} cores`);
  const golden = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/tiny-m3-A/golden.json'), 'utf8')) as { texts: string[] };
  const queries = golden.texts.filter((t) => t.length > 0 && t.length < 120);

  // In-process encode and the server take turns (see the rounds below): this shared machine's
  // speed drifts over minutes, and figures taken minutes apart would compare the drift.
  const enc = await M3Encoder.load(modelDir, { workers: 1, intraOpNumThreads: threads, batchSize: BATCH, cache: false });
  const satTexts = await chunkTexts(enc, sizes.satTexts, sizes.satChunk);
  const passages = await chunkTexts(enc, sizes.passages, 512);
  // The saturation texts: `satTexts`, `satCopies` times (in-process: one encode call).
  const saturationTexts = Array.from({ length: satTexts.length * sizes.satCopies }, (_, i) => satTexts[i % satTexts.length]);
  const satTokens = (await enc.tokenize(satTexts)).reduce((s, t) => s + t.ids.length, 0) / satTexts.length;
  const passageTokens = (await enc.tokenize(passages)).reduce((s, t) => s + t.ids.length, 0) / passages.length;
  log(`  ${satTexts.length} saturation texts of ~${satTokens.toFixed(0)} tokens, ${passages.length} passages of ~${passageTokens.toFixed(0)} tokens`);
  await enc.encode(satTexts.slice(0, 4));
  const queryTokens = (await enc.tokenize(queries)).reduce((s, t) => s + t.ids.length, 0) / queries.length;
  let inProcess = { tokens: 0, seconds: Infinity, eventLoopLagP99Ms: 0 };
  /** One in-process pass over the saturation texts; returns its tokens/s. */
  const inProcessPass = async (): Promise<number> => {
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const t0 = performance.now();
    const res = await enc.encode(saturationTexts);
    const seconds = (performance.now() - t0) / 1000;
    lag.disable();
    const lagP99 = lag.percentile(99) / 1e6;
    const tokens = res.reduce((s, x) => s + x.tokens, 0);
    if (seconds < inProcess.seconds) inProcess = { tokens, seconds, eventLoopLagP99Ms: Math.max(inProcess.eventLoopLagP99Ms, lagP99) };
    else inProcess.eventLoopLagP99Ms = Math.max(inProcess.eventLoopLagP99Ms, lagP99);
    return tokens / seconds;
  };
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

  log('server …');
  const server = await startServer();
  try {
    await load(server.url, { connections: 4, amount: 8, bodies: [...satTexts.slice(0, 4), ...queries.slice(0, 4)].map(body) }); // warm-up
    // Saturation: the same texts, one per request, many connections.
    type Run = { requests: number; seconds: number; failed: number; tokens: number };
    let sat: (Run & { eventLoopLagP99Ms: number }) | undefined;
    let worstLag = 0;
    let worstLagMax = 0;
    let worstClientLag = 0;
    let batched: Run | undefined;
    // Per round: in-process, the server one text per request, the server 16 per request, back to
    // back; the ratios are the medians of the per-round ratios (this machine's speed drifts).
    const ratios: number[] = [];
    const batchedRatios: number[] = [];
    for (let round = 0; round < sizes.rounds; round++) {
      log(`  round ${round + 1}: in-process encode, then the server`);
      const local = await inProcessPass();
      const before = await scrape(server.url);
      // The bench's own event loop in the same seconds (it only waits on the fetch callers): the
      // lag any nice-0 thread sees on this machine then, the baseline for the server's.
      const own = monitorEventLoopDelay({ resolution: 10 });
      own.enable();
      const r = await pump(server.url, sizes.saturationConnections, saturationTexts.length, satTexts.map(body));
      own.disable();
      const afterSat = await scrape(server.url);
      worstClientLag = Math.max(worstClientLag, own.percentile(99) / 1e6);
      worstLag = Math.max(worstLag, afterSat.lagP99Ms);
      worstLagMax = Math.max(worstLagMax, afterSat.lagMaxMs);
      const run = { requests: saturationTexts.length, ...r, tokens: afterSat.tokens - before.tokens, eventLoopLagP99Ms: afterSat.lagP99Ms };
      log(`    in-process ${local.toFixed(0)} tok/s, server ${(run.tokens / run.seconds).toFixed(0)} tok/s (${((run.tokens / run.seconds / local) * 100).toFixed(0)}%), lag p99 ${afterSat.lagP99Ms.toFixed(1)} ms, max ${afterSat.lagMaxMs.toFixed(1)} ms (the bench's own loop: p99 ${(own.percentile(99) / 1e6).toFixed(1)} ms)`);
      ratios.push(run.tokens / run.seconds / local);
      if (!sat || run.tokens / run.seconds > sat.tokens / sat.seconds) sat = run;
      // The same texts 16 per request (as an ingestion client sends them): per-request costs amortised.
      const b0 = await scrape(server.url);
      const rb = await pump(server.url, 8, saturationTexts.length / BATCH, groupsOf(satTexts, BATCH).map(bodyOf));
      const b1 = await scrape(server.url);
      const runB = { requests: saturationTexts.length / BATCH, ...rb, tokens: b1.tokens - b0.tokens };
      batchedRatios.push(runB.tokens / runB.seconds / local);
      log(`    16 per request: ${(runB.tokens / runB.seconds).toFixed(0)} tok/s (${((runB.tokens / runB.seconds / local) * 100).toFixed(0)}%)`);
      if (!batched || runB.tokens / runB.seconds > batched.tokens / batched.seconds) batched = runB;
    }
    await enc.close();
    const inProcessTps = inProcess.tokens / inProcess.seconds;
    const serverTps = sat!.tokens / sat!.seconds;
    log(`  saturation: ${serverTps.toFixed(0)} tok/s vs in-process ${inProcessTps.toFixed(0)} (best passes); per-round ratios ${ratios.map((x) => `${(x * 100).toFixed(0)}%`).join(', ')}`);

    log('  latency: short queries, 512-token passages, a mix');
    const short1 = await load(server.url, { connections: 1, amount: sizes.shortAmount, bodies: queries.map(body) });
    const passage1 = await load(server.url, { connections: 1, amount: sizes.passageAmount, bodies: passages.map(body) });
    const qb = queries.map(body);
    const mixBodies = Array.from({ length: 20 }, (_, i) => (i % 10 === 9 ? body(passages[i % passages.length]) : qb[i % qb.length]));
    const mix = await load(server.url, { connections: 16, amount: sizes.mixAmount, bodies: mixBodies });
    log(`    short ${short1.p50Ms} / ${short1.p99Ms} ms, passages ${passage1.p50Ms} / ${passage1.p99Ms} ms, mix ${mix.p50Ms} / ${mix.p99Ms} ms`);
    log('  200 connections');
    const wideBefore = await scrape(server.url);
    const wide = await load(server.url, { connections: 200, amount: sizes.wideAmount, bodies: queries.map(body) });
    const wideAfter = await scrape(server.url);
    const peakRss = peakRssMB(server.proc.pid!);
    log(`  200 connections: ${wide.errors} errors, ${wide.non2xx} non-2xx, ${wide.timeouts} timeouts, peak RSS ${peakRss.toFixed(0)} MB`);

    const result = {
      date: new Date().toISOString(),
      machine,
      model: full ? 'generated full-size BGE-M3 (bench/.models/m3-full)' : 'tiny fixture (test/fixtures/tiny-m3-A)',
      settings: { workers: 1, threads, batch: BATCH, cache: false },
      loadAverageAtStart: loadAtStart,
      inProcess: { tokensPerSecond: inProcessTps, ...inProcess },
      saturation: { ...sat!, connections: sizes.saturationConnections, meanTokens: satTokens, tokensPerSecond: serverTps, ratio: median(ratios), ratios, eventLoopLagP99Ms: worstLag, eventLoopLagMaxMs: worstLagMax, benchLoopLagP99Ms: worstClientLag },
      saturationBatched: { ...batched!, textsPerRequest: BATCH, connections: 8, tokensPerSecond: batched!.tokens / batched!.seconds, ratio: median(batchedRatios), ratios: batchedRatios },
      shortQueries: { ...short1, meanTokens: queryTokens },
      passages512: { ...passage1, meanTokens: passageTokens },
      mix,
      connections200: { ...wide, eventLoopLagP99Ms: wideAfter.lagP99Ms, tokens: wideAfter.tokens - wideBefore.tokens, peakRssMB: peakRss, rssAfterMB: wideAfter.rssBytes / 2 ** 20 },
    };
    const out = values.json ?? join(ROOT, `bench/results/server${full ? '' : '.quick'}.json`);
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(serverMarkdown(result).join('\n') + '\n');
  } finally {
    server.proc.kill('SIGTERM');
    await server.exited;
  }
}

/** The Markdown table of a result (also used by bench/run-all.ts). */
export function serverMarkdown(r: any): string[] {
  const ms = (x: number) => `${x.toFixed(x < 10 ? 1 : 0)} ms`;
  const lat = (l: any) => `${ms(l.p50Ms)} / ${ms(l.p99Ms)}`;
  const met = (ok: boolean) => (ok ? 'met' : 'missed');
  const w = r.connections200;
  return [
    `## Serving (\`bgem3 serve\`, ${r.model})`,
    '',
    `From \`node --import tsx bench/server.bench.ts${r.model.startsWith('tiny') ? ' --quick' : ''}\` on ${String(r.date).slice(0, 16).replace('T', ' ')} UTC (load average at start ${r.loadAverageAtStart.map((x: number) => x.toFixed(1)).join(' ')} on ${r.machine.cores} cores): the server in a child process, loaded on loopback through POST /v1/embeddings (throughput: concurrent fetch callers timed by the wall clock, taking turns with in-process encode of the same texts; latency and 200 connections: autocannon); ${r.settings.workers} worker thread, ${r.settings.threads} intra-op threads, batches of ${r.settings.batch}, cache off (in-process encode with the same settings).`,
    '',
    '| figure | target | measured | |',
    '|---|---|---|---|',
    `| throughput at saturation (${r.saturation.requests} texts of ${r.saturation.meanTokens ? `~${r.saturation.meanTokens.toFixed(0)}` : '512'} tokens, one per request, ${r.saturation.connections} connections) vs in-process \`encode\` of the same texts | ≥ 90% | ${(r.saturation.ratio * 100).toFixed(0)}% (median of ${r.saturation.ratios.length} back-to-back rounds: ${r.saturation.ratios.map((x: number) => `${(x * 100).toFixed(0)}%`).join(', ')}; best passes ${r.saturation.tokensPerSecond.toFixed(0)} vs ${r.inProcess.tokensPerSecond.toFixed(0)} tok/s) | ${met(r.saturation.ratio >= 0.9)} |`,
    ...(r.saturationBatched
      ? [
          `| … the same texts ${r.saturationBatched.textsPerRequest} per request (${r.saturationBatched.requests} requests, ${r.saturationBatched.connections} connections) | ≥ 90% | ${(r.saturationBatched.ratio * 100).toFixed(0)}% (rounds: ${r.saturationBatched.ratios.map((x: number) => `${(x * 100).toFixed(0)}%`).join(', ')}; best ${r.saturationBatched.tokensPerSecond.toFixed(0)} tok/s) | ${met(r.saturationBatched.ratio >= 0.9)} |`,
        ]
      : []),
    `| 200 concurrent connections (${w.requests} short queries) | 0 errors, RSS bounded | ${w.errors + w.timeouts + w.non2xx} errors; server peak RSS ${w.peakRssMB.toFixed(0)} MB | ${met(w.errors + w.timeouts + w.non2xx === 0)} |`,
    `| event-loop lag p99 of the server while saturated (worst round) | ≤ 20 ms | ${ms(r.saturation.eventLoopLagP99Ms)} (${r.saturation.eventLoopLagMaxMs !== undefined ? `max ${ms(r.saturation.eventLoopLagMaxMs)}; ` : ''}${r.saturation.benchLoopLagP99Ms !== undefined ? `the bench process's own, mostly idle loop in the same seconds: ${ms(r.saturation.benchLoopLagP99Ms)}; ` : ''}200 connections: ${ms(w.eventLoopLagP99Ms)}; the bench's loop during in-process encode: ${ms(r.inProcess.eventLoopLagP99Ms)}) | ${met(r.saturation.eventLoopLagP99Ms <= 20)} |`,
    `| latency p50 / p99, single short queries (~${r.shortQueries.meanTokens.toFixed(0)} tokens, 1 connection) | reported | ${lat(r.shortQueries)} | — |`,
    `| latency p50 / p99, 512-token passages (1 connection) | reported | ${lat(r.passages512)} | — |`,
    `| latency p50 / p99, a mix (90% short queries, 10% passages, 16 connections) | reported | ${lat(r.mix)} | — |`,
    `| latency p50 / p99, short queries at 200 connections | reported | ${lat(w)} | — |`,
    '',
  ];
}

if (isMain) await main();
