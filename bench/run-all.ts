#!/usr/bin/env node
/**
 * `pnpm bench`: every performance figure of the project, measured side by side in one run on this
 * machine, written to BENCHMARKS.md (and bench/results/all.json).
 *
 *   pnpm bench            # full: generated full-size BGE-M3 (random weights, real architecture)
 *   pnpm bench -- --quick # smoke: the tiny fixture model, small sizes (what CI runs)
 *
 * The real BAAI/bge-m3 weights cannot be downloaded here; bench/model-gen writes a model with the
 * exact architecture, I/O, FLOPs and memory (generated once into bench/.models, git-ignored).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bgem3Pass, openBgem3, peakRssOneInput, timeToFirstEmbedding, type Bgem3Run } from './lib/bgem3-engine.ts';
import { describeMachine, measureMatMulFlops } from './lib/machine.ts';
import { benchTransformersJs, disposeTransformersJs } from './lib/transformersjs.ts';
import { chunkTexts } from './encode.bench.ts';
import { serverMarkdown } from './server.bench.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHILD_CWD = join(ROOT, 'test'); // a workspace folder that depends on @bgem3/core
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    threads: { type: 'string', default: '2' },
    texts: { type: 'string' },
    'skip-long': { type: 'boolean', default: false },
    'skip-store': { type: 'boolean', default: false },
  },
});
const quick = values.quick!;
const threads = Number(values.threads);
const modelDir = quick ? join(ROOT, 'test/fixtures/tiny-m3-A') : join(ROOT, 'bench/.models/m3-full');
const outMd = values.out ?? (quick ? join(ROOT, 'bench/results/BENCHMARKS.quick.md') : join(ROOT, 'BENCHMARKS.md'));

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
}

const log = (s: string) => process.stderr.write(`${s}\n`);

async function ensureModels(): Promise<void> {
  if (quick) return;
  const gen = join(ROOT, 'bench/model-gen/generate.ts');
  const need: Array<[string, string[]]> = [
    ['onnx/model.onnx', []],
    ['onnx/model_quantized.onnx', ['--dtype', 'int8']],
  ];
  for (const [file, args] of need) {
    if (existsSync(join(modelDir, file))) continue;
    log(`generating ${file} (once; a few minutes) …`);
    await run(process.execPath, ['--import', 'tsx', gen, '--out', modelDir, ...args]);
  }
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/**
 * The PostgreSQL/pgvector figures come from separate `node --import tsx bench/pgvector.bench.ts`
 * runs (100k documents take about an hour, and a native server is given with `--url`), written
 * to `bench/results/pgvector-<backend>-<sizes>.json`; `pnpm bench` points at them rather than
 * repeating them.
 */
function pgvectorSection(files: string[]): string[] {
  if (files.length === 0) return [];
  return [
    `## PostgreSQL / pgvector (\`@bgem3/pgvector\`)`,
    '',
    'Measured by `node --import tsx bench/pgvector.bench.ts [--url=…] --docs=20000,100000` (PGlite, or a native server given by URL):',
    'sparse first stages (postings table vs HNSW sparsevec: inserts, builds, recall@10, latency), the ColBERT top-R rerank',
    '(latency and agreement with exact rescoring) and hybrid search. The figures and their trade-offs are in',
    '[packages/pgvector/README.md](packages/pgvector/README.md#performance); the raw results in',
    ...files.map((f) => `- \`bench/results/${f}\``),
    '',
  ];
}

/** Where the hand-kept sections of BENCHMARKS.md begin (see the end of main). */
const KEPT_MARK = '<!-- sections below: written from their own bench runs (store, server, pgvector); pnpm bench keeps them -->';

