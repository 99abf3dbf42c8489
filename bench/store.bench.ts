/**
 * Embedded store benchmark (issue 14's targets): M3Index holding a real corpus on one machine.
 *
 *   node --import tsx bench/store.bench.ts            # full: 100,000 passages (~26 GB on disk)
 *   node --import tsx bench/store.bench.ts --quick    # smoke: 1,000 passages (CI)
 *   … --n 20000 --legacy-n 5000 --dir /work/x --keep
 *   … --reuse --only build,search   # keep the built index between runs; run some phases
 *
 * Synthetic encodings at BGE-M3's real sizes: dense 1024, ~150 sparse non-zeros (Zipfian tokens
 * over the 250,002-id vocabulary), 256 ColBERT vectors of 1024 per passage (unit vectors around a
 * per-passage topic, so MaxSim lands in a realistic range); 32-vector queries on the same topics.
 * Each phase runs in a child process of its own, so RSS figures are that phase's alone:
 *
 * 1. build: M3Index.open + addEncoded in batches of 1,000 (one commit each), data generated
 *    streaming (never the whole corpus in memory); index size on disk.
 * 2. load + search: M3Index.load (readOnly) time and RSS after load; the first query; hybrid
 *    search (k 10, fetchK 100, all three modes) median / p95 over the query set once the page
 *    cache is warm (second and third passes) at the default rerank depth, and dense-only /
 *    sparse-only for reference; exact rescoring of every candidate (rerankDepth 200) and how
 *    often depths 10 / 20 / 40 / 100 give its top 10.
 * 3. add: 1,000 passages added and committed to that index; bytes written (the process's
 *    /proc/self/io write_bytes, checkpoint at close included) against the index size.
 * 4. legacy: the pre-database M3Index (bench/lib/legacy-m3-index.ts: everything in memory, each
 *    save a full generation) at `--legacy-n` passages against the new one at the same size: RSS,
 *    save time, search latency.
 * 5. ColBERT precision: MaxSim error and final-ranking agreement of int8 / fp16 / none against
 *    fp32 over the same passages and queries (the default is chosen by this measurement).
 *
 * Writes bench/results/store(.quick).json; deletes the bench index afterwards unless --keep.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { M3Index } from '../packages/core/src/retrieval/m3-index.js';
import type { ColbertStorage } from '../packages/core/src/store/colbert-codec.js';
import type { M3EncodedDocument } from '../packages/core/src/store/types.js';
import type { EncodeResult, TextEncoder3 } from '../packages/core/src/types.js';
import { M3Index as LegacyM3Index } from './lib/legacy-m3-index.js';
import { colbertLike, gaussian, rng, unitVectors, weightsOf, zipfTokens } from './lib/synthetic.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const self = fileURLToPath(import.meta.url);
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    n: { type: 'string' },
    'legacy-n': { type: 'string' },
    'precision-n': { type: 'string' },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    reuse: { type: 'boolean', default: false },
    only: { type: 'string' },
    phase: { type: 'string' },
    queries: { type: 'string' },
  },
});
const quick = values.quick === true;
const N = Number(values.n ?? (quick ? 1000 : 100_000));
const LEGACY_N = Number(values['legacy-n'] ?? (quick ? 300 : 10_000));
const PRECISION_N = Number(values['precision-n'] ?? (quick ? 300 : 2000));
const QUERIES = Number(values.queries ?? (quick ? 10 : 40));
const DIR = values.dir ?? join(ROOT, 'bench/.store');
const DIM = 1024;
const VOCAB = 250002;
const COLBERT_LEN = 256;
const Q_LEN = 32;
const TOPICS = 64;
const BANK_PER_TOPIC = 512;
const BATCH = 1000;
const log = (s: string) => process.stderr.write(`${s}\n`);

// ------------------------------------------------------------------------------------------------
// Synthetic data, generated streaming and deterministically (passage i is the same in every phase)

/** A TextEncoder3 for the model of the synthetic encodings (queries are given as encodings). */
const encoder: TextEncoder3 = {
  modelId: 'bench/synthetic-m3',
  dim: DIM,
  vocabSize: VOCAB,
  async encode() {
    throw new Error('the store bench queries with encodings only');
  },
};

interface Generator {
  passage(i: number): M3EncodedDocument;
  query(i: number): EncodeResult;
}

