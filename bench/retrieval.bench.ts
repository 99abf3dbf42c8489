/**
 * Retrieval engine benchmark.
 *
 *   node --import tsx bench/retrieval.bench.ts           # full: 50k passages, 100 × 256 × 1024 rerank
 *   node --import tsx bench/retrieval.bench.ts --quick   # tiny sizes, a few seconds (CI smoke)
 *   … --dense-docs=100000                                # another dense corpus size
 *
 * 1. Sparse: SparseIndex over synthetic ~200-token passages (Zipfian tokens over the 250,002-id
 *    vocabulary, M3-like weights), 200 queries of 4–16 tokens; compared with LangChain.js
 *    `BM25Retriever` over the same texts (a few queries only: it rescans every document).
 * 2. ColBERT MaxSim rerank of 100 candidates × 256 tokens × 1024 dims with a 32-token query
 *    (fp32/fp16/int8 storage, median of 30) vs the naive JS loop, and the fp16/int8 score error.
 * 3. Exact dense search over 50k × 1024 (onnxruntime Gemm) vs a tight JS loop.
 *
 * Prints a markdown table and writes bench/results/retrieval.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Document } from '@langchain/core/documents';
import { BM25Retriever } from '@langchain/community/retrievers/bm25';
import { ColbertStore } from '../packages/core/src/retrieval/colbert-store.js';
import { DenseIndex } from '../packages/core/src/retrieval/dense-index.js';
import { maxSimReference, maxSimStored } from '../packages/core/src/retrieval/maxsim.js';
import { SparseIndex } from '../packages/core/src/retrieval/sparse-index.js';
import type { SparseVector } from '../packages/core/src/types.js';
import { colbertLike, makeCorpus, makeQueries, rng, textOf, unitVectors } from './lib/synthetic.js';

const quick = process.argv.includes('--quick');
const cfg = quick
  ? { docs: 2000, queries: 50, bm25Queries: 3, cands: 10, docTokens: 64, qTokens: 8, dim: 128, rerankRuns: 10, denseDocs: 2000, denseDim: 128, denseQueries: 10 }
  : { docs: 50000, queries: 200, bm25Queries: 3, cands: 100, docTokens: 256, qTokens: 32, dim: 1024, rerankRuns: 30, denseDocs: 50000, denseDim: 1024, denseQueries: 30 };

const denseArg = process.argv.find((a) => a.startsWith('--dense-docs='));
if (denseArg) cfg.denseDocs = Number(denseArg.split('=')[1]);
const here = dirname(fileURLToPath(import.meta.url));
const now = () => performance.now();

function stats(times: number[]) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p95: q(0.95), min: s[0], runs: s.length };
}

function lexical(q: SparseVector, d: SparseVector): number {
  let s = 0;
  for (let a = 0, b = 0; a < q.indices.length && b < d.indices.length; ) {
    if (q.indices[a] === d.indices[b]) s += q.values[a++] * d.values[b++];
    else if (q.indices[a] < d.indices[b]) a++;
    else b++;
  }
  return s;
}

const log = (msg: string) => process.stderr.write(`${msg}\n`);
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  quick,
  node: process.version,
  cpu: cpus()[0]?.model,
  cores: availableParallelism(),
  loadAverageAtStart: loadavg().map((x) => Number(x.toFixed(2))),
  config: cfg,
};

// ------------------------------------------------------------------------------------------------
// 1. Sparse
log(`sparse: generating ${cfg.docs} passages…`);
let t = now();
const corpus = makeCorpus(cfg.docs, 1);
const queries = makeQueries(cfg.queries, 7);
const genMs = now() - t;
let postings = 0;
for (const d of corpus) postings += d.sparse.indices.length;
t = now();
const sparse = new SparseIndex();
for (let i = 0; i < corpus.length; i++) sparse.upsert(`doc${i}`, corpus[i].sparse);
const appendMs = now() - t;
t = now();
sparse.compact();
const compactMs = now() - t;
log(`sparse: ${postings} postings; append ${appendMs.toFixed(0)} ms, CSR build ${compactMs.toFixed(0)} ms`);
// Correctness spot check against brute force (same ids and scores).
for (const q of queries.slice(0, 5)) {
  const brute = corpus
    .map((d, i) => ({ id: `doc${i}`, score: lexical(q.sparse, d.sparse) }))
    .filter((h) => h.score > 0)
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
    .slice(0, 10);
  if (JSON.stringify(brute) !== JSON.stringify(sparse.search(q.sparse, 10))) throw new Error('sparse search differs from brute force');
}
for (const q of queries.slice(0, 20)) sparse.search(q.sparse, 10); // warm-up
const sparseTimes: Record<string, ReturnType<typeof stats>> = {};
for (const k of [10, 100]) {
  const times: number[] = [];
  for (const q of queries) {
    t = now();
    sparse.search(q.sparse, k);
    times.push(now() - t);
  }
  sparseTimes[`k${k}`] = stats(times);
}
log(`sparse: median ${sparseTimes.k10.median.toFixed(2)} ms (k=10)`);

log('bm25: building LangChain BM25Retriever…');
const bm25 = BM25Retriever.fromDocuments(
  corpus.map((d, i) => new Document({ pageContent: textOf(d.tokens), metadata: { id: `doc${i}` } })),
  { k: 10 },
);
await bm25.invoke(textOf(queries[0].tokens)); // warm-up
const bm25Times: number[] = [];
for (const q of queries.slice(1, 1 + cfg.bm25Queries)) {
  t = now();
  await bm25.invoke(textOf(q.tokens));
  bm25Times.push(now() - t);
}
const bm25Stats = stats(bm25Times);
log(`bm25: median ${bm25Stats.median.toFixed(0)} ms`);
results.sparse = {
  documents: cfg.docs,
  postings,
  avgDistinctTokensPerDoc: postings / cfg.docs,
  postingBytes: postings * 8,
  queries: cfg.queries,
  generateMs: genMs,
  appendMs,
  csrBuildMs: compactMs,
  searchMs: sparseTimes,
  bm25Retriever: { queries: bm25Times.length, ms: bm25Stats },
  speedupVsBm25Retriever: bm25Stats.median / sparseTimes.k10.median,
};

// ------------------------------------------------------------------------------------------------
// 2. ColBERT rerank
log(`colbert: ${cfg.cands} × ${cfg.docTokens} × ${cfg.dim}, ${cfg.qTokens}-token query…`);
const crand = rng(5);
const topics = Array.from({ length: 4 }, () => unitVectors(1, cfg.dim, crand));
const cdocs = Array.from({ length: cfg.cands }, (_, i) => colbertLike(cfg.docTokens, cfg.dim, crand, topics[i % 4]));
const cquery = colbertLike(cfg.qTokens, cfg.dim, crand, topics[0]);
const ids = cdocs.map((_, i) => `c${i}`);
const rerank: Record<string, unknown> = {};
const scoresBy: Record<string, Float64Array> = {};
for (const precision of ['fp32', 'fp16', 'int8'] as const) {
  const store = new ColbertStore({ dim: cfg.dim, precision });
  cdocs.forEach((d, i) => store.upsert(ids[i], d));
  await maxSimStored(cquery, store, ids); // warm-up (session creation, scratch buffers)
  const times: number[] = [];
  for (let r = 0; r < cfg.rerankRuns; r++) {
    t = now();
    scoresBy[precision] = await maxSimStored(cquery, store, ids);
    times.push(now() - t);
  }
  rerank[precision] = { ms: stats(times), storeMB: store.byteSize / 2 ** 20 };
  log(`colbert ${precision}: median ${stats(times).median.toFixed(1)} ms`);
}
t = now();
const naive = cdocs.map((d) => maxSimReference(cquery, d));
const naiveMs = now() - t;
let maxRefDiff = 0;
naive.forEach((x, i) => (maxRefDiff = Math.max(maxRefDiff, Math.abs(x - scoresBy.fp32[i]))));
log(`colbert naive loop: ${naiveMs.toFixed(0)} ms`);
// Precision error vs fp32 over several queries (all on the same candidates).
const errs: Record<string, number[]> = { fp16: [], int8: [] };
{
  const stores = Object.fromEntries(
    (['fp32', 'fp16', 'int8'] as const).map((p) => {
      const s = new ColbertStore({ dim: cfg.dim, precision: p });
      cdocs.forEach((d, i) => s.upsert(ids[i], d));
      return [p, s];
    }),
  ) as Record<'fp32' | 'fp16' | 'int8', ColbertStore>;
  for (let qi = 0; qi < 4; qi++) {
    const q = colbertLike(cfg.qTokens, cfg.dim, crand, topics[qi]);
    const exact = await maxSimStored(q, stores.fp32, ids);
    for (const p of ['fp16', 'int8'] as const) (await maxSimStored(q, stores[p], ids)).forEach((x, i) => errs[p].push(Math.abs(x - exact[i])));
  }
}
const errStat = (a: number[]) => ({ meanAbs: a.reduce((x, y) => x + y, 0) / a.length, maxAbs: Math.max(...a), pairs: a.length });
results.colbert = {
  candidates: cfg.cands,
  docTokens: cfg.docTokens,
  queryTokens: cfg.qTokens,
  dim: cfg.dim,
  rerank,
  naiveLoopMs: naiveMs,
  maxAbsDiffOnnxVsNaive: maxRefDiff,
  // documents i % 4 === 0 share the query's topic ("relevant"), the others do not
  meanScoreSameTopic: scoresBy.fp32.filter((_, i) => i % 4 === 0).reduce((a, b) => a + b, 0) / Math.ceil(cfg.cands / 4),
  meanScoreOtherTopics: scoresBy.fp32.filter((_, i) => i % 4 !== 0).reduce((a, b) => a + b, 0) / (cfg.cands - Math.ceil(cfg.cands / 4)),
  errorVsFp32: { fp16: errStat(errs.fp16), int8: errStat(errs.int8) },
};

// ------------------------------------------------------------------------------------------------
// 3. Dense exact search
log(`dense: ${cfg.denseDocs} × ${cfg.denseDim}…`);
const drand = rng(11);
const dvecs = unitVectors(cfg.denseDocs, cfg.denseDim, drand);
const dense = new DenseIndex({ dim: cfg.denseDim });
dense.upsertMany(Array.from({ length: cfg.denseDocs }, (_, i) => ({ id: `d${i}`, vector: dvecs.subarray(i * cfg.denseDim, (i + 1) * cfg.denseDim) })));
const dqueries = Array.from({ length: cfg.denseQueries }, () => unitVectors(1, cfg.denseDim, drand));
await dense.search(dqueries[0], 10);
const denseTimes: number[] = [];
for (const q of dqueries) {
  t = now();
  await dense.search(q, 10);
  denseTimes.push(now() - t);
}
const jsTimes: number[] = [];
const out = new Float32Array(cfg.denseDocs);
for (const q of dqueries.slice(0, 5)) {
  t = now();
  const D = cfg.denseDim;
  for (let i = 0; i < cfg.denseDocs; i++) {
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    for (let j = 0, o = i * D; j < D; j += 4) {
      a0 += q[j] * dvecs[o + j];
      a1 += q[j + 1] * dvecs[o + j + 1];
      a2 += q[j + 2] * dvecs[o + j + 2];
      a3 += q[j + 3] * dvecs[o + j + 3];
    }
    out[i] = a0 + a1 + a2 + a3;
  }
  jsTimes.push(now() - t);
}
results.dense = { documents: cfg.denseDocs, dim: cfg.denseDim, onnxSearchMs: stats(denseTimes), jsLoopScanMs: stats(jsTimes) };
log(`dense: median ${stats(denseTimes).median.toFixed(1)} ms (JS loop ${stats(jsTimes).median.toFixed(0)} ms)`);

// ------------------------------------------------------------------------------------------------
const f = (x: number, d = 2) => x.toFixed(d);
const sp = results.sparse as { searchMs: Record<string, ReturnType<typeof stats>>; speedupVsBm25Retriever: number };
const rr = rerank as Record<string, { ms: ReturnType<typeof stats>; storeMB: number }>;
const ce = (results.colbert as { errorVsFp32: Record<string, ReturnType<typeof errStat>> }).errorVsFp32;
const lines = [
  `## Retrieval benchmark${quick ? ' (--quick)' : ''}`,
  '',
  `Node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? '?'}), load average at start ${(results.loadAverageAtStart as number[]).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
  '',
  '| measure | median | p95 | notes |',
  '|---|---|---|---|',
  `| SparseIndex query, ${cfg.docs} docs, k=10 | ${f(sp.searchMs.k10.median)} ms | ${f(sp.searchMs.k10.p95)} ms | ${cfg.queries} queries, ${postings} postings, exact (= brute force) |`,
  `| SparseIndex query, k=100 | ${f(sp.searchMs.k100.median)} ms | ${f(sp.searchMs.k100.p95)} ms | |`,
  `| LangChain BM25Retriever query, same texts | ${f(bm25Stats.median, 0)} ms | ${f(bm25Stats.p95, 0)} ms | ${bm25Times.length} queries; SparseIndex is ${f(sp.speedupVsBm25Retriever, 0)}× faster |`,
  `| SparseIndex build (append + CSR) | ${f(appendMs + compactMs, 0)} ms | | append ${f(appendMs, 0)} ms, CSR ${f(compactMs, 0)} ms |`,
  ...(['fp32', 'fp16', 'int8'] as const).map(
    (p) => `| MaxSim rerank ${cfg.cands}×${cfg.docTokens}×${cfg.dim}, ${cfg.qTokens}-token query, ${p} | ${f(rr[p].ms.median, 1)} ms | ${f(rr[p].ms.p95, 1)} ms | store ${f(rr[p].storeMB, 1)} MB |`,
  ),
  `| MaxSim naive JS loops (reference) | ${f(naiveMs, 0)} ms | | one run; max abs diff vs onnxruntime ${maxRefDiff.toExponential(1)} |`,
  `| MaxSim error fp16 vs fp32 | mean ${ce.fp16.meanAbs.toExponential(1)} | max ${ce.fp16.maxAbs.toExponential(1)} | ${ce.fp16.pairs} query/doc pairs |`,
  `| MaxSim error int8 vs fp32 | mean ${ce.int8.meanAbs.toExponential(1)} | max ${ce.int8.maxAbs.toExponential(1)} | |`,
  `| DenseIndex exact search ${cfg.denseDocs}×${cfg.denseDim}, k=10 | ${f(stats(denseTimes).median, 1)} ms | ${f(stats(denseTimes).p95, 1)} ms | onnxruntime Gemm |`,
  `| same scan as a tight JS loop | ${f(stats(jsTimes).median, 0)} ms | | for comparison |`,
];
console.log(lines.join('\n'));
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const file = join(resultsDir, quick ? 'retrieval.quick.json' : 'retrieval.json');
writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
log(`wrote ${file}`);