/** The embedded store's rows (bench/store.bench.ts; issue 14's targets). */
function storeRows(st: any): Array<[string, string, string, string]> {
  if (!st?.search) return [];
  const s = st.search;
  const n = s.passages.toLocaleString('en-US');
  const gb = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const out: Array<[string, string, string, string]> = [
    [`M3Index, ${n} passages (256 ColBERT vectors of 1024, int8): RSS after load`, '≤ 1.5 GB', `${(s.rssAfterLoadMB / 1024).toFixed(2)} GiB (index ${(s.rssOfIndexMB / 1024).toFixed(2)} GiB of it)`, s.rssAfterLoadMB <= 1536 ? 'met' : 'missed'],
    [`M3Index, ${n} passages: load`, '≤ 3 s', `${s.loadSeconds.toFixed(2)} s`, s.loadSeconds <= 3 ? 'met' : 'missed'],
    [
      `M3Index, ${n} passages: hybrid search (k 10, fetchK 100, all three modes), warm page cache`,
      'median ≤ 50 ms, p95 ≤ 150 ms',
      `median ${s.hybridWarm.median.toFixed(1)} ms, p95 ${s.hybridWarm.p95.toFixed(1)} ms (first query after load ${s.firstQueryMs.toFixed(0)} ms; first pass median ${s.hybridFirstPass.median.toFixed(1)} ms; dense only ${s.dense.median.toFixed(1)} ms, sparse only ${s.sparse.median.toFixed(1)} ms)`,
      s.hybridWarm.median <= 50 && s.hybridWarm.p95 <= 150 ? 'met' : 'missed',
    ],
    [`M3Index, ${n} passages: size on disk`, 'reported', gb(st.build.diskBytes), '—'],
  ];
  if (st.add) out.push([`adding 1,000 passages to it and committing: bytes written`, '≤ 3% of the index', `${(st.add.shareOfIndex * 100).toFixed(2)}% (${gb(st.add.writeBytes)} of ${gb(st.add.indexBytes)}, commit + checkpoint, ${st.add.commitSeconds.toFixed(1)} s)`, st.add.shareOfIndex <= 0.03 ? 'met' : 'missed']);
  if (st.legacy && st['legacy-new'] && st['legacy-load'] && st['legacy-new-load']) {
    const o = st.legacy;
    const w = st['legacy-new'];
    const ol = st['legacy-load'];
    const wl = st['legacy-new-load'];
    out.push([
      `previous layout (all in memory, full-generation saves) vs M3Index at ${o.passages.toLocaleString('en-US')} passages`,
      'reported',
      `RSS after load ${(ol.rssAfterLoadMB / 1024).toFixed(2)} vs ${(wl.rssAfterLoadMB / 1024).toFixed(2)} GiB; save ${o.saveSeconds.toFixed(1)} s vs commits as added; save after a 1% change ${o.saveAfterChangeSeconds.toFixed(1)} s / ${gb(o.savedAfterChangeBytes)} vs ${w.saveAfterChangeSeconds.toFixed(3)} s / ${(w.savedAfterChangeBytes / 2 ** 20).toFixed(1)} MiB (the change was committed by its add); hybrid search median ${ol.hybridWarm.median.toFixed(0)} vs ${wl.hybridWarm.median.toFixed(0)} ms; load ${ol.loadSeconds.toFixed(1)} vs ${wl.loadSeconds.toFixed(1)} s`,
      '—',
    ]);
  }
  if (st.precision?.int8) {
    const p = st.precision;
    const f = (x: any) => `MaxSim error mean ${x.maxSimMeanAbsError.toExponential(1)} / max ${x.maxSimMaxAbsError.toExponential(1)}, identical top 10 in ${(x.identicalTop10 * 100).toFixed(0)}% of queries`;
    out.push([`ColBERT precision vs fp32 (${p.passages} passages, ${p.queries} queries): int8 (default) · fp16 · none`, 'measured; default by measurement', `int8: ${f(p.int8)}; fp16: ${f(p.fp16)}; none: top-10 overlap ${(p.none.top10Overlap * 100).toFixed(0)}%`, '—']);
  }
  return out;
}

