/**
 * PgM3Store benchmark, on PGlite (PostgreSQL 18 + pgvector 0.8.7 compiled to WebAssembly, in
 * this process) or on any PostgreSQL server with pgvector (`--url`), with generated M3-shaped
 * data: dense unit vectors of 1024, sparse weights of ~155 non-zeros over the 250,002-id
 * vocabulary (Zipfian tokens, as bench/retrieval.bench.ts), and for the ColBERT part BGE-M3's
 * real ColBERT size (256 vectors of 1024 per document, correlated with the document's dense
 * vector so that MaxSim and dense agree as they do on real text).
 *
 *   node --import tsx bench/pgvector.bench.ts                          # PGlite, 20,000 documents
 *   node --import tsx bench/pgvector.bench.ts --url=postgres://u:p@host/db --docs=20000,100000
 *   … --quick                                                          # 2,000 documents, a minute
 *   … --sparse=postings,hnsw --colbert-docs=20000 --queries=100         # what to run
 *   … --sparse=none --docs=100000 --colbert-docs=100000 --keep --resume --load-seconds=480
 *                                # the ColBERT part only, loaded in steps (run again until loaded)
 *
 * Two parts, each written to bench/results/pgvector-<backend>-<sizes>….json as soon as it ends:
 *
 * 1. The sparse first stage at each size, for each `sparseIndex` ('postings': the inverted
 *    postings table, exact; 'hnsw': pgvector's sparsevec HNSW over the ≤ 1,000 largest weights),
 *    plus an exact sequential scan of the sparse column: bulk load (docs/s), index builds (s, the
 *    sparse one separately), inserts into the indexed table (docs/s), sizes, recall@10 of
 *    searchSparse against exact search (core's SparseIndex), latency of searchSparse, searchDense
 *    and the hybrid search (ColBERT weight 0), and the hybrid top 10 against the exact pipeline.
 * 2. ColBERT only for the top R (`--colbert-docs` documents of real-size int8 ColBERT): hybrid
 *    latency at rerankDepth R = 10, 20, 40, 100 and all candidates, the agreement of each top 10
 *    with the top 10 of exact rescoring of ALL candidates, and the transfer of ColBERT bytes as
 *    raw bytea (pg: hex text) vs base64.
 *
 * Before both (seconds), the same agreement on the fixture model (test/fixtures/tiny-m3-A) over
 * real multilingual text: the fixture's golden texts and the demo corpus as documents, the
 * fixture's queries and passage openings as queries, encoded by the real encoder and searched in a
 * PgM3Store at R = 10, 20, 40 against R = all (`fixtureAgreement` in the JSON; k 10, so R ≥ 10).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type PgModule from 'pg';
import { ColbertCodec, DenseIndex, M3Encoder, SparseIndex, maxSimPacked, type ColbertMatrix, type EncodeResult, type M3EncodedDocument, type SparseVector } from '../packages/core/src/index.js';
import { PgM3Store, openPglite, pgClient, type SparseIndexKind, type SqlClient } from '../packages/pgvector/src/index.js';
import { gaussian, makeCorpus, makeQueries, rng, unitVectors } from './lib/synthetic.js';

// `pg` is a dependency of @bgem3/pgvector, not of the workspace root: load it from there.
const pg = createRequire(new URL('../packages/pgvector/package.json', import.meta.url))('pg') as typeof PgModule;
const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = process.argv.includes('--quick');
const URL_ARG = arg('url');
const SIZES = (arg('docs') ?? (quick ? '2000' : '20000')).split(',').map(Number);
const KINDS = (arg('sparse') === 'none' ? [] : (arg('sparse') ?? 'postings,hnsw').split(',')) as SparseIndexKind[];
// Loading the ColBERT table in steps (each its own locked run): --keep leaves the table, --resume
// continues a kept table from its row count, --load-seconds stops loading after that long.
const KEEP = process.argv.includes('--keep');
const RESUME = process.argv.includes('--resume');
const LOAD_SECONDS = Number(arg('load-seconds') ?? Infinity);
const R_LIST = (arg('rerank-depths') ?? '10,20,40,100,1000').split(',').map(Number);
const QUERIES = Number(arg('queries') ?? (quick ? 30 : 100));
const UPSERTS = Number(arg('upserts') ?? (quick ? 100 : 500));
const COLBERT_DOCS = Number(arg('colbert-docs') ?? (quick ? 500 : 5000));
const COLBERT_TOKENS = Number(arg('colbert-tokens') ?? 256);
const QUERY_TOKENS = 32;
const DIM = 1024;
const VOCAB = 250002;
const here = dirname(fileURLToPath(import.meta.url));
const log = (msg: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const now = () => performance.now();
const round = (x: number, d = 2) => Number(x.toFixed(d));

function stats(times: number[]) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: round(q(0.5)), p95: round(q(0.95)), runs: s.length };
}

// ---------------------------------------------------------------------------------------------
// The database

let client: SqlClient;
let closeDb: () => Promise<void>;
let backend: string;
let dataDir: string | undefined;
if (URL_ARG) {
  const pool = new pg.Pool({ connectionString: URL_ARG, max: 4 });
  client = pgClient(pool);
  const v = await client.query<{ v: string; e: string | null }>(`SELECT version() AS v, (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS e`);
  backend = `${v[0].v.split(' on ')[0]} + pgvector ${v[0].e ?? '(created by the store)'}, over TCP (${new URL(URL_ARG).hostname})`;
  closeDb = () => pool.end();
} else {
  dataDir = mkdtempSync(join(tmpdir(), 'bgem3-pgvector-bench-'));
  const lite = await openPglite({ dataDir });
  client = lite.client;
  backend = 'PGlite 0.5.14 (PostgreSQL 18.6, wasm32) + pgvector 0.8.7, in-process, dataDir on local disk';
  closeDb = async () => {
    await lite.close();
    rmSync(dataDir as string, { recursive: true, force: true });
  };
}

const results: Record<string, any> = {
  date: new Date().toISOString(),
  complete: false,
  quick,
  backend,
  node: process.version,
  cores: availableParallelism(),
  cpu: cpus()[0]?.model ?? '?',
  loadAverageAtStart: loadavg().map((x) => round(x)),
  data: { dim: DIM, vocabSize: VOCAB, queries: QUERIES, sizes: SIZES },
  sparseFirstStage: {} as Record<string, unknown>,
};
const resultsDir = join(here, 'results');
const file = join(resultsDir, `pgvector-${URL_ARG ? 'server' : 'pglite'}-${SIZES.join('-')}${COLBERT_DOCS ? `-colbert${COLBERT_DOCS}` : ''}${quick ? '.quick' : ''}.json`);
function save(): void {
  mkdirSync(resultsDir, { recursive: true });
  results.loadAverageAtLastSave = loadavg().map((x) => round(x));
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Data: documents d0… and queries whose dense vector is a noisy copy of a random document's
// (so the dense search has a real nearest neighbour) and whose sparse weights come from the
// corpus token distribution (4–16 tokens).

const MAX = Math.max(...SIZES);
const TOTAL = MAX + UPSERTS;
log(`generating ${TOTAL} documents (dense ${DIM}, sparse of ${VOCAB})`);
const corpus = makeCorpus(TOTAL, 1);
const dense = unitVectors(TOTAL, DIM, rng(2));
let nnz = 0;
for (let i = 0; i < MAX; i++) nnz += corpus[i].sparse.indices.length;
results.data.meanSparseNonZeros = round(nnz / MAX, 1);
const denseOf = (i: number) => dense.subarray(i * DIM, (i + 1) * DIM);
const docAt = (i: number): M3EncodedDocument => ({
  id: `d${i}`,
  text: `synthetic document ${i}`,
  metadata: { n: i, shard: i % 8 },
  encoding: { dense: denseOf(i), sparse: corpus[i].sparse, tokens: 0, truncated: false },
});

function makeQuerySet(size: number, seed: number): EncodeResult[] {
  const qrand = rng(seed);
  const noise = unitVectors(QUERIES, DIM, rng(seed + 1));
  const qSparse = makeQueries(QUERIES, seed + 2);
  return Array.from({ length: QUERIES }, (_, i) => {
    const j = Math.floor(qrand() * size);
    const v = new Float32Array(DIM);
    let n = 0;
    for (let d = 0; d < DIM; d++) {
      v[d] = dense[j * DIM + d] + 0.8 * noise[i * DIM + d];
      n += v[d] * v[d];
    }
    for (let d = 0; d < DIM; d++) v[d] /= Math.sqrt(n);
    return { dense: v, sparse: qSparse[i].sparse, tokens: 0, truncated: false };
  });
}

async function latency<Q>(queries: Q[], fn: (q: Q) => Promise<unknown>) {
  for (const q of queries.slice(0, 3)) await fn(q); // warm-up
  const times: number[] = [];
  for (const q of queries) {
    const s = now();
    await fn(q);
    times.push(now() - s);
  }
  return stats(times);
}

async function fresh(table: string, options: Partial<Parameters<typeof PgM3Store.connect>[0]>): Promise<PgM3Store> {
  const open = () => PgM3Store.connect({ client, table, modelId: 'synthetic-m3', dim: DIM, vocabSize: VOCAB, createIndexes: false, ...options });
  await (await open().catch(() => undefined))?.drop().catch(() => undefined);
  await client.query(`DROP TABLE IF EXISTS "${table}_postings", "${table}", "${table}_meta"`);
  return open();
}

async function sizes(table: string): Promise<Record<string, number>> {
  const rows = await client.query<{ name: string; mb: number }>(
    `SELECT c.relname AS name, round(pg_total_relation_size(c.oid) / 1048576.0, 1)::float8 AS mb FROM pg_class c
     WHERE c.relname LIKE $1 AND c.relkind IN ('r', 'i') ORDER BY 1`,
    [`${table}%`],
  );
  return Object.fromEntries(rows.map((r) => [r.name, Number(r.mb)]));
}

/** `base` with each statement of a search timed by what it is: a first stage, the ranking statement, a ColBERT COPY. */
function timedClient(base: SqlClient, record: (kind: string, ms: number) => void): SqlClient {
  const kindOf = (sql: string) =>
    /WITH c AS/.test(sql)
      ? 'ranking'
      : /ORDER BY dense <#>/.test(sql)
        ? 'denseStage'
        : /unnest\(|ORDER BY sparse <#>/.test(sql)
          ? 'sparseStage'
          : undefined;
  const copyBinary = base.copyBinary;
  return {
    ...base,
    async transaction(fn) {
      let kind: string | undefined;
      const s = now();
      const result = await base.transaction((tx) => fn({ query: (sql, params) => ((kind ??= kindOf(sql)), tx.query(sql, params)) }));
      if (kind) record(kind, now() - s);
      return result;
    },
    ...(copyBinary
      ? {
          async copyBinary(sql: string, onRow: (fields: readonly (Buffer | null)[]) => void) {
            const s = now();
            await copyBinary(sql, onRow);
            record(`${kindOf(sql) ?? 'colbert'}Copy`, now() - s);
          },
        }
      : {}),
  };
}

/**
 * Where the time of a hybrid search at R = the store's rerankDepth goes, phase by phase, on the
 * same queries (each phase timed alone, in the order a search runs them):
 * - firstStages: the search's statement without ColBERT (ColBERT weight 0, k = R: the same top R);
 * - detoast: the server reading those R ColBERT values whole (get_byte forces the detoast) and
 *   returning one number, so no transfer;
 * - detoastBase64: the same plus base64-encoding them on the server;
 * - fetchBase64 / fetchHex: the values over the wire and decoded (base64 text → Buffer; bytea
 *   as `pg` returns it: hex text → Buffer);
 * - pack / maxSim: core's int8 unpacking and the onnxruntime MaxSim of the R rows;
 * - fetchCopyBinary: the same bytes by COPY … (FORMAT binary), raw bytes on the wire;
 * - search: the whole search (default: binary COPY over the default connections), then the whole
 *   search with each way of reading the ColBERT bytes and with 1, 2 and 4 searchConnections;
 * - insideSearch: each statement of the default search timed inside the searches of
 *   searchTimed, round trips included: over `pg` without a filter, denseStageCopy and
 *   sparseStageCopy side by side, then rankingCopy (the ranking and the top R rows with their
 *   ColBERT bytes, whose MaxSim runs group by group as they arrive, all but the last group's
 *   inside this time); otherwise the same statements in transactions, then colbertCopy groups.
 */
async function breakdown(store: PgM3Store, table: string, queries: (EncodeResult & { colbert: ColbertMatrix })[], into: Record<string, any>): Promise<void> {
  const R = store.rerankDepth;
  const codec = new ColbertCodec('int8', DIM);
  const qs = queries.slice(0, Math.min(queries.length, 30));
  const topIds = new Map<EncodeResult, string[]>();
  const bytesOf = new Map<EncodeResult, Uint8Array[]>();
  const phases: Record<string, (q: EncodeResult & { colbert: ColbertMatrix }) => Promise<unknown>> = {
    firstStages: async (q) => topIds.set(q, (await store.search(q, { k: R, fetchK: 100, weights: [0.4, 0.2, 0] })).map((h) => h.id)),
    detoast: (q) => client.query(`SELECT sum(get_byte(colbert, 0))::int AS x FROM "${table}" WHERE id = ANY($1::text[])`, [topIds.get(q)]),
    detoastBase64: (q) => client.query(`SELECT sum(length(encode(colbert, 'base64')))::int AS x FROM "${table}" WHERE id = ANY($1::text[])`, [topIds.get(q)]),
    fetchBase64: async (q) => {
      const rows = await client.query<{ c: string }>(`SELECT id, encode(colbert, 'base64') AS c FROM "${table}" WHERE id = ANY($1::text[])`, [topIds.get(q)]);
      bytesOf.set(q, rows.map((r) => Buffer.from(r.c, 'base64')));
    },
    fetchHex: (q) => client.query(`SELECT id, colbert FROM "${table}" WHERE id = ANY($1::text[])`, [topIds.get(q)]),
    fetchCopyBinary: async (q) => {
      const ids = (topIds.get(q) as string[]).map((id) => `'${id.replace(/'/g, "''")}'`).join(',');
      const rows: Buffer[] = [];
      await client.copyBinary?.(`COPY (SELECT colbert FROM "${table}" WHERE id IN (${ids})) TO STDOUT (FORMAT binary)`, (f) => rows.push(Buffer.from(f[0] as Buffer)));
    },
    pack: async (q) => codec.pack(bytesOf.get(q) as Uint8Array[]),
    maxSim: (q) => maxSimPacked(q.colbert, codec.pack(bytesOf.get(q) as Uint8Array[])),
    search: (q) => store.search(q, { k: 10, fetchK: 100 }),
  };
  // The whole search by each way of reading the ColBERT bytes (the same results: checked below).
  const variants: [string, Partial<Parameters<typeof PgM3Store.connect>[0]>][] = [
    ['searchBase64', { colbertTransfer: 'base64' }],
    ['searchConnections1', { searchConnections: 1 }],
    ['searchConnections2', { searchConnections: 2 }],
    ['searchConnections4', { searchConnections: 4 }],
  ];
  const searches: Record<string, (q: EncodeResult) => Promise<unknown>> = {};
  for (const [name, options] of variants) {
    const other = await PgM3Store.connect({ client, table, ...options });
    searches[name] = (q) => other.search(q, { k: 10, fetchK: 100 });
  }
  // A `where` filter that every document passes: the same results by the parametrised path.
  searches.searchWhereAll = (q) => store.search(q, { k: 10, fetchK: 100, where: { shard: { $gte: 0 } } });
  const out: Record<string, unknown> = { rerankDepth: R, queries: qs.length };
  // Each statement of the default search, timed inside real searches (round trips included).
  const inside: Record<string, number[]> = {};
  const timed = await PgM3Store.connect({ client: timedClient(client, (kind, ms) => (inside[kind] ??= []).push(ms)), table });
  await latency(qs.slice(0, 3), (q) => timed.search(q, { k: 10, fetchK: 100 }));
  for (const key of Object.keys(inside)) delete inside[key];
  out.searchTimed = await latency(qs, (q) => timed.search(q, { k: 10, fetchK: 100 }));
  out.insideSearch = Object.fromEntries(Object.entries(inside).map(([kind, ms]) => [kind, stats(ms)]));
  // Each phase over all queries after one warm-up pass (phases read what earlier ones stored).
  for (const [name, fn] of Object.entries(phases)) out[name] = await latency(qs, fn);
  // The ways of reading the bytes side by side: per query each once, in a rotating order, so a
  // change of the machine's load hits them alike.
  const names = Object.keys(searches);
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (const q of qs.slice(0, 3)) for (const n of names) await searches[n](q);
  for (const [i, q] of qs.entries()) {
    for (let j = 0; j < names.length; j++) {
      const n = names[(i + j) % names.length];
      const s = now();
      await searches[n](q);
      times[n].push(now() - s);
    }
  }
  for (const n of names) out[n] = stats(times[n]);
  const same = await Promise.all(
    qs.slice(0, 5).map(async (q) => {
      const a = await store.search(q, { k: 10, fetchK: 100, rerankDepth: R });
      const b = await (await PgM3Store.connect({ client, table, colbertTransfer: 'base64' })).search(q, { k: 10, fetchK: 100, rerankDepth: R });
      return JSON.stringify(a.map((h) => [h.id, h.score])) === JSON.stringify(b.map((h) => [h.id, h.score]));
    }),
  );
  out.copyEqualsBase64 = same.every(Boolean);
  into.breakdownMs = out;
  log(`breakdown at R ${R}: ${JSON.stringify(out)}`);
}

// ---------------------------------------------------------------------------------------------
// 1. The sparse first stage

/**
 * Agreement of the top-R rerank with exact rescoring of all candidates on the fixture model and
 * real text (see the file comment): for each query, the top 10 (and top 5) at R against R = all.
 * The fixture's weights are random, so its ColBERT is barely tied to its dense and sparse
 * outputs: a harder case for a small R than BGE-M3's.
 */
async function fixtureAgreement(): Promise<Record<string, unknown>> {
  const root = join(here, '..');
  const golden = JSON.parse(readFileSync(join(root, 'test/fixtures/tiny-m3-A/golden.json'), 'utf8')) as { texts: string[]; queries: string[]; passages: string[] };
  const demo = readFileSync(join(root, 'examples/demo/corpus.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; text: string });
  const texts = [...new Set([...golden.texts, ...golden.passages, ...demo.map((d) => d.text)])];
  // Queries: the fixture's, and the opening clause of some demo passages (a query that has an answer).
  const queries = [...new Set([...golden.queries, ...demo.slice(0, 16).map((d) => d.text.split(/[,.:;。、]/)[0])])];
  const encoder = await M3Encoder.load(join(root, 'test/fixtures/tiny-m3-A'), { workers: 0 });
  const table = 'bench_fixture_agreement';
  await client.query(`DROP TABLE IF EXISTS "${table}_postings", "${table}", "${table}_meta"`);
  const store = await PgM3Store.connect({ client, table, encoder });
  try {
    await store.add(texts.map((text, i) => ({ id: `t${i}`, text })));
    const out: Record<string, unknown> = { documents: texts.length, queries: queries.length, fetchK: 100, weights: [0.4, 0.2, 0.4] };
    const all = await Promise.all(queries.map((q) => store.search(q, { k: 10, fetchK: 100, rerankDepth: 1000 })));
    for (const R of [10, 20, 40]) {
      let a10 = 0;
      let a5 = 0;
      for (const [i, q] of queries.entries()) {
        const got = await store.search(q, { k: 10, fetchK: 100, rerankDepth: R });
        a10 += got.filter((h) => all[i].some((e) => e.id === h.id)).length / Math.max(1, all[i].length);
        a5 += got.slice(0, 5).filter((h) => all[i].slice(0, 5).some((e) => e.id === h.id)).length / Math.max(1, Math.min(5, all[i].length));
      }
      out[`R${R}`] = { top10: round(a10 / queries.length, 3), top5: round(a5 / queries.length, 3) };
    }
    return out;
  } finally {
    await store.drop();
    await encoder.close();
  }
}

try {
  results.fixtureAgreement = await fixtureAgreement();
  log(`fixture agreement with all candidates: ${JSON.stringify(results.fixtureAgreement)}`);
  save();
  for (const N of SIZES) {
    const queries = makeQuerySet(N, 3);
    log(`exact ground truth at ${N} (core SparseIndex / DenseIndex)`);
    const exactSparse = new SparseIndex({ vocabSize: VOCAB });
    const exactDense = new DenseIndex({ dim: DIM });
    for (let s = 0; s < N + UPSERTS; s += 5000) {
      const part = Array.from({ length: Math.min(N + UPSERTS, s + 5000) - s }, (_, k) => s + k).map((i) => (i < N ? i : MAX + (i - N)));
      exactSparse.upsertMany(part.map((i) => ({ id: `d${i}`, vector: corpus[i].sparse })));
      exactDense.upsertMany(part.map((i) => ({ id: `d${i}`, vector: denseOf(i) })));
    }
    const allIds = [...Array.from({ length: N }, (_, i) => `d${i}`), ...Array.from({ length: UPSERTS }, (_, i) => `d${MAX + i}`)];
    const truthSparse = queries.map((q) => exactSparse.search(q.sparse as SparseVector, 10).map((h) => h.id));
    const HQ = Math.min(queries.length, 30);
    const truthHybrid = await Promise.all(
      queries.slice(0, HQ).map(async (q) => {
        const ds = exactDense.scoreIds(q.dense as Float32Array, allIds);
        const ss = exactSparse.scoreIds(q.sparse as SparseVector, allIds);
        return allIds.map((id, i) => ({ id, s: (0.4 * ds[i] + 0.2 * ss[i]) / 0.6 })).sort((a, b) => b.s - a.s).slice(0, 10).map((e) => e.id);
      }),
    );
    const recall = (got: string[], want: string[]) => (want.length === 0 ? undefined : got.filter((id) => want.includes(id)).length / want.length);
    const mean = (xs: (number | undefined)[]) => {
      const v = xs.filter((x): x is number => x !== undefined);
      return round(v.reduce((a, b) => a + b, 0) / Math.max(1, v.length), 3);
    };

    for (const kind of KINDS) {
      const table = `bench_${kind}_${N}`;
      const r: Record<string, unknown> = { documents: N };
      results.sparseFirstStage[`${kind}@${N}`] = r;
      const store = await fresh(table, { colbertPrecision: 'none', sparseIndex: kind });
      r.denseType = store.denseType;
      log(`${kind} @ ${N}: bulk load`);
      let t = now();
      for (let s = 0; s < N; s += 1000) await store.addEncoded(Array.from({ length: Math.min(N, s + 1000) - s }, (_, k) => docAt(s + k)));
      const loadS = (now() - t) / 1000;
      r.bulkLoad = { seconds: round(loadS, 1), docsPerSecond: round(N / loadS, 1) };
      const mem = quick ? '256MB' : '1GB';
      await client.query(`SELECT set_config('maintenance_work_mem', $1, false)`, [mem]).catch(() => undefined);
      if (kind === 'hnsw') {
        t = now();
        await client.transaction(async (tx) => {
          await tx.query(`SELECT set_config('maintenance_work_mem', $1, true)`, [mem]);
          await tx.query(`CREATE INDEX "${table}_sparse_hnsw" ON "${table}" USING hnsw (sparse sparsevec_ip_ops) WITH (m = 16, ef_construction = 64)`);
        });
        r.sparseIndexBuildSeconds = round((now() - t) / 1000, 1);
      } else {
        r.sparseIndexBuildSeconds = 0; // the postings btrees are maintained during the load
      }
      t = now();
      await store.createIndexes({ maintenanceWorkMem: mem });
      r.denseIndexBuildSeconds = round((now() - t) / 1000, 1);
      log(`${kind} @ ${N}: load ${loadS.toFixed(1)} s, sparse build ${r.sparseIndexBuildSeconds} s, dense build ${r.denseIndexBuildSeconds} s`);
      save();

      t = now();
      for (let s = 0; s < UPSERTS; s += 50) await store.addEncoded(Array.from({ length: Math.min(UPSERTS, s + 50) - s }, (_, k) => docAt(MAX + s + k)));
      const upS = (now() - t) / 1000;
      r.indexedInsert = { documents: UPSERTS, docsPerSecond: round(UPSERTS / upS, 1), msPerDocument: round((upS * 1000) / UPSERTS, 2) };
      await client.query(`ANALYZE "${table}"`);
      if (kind === 'postings') await client.query(`VACUUM ANALYZE "${table}_postings"`).catch(() => undefined);
      r.sizesMB = await sizes(table);
      log(`${kind} @ ${N}: indexed inserts ${r.indexedInsert && (r.indexedInsert as { docsPerSecond: number }).docsPerSecond} docs/s`);

      const rec: Record<string, number> = {};
      // hnsw: ef_search 40 and 100; postings: the default per-token bound and every posting.
      const variants: [string, Record<string, number>][] =
        kind === 'hnsw'
          ? [['ef40', { efSearch: 40 }], ['ef100', { efSearch: 100 }]]
          : [['perToken1000', { postingsPerToken: 1000 }], [`perToken${store.postingsPerToken}`, {}], ['perToken5000', { postingsPerToken: 5000 }], ['exact', { postingsPerToken: Infinity }]];
      const sparseLatency: Record<string, unknown> = {};
      for (const [label, extra] of variants) {
        const got = [];
        for (const q of queries) got.push((await store.searchSparse(q, { k: 10, ...extra })).map((h) => h.id));
        rec[label] = mean(got.map((g, i) => recall(g, truthSparse[i])));
        sparseLatency[label] = await latency(queries, (q) => store.searchSparse(q, { k: 10, ...extra }));
      }
      r.sparseRecallAt10 = rec;
      r.latencyMs = {
        searchSparse: sparseLatency,
        searchDense: await latency(queries, (q) => store.searchDense(q, { k: 10 })),
        hybrid: await latency(queries, (q) => store.search(q, { k: 10, fetchK: 100, weights: [0.4, 0.2, 0] })),
      };
      let overlap = 0;
      for (const [i, q] of queries.slice(0, HQ).entries()) overlap += recall((await store.search(q, { k: 10, fetchK: 100, weights: [0.4, 0.2, 0] })).map((h) => h.id), truthHybrid[i]) ?? 0;
      r.hybridTop10OverlapWithExact = round(overlap / HQ, 3);
      if (kind === 'postings') {
        // The other alternative: an exact sequential scan of the sparse column (no index).
        r.exactScanLatencyMs = await latency(queries.slice(0, Math.min(queries.length, 20)), (q) =>
          client.query(`SELECT id FROM "${table}" ORDER BY sparse <#> $1::sparsevec LIMIT 10`, [
            `{${Array.from(q.sparse!.indices, (t, k) => `${t + 1}:${q.sparse!.values[k]}`).join(',')}}/${VOCAB}`,
          ]),
        );
      }
      log(`${kind} @ ${N}: ${JSON.stringify({ recall: r.sparseRecallAt10, latency: r.latencyMs, overlap: r.hybridTop10OverlapWithExact, scan: r.exactScanLatencyMs })}`);
      save();
      await store.drop();
    }
  }

  // -------------------------------------------------------------------------------------------
  // 2. ColBERT only for the top R, at real size

  if (COLBERT_DOCS > 0) {
    const N = Math.min(COLBERT_DOCS, MAX);
    log(`ColBERT: ${N} documents × ${COLBERT_TOKENS} vectors of ${DIM} (int8)`);
    // Token vectors around the document's dense vector (similarity ≈ 0.6, as colbertLike), from
    // a shared pool of noise directions so generation stays fast; seeded per document, so a
    // load resumed in another process generates the same rows.
    const POOL = 2048;
    const pool = unitVectors(POOL, DIM, rng(78));
    const colbertOf = (center: Float32Array, count: number, seed: number): ColbertMatrix => {
      const prand = rng(1_000_003 + seed);
      const g = gaussian(rng(2_000_003 + seed));
      const data = new Float32Array(count * DIM);
      for (let c = 0; c < count; c++) {
        const a = pool.subarray(Math.floor(prand() * POOL) * DIM);
        const b = pool.subarray(Math.floor(prand() * POOL) * DIM);
        const wa = 0.55 + 0.1 * g();
        let n = 0;
        for (let d = 0; d < DIM; d++) {
          const v = 0.6 * center[d] + wa * a[d] + 0.5 * b[d];
          data[c * DIM + d] = v;
          n += v * v;
        }
        const inv = 1 / Math.sqrt(n);
        for (let d = 0; d < DIM; d++) data[c * DIM + d] *= inv;
      }
      return { data, count, dim: DIM };
    };
    const table = `bench_colbert_${N}`;
    const open = () => PgM3Store.connect({ client, table, modelId: 'synthetic-m3', dim: DIM, vocabSize: VOCAB, createIndexes: false, colbertPrecision: 'int8' });
    const store = RESUME ? await open() : await fresh(table, { colbertPrecision: 'int8' });
    const c: Record<string, any> = { documents: N, vectorsPerDocument: COLBERT_TOKENS, precision: 'int8' };
    results.colbert = c;
    // Rows are d0…d(N-1), added in order: a kept table's count is where loading resumes.
    // No autovacuum of the TOAST table (the ColBERT bytes: 26 GB at 100k): it reads all of it
    // for nothing an index-only scan or a search uses, and would run through the measurements.
    if (URL_ARG) await client.query(`ALTER TABLE "${table}" SET (toast.autovacuum_enabled = false)`);
    const from = await store.count();
    let t = now();
    let loaded = from;
    for (let s = from; s < N && (now() - t) / 1000 < LOAD_SECONDS; s += 100) {
      const part = Array.from({ length: Math.min(N, s + 100) - s }, (_, k) => {
        const d = docAt(s + k);
        return { ...d, encoding: { ...d.encoding, colbert: colbertOf(denseOf(s + k), COLBERT_TOKENS, s + k) } };
      });
      await store.addEncoded(part);
      loaded = s + part.length;
      if ((s / 100) % 20 === 19) log(`  loaded ${loaded} (${round(((loaded - from) / (now() - t)) * 1000, 1)} docs/s)`);
    }
    if (loaded > from) c.load = { from, to: loaded, docsPerSecond: round((loaded - from) / ((now() - t) / 1000), 1) };
    if (loaded < N) {
      log(`loaded ${loaded} of ${N}: run again with --resume to continue`);
      c.loadedSoFar = loaded;
      save();
      await closeDb();
      process.exit(0);
    }
    t = now();
    await store.createIndexes({ maintenanceWorkMem: quick ? '256MB' : '1GB' });
    c.denseIndexBuildSeconds = round((now() - t) / 1000, 1);
    // Not the TOAST table (26 GB at 100k): nothing there is ever scanned, only fetched by chunk id.
    await client.query(`VACUUM (ANALYZE${URL_ARG ? ', PROCESS_TOAST FALSE' : ''}) "${table}"`).catch(() => undefined);
    // The postings too (as autovacuum would after a bulk load): until their visibility map is
    // set, the index-only scans of the sparse stage read a heap page per posting.
    await client.query(`VACUUM ANALYZE "${table}_postings"`).catch(() => undefined);
    c.sizesMB = await sizes(table);
    save();
    if (loaded > from && Number.isFinite(LOAD_SECONDS)) {
      // A stepwise load ends with its index build: the measurements get a run of their own.
      log(`loaded ${N}, indexes built: run again with --resume to measure`);
      await closeDb();
      process.exit(0);
    }
    const queries = makeQuerySet(N, 11).map((q, i) => ({ ...q, colbert: colbertOf(q.dense as Float32Array, QUERY_TOKENS, -1 - i) }));
    await breakdown(store, table, queries, c);
    save();
    const exact = [];
    for (const q of queries) exact.push((await store.search(q, { k: 10, fetchK: 100, rerankDepth: 1000 })).map((h) => h.id));
    const lat: Record<string, unknown> = {};
    const agree: Record<string, number> = {};
    for (const R of R_LIST) {
      const label = R === 1000 ? 'all' : `R${R}`;
      lat[label] = await latency(queries, (q) => store.search(q, { k: 10, fetchK: 100, rerankDepth: R }));
      let a = 0;
      for (const [i, q] of queries.entries()) {
        const got = (await store.search(q, { k: 10, fetchK: 100, rerankDepth: R })).map((h) => h.id);
        a += got.filter((id) => exact[i].includes(id)).length / 10;
      }
      agree[label] = round(a / queries.length, 3);
      log(`ColBERT ${label}: ${JSON.stringify(lat[label])}, top-10 agreement with all candidates ${agree[label]}`);
      save();
    }
    lat.colbertWeight0 = await latency(queries, (q) => store.search(q, { k: 10, fetchK: 100, weights: [0.4, 0.2, 0] }));
    c.hybridLatencyMs = lat;
    c.top10AgreementWithAllCandidates = agree;
    // Transfer of 40 documents' ColBERT bytes: as bytea (pg: hex text, PGlite: binary) and as base64 text.
    const ids = Array.from({ length: 40 }, (_, i) => `d${Math.floor((i * N) / 40)}`);
    const qids = queries.map(() => ids);
    c.transfer40Ms = {
      bytea: await latency(queries.slice(0, 20), () => client.query(`SELECT id, colbert FROM "${table}" WHERE id = ANY($1::text[])`, [qids[0]])),
      base64: await latency(queries.slice(0, 20), async () => {
        const rows = await client.query<{ c: string }>(`SELECT id, encode(colbert, 'base64') AS c FROM "${table}" WHERE id = ANY($1::text[])`, [qids[0]]);
        for (const r of rows) Buffer.from(r.c, 'base64');
      }),
    };
    log(`ColBERT transfer of 40: ${JSON.stringify(c.transfer40Ms)}`);
    save();
    if (!KEEP) await store.drop();
  }
  results.complete = true;
  save();
} finally {
  await closeDb();
}

process.stdout.write(`${JSON.stringify(results, null, 2)}\nwritten to ${file}\n`);