function generator(): Generator {
  const rand = rng(42);
  // Topic directions for dense and ColBERT, and a bank of ColBERT-like vectors per topic: a
  // passage copies 256 bank rows of its topic (fast), a query gets fresh vectors around it.
  const denseTopics = unitVectors(TOPICS, DIM, rand);
  const colbertTopics = unitVectors(TOPICS, DIM, rand);
  const bank: Float32Array[] = [];
  for (let t = 0; t < TOPICS; t++) bank.push(colbertLike(BANK_PER_TOPIC, DIM, rand, colbertTopics.subarray(t * DIM, (t + 1) * DIM), 0.6).data);
  const denseOf = (t: number, r: () => number, spread: number) => {
    const g = gaussian(r);
    const v = new Float32Array(DIM);
    let n = 0;
    for (let j = 0; j < DIM; j++) {
      v[j] = denseTopics[t * DIM + j] + (spread / Math.sqrt(DIM)) * g();
      n += v[j] * v[j];
    }
    const inv = 1 / Math.sqrt(n);
    for (let j = 0; j < DIM; j++) v[j] *= inv;
    return v;
  };
  // One Zipf table for all passages, drawn from each passage's own generator (`cur`).
  let cur = rng(0);
  const tok = zipfTokens(() => cur());
  const tokens = (r: () => number, minLen: number, maxLen: number) => {
    cur = r;
    const len = minLen + Math.floor(r() * (maxLen - minLen + 1));
    const ids = new Uint32Array(len);
    for (let k = 0; k < len; k++) ids[k] = tok();
    return { tokens: ids, sparse: weightsOf(ids, r) };
  };
  return {
    passage(i) {
      const r = rng(1_000_003 + i);
      const t = Math.floor(r() * TOPICS);
      const doc = tokens(r, 150, 250);
      const data = new Float32Array(COLBERT_LEN * DIM);
      const rows = bank[t];
      for (let k = 0; k < COLBERT_LEN; k++) {
        const row = Math.floor(r() * BANK_PER_TOPIC);
        data.set(rows.subarray(row * DIM, (row + 1) * DIM), k * DIM);
      }
      return {
        id: `p${i}`,
        text: `passage ${i} on topic ${t}: ${Array.from(doc.tokens.subarray(0, 40), (x) => `w${x}`).join(' ')}`,
        metadata: { topic: t, i },
        encoding: { dense: denseOf(t, r, 1.5), sparse: doc.sparse, colbert: { data, count: COLBERT_LEN, dim: DIM }, tokens: COLBERT_LEN, truncated: false },
      };
    },
    query(i) {
      const r = rng(9_000_000 + i);
      const t = Math.floor(r() * TOPICS);
      const q = tokens(r, 4, 16);
      return {
        dense: denseOf(t, r, 1.5),
        sparse: q.sparse,
        colbert: colbertLike(Q_LEN, DIM, r, colbertTopics.subarray(t * DIM, (t + 1) * DIM), 0.6),
        tokens: Q_LEN,
        truncated: false,
      };
    },
  };
}

function stats(times: number[]) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p95: q(0.95), min: s[0], max: s[s.length - 1], runs: s.length };
}

function rssMB(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

function peakRssMB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function writeBytes(): { writeBytes: number; wchar: number } {
  const io = readFileSync('/proc/self/io', 'utf8');
  return { writeBytes: Number(/write_bytes:\s+(\d+)/.exec(io)?.[1] ?? NaN), wchar: Number(/wchar:\s+(\d+)/.exec(io)?.[1] ?? NaN) };
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const s = statSync(join(dir, name));
    n += s.isDirectory() ? dirBytes(join(dir, name)) : s.size;
  }
  return n;
}

function safeDirBytes(dir: string): number {
  try {
    return dirBytes(dir);
  } catch {
    return 0;
  }
}

async function addRange(index: { addEncoded(d: M3EncodedDocument[]): Promise<unknown> }, gen: Generator, from: number, to: number, dir = DIR, batch = BATCH): Promise<void> {
  for (let i = from; i < to; i += batch) {
    const docs: M3EncodedDocument[] = [];
    for (let j = i; j < Math.min(to, i + batch); j++) docs.push(gen.passage(j));
    await index.addEncoded(docs);
    if ((i / batch) % 10 === 0) log(`  ${Math.min(to, i + batch)} / ${to} passages (${((performance.now() - t0) / 1000).toFixed(0)} s, ${(safeDirBytes(dir) / 2 ** 30).toFixed(1)} GiB on disk)`);
  }
}
const t0 = performance.now();