async function main(): Promise<void> {
  const started = new Date();
  await ensureModels();
  const machine = describeMachine();
  log(`${machine.cpuModel} · ${machine.cores} cores · ${machine.ramGB} GB`);
  // Two measurements: the first in a process runs on a cold machine (thread pools, vCPU clocks)
  // and can read a third of the real ceiling; they also warm the machine for transformers.js.
  const matmulBefore = [await measureMatMulFlops({ threads }), await measureMatMulFlops({ threads })].sort((a, b) => b.gflopsMedian - a.gflopsMedian)[0];
  const nTexts = Number(values.texts ?? (quick ? 8 : 16));
  const texts = await chunkTexts(modelDir, nTexts, 512);
  const batch = 4;

  log('encode throughput …');
  // All four engines stay loaded and their passes are interleaved, round after round, best pass
  // each: this machine's speed drifts by ±20% over minutes (a shared VM), and engines measured
  // minutes apart would compare the drift, not the engines.
  const tjsOpts = { dtype: 'fp32' as const, batchSize: batch, threads };
  await benchTransformersJs(modelDir, texts.slice(0, batch), { ...tjsOpts, warmup: 1 });
  const fp32 = await openBgem3(modelDir, { dtype: 'fp32', threads, batchSize: batch });
  const q8 = await openBgem3(modelDir, { dtype: 'q8', threads, batchSize: batch });
  await fp32.encode(texts.slice(0, batch), { dense: true, sparse: true, colbert: true });
  await q8.encode(texts.slice(0, batch), { dense: true, sparse: true, colbert: true });
  const best = <T extends { seconds: number }>(a: T | undefined, b: T) => (a && a.seconds <= b.seconds ? a : b);
  let tjs: Awaited<ReturnType<typeof benchTransformersJs>> | undefined;
  let oursAll: Bgem3Run | undefined;
  let oursDense: Bgem3Run | undefined;
  let oursQ8: Bgem3Run | undefined;
  const lags: number[] = [];
  let lagMax = 0;
  const headCosts: number[] = [];
  const rounds = quick ? 2 : 3;
  for (let r = 0; r < rounds; r++) {
    tjs = best(tjs, await benchTransformersJs(modelDir, texts, { ...tjsOpts, warmup: 0 }));
    // All outputs and dense only back to back, in alternating order: their per-round ratio
    // cancels the drift that separate bests would keep.
    const pair = async (outputs: 'all' | 'dense') => bgem3Pass(fp32, texts, { dtype: 'fp32', outputs, batchSize: batch });
    const [all, dense] = r % 2 === 0 ? [await pair('all'), await pair('dense')] : [await pair('dense'), await pair('all')].reverse();
    headCosts.push(dense.tokensPerSecond / all.tokensPerSecond - 1);
    lags.push(all.loopDelayP99Ms);
    lagMax = Math.max(lagMax, all.loopDelayMaxMs);
    oursAll = best(oursAll, all);
    oursDense = best(oursDense, dense);
    oursQ8 = best(oursQ8, await bgem3Pass(q8, texts, { dtype: 'q8', outputs: 'all', batchSize: batch }));
    log(`  round ${r + 1}: transformers.js ${tjs.tokensPerSecond.toFixed(0)}, ours ${oursAll.tokensPerSecond.toFixed(0)} tok/s (best so far)`);
  }
  await Promise.all([fp32.close(), q8.close(), disposeTransformersJs()]);
  if (!tjs || !oursAll || !oursDense || !oursQ8) throw new Error('no benchmark round ran');
  const headCost = [...headCosts].sort((a, b) => a - b)[Math.floor(headCosts.length / 2)];
  // Lag is reported for the worst round, not the best one.
  oursAll = { ...oursAll, loopDelayP99Ms: Math.max(...lags), loopDelayMaxMs: lagMax };
  // The ceiling is measured before and after the encoders and the higher figure kept: a short
  // MatMul run can land on a busy or still-ramping machine, and a low ceiling flatters our ratio.
  const matmulAfter = await measureMatMulFlops({ threads });
  const matmul = matmulAfter.gflopsMedian > matmulBefore.gflopsMedian ? matmulAfter : matmulBefore;

  // ~0.60 GFLOP per token in the linear layers + 98,304·L FLOP per token for attention (BGE-M3 sizes).
  const cfg = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as { hidden_size: number; num_hidden_layers: number; intermediate_size: number };
  const H = cfg.hidden_size;
  const Lyr = cfg.num_hidden_layers;
  const avgLen = oursAll.tokens / oursAll.texts;
  const flopPerToken = Lyr * (2 * (4 * H * H + 2 * H * cfg.intermediate_size) + 4 * H * avgLen) + 2 * H * H; // + ColBERT head
  const achieved = (oursAll.tokensPerSecond * flopPerToken) / 1e9;

  let long: Record<string, Record<string, number>> = {};
  if (!values['skip-long']) {
    log('peak RSS of one long input …');
    const L = quick ? 2048 : 8192;
    // The same exported (unfused) file both times: the default load fuses its attention.
    long = {
      fused: await peakRssOneInput(modelDir, 'onnx/model.onnx', L, CHILD_CWD),
      asExported: await peakRssOneInput(modelDir, 'onnx/model.onnx', L, CHILD_CWD, { fuseAttention: false }),
    };
  }
  log('time to first embedding …');
  const ttfe = {
    fp32: await timeToFirstEmbedding(modelDir, 'fp32', CHILD_CWD),
    q8: await timeToFirstEmbedding(modelDir, 'q8', CHILD_CWD),
  };

  log('retrieval (sparse vs BM25Retriever, ColBERT rerank, dense) …');
  await run(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/retrieval.bench.ts'), ...(quick ? ['--quick'] : [])]);
  const retrieval = JSON.parse(readFileSync(join(ROOT, `bench/results/retrieval${quick ? '.quick' : ''}.json`), 'utf8'));
  if (!values['skip-store']) {
    log('embedded store (M3Index: 100k passages on disk, load, hybrid search, commit bytes, the previous layout) …');
    await run(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/store.bench.ts'), ...(quick ? ['--quick'] : [])]);
  }
  const storePath = join(ROOT, `bench/results/store${quick ? '.quick' : ''}.json`);
  const store = existsSync(storePath) ? JSON.parse(readFileSync(storePath, 'utf8')) : undefined;
  const pgResults = readdirSync(join(ROOT, 'bench/results')).filter((f) => /^pgvector-.*\.json$/.test(f)).sort();

  log('serving (bgem3 serve under autocannon vs in-process encode) …');
  await run(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/server.bench.ts'), ...(quick ? ['--quick'] : [])]);
  const serving = JSON.parse(readFileSync(join(ROOT, `bench/results/server${quick ? '.quick' : ''}.json`), 'utf8'));

  const weightsMB = statSync(join(modelDir, 'onnx/model.onnx')).size / 2 ** 20 + (existsSync(join(modelDir, 'onnx/model.onnx_data')) ? statSync(join(modelDir, 'onnx/model.onnx_data')).size / 2 ** 20 : 0);
  const sparse = retrieval.sparse;
  const k10 = sparse?.searchMs?.k10?.median;
  const bm25: number | undefined = sparse?.bm25Retriever?.ms?.median;
  const rerank: number | undefined = retrieval.colbert?.rerank?.fp32?.ms?.median;

  const rows: Array<[string, string, string, string]> = [
    ['encode 512-token chunks, all three outputs, vs transformers.js (dense only), same backbone file', '≥ 1.0× (aim 1.1×)', `${ratio(oursAll.tokensPerSecond, tjs.tokensPerSecond)} (${oursAll.tokensPerSecond.toFixed(1)} vs ${tjs.tokensPerSecond.toFixed(1)} tok/s)`, oursAll.tokensPerSecond >= tjs.tokensPerSecond ? 'met' : 'missed'],
    ['cost of sparse + ColBERT over dense-only (our encoder)', '≤ 5%', `${(headCost * 100).toFixed(1)}% (median of ${headCosts.length} back-to-back pairs: ${headCosts.map((c) => `${(c * 100).toFixed(1)}%`).join(', ')}; best passes ${oursDense.tokensPerSecond.toFixed(1)} vs ${oursAll.tokensPerSecond.toFixed(1)} tok/s)`, headCost <= 0.05 ? 'met' : 'missed'],
    ['achieved FLOP/s ÷ onnxruntime MatMul FLOP/s (fp32, 512-token chunks)', '≥ 70%', `${((achieved / matmul.gflopsMedian) * 100).toFixed(0)}% (${achieved.toFixed(0)} of ${matmul.gflopsMedian.toFixed(0)} GFLOP/s)`, achieved / matmul.gflopsMedian >= 0.7 ? 'met' : 'missed'],
    ['int8 vs fp32 throughput (our encoder, all outputs)', '≥ 1.8×', `${ratio(oursQ8.tokensPerSecond, oursAll.tokensPerSecond)} (${oursQ8.tokensPerSecond.toFixed(1)} vs ${oursAll.tokensPerSecond.toFixed(1)} tok/s)`, oursQ8.tokensPerSecond / oursAll.tokensPerSecond >= 1.8 ? 'met' : 'missed'],
    ['event-loop lag p99 while encoding continuously', '≤ 20 ms', `${oursAll.loopDelayP99Ms.toFixed(1)} ms (max ${oursAll.loopDelayMaxMs.toFixed(1)} ms)`, oursAll.loopDelayP99Ms <= 20 ? 'met' : 'missed'],
  ];
  if (long.fused) {
    const budget = weightsMB + 3072;
    rows.push([
      `peak RSS, one ${long.fused.tokens}-token input, fp32 (default: attention fused at load)`,
      '≤ weights + 3 GB',
      `${(long.fused.peakRssMB / 1024).toFixed(2)} GiB (weights ${(weightsMB / 1024).toFixed(2)} GiB)`,
      long.fused.peakRssMB <= budget ? 'met' : 'missed',
    ]);
    if (long.asExported) {
      rows.push([
        `peak RSS, the same input with \`fuseAttention: false\` (graph as exported)`,
        'reference',
        `${(long.asExported.peakRssMB / 1024).toFixed(2)} GiB`,
        '—',
      ]);
    }
  }
  if (k10 !== undefined) rows.push([`sparse query at ${sparse.documents} docs (k=10)`, '≤ 10 ms; ≥ 100× BM25Retriever', `${k10.toFixed(2)} ms; ${bm25 ? ratio(bm25, k10) : 'n/a'} faster than BM25Retriever (${bm25?.toFixed?.(0)} ms)`, k10 <= 10 && (!bm25 || bm25 / k10 >= 100) ? 'met' : 'missed']);
  if (rerank !== undefined) rows.push(['ColBERT rerank 100 candidates × 256 tokens × 1024 dims', '≤ 40 ms', `${rerank.toFixed(1)} ms`, rerank <= 40 ? 'met' : 'missed']);
  rows.push(...storeRows(store));
  rows.push(['time to first embedding (import + load + one short text)', 'reported', `fp32 ${ttfe.fp32.firstEmbeddingSeconds.toFixed(1)} s, int8 ${ttfe.q8.firstEmbeddingSeconds.toFixed(1)} s`, '—']);

  const md = [
    `# Benchmarks${quick ? ' (quick smoke run on the tiny fixture model: not the real figures)' : ''}`,
    '',
    `Measured by \`pnpm bench${quick ? ' -- --quick' : ''}\` on ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC: ${machine.cpuModel}, ${machine.cores} cores, ${machine.ramGB} GB RAM, Node ${machine.node}, onnxruntime ${machine.onnxruntime}, ${threads} intra-op threads.`,
    quick
      ? 'Model: the tiny fixture (hidden 32): ratios here say nothing about the real model.'
      : 'Model: a randomly initialised BGE-M3 written by `bench/model-gen` (24 layers, hidden 1024, 16 heads, FFN 4096, vocab 250002; fp32 with external data, and dynamic int8): the same FLOPs and memory as BAAI/bge-m3, which cannot be downloaded on this machine. Every ratio is measured side by side in the same run.',
    '',
    '| figure | target | measured | |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    '## Details',
    '',
    `- Texts: ${oursAll.texts} chunks of ≤ 512 tokens (${oursAll.tokens} tokens), batch ${batch}; the engines stay loaded and take turns, ${rounds} rounds, best pass of each (event-loop lag: the worst round).`,
    `- onnxruntime MatMul [${matmul.m}×${matmul.k}]·[${matmul.k}×${matmul.n}] fp32: ${matmul.gflopsMedian.toFixed(1)} GFLOP/s median (the ceiling; the higher of ${matmulBefore.gflopsMedian.toFixed(1)} before and ${matmulAfter.gflopsMedian.toFixed(1)} after the encoder runs).`,
    `- FLOP per token used: ${(flopPerToken / 1e9).toFixed(3)} GFLOP at the average length ${avgLen.toFixed(0)}.`,
    `- transformers.js: \`pipeline('feature-extraction', dir, { pooling: 'cls', normalize: true })\`, dense only, ${tjs.tokensPerSecond.toFixed(1)} tok/s; model load ${tjs.loadSeconds.toFixed(1)} s.`,
    ...Object.entries(long).map(([k, v]) => `- Long input (${k}): ${v.tokens} tokens in ${v.seconds.toFixed(1)} s, RSS after load ${(v.rssAfterLoadMB / 1024).toFixed(2)} GiB, peak ${(v.peakRssMB / 1024).toFixed(2)} GiB.`),
    `- Retrieval: see \`bench/results/retrieval${quick ? '.quick' : ''}.json\` (sparse index at ${sparse?.documents ?? '?'} documents; BM25Retriever from @langchain/community on the same texts).`,
    '',
  ].join('\n');
  // The sections written from their own bench runs (store, serving, pgvector: long runs, a native
  // server) follow KEPT_MARK in the file and are carried over as they are; without the mark
  // (a fresh file), they are generated from the results files.
  const previous = existsSync(outMd) ? readFileSync(outMd, 'utf8') : '';
  const kept = previous.includes(KEPT_MARK) ? previous.slice(previous.indexOf(KEPT_MARK)) : [KEPT_MARK, '', ...serverMarkdown(serving), ...pgvectorSection(pgResults)].join('\n');
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(outMd, `${md}\n${kept}`);
  writeFileSync(join(ROOT, `bench/results/all${quick ? '.quick' : ''}.json`), JSON.stringify({ machine, matmul, tjs: { ...tjs, firstEmbedding: undefined }, ours: { all: oursAll, dense: oursDense, q8: oursQ8 }, long, ttfe, rows }, null, 2) + '\n');
  process.stdout.write(md);
}

await main();
