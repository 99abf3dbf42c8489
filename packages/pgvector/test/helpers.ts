/**
 * Shared test helpers: the fixture model, a corpus, the test database and comparisons.
 *
 * The database is an in-process PGlite, or the PostgreSQL server of `BGEM3_PG_URL` (a
 * connection string, e.g. `postgres://postgres:pw@127.0.0.1:5432/bgem3`) when it is set: the
 * same tests then run against that server, in tables named with a per-run prefix that are
 * dropped at the end.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { M3Encoder, type EncodeResult, type M3SearchResult, type SparseVector } from '@bgem3/core';
import pg from 'pg';
import { openPglite, pgClient, type OpenedPglite, type SqlClient } from '../src/index.js';

/** BGE-M3's architecture with hidden size 32, vocabulary 3002 and random weights: exactness, not relevance. */
export const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/tiny-m3-A', import.meta.url));

let encoder: Promise<M3Encoder> | undefined;
/** The fixture encoder, loaded once per test process. */
export function loadEncoder(): Promise<M3Encoder> {
  encoder ??= M3Encoder.load(FIXTURE);
  return encoder;
}

let pglite: Promise<OpenedPglite> | undefined;
/** One in-memory PGlite with pgvector per test process (it takes seconds to boot). */
export function sharedPglite(): Promise<OpenedPglite> {
  pglite ??= openPglite();
  return pglite;
}

/** The external server's connection string, when the suite runs against one. */
export const PG_URL: string | undefined = process.env.BGEM3_PG_URL || undefined;

/** A per-process prefix for table names: runs against a shared server never collide. */
export const RUN = `r${randomBytes(3).toString('hex')}`;

/** The database the tests use: PGlite, or the server of `BGEM3_PG_URL`. */
export interface TestDatabase {
  client: SqlClient;
  /** True on an external server (BGEM3_PG_URL). */
  external: boolean;
  /** The pg.Pool on an external server. */
  pool?: pg.Pool;
  /** Drops the tables this process created (external server) and closes. */
  close(): Promise<void>;
}

let database: Promise<TestDatabase> | undefined;
/** The shared test database of this process (see the file comment). */
export function sharedDatabase(): Promise<TestDatabase> {
  database ??= (async (): Promise<TestDatabase> => {
    if (!PG_URL) {
      const lite = await sharedPglite();
      return { client: lite.client, external: false, close: () => lite.close() };
    }
    const pool = new pg.Pool({ connectionString: PG_URL, max: 6 });
    const client = pgClient(pool);
    return {
      client,
      external: true,
      pool,
      async close() {
        await dropRunTables(client);
        await pool.end();
      },
    };
  })();
  return database;
}

/** Drops every table of this run (name starting with {@link RUN}, in any schema). */
export async function dropRunTables(client: SqlClient): Promise<void> {
  const rows = await client.query<{ t: string }>(
    `SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE tablename LIKE $1`,
    [`${RUN}%`],
  );
  if (rows.length) await client.query(`DROP TABLE IF EXISTS ${rows.map((r) => r.t).join(', ')} CASCADE`);
}