async function searchRounds(index: { search: M3Index['search']; searchDense: M3Index['searchDense']; searchSparse: M3Index['searchSparse'] }, gen: Generator) {
  const queries = Array.from({ length: QUERIES }, (_, i) => gen.query(i));
  let t = performance.now();
  await index.search(queries[0], { k: 10, fetchK: 100 });
  const firstQueryMs = performance.now() - t;
  const cold: number[] = [];
  const warm: number[] = [];
  for (let round = 0; round < 3; round++) {
    for (const q of queries) {
      t = performance.now();
      await index.search(q, { k: 10, fetchK: 100 });
      (round === 0 ? cold : warm).push(performance.now() - t);
    }
  }
  // The ColBERT rerank depth (default DEFAULT_RERANK_DEPTH): latency of exact rescoring of every
  // candidate (rerankDepth 2·fetchK) and the agreement of other depths' top 10 with it.
  const exactTimes: number[] = [];
  const depths = [10, 20, 40, 100];
  const agree = new Map(depths.map((d) => [d, { identicalTop10: 0, top10Overlap: 0, sameFirstHit: 0 }]));
  for (const q of queries) {
    t = performance.now();
    const exact = (await index.search(q, { k: 10, fetchK: 100, rerankDepth: 200 })).map((r) => r.id);
    exactTimes.push(performance.now() - t);
    const want = new Set(exact);
    for (const d of depths) {
      const got = (await index.search(q, { k: 10, fetchK: 100, rerankDepth: d })).map((r) => r.id);
      const a = agree.get(d) as { identicalTop10: number; top10Overlap: number; sameFirstHit: number };
      if (JSON.stringify(got) === JSON.stringify(exact)) a.identicalTop10++;
      if (got[0] === exact[0]) a.sameFirstHit++;
      a.top10Overlap += got.filter((id) => want.has(id)).length / Math.max(1, exact.length);
    }
  }
  const rerankDepth = {
    exactAllCandidates: stats(exactTimes),
    agreementWithExact: Object.fromEntries(
      [...agree].map(([d, a]) => [d, { identicalTop10: a.identicalTop10 / queries.length, sameFirstHit: a.sameFirstHit / queries.length, top10Overlap: a.top10Overlap / queries.length }]),
    ),
  };
  const dense: number[] = [];
  const sparse: number[] = [];
  for (const q of queries) {
    t = performance.now();
    await index.searchDense(q, { k: 10 });
    dense.push(performance.now() - t);
    t = performance.now();
    await index.searchSparse(q, { k: 10 });
    sparse.push(performance.now() - t);
  }
  return { firstQueryMs, hybridFirstPass: stats(cold), hybridWarm: stats(warm), dense: stats(dense), sparse: stats(sparse), rerankDepth };
}

// ------------------------------------------------------------------------------------------------
// Phases (each in its own process)

async function phaseBuild(): Promise<unknown> {
  if (values.reuse) {
    try {
      const existing = await M3Index.load(DIR, { encoder, readOnly: true });
      const size = existing.size;
      await existing.close();
      if (size >= N) return { passages: size, reused: true, diskBytes: dirBytes(DIR) };
    } catch {
      /* build it */
    }
  }
  const gen = generator();
  rmSync(DIR, { recursive: true, force: true });
  const t = performance.now();
  const index = await M3Index.open(DIR, { encoder });
  await addRange(index, gen, 0, N);
  await index.close();
  return { passages: N, seconds: (performance.now() - t) / 1000, diskBytes: dirBytes(DIR), peakRssMB: peakRssMB() };
}

async function phaseSearch(): Promise<unknown> {
  const gen = generator(); // before the load: its bank (128 MB) is not the index's memory
  const rssBefore = rssMB();
  const t = performance.now();
  const index = await M3Index.load(DIR, { encoder, readOnly: true });
  const loadSeconds = (performance.now() - t) / 1000;
  const rssAfterLoadMB = rssMB();
  const search = await searchRounds(index, gen);
  const out = { passages: index.size, loadSeconds, rssBeforeLoadMB: rssBefore, rssAfterLoadMB, rssOfIndexMB: rssAfterLoadMB - rssBefore, rssAfterSearchesMB: rssMB(), ...search };
  await index.close();
  return out;
}

