/**
 * Schema of a store: the pgvector extension, a documents table with its indexes, the postings of
 * the sparse first stage, and a one-row meta table recording what the vectors are, so that a
 * store is never reopened with an encoder or settings that would silently mix incompatible
 * vectors.
 *
 *     <table>          id text PK, rowid bigint (identity), text, metadata jsonb,
 *                      dense halfvec(dim) | vector(dim)      HNSW (halfvec_ip_ops | vector_ip_ops)
 *                      sparse sparsevec(vocab)               all weights ('postings'), or the ≤ 1,000
 *                                                            largest, HNSW-indexed ('hnsw')
 *                      sparse_full sparsevec(vocab) NULL     all weights, only when sparse had to be cut
 *                      colbert bytea NULL                    ColBERT vectors (core's ColbertCodec bytes)
 *     <table>_postings token int4, weight float4, doc bigint (= <table>.rowid; kept in step by
 *                      the store's writes and deletes, in the same transactions: a foreign key
 *                      would check every one of a document's ~150 rows on insert)
 *                      btree (token, weight DESC) INCLUDE (doc), btree (doc)   ('postings' only)
 *     <table>_meta     schema_version, model_id, dim, vocab_size, colbert_precision, dense_type,
 *                      sparse_index_nnz, sparse_index
 *
 * Creation under concurrency: every creation step (extension, tables, indexes, meta row) runs in
 * one transaction holding one advisory lock of the database, so concurrent connects create each
 * object once. What a session sees of the catalog after waiting for that lock, in PostgreSQL's
 * terms:
 *
 * - the previous holder's commit is visible to every snapshot taken after the lock is granted:
 *   a committing backend makes its transaction visible (ProcArrayEndTransaction) and sends its
 *   catalog invalidations before it releases its locks;
 * - in READ COMMITTED each statement takes a new snapshot, so a plain query of pg_class or
 *   pg_extension issued after the lock statement reads the catalog as committed then;
 * - but name lookups (`to_regclass`, `regclass` casts) go through the backend's catalog caches,
 *   which also cache "no such relation". Those caches are brought up to date only when the
 *   backend processes the invalidation queue: at transaction start, and when it acquires a lock
 *   on a relation — not when it acquires an advisory lock. A `to_regclass` right after
 *   `pg_advisory_xact_lock` therefore returns NULL for a table the previous holder created if
 *   this session had looked the name up (and missed) before waiting: reproduced on 15.18 (test
 *   "the catalog after the lock" in store.server.test.ts), and the cause of the measured
 *   "table exists but has no _meta" and duplicate-object failures.
 *
 * So every existence check here is a query of pg_class / pg_namespace (the statement's own
 * snapshot, and opening pg_class processes the invalidation queue), never a cache lookup. The
 * retry of a creation attempt that still sees a half-state or fails on a duplicate object, in a
 * NEW transaction, stays as a bounded safety net (schema changes made outside this lock).
 */
import { M3Error } from '@bgem3/core';
import { serverMessage, sqlState } from './retry.js';
import type { PgColbertPrecision } from './codec.js';
import { derived, qualified, type TableName } from './identifiers.js';
import type { SqlClient, SqlQueryable } from './sql-client.js';

/** Version of the table layout written by this package; stored in the meta table. */
export const SCHEMA_VERSION = 2;

/** Table layouts this build opens: 1 (before the postings: sparse HNSW only) and 2. */
export const READABLE_SCHEMA_VERSIONS: readonly number[] = [1, 2];

/** The sparse first stage of a store: an inverted postings table (exact) or pgvector's HNSW (approximate). */
export type SparseIndexKind = 'postings' | 'hnsw';

/** The oldest pgvector with `sparsevec` and `halfvec` (and their HNSW operator classes). */
export const MIN_PGVECTOR = '0.7.0';

/** Column type of dense vectors. */
export type DenseType = 'halfvec' | 'vector';

