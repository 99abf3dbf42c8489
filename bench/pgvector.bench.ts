/**
 * PgM3Store benchmark on PGlite (PostgreSQL 18 + pgvector 0.8.7 compiled to WebAssembly, in
 * this process), with generated M3-shaped data: dense unit vectors of 1024, sparse weights of
 * ~150 non-zeros over the 250,002-id vocabulary (Zipfian tokens, as bench/retrieval.bench.ts),
 * no ColBERT (a store with colbertPrecision 'none': 100k documents of 256 fp16 ColBERT vectors
 * would be 50 GB).
 *
 *   node --import tsx bench/pgvector.bench.ts            # 100,000 documents
 *   node --import tsx bench/pgvector.bench.ts --quick    # 2,000 documents, a minute
 *   … --docs=20000 --queries=100                         # other sizes
 *
 * Phases, each timed and written to bench/results/pgvector.json as soon as it ends (a run that
 * is stopped keeps what it measured, marked "complete": false):
 * 1. bulk load into a store created with createIndexes: false (docs/s);
 * 2. createIndexes() — the dense and sparse HNSW builds (s);
 * 3. upserts of new documents into the indexed table (docs/s with both HNSW graphs maintained);
 * 4. query latency (median, p95) of search (hybrid: dense + sparse candidates, exact rescoring),
 *    searchDense and searchSparse, k 10, fetchK 100;
 * 5. recall of the approximate stages against exact search (core's DenseIndex/SparseIndex):
 *    recall@10 of searchDense/searchSparse at ef_search 40 and 100; how often searchDense finds
 *    the document each query was made from (its true nearest neighbour); and how much of the
 *    hybrid search's top 10 is the exact pipeline's top 10 (every document scored exactly).
 *    Random 1024-d vectors are the hard case for recall@10: apart from the planted neighbour,
 *    a query's "true" neighbours are random vectors at similarity ≈ 0 ± 0.03, which no graph
 *    index orders well; real embeddings cluster.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DenseIndex, SparseIndex, type EncodeResult, type M3EncodedDocument } from '../packages/core/src/index.js';
import { PgM3Store, openPglite } from '../packages/pgvector/src/index.js';
import { makeCorpus, makeQueries, rng, unitVectors } from './lib/synthetic.js';

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const quick = process.argv.includes('--quick');
const DOCS = Number(arg('docs') ?? (quick ? 2000 : 100000));
const QUERIES = Number(arg('queries') ?? (quick ? 30 : 200));
const UPSERTS = Number(arg('upserts') ?? (quick ? 200 : 1000));
const DIM = 1024;
const VOCAB = 250002;
const here = dirname(fileURLToPath(import.meta.url));
const log = (msg: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const now = () => performance.now();

function stats(times: number[]) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: round(q(0.5)), p95: round(q(0.95)), min: round(s[0]), runs: s.length };
}
const round = (x: number, d = 2) => Number(x.toFixed(d));

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  complete: false,
  quick,
  backend: 'PGlite 0.5.14 (PostgreSQL 18.6, wasm32) + pgvector 0.8.7, in-process, dataDir on local disk',
  node: process.version,
  cores: availableParallelism(),
  cpu: cpus()[0]?.model ?? '?',
  loadAverageAtStart: loadavg().map((x) => round(x)),
  data: { documents: DOCS, dim: DIM, vocabSize: VOCAB, colbert: 'none', queries: QUERIES },
};
const resultsDir = join(here, 'results');
const file = join(resultsDir, quick ? 'pgvector.quick.json' : arg('docs') ? `pgvector.${DOCS}.json` : 'pgvector.json');
function save(): void {
  mkdirSync(resultsDir, { recursive: true });
  results.loadAverageAtLastSave = loadavg().map((x) => round(x));
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Data: documents d0… and queries whose dense vector is a noisy copy of a random document's (so
// the dense search has a real nearest neighbour) and whose sparse weights come from the corpus
// token distribution (4–16 tokens).

log(`generating ${DOCS} documents (dense ${DIM}, sparse ~150 nnz of ${VOCAB})`);
const total = DOCS + UPSERTS;
const corpus = makeCorpus(total, 1);
const dense = unitVectors(total, DIM, rng(2));
const docAt = (i: number): M3EncodedDocument => ({
  id: `d${i}`,
  text: `synthetic document ${i}`,
  metadata: { n: i, shard: i % 8 },
  encoding: { dense: dense.subarray(i * DIM, (i + 1) * DIM), sparse: corpus[i].sparse, tokens: 0, truncated: false },
});
let nnz = 0;
for (let i = 0; i < DOCS; i++) nnz += corpus[i].sparse.indices.length;
(results.data as Record<string, unknown>).meanSparseNonZeros = round(nnz / DOCS, 1);
const qrand = rng(3);
const noise = unitVectors(QUERIES, DIM, rng(4));
const qSparse = makeQueries(QUERIES, 5);
const planted: number[] = [];
const queries: EncodeResult[] = Array.from({ length: QUERIES }, (_, i) => {
  const j = Math.floor(qrand() * DOCS);
  planted.push(j);
  const v = new Float32Array(DIM);
  let n = 0;
  for (let d = 0; d < DIM; d++) {
    v[d] = dense[j * DIM + d] + 0.8 * noise[i * DIM + d];
    n += v[d] * v[d];
  }
  for (let d = 0; d < DIM; d++) v[d] /= Math.sqrt(n);
  return { dense: v, sparse: qSparse[i].sparse, tokens: 0, truncated: false };
});

// ---------------------------------------------------------------------------------------------

const dataDir = arg('data-dir') ?? mkdtempSync(join(tmpdir(), 'bgem3-pgvector-bench-'));
log(`opening PGlite in ${dataDir}`);
let t = now();
const pg = await openPglite({ dataDir });
results.pgliteBootSeconds = round((now() - t) / 1000, 1);
try {
  const store = await PgM3Store.connect({ client: pg.client, modelId: 'synthetic-m3', dim: DIM, vocabSize: VOCAB, colbertPrecision: 'none', createIndexes: false });
  results.denseType = store.denseType;
  results.hnsw = { m: 16, efConstruction: 64 };

  // 1. Bulk load.
  const CHUNK = 1000;
  t = now();
  for (let s = 0; s < DOCS; s += CHUNK) {
    const part: M3EncodedDocument[] = [];
    for (let i = s; i < Math.min(DOCS, s + CHUNK); i++) part.push(docAt(i));
    await store.addEncoded(part);
    if ((s / CHUNK) % 10 === 9) log(`  loaded ${s + part.length} (${round(((s + part.length) / (now() - t)) * 1000, 1)} docs/s)`);
  }
  const loadS = (now() - t) / 1000;
  results.bulkLoad = { documents: DOCS, seconds: round(loadS, 1), docsPerSecond: round(DOCS / loadS, 1), rowsPerTransaction: 256 };
  log(`bulk load: ${DOCS} docs in ${loadS.toFixed(1)} s`);
  save();

  // 2. Index builds (both, in createIndexes; timed through the store API).
  t = now();
  await store.createIndexes({ maintenanceWorkMem: quick ? '256MB' : '1GB' });
  const buildS = (now() - t) / 1000;
  results.indexBuild = { seconds: round(buildS, 1), maintenanceWorkMem: quick ? '256MB' : '1GB', note: 'dense and sparse HNSW together' };
  log(`index build: ${buildS.toFixed(1)} s`);
  save();

  // 3. Upserts into the indexed table.
  t = now();
  for (let s = DOCS; s < total; s += 100) {
    const part: M3EncodedDocument[] = [];
    for (let i = s; i < Math.min(total, s + 100); i++) part.push(docAt(i));
    await store.addEncoded(part);
  }
  const upS = (now() - t) / 1000;
  results.indexedInsert = { documents: UPSERTS, into: DOCS, seconds: round(upS, 1), docsPerSecond: round(UPSERTS / upS, 1) };
  log(`indexed inserts: ${UPSERTS} in ${upS.toFixed(1)} s`);
  save();

  // 4. Latency.
  const lat = async (fn: (q: EncodeResult) => Promise<unknown>) => {
    for (const q of queries.slice(0, 3)) await fn(q); // warm-up
    const times: number[] = [];
    for (const q of queries) {
      const s = now();
      await fn(q);
      times.push(now() - s);
    }
    return stats(times);
  };
  results.latencyMs = {
    search: await lat((q) => store.search(q, { k: 10, fetchK: 100 })),
    searchDense: await lat((q) => store.searchDense(q, { k: 10 })),
    searchSparse: await lat((q) => store.searchSparse(q, { k: 10 })),
    note: 'search = dense top-100 ∪ sparse top-100 (ef_search 100) with their exact dense and sparse scores computed by pgvector in the same statement, weights [0.4, 0.2, 0]; searchDense/searchSparse: k 10 (ef_search 40)',
  };
  log(`latency: ${JSON.stringify(results.latencyMs)}`);
  save();

  // 5. Recall@10 against exact search over the same rows (DOCS + UPSERTS).
  log('exact ground truth (core DenseIndex / SparseIndex)');
  const exactDense = new DenseIndex({ dim: DIM });
  const exactSparse = new SparseIndex({ vocabSize: VOCAB });
  for (let s = 0; s < total; s += 5000) {
    const ids: { id: string; vector: Float32Array }[] = [];
    const sp: { id: string; vector: (typeof corpus)[number]['sparse'] }[] = [];
    for (let i = s; i < Math.min(total, s + 5000); i++) {
      ids.push({ id: `d${i}`, vector: dense.subarray(i * DIM, (i + 1) * DIM) });
      sp.push({ id: `d${i}`, vector: corpus[i].sparse });
    }
    exactDense.upsertMany(ids);
    exactSparse.upsertMany(sp);
  }
  const recall: Record<string, number> = {};
  for (const ef of [40, 100]) {
    let hd = 0;
    let hs = 0;
    let ns = 0;
    for (const q of queries) {
      const truthD = new Set((await exactDense.search(q.dense as Float32Array, 10)).map((h) => h.id));
      const gotD = await store.searchDense(q, { k: 10, efSearch: ef });
      hd += gotD.filter((h) => truthD.has(h.id)).length / 10;
      const truthS = exactSparse.search(q.sparse as NonNullable<EncodeResult['sparse']>, 10);
      if (truthS.length === 0) continue;
      const set = new Set(truthS.map((h) => h.id));
      const gotS = await store.searchSparse(q, { k: 10, efSearch: ef });
      hs += gotS.filter((h) => set.has(h.id)).length / truthS.length;
      ns++;
    }
    recall[`dense@ef${ef}`] = round(hd / queries.length, 3);
    recall[`sparse@ef${ef}`] = round(hs / Math.max(1, ns), 3);
  }
  results.recallAt10 = recall;
  // The planted neighbour: the document each query's dense vector was made from.
  const found: Record<string, number> = {};
  for (const ef of [40, 100]) {
    let f = 0;
    for (const [i, q] of queries.entries()) if ((await store.searchDense(q, { k: 10, efSearch: ef })).some((h) => h.id === `d${planted[i]}`)) f++;
    found[`ef${ef}`] = round(f / queries.length, 3);
  }
  results.plantedNeighbourFoundInTop10 = found;
  // The whole pipeline against the exact pipeline (all documents scored, same weights).
  const allIds = Array.from({ length: total }, (_, i) => `d${i}`);
  const HQ = Math.min(queries.length, 30);
  const overlap: Record<string, number> = {};
  for (const fetchK of [100, 400]) {
    let o = 0;
    for (const q of queries.slice(0, HQ)) {
      const ds = exactDense.scoreIds(q.dense as Float32Array, allIds);
      const ss = exactSparse.scoreIds(q.sparse as NonNullable<EncodeResult['sparse']>, allIds);
      const exact = allIds.map((id, i) => ({ id, s: (0.4 * ds[i] + 0.2 * ss[i]) / 0.6 })).sort((a, b) => b.s - a.s).slice(0, 10);
      const want = new Set(exact.map((e) => e.id));
      const got = await store.search(q, { k: 10, fetchK });
      o += got.filter((h) => want.has(h.id)).length / 10;
    }
    overlap[`fetchK${fetchK}`] = round(o / HQ, 3);
  }
  results.hybridTop10OverlapWithExact = { ...overlap, queries: HQ };
  log(`planted neighbour: ${JSON.stringify(found)}; hybrid vs exact: ${JSON.stringify(overlap)}`);

  log(`recall@10: ${JSON.stringify(recall)}`);
  results.complete = true;
  save();
} finally {
  await pg.close();
  if (!arg('data-dir')) rmSync(dataDir, { recursive: true, force: true });
}

const r = results as Record<string, any>;
process.stdout.write(
  [
    `## PgM3Store on PGlite${quick ? ' (--quick)' : ''}: ${DOCS} documents`,
    '',
    `Node ${process.version}, ${availableParallelism()} cores (${results.cpu}), load average at start ${(results.loadAverageAtStart as number[]).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `dense ${DIM} (${r.denseType}), sparse ~${r.data.meanSparseNonZeros} nnz / ${VOCAB}, no ColBERT`,
    '',
    '| measure | value |',
    '|---|---|',
    `| bulk load (no index) | ${r.bulkLoad.docsPerSecond} docs/s (${r.bulkLoad.seconds} s) |`,
    `| HNSW builds (dense + sparse) | ${r.indexBuild.seconds} s |`,
    `| inserts into the indexed table | ${r.indexedInsert.docsPerSecond} docs/s |`,
    `| search (hybrid) median / p95 | ${r.latencyMs.search.median} / ${r.latencyMs.search.p95} ms |`,
    `| searchDense median / p95 | ${r.latencyMs.searchDense.median} / ${r.latencyMs.searchDense.p95} ms |`,
    `| searchSparse median / p95 | ${r.latencyMs.searchSparse.median} / ${r.latencyMs.searchSparse.p95} ms |`,
    `| recall@10 dense ef 40 / 100 | ${r.recallAt10['dense@ef40']} / ${r.recallAt10['dense@ef100']} |`,
    `| recall@10 sparse ef 40 / 100 | ${r.recallAt10['sparse@ef40']} / ${r.recallAt10['sparse@ef100']} |`,
    `| planted neighbour in searchDense top 10, ef 40 / 100 | ${r.plantedNeighbourFoundInTop10.ef40} / ${r.plantedNeighbourFoundInTop10.ef100} |`,
    `| hybrid top 10 ∩ exact pipeline top 10, fetchK 100 / 400 | ${r.hybridTop10OverlapWithExact.fetchK100} / ${r.hybridTop10OverlapWithExact.fetchK400} |`,
    '',
    `written to ${file}`,
    '',
  ].join('\n'),
);