async function phaseAdd(): Promise<unknown> {
  const gen = generator();
  const indexBytes = dirBytes(DIR);
  const index = await M3Index.open(DIR, { encoder });
  const before = writeBytes();
  const t = performance.now();
  await addRange(index, gen, N, N + 1000);
  const commitSeconds = (performance.now() - t) / 1000;
  await index.close(); // checkpoints the log into the database: those writes count too
  const after = writeBytes();
  const written = after.writeBytes - before.writeBytes;
  return { added: 1000, indexBytes, commitSeconds, writeBytes: written, wchar: after.wchar - before.wchar, shareOfIndex: written / indexBytes };
}

async function phaseLegacy(kind: 'legacy' | 'new'): Promise<unknown> {
  const gen = generator();
  const dir = join(DIR, `../.store-${kind}-${LEGACY_N}`);
  rmSync(dir, { recursive: true, force: true });
  const rssBefore = rssMB();
  const index = kind === 'legacy' ? await LegacyM3Index.create({ encoder }) : await M3Index.open(dir, { encoder });
  let t = performance.now();
  await addRange(index, gen, 0, LEGACY_N, dir);
  const buildSeconds = (performance.now() - t) / 1000;
  t = performance.now();
  await index.save(dir);
  const saveSeconds = (performance.now() - t) / 1000;
  // A change of 1% followed by a save: the legacy layout rewrites everything.
  const more = Math.max(1, Math.floor(LEGACY_N / 100));
  await addRange(index, gen, LEGACY_N, LEGACY_N + more, dir);
  const w0 = writeBytes();
  t = performance.now();
  await index.save(dir);
  const saveAfterChangeSeconds = (performance.now() - t) / 1000;
  const savedAfterChangeBytes = writeBytes().writeBytes - w0.writeBytes;
  const out = { kind, passages: LEGACY_N, buildSeconds, saveSeconds, buildPeakRssMB: peakRssMB(), diskBytes: dirBytes(dir), changed: more, saveAfterChangeSeconds, savedAfterChangeBytes, rssBeforeMB: rssBefore };
  if (kind === 'new') await (index as M3Index).close();
  return out;
}

// The index saved by phaseLegacy, loaded in a fresh process (RSS is the index's, not the
// builder's garbage) and searched; then removed.
async function phaseLegacyLoad(kind: 'legacy' | 'new'): Promise<unknown> {
  const gen = generator();
  const dir = join(DIR, `../.store-${kind}-${LEGACY_N}`);
  const rssBefore = rssMB();
  const t = performance.now();
  const index = kind === 'legacy' ? await LegacyM3Index.load(dir, { encoder }) : await M3Index.load(dir, { encoder, readOnly: true });
  const loadSeconds = (performance.now() - t) / 1000;
  const rssAfterLoadMB = rssMB();
  const search = await searchRounds(index as M3Index, gen);
  if (kind === 'new') await (index as M3Index).close();
  rmSync(dir, { recursive: true, force: true });
  return { kind, passages: index.size, loadSeconds, rssAfterLoadMB, rssOfIndexMB: rssAfterLoadMB - rssBefore, ...search };
}

