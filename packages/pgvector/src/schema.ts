/**
 * Schema of a store: the pgvector extension, a documents table with two HNSW indexes, and a
 * one-row meta table recording what the vectors are, so that a store is never reopened with an
 * encoder or settings that would silently mix incompatible vectors.
 *
 *     <table>       id text PK, text, metadata jsonb,
 *                   dense halfvec(dim) | vector(dim)      HNSW (halfvec_ip_ops | vector_ip_ops)
 *                   sparse sparsevec(vocab)               HNSW (sparsevec_ip_ops): ≤ 1,000 largest weights
 *                   sparse_full sparsevec(vocab) NULL     all weights, only when sparse had to be cut
 *                   colbert bytea NULL                    ColBERT vectors (fp16/int8/fp32 bytes)
 *     <table>_meta  schema_version, model_id, dim, vocab_size, colbert_precision, dense_type, sparse_index_nnz
 */
import { M3Error } from '@bgem3/core';
import type { PgColbertPrecision } from './codec.js';
import { derived, qualified, type TableName } from './identifiers.js';
import type { SqlClient, SqlQueryable } from './sql-client.js';

/** Version of the table layout written by this package; stored in the meta table. */
export const SCHEMA_VERSION = 1;

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
  /** Non-zeros kept in the HNSW-indexed sparse column (≤ 1,000). */
  sparseIndexNnz: number;
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

/**
 * Makes sure pgvector ≥ 0.7 is available: creates the extension when `create` and it is missing,
 * and returns its version. Errors say what to do (enable the extension, upgrade it).
 */
export async function ensurePgvector(db: SqlQueryable, create: boolean): Promise<string> {
  let version = await pgvectorVersion(db);
  if (version === undefined && create) {
    try {
      await db.query('CREATE EXTENSION IF NOT EXISTS vector');
    } catch (cause) {
      const reason = (cause as Error).message;
      // The extension's files are not on the server at all: no privilege will help, installing will.
      if (/is not available|could not open extension control file/i.test(reason)) throw notInstalled(reason, cause);
      throw new M3Error(
        'INVALID_ARGUMENT',
        `pgvector is not enabled in this database and CREATE EXTENSION vector failed (${reason}). ` +
          'Run `CREATE EXTENSION vector;` as a user allowed to (the database owner, or rds_superuser / cloudsqlsuperuser / azure_pg_admin; ' +
          'on Azure first allow-list VECTOR in azure.extensions).',
        { cause },
      );
    }
    version = await pgvectorVersion(db);
  }
  if (version === undefined) {
    const available = await db.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'vector'`);
    if (available.length === 0) throw notInstalled('no `vector` in pg_available_extensions');
    throw new M3Error('INVALID_ARGUMENT', 'pgvector is not enabled in this database: run `CREATE EXTENSION vector;` (or connect with createSchema: true)');
  }
  if (!versionAtLeast(version, MIN_PGVECTOR)) {
    throw new M3Error(
      'INVALID_ARGUMENT',
      `pgvector ${version} is installed, but BGE-M3's sparse weights need the sparsevec type (and dense vectors halfvec), which arrived in pgvector ${MIN_PGVECTOR}: ` +
        'upgrade the extension (`ALTER EXTENSION vector UPDATE;` after installing ≥ 0.7; on managed services pick a version that ships it)',
    );
  }
  return version;
}

interface MetaRow extends Record<string, unknown> {
  schema_version: number;
  model_id: string;
  dim: number;
  vocab_size: number;
  colbert_precision: string;
  dense_type: string;
  sparse_index_nnz: number;
}

/** True when the relation exists (tables are looked up through the search_path when unqualified). */
async function exists(db: SqlQueryable, relation: string): Promise<boolean> {
  const rows = await db.query<{ r: string | null }>('SELECT to_regclass($1)::text AS r', [relation]);
  return rows[0]?.r != null;
}

/**
 * The meta row of a store, or undefined when there is no store under this name. INDEX_INVALID
 * when the documents table exists without its meta table (not a store of this package) or the
 * meta table is empty or unreadable.
 */