/** What the meta table records about a store. */
export interface StoreMeta {
  schemaVersion: number;
  modelId: string;
  dim: number;
  vocabSize: number;
  colbertPrecision: PgColbertPrecision;
  denseType: DenseType;
  /** Non-zeros kept in the `sparse` column (≤ 1,000 for 'hnsw'; 16,000, all, for 'postings'). */
  sparseIndexNnz: number;
  /** The sparse first stage. */
  sparseIndex: SparseIndexKind;
}

/** HNSW build parameters (pgvector's defaults: m 16, ef_construction 64). */
export interface HnswParams {
  /** Max connections per node per layer (2–100). Higher: better recall, bigger and slower index. */
  m?: number;
  /** Candidate list size while building (4–1000, ≥ 2·m). Higher: better recall, slower build. */
  efConstruction?: number;
}

/** Parses `x.y.z` into a comparable triple. */
export function parseVersion(v: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : [0, 0, 0];
}

/** a ≥ b for versions. */
export function versionAtLeast(a: string, b: string): boolean {
  const x = parseVersion(a);
  const y = parseVersion(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return true;
}

/** The installed pgvector version in this database, or undefined when the extension is not created. */
export async function pgvectorVersion(db: SqlQueryable): Promise<string | undefined> {
  const rows = await db.query<{ v: string }>(`SELECT extversion AS v FROM pg_extension WHERE extname = 'vector'`);
  return rows[0]?.v;
}

/** The extension's files are not on the server at all: no privilege will help, installing will. */
function notInstalled(reason: string, cause?: unknown): M3Error {
  return new M3Error(
    'INVALID_ARGUMENT',
    `pgvector is not installed on this PostgreSQL server (${reason}). Install it on the server ` +
      '(Debian/Ubuntu: `apt install postgresql-<major>-pgvector` from apt.postgresql.org; or build github.com/pgvector/pgvector ≥ 0.7), ' +
      'or use a managed PostgreSQL that offers pgvector (RDS, Cloud SQL, Azure, Supabase, Neon), or PGlite (openPglite()); then connect again.',
    cause === undefined ? {} : { cause },
  );
}

/** INVALID_ARGUMENT for a failed CREATE EXTENSION, keeping the server's message, detail and hint. */
function createExtensionFailed(cause: unknown): M3Error {
  const reason = serverMessage(cause);
  // The extension's files are not on the server at all: no privilege will help, installing will.
  if (sqlState(cause) === '58P01' || /is not available|could not open extension control file/i.test(reason)) return notInstalled(reason, cause);
  return new M3Error(
    'INVALID_ARGUMENT',
    `pgvector is not enabled in this database and CREATE EXTENSION vector failed: ${reason}. ` +
      'pgvector is not a trusted extension: a superuser (on managed services the admin role: rds_superuser, cloudsqlsuperuser, azure_pg_admin ' +
      'after allow-listing VECTOR in azure.extensions) must run `CREATE EXTENSION vector;` once in this database; then connect again.',
    { cause },
  );
}

/** Checks an installed version; INVALID_ARGUMENT when older than {@link MIN_PGVECTOR}. */
export function checkPgvectorVersion(version: string): string {
  if (!versionAtLeast(version, MIN_PGVECTOR)) {
    throw new M3Error(
      'INVALID_ARGUMENT',
      `pgvector ${version} is installed, but BGE-M3's sparse weights need the sparsevec type (and dense vectors halfvec), which arrived in pgvector ${MIN_PGVECTOR}: ` +
        'upgrade the extension (`ALTER EXTENSION vector UPDATE;` after installing ≥ 0.7; on managed services pick a version that ships it)',
    );
  }
  return version;
}

/** The error for a database without the extension when the store may not create it. */
export async function pgvectorMissing(db: SqlQueryable): Promise<M3Error> {
  const available = await db.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'vector'`);
  if (available.length === 0) return notInstalled('no `vector` in pg_available_extensions');
  return new M3Error('INVALID_ARGUMENT', 'pgvector is not enabled in this database: run `CREATE EXTENSION vector;` as a superuser (or connect with createSchema: true)');
}

/** Creates the extension inside the caller's (locked) transaction; errors say what to do. */
async function createPgvector(tx: SqlQueryable): Promise<string> {
  const available = await tx.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'vector'`);
  if (available.length === 0) throw notInstalled('no `vector` in pg_available_extensions');
  try {
    await tx.query('CREATE EXTENSION IF NOT EXISTS vector');
  } catch (cause) {
    if (isDuplicateObject(cause)) throw cause; // created meanwhile: the caller retries in a new transaction
    throw createExtensionFailed(cause);
  }
  const version = await pgvectorVersion(tx);
  if (version === undefined) throw new M3Error('INVALID_ARGUMENT', 'CREATE EXTENSION vector succeeded but the extension is not listed in pg_extension');
  return version;
}