async function phasePrecision(): Promise<unknown> {
  const gen = generator();
  const precisions: ColbertStorage[] = ['fp32', 'int8', 'fp16', 'none'];
  const indexes = new Map<ColbertStorage, M3Index>();
  for (const p of precisions) indexes.set(p, await M3Index.create({ encoder, colbertPrecision: p }));
  for (let i = 0; i < PRECISION_N; i += 250) {
    const docs: M3EncodedDocument[] = [];
    for (let j = i; j < Math.min(PRECISION_N, i + 250); j++) docs.push(gen.passage(j));
    for (const index of indexes.values()) await index.addEncoded(docs);
  }
  const queries = Array.from({ length: QUERIES }, (_, i) => gen.query(1000 + i));
  const ref = indexes.get('fp32') as M3Index;
  const out: Record<string, unknown> = { passages: PRECISION_N, queries: queries.length };
  for (const p of precisions.slice(1)) {
    const index = indexes.get(p) as M3Index;
    let sumErr = 0;
    let maxErr = 0;
    let pairs = 0;
    let sameTop10 = 0;
    let overlap = 0;
    let sameFirst = 0;
    for (const q of queries) {
      const want = await ref.search(q, { k: 10, fetchK: 100 });
      const got = p === 'none' ? await index.search(q, { k: 10, fetchK: 100, weights: [0.4, 0.2, 0] }) : await index.search(q, { k: 10, fetchK: 100 });
      if (p !== 'none') {
        // MaxSim error over the same candidates: rescore the reference's top 100.
        const ids = (await ref.search(q, { k: 100, fetchK: 100 })).map((r) => r.id);
        const a = await ref.rescore(q, ids);
        const b = new Map((await index.rescore(q, ids)).map((r) => [r.id, r.scores.colbert]));
        for (const r of a) {
          const e = Math.abs(r.scores.colbert - (b.get(r.id) as number));
          sumErr += e;
          maxErr = Math.max(maxErr, e);
          pairs++;
        }
      }
      if (JSON.stringify(got.map((r) => r.id)) === JSON.stringify(want.map((r) => r.id))) sameTop10++;
      if (got[0]?.id === want[0]?.id) sameFirst++;
      const w = new Set(want.map((r) => r.id));
      overlap += got.filter((r) => w.has(r.id)).length / Math.max(1, want.length);
    }
    out[p] = {
      maxSimMeanAbsError: pairs ? sumErr / pairs : null,
      maxSimMaxAbsError: pairs ? maxErr : null,
      identicalTop10: sameTop10 / queries.length,
      sameFirstHit: sameFirst / queries.length,
      top10Overlap: overlap / queries.length,
      bytesPerVector: p === 'int8' ? DIM + 4 : p === 'fp16' ? 2 * DIM : 0,
    };
  }
  for (const index of indexes.values()) await index.close();
  return out;
}

// ------------------------------------------------------------------------------------------------

function runPhase(phase: string): Promise<unknown> {
  const args = ['--import', 'tsx', self, '--phase', phase, ...(values.reuse ? ['--reuse'] : []), '--n', String(N), '--legacy-n', String(LEGACY_N), '--precision-n', String(PRECISION_N), '--dir', DIR, '--queries', String(QUERIES), ...(quick ? ['--quick'] : [])];
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ['--max-old-space-size=16384', ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout) => {
      if (err) return reject(new Error(`phase ${phase} failed: ${err.message}`));
      resolve(JSON.parse(stdout.trim().split('\n').pop() as string));
    });
    child.stderr?.pipe(process.stderr);
  });
}

if (values.phase) {
  const phase = values.phase;
  const result =
    phase === 'build' ? await phaseBuild() : phase === 'search' ? await phaseSearch() : phase === 'add' ? await phaseAdd() : phase === 'legacy' ? await phaseLegacy('legacy') : phase === 'legacy-new' ? await phaseLegacy('new') : phase === 'legacy-load' ? await phaseLegacyLoad('legacy') : phase === 'legacy-new-load' ? await phaseLegacyLoad('new') : await phasePrecision();
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    quick,
    node: process.version,
    cpu: cpus()[0]?.model,
    cores: availableParallelism(),
    loadAverageAtStart: loadavg().map((x) => Number(x.toFixed(2))),
    config: { passages: N, legacyPassages: LEGACY_N, precisionPassages: PRECISION_N, queries: QUERIES, dim: DIM, colbertVectors: COLBERT_LEN, queryVectors: Q_LEN },
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const out = join(ROOT, `bench/results/store${quick ? '.quick' : ''}.json`);
  if (values.only) {
    // Some phases only: keep the other phases' figures of the last run.
    try {
      const last = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
      for (const [k, v] of Object.entries(last)) if (!(k in results)) results[k] = v;
    } catch {
      /* no earlier run */
    }
  }
  const save = () => writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  try {
    const phases = values.only ? values.only.split(',') : ['precision', 'legacy', 'legacy-load', 'legacy-new', 'legacy-new-load', 'build', 'search', 'add'];
    for (const phase of phases) {
      log(`store bench: ${phase} …`);
      const started = performance.now();
      results[phase] = await runPhase(phase);
      log(`  (${((performance.now() - started) / 1000).toFixed(0)} s)`);
      log(`  ${JSON.stringify(results[phase])}`);
      save();
    }
    results.loadAverageAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
    save();
  } finally {
    if (!values.keep && !values.reuse) rmSync(DIR, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}