export async function readMeta(db: SqlQueryable, table: TableName): Promise<StoreMeta | undefined> {
  const metaTable = qualified(table, '_meta');
  if (!(await exists(db, metaTable))) {
    if (await exists(db, qualified(table))) {
      throw new M3Error(
        'INDEX_INVALID',
        `table ${qualified(table)} exists but has no ${metaTable}: it is not a @bgem3/pgvector store (choose another table name)`,
      );
    }
    return undefined;
  }
  const rows = await db.query<MetaRow>(`SELECT schema_version, model_id, dim, vocab_size, colbert_precision, dense_type, sparse_index_nnz FROM ${metaTable}`);
  const r = rows[0];
  if (!r) throw new M3Error('INDEX_INVALID', `${metaTable} is empty: the store's schema creation did not finish; drop both tables and create the store again`);
  if (!(await exists(db, qualified(table)))) throw new M3Error('INDEX_INVALID', `${metaTable} exists but table ${qualified(table)} does not`);
  return {
    schemaVersion: Number(r.schema_version),
    modelId: r.model_id,
    dim: Number(r.dim),
    vocabSize: Number(r.vocab_size),
    colbertPrecision: r.colbert_precision as PgColbertPrecision,
    denseType: r.dense_type as DenseType,
    sparseIndexNnz: Number(r.sparse_index_nnz),
  };
}

/**
 * Creates the tables and indexes of a new store and its meta row, in one transaction under an
 * advisory lock (two processes starting at once create it once). Returns the meta as stored,
 * which is another process's when it won the race.
 */
export async function createSchema(client: SqlClient, table: TableName, meta: StoreMeta, hnsw: Required<HnswParams>, withIndexes: boolean): Promise<StoreMeta> {
  const docs = qualified(table);
  const metaTable = qualified(table, '_meta');
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
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE TABLE IF NOT EXISTS ${docs} (
      id text PRIMARY KEY,
      text text NOT NULL,
      metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
      dense ${meta.denseType}(${meta.dim}) NOT NULL,
      sparse sparsevec(${meta.vocabSize}) NOT NULL,
      sparse_full sparsevec(${meta.vocabSize}),
      colbert bytea
    )`,
    // ColBERT bytes are float data: compression costs CPU on every write and read for ~nothing.
    `ALTER TABLE ${docs} ALTER COLUMN colbert SET STORAGE EXTERNAL`,
    ...(withIndexes ? indexStatements(table, meta.denseType, hnsw) : []),
  ];
  await client.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`bgem3-pgvector:${docs}`]);
    if ((await readMeta(tx, table)) !== undefined) return; // created meanwhile
    for (const statement of ddl) await tx.query(statement);
    await tx.query(
      `INSERT INTO ${metaTable} (schema_version, model_id, dim, vocab_size, colbert_precision, dense_type, sparse_index_nnz)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (singleton) DO NOTHING`,
      [meta.schemaVersion, meta.modelId, meta.dim, meta.vocabSize, meta.colbertPrecision, meta.denseType, meta.sparseIndexNnz],
    );
  });
  const stored = await readMeta(client, table);
  if (!stored) throw new M3Error('INDEX_INVALID', `${metaTable} vanished right after it was created`);
  return stored;
}

/**
 * The two HNSW indexes: inner product on the dense column, and on the sparse projection.
 * (`IF NOT EXISTS`: also used to build them after a bulk load.)
 */
export function indexStatements(table: TableName, denseType: DenseType, hnsw: Required<HnswParams>): string[] {
  const docs = qualified(table);
  const ops = denseType === 'halfvec' ? 'halfvec_ip_ops' : 'vector_ip_ops';
  const params = `WITH (m = ${hnsw.m}, ef_construction = ${hnsw.efConstruction})`;
  return [
    `CREATE INDEX IF NOT EXISTS ${derived(table, '_dense_hnsw')} ON ${docs} USING hnsw (dense ${ops}) ${params}`,
    `CREATE INDEX IF NOT EXISTS ${derived(table, '_sparse_hnsw')} ON ${docs} USING hnsw (sparse sparsevec_ip_ops) ${params}`,
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
  return diffs;
}