/** A failure that means "someone else created it meanwhile" (seen through a stale catalog). */
function isDuplicateObject(err: unknown): boolean {
  const s = sqlState(err);
  return s === '23505' || s === '42P07' || s === '42710' || s === '42P06';
}

interface MetaRow {
  schema_version: number;
  model_id: string;
  dim: number;
  vocab_size: number;
  colbert_precision: string;
  dense_type: string;
  sparse_index_nnz: number;
  sparse_index?: string;
}

/**
 * True when the relation `<table><suffix>` exists: in its schema when qualified, else in a
 * schema of the search path (where the unqualified name resolves). Read from pg_class with the statement's snapshot, not through the catalog caches (see the
 * file comment: after waiting for the lock, a cached miss can be stale).
 */
export async function relationExists(db: SqlQueryable, table: TableName, suffix = ''): Promise<boolean> {
  const name = table.name + suffix;
  const rows =
    table.schema !== undefined
      ? await db.query(
          `SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 AND n.nspname = $2`,
          [name, table.schema],
        )
      : await db.query(
          // In any schema of the path (temporary and pg_catalog included): where a name lookup finds it.
          `SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = $1 AND n.nspname = ANY(pg_catalog.current_schemas(true)) LIMIT 1`,
          [name],
        );
  return rows.length > 0;
}

/**
 * The meta row of a store, or undefined when there is no store under this name. INDEX_INVALID
 * when the documents table exists without its meta table (not a store of this package) or the
 * meta table is empty or unreadable.
 */
export async function readMeta(db: SqlQueryable, table: TableName): Promise<StoreMeta | undefined> {
  const metaTable = qualified(table, '_meta');
  if (!(await relationExists(db, table, '_meta'))) {
    if (await relationExists(db, table)) {
      throw new M3Error(
        'INDEX_INVALID',
        `table ${qualified(table)} exists but has no ${metaTable}: it is not a @bgem3/pgvector store (choose another table name)`,
      );
    }
    return undefined;
  }
  // As JSON: a version-1 meta table has no sparse_index column.
  const rows = await db.query<{ m: MetaRow | string }>(`SELECT to_jsonb(m) AS m FROM ${metaTable} m`);
  const r = typeof rows[0]?.m === 'string' ? (JSON.parse(rows[0].m) as MetaRow) : (rows[0]?.m as MetaRow | undefined);
  if (!r) throw new M3Error('INDEX_INVALID', `${metaTable} is empty: the store's schema creation did not finish; drop both tables and create the store again`);
  if (!(await relationExists(db, table))) throw new M3Error('INDEX_INVALID', `${metaTable} exists but table ${qualified(table)} does not`);
  return {
    schemaVersion: Number(r.schema_version),
    modelId: r.model_id,
    dim: Number(r.dim),
    vocabSize: Number(r.vocab_size),
    colbertPrecision: r.colbert_precision as PgColbertPrecision,
    denseType: r.dense_type as DenseType,
    sparseIndexNnz: Number(r.sparse_index_nnz),
    sparseIndex: r.sparse_index === 'postings' ? 'postings' : 'hnsw',
  };
}