/** Twenty-four short passages in six languages, with stable ids and metadata. */
export const CORPUS: { id: string; text: string; metadata: Record<string, unknown> }[] = [
  ['en-paris', 'en', 'Paris is the capital of France and sits on the Seine.'],
  ['en-bge', 'en', 'BGE-M3 computes dense, sparse and ColBERT vectors in one pass.'],
  ['en-tea', 'en', 'Green tea is popular in Japan and China.'],
  ['en-rag', 'en', 'Retrieval augmented generation grounds answers in retrieved documents.'],
  ['en-pg', 'en', 'PostgreSQL stores rows in tables and pgvector adds vector types to it.'],
  ['en-hnsw', 'en', 'HNSW is a graph index for approximate nearest neighbour search.'],
  ['en-rust', 'en', 'Rust guarantees memory safety without a garbage collector.'],
  ['en-coffee', 'en', 'Coffee beans are roasted before they are ground and brewed.'],
  ['zh-beijing', 'zh', '北京是中国的首都，有很多历史古迹。'],
  ['zh-tea', 'zh', '绿茶在中国非常受欢迎。'],
  ['zh-river', 'zh', '长江是中国最长的河流。'],
  ['ja-tokyo', 'ja', '東京は日本の首都で、人口が多い都市です。'],
  ['ja-fuji', 'ja', '富士山は日本で一番高い山です。'],
  ['ja-sushi', 'ja', '寿司は日本の伝統的な料理です。'],
  ['ar-cairo', 'ar', 'القاهرة هي عاصمة مصر وأكبر مدنها.'],
  ['ar-nile', 'ar', 'نهر النيل هو أطول نهر في أفريقيا.'],
  ['ru-moscow', 'ru', 'Москва — столица России и крупнейший город страны.'],
  ['ru-volga', 'ru', 'Волга — самая длинная река в Европе.'],
  ['ru-tea', 'ru', 'Чай с лимоном любят пить зимой.'],
  ['de-berlin', 'de', 'Berlin ist die Hauptstadt von Deutschland.'],
  ['de-rhein', 'de', 'Der Rhein fließt durch Deutschland und die Niederlande.'],
  ['fr-vin', 'fr', 'Le vin de Bordeaux est connu dans le monde entier.'],
  ['fr-seine', 'fr', 'La Seine traverse Paris avant de rejoindre la Manche.'],
  ['es-madrid', 'es', 'Madrid es la capital de España y tiene museos famosos.'],
].map(([id, lang, text], i) => ({ id, text, metadata: { lang, n: i, tags: [lang, i % 2 === 0 ? 'even' : 'odd'] } }));

/** Queries in several languages (the fixture's weights are random: these test plumbing, not relevance). */
export const QUERIES = ['capital of France', 'tea in China', '日本の首都', 'самая длинная река', 'vector index in PostgreSQL', 'Hauptstadt'];

/** Asserts the same ids in the same order, and every score (and mode score) within `tol`. */
export function assertSameResults(actual: M3SearchResult[], expected: M3SearchResult[], tol: number, what: string): void {
  assert.deepEqual(
    actual.map((h) => h.id),
    expected.map((h) => h.id),
    `${what}: ids`,
  );
  actual.forEach((a, i) => {
    const e = expected[i];
    assert.ok(Math.abs(a.score - e.score) <= tol, `${what}: score of ${a.id} ${a.score} vs ${e.score}`);
    for (const m of ['dense', 'sparse', 'colbert'] as const) {
      assert.ok(Math.abs(a.scores[m] - e.scores[m]) <= tol, `${what}: ${m} score of ${a.id} ${a.scores[m]} vs ${e.scores[m]}`);
    }
    assert.equal(a.text, e.text);
    assert.deepEqual(a.metadata, e.metadata);
  });
}

/** A deterministic pseudo-random generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A unit vector of `dim` random values. */
export function unitVector(dim: number, rand: () => number): Float32Array {
  const v = new Float32Array(dim);
  let n = 0;
  for (let i = 0; i < dim; i++) {
    v[i] = rand() - 0.5;
    n += v[i] * v[i];
  }
  n = Math.sqrt(n);
  for (let i = 0; i < dim; i++) v[i] /= n;
  return v;
}

/**
 * A synthetic full encoding with `nnz` distinct tokens (ids spread over `vocab`, weights all
 * distinct) and `colbertCount` unit ColBERT vectors: what a very long document would give.
 */
export function syntheticEncoding(dim: number, vocab: number, nnz: number, colbertCount: number, seed: number): EncodeResult & { sparse: SparseVector } {
  const rand = rng(seed);
  const ids = new Set<number>();
  while (ids.size < nnz) ids.add(4 + Math.floor(rand() * (vocab - 4)));
  const indices = Uint32Array.from([...ids].sort((a, b) => a - b));
  // Distinct weights in (0.05, 0.35): a random permutation of evenly spaced values.
  const ws = Array.from({ length: nnz }, (_, i) => 0.05 + (0.3 * (i + 1)) / (nnz + 1));
  for (let i = ws.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [ws[i], ws[j]] = [ws[j], ws[i]];
  }
  const data = new Float32Array(colbertCount * dim);
  for (let c = 0; c < colbertCount; c++) data.set(unitVector(dim, rand), c * dim);
  return {
    dense: unitVector(dim, rand),
    sparse: { indices, values: Float32Array.from(ws) },
    colbert: { data, count: colbertCount, dim },
    tokens: nnz + 2,
    truncated: false,
  };
}