/** What {@link ensureSchema} creates when the store is missing. */
export interface SchemaRequest {
  /** The meta of a new store, computed when needed (undefined: opening only; a missing store is then an error). */
  create: ((db: SqlQueryable) => Promise<StoreMeta>) | undefined;
  hnsw: Required<HnswParams>;
  withIndexes: boolean;
  /** Create the extension when missing. */
  createExtension: boolean;
  /** Called before each retry of the locked creation transaction (tests count them: there should be none). */
  onRetry?: (err: unknown) => void;
}

/** Attempts of the locked creation transaction (see the file comment). */
const CREATE_ATTEMPTS = 6;

/** The advisory lock key of schema creation in a database (one for all stores: creation is rare). */
const LOCK_KEY = 'bgem3-pgvector:schema';

/**
 * Makes sure pgvector and the store exist, creating what is missing (see the file comment:
 * one advisory lock, retried in a new transaction on a stale catalog). Returns the installed
 * pgvector version and the stored meta (another process's when it won the race), or undefined
 * meta when the store is missing and `create` is undefined.
 */
export async function ensureSchema(client: SqlClient, table: TableName, request: SchemaRequest): Promise<{ version: string; meta: StoreMeta | undefined }> {
  // Fast path, no lock: everything exists (every connect after the first).
  const version = await pgvectorVersion(client);
  if (version !== undefined) {
    checkPgvectorVersion(version);
    const meta = await readMeta(client, table).catch((err) => (err instanceof M3Error && err.code === 'INDEX_INVALID' ? undefined : Promise.reject(err)));
    if (meta) return { version, meta };
    if (!request.create) return { version, meta: await readMeta(client, table) };
  } else if (!request.createExtension) {
    throw await pgvectorMissing(client);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [LOCK_KEY]);
        let v = await pgvectorVersion(tx);
        if (v === undefined) {
          if (!request.createExtension) throw await pgvectorMissing(tx);
          v = await createPgvector(tx);
        }
        checkPgvectorVersion(v);
        const meta = await readMeta(tx, table);
        if (meta || !request.create) return { version: v, meta };
        await createStoreTables(tx, table, await request.create(tx), request.hnsw, request.withIndexes);
        const stored = await readMeta(tx, table);
        if (!stored) throw new M3Error('INDEX_INVALID', `${qualified(table, '_meta')} vanished right after it was created`);
        return { version: v, meta: stored };
      });
    } catch (err) {
      // A half-created state or a duplicate seen through a stale catalog: read it afresh.
      const stale = isDuplicateObject(err) || (err instanceof M3Error && err.code === 'INDEX_INVALID' && /has no|vanished|is empty|does not$/.test(err.message));
      if (!stale || attempt >= CREATE_ATTEMPTS) throw err;
      request.onRetry?.(err);
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt * Math.random()));
    }
  }
}

/** The DDL of a new store and its meta row, in the caller's (locked) transaction. */
async function createStoreTables(tx: SqlQueryable, table: TableName, meta: StoreMeta, hnsw: Required<HnswParams>, withIndexes: boolean): Promise<void> {
  const docs = qualified(table);
  const metaTable = qualified(table, '_meta');
  const postings = qualified(table, '_postings');
  // Every interpolated value is a validated integer or a fixed keyword; identifiers are quoted.
  const ddl = [
    `CREATE TABLE IF NOT EXISTS ${metaTable} (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      schema_version integer NOT NULL,
      model_id text NOT NULL,
      dim integer NOT NULL,
      vocab_size integer NOT NULL,
      colbert_precision text NOT NULL,
      dense_type text NOT NULL,
      sparse_index_nnz integer NOT NULL,
      sparse_index text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE TABLE IF NOT EXISTS ${docs} (
      id text PRIMARY KEY,
      rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
      text text NOT NULL,
      metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
      dense ${meta.denseType}(${meta.dim}) NOT NULL,
      sparse sparsevec(${meta.vocabSize}) NOT NULL,
      sparse_full sparsevec(${meta.vocabSize}),
      colbert bytea
    )`,
    // ColBERT bytes are float data: compression costs CPU on every write and read for ~nothing.
    `ALTER TABLE ${docs} ALTER COLUMN colbert SET STORAGE EXTERNAL`,
    // Keep the dense and sparse vectors in the row. pgvector's types have STORAGE external, and
    // a row over 2 kB (a halfvec(1024) alone is 2,056 bytes, ~155 sparse weights 1.2 kB more)
    // would have its largest vector moved to the TOAST table, which with ColBERT is the 25 GB
    // of ColBERT chunks at 100k documents: every exact dense score of a candidate was then a
    // TOAST index lookup (measured on PostgreSQL 15: 2 TOAST values per row, ColBERT and dense).
    // With the target at its maximum only values that do not fit in a page leave the row:
    // ColBERT always, a long text, a sparse_full.
    `ALTER TABLE ${docs} SET (toast_tuple_target = 8160)`,
    ...(meta.sparseIndex === 'postings'
      ? [
          `CREATE TABLE IF NOT EXISTS ${postings} (
            token integer NOT NULL,
            weight real NOT NULL,
            doc bigint NOT NULL
          )`,
          `CREATE INDEX IF NOT EXISTS ${derived(table, '_postings_token')} ON ${postings} (token, weight DESC) INCLUDE (doc)`,
          `CREATE INDEX IF NOT EXISTS ${derived(table, '_postings_doc')} ON ${postings} (doc)`,
        ]
      : []),
    ...(withIndexes ? indexStatements(table, meta.denseType, hnsw, meta.sparseIndex) : []),
  ];
  for (const statement of ddl) await tx.query(statement);
  await tx.query(
    `INSERT INTO ${metaTable} (schema_version, model_id, dim, vocab_size, colbert_precision, dense_type, sparse_index_nnz, sparse_index)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (singleton) DO NOTHING`,
    [meta.schemaVersion, meta.modelId, meta.dim, meta.vocabSize, meta.colbertPrecision, meta.denseType, meta.sparseIndexNnz, meta.sparseIndex],
  );
}

/**
 * The HNSW indexes: inner product on the dense column, and (`sparseIndex: 'hnsw'`) on the
 * sparse projection. (`IF NOT EXISTS`: also used to build them after a bulk load.)
 */
export function indexStatements(table: TableName, denseType: DenseType, hnsw: Required<HnswParams>, sparseIndex: SparseIndexKind): string[] {
  const docs = qualified(table);
  const ops = denseType === 'halfvec' ? 'halfvec_ip_ops' : 'vector_ip_ops';
  const params = `WITH (m = ${hnsw.m}, ef_construction = ${hnsw.efConstruction})`;
  return [
    `CREATE INDEX IF NOT EXISTS ${derived(table, '_dense_hnsw')} ON ${docs} USING hnsw (dense ${ops}) ${params}`,
    ...(sparseIndex === 'hnsw' ? [`CREATE INDEX IF NOT EXISTS ${derived(table, '_sparse_hnsw')} ON ${docs} USING hnsw (sparse sparsevec_ip_ops) ${params}`] : []),
  ];
}

/** True when the server is PGlite (PostgreSQL compiled to WebAssembly). */
export async function isPglite(db: SqlQueryable): Promise<boolean> {
  const rows = await db.query<{ v: string }>('SELECT version() AS v');
  return /PGlite|wasm32/i.test(rows[0]?.v ?? '');
}

/** Human-readable differences between a stored meta row and what the caller asked for. */
export function metaDifferences(stored: StoreMeta, wanted: Partial<StoreMeta>): string[] {
  const diffs: string[] = [];
  const cmp = <K extends keyof StoreMeta>(key: K, label: string) => {
    const w = wanted[key];
    if (w !== undefined && w !== stored[key]) diffs.push(`${label} ${JSON.stringify(stored[key])} (table) vs ${JSON.stringify(w)} (requested)`);
  };
  cmp('modelId', 'model id');
  cmp('dim', 'dimension');
  cmp('vocabSize', 'vocabulary size');
  cmp('colbertPrecision', 'ColBERT precision');
  cmp('denseType', 'dense column type');
  cmp('sparseIndexNnz', 'indexed sparse non-zeros');
  cmp('sparseIndex', 'sparse first stage');
  return diffs;
}
