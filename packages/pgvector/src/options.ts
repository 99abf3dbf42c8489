/**
 * Options of PgM3Store and the argument checks shared by its methods: every value is checked
 * before a statement is sent, so a mistake fails with a message naming the option rather than
 * with a database error.
 */
import { M3Error, type M3Filter, type M3ScoreWeights, type TextEncoder3 } from '@bgem3/core';
import type { PgColbertPrecision } from './codec.js';
import type { DenseType, HnswParams } from './schema.js';
import type { SqlClient } from './sql-client.js';

/** Options of {@link PgM3Store.connect}. */
export interface PgM3StoreOptions {
  /** The database: `pgClient(pool)` for a PostgreSQL server, `pgliteClient(db)` for PGlite. */
  client: SqlClient;
  /**
   * Encoder for {@link PgM3Store.add} and string queries (e.g. `M3Encoder`). Its model id,
   * dimension and vocabulary size must match the store's (INDEX_MISMATCH otherwise). Without
   * one, the store takes documents through {@link PgM3Store.addEncoded} and queries as
   * `EncodeResult`s.
   */
  encoder?: TextEncoder3;
  /** Table name, optionally schema-qualified (default `bgem3_documents`; the meta table is `<table>_meta`). */
  table?: string;
  /** Model id, dimension and vocabulary size for a new store when no encoder is given. */
  modelId?: string;
  dim?: number;
  vocabSize?: number;
  /**
   * ColBERT storage precision of a new store (default `'fp16'`: 2 bytes per value, MaxSim error
   * ~1e-6; `'int8'`: ~1 byte, ~1e-4; `'none'`: no ColBERT, the rerank uses dense + sparse).
   * When opening an existing store, a given value must match it.
   */
  colbertPrecision?: PgColbertPrecision;
  /**
   * Dense column type of a new store. Default `'halfvec'` (half the size, score error ~1e-5)
   * on a PostgreSQL server, `'vector'` on PGlite: its WebAssembly build converts each half float
   * in software, which made HNSW builds ~7× slower there (measured; see the README).
   */
  denseType?: DenseType;
  /** Non-zeros of the HNSW-indexed sparse projection (default and maximum 1,000, pgvector's limit). */
  sparseIndexNnz?: number;
  /** HNSW build parameters of a new store's two indexes (default m 16, ef_construction 64). */
  hnsw?: HnswParams;
  /** Create the extension, tables and indexes when missing (default true). */
  createSchema?: boolean;
  /**
   * Create a new store's two HNSW indexes right away (default true). `false` is for a bulk load:
   * insert first, then {@link PgM3Store.createIndexes} once (an HNSW build over loaded rows is
   * much faster than growing the graph row by row). Searches work without the indexes (exact,
   * sequential scans).
   */
  createIndexes?: boolean;
  /** Max tokens per text passed to the encoder (default: the encoder's own). */
  maxLength?: number;
  /** Documents per encoder call in {@link PgM3Store.add} (default 32). */
  batchSize?: number;
  /** Rows per write transaction (default 256). */
  writeBatchSize?: number;
  /** Default `hnsw.ef_search` floor of every search (default 40, pgvector's own default). */
  efSearch?: number;
  /** onnxruntime threads of the ColBERT MaxSim (default: all cores). */
  intraOpNumThreads?: number;
  /**
   * Retries of an operation that failed on its connection (server restart, failover, dropped
   * socket) rather than on its SQL (default 1). Writes are upserts and deletes, so a retry after
   * an unknown commit outcome is harmless.
   */
  connectionRetries?: number;
}

/** Options of {@link PgM3Store.search}. */
export interface PgM3SearchOptions {
  /** Results to return (default 10). */
  k?: number;
  /** Candidates taken from each of dense and sparse HNSW search (default 100, at least k). */
  fetchK?: number;
  /** [dense, sparse, colbert] weights (default [0.4, 0.2, 0.4]; [0.4, 0.2, 0] for a store without ColBERT). */
  weights?: M3ScoreWeights;
  /**
   * Metadata containment filter pushed into SQL (`metadata @> where`), applied inside the HNSW
   * scans (pgvector ≥ 0.8 scans iteratively until enough rows match; 0.7 filters the ef_search
   * rows it found, so a selective filter can return fewer results).
   */
  where?: Record<string, unknown>;
  /**
   * A function filter, as in M3Index, applied to the fetched candidates in the application:
   * with a selective filter raise `fetchK` (or use `where`), or fewer than k may remain.
   */
  filter?: M3Filter;
  /** `hnsw.ef_search` for this query (default max(store efSearch, rows asked for), at most 1,000). */
  efSearch?: number;
}

/** Options of {@link PgM3Store.searchDense} / {@link PgM3Store.searchSparse}. */
export interface PgM3SingleModeOptions {
  /** Results to return (default 10). */
  k?: number;
  /** See {@link PgM3SearchOptions.where}. */
  where?: Record<string, unknown>;
  /** See {@link PgM3SearchOptions.filter}; with a filter, `fetchK` rows are fetched (default 100). */
  filter?: M3Filter;
  /** Rows fetched before the function filter (default 100 with a filter, else k). */
  fetchK?: number;
  /** `hnsw.ef_search` for this query. */
  efSearch?: number;
}

/** Defaults and limits. */
export const DEFAULT_TABLE = 'bgem3_documents';
export const PG_DEFAULT_EF_SEARCH = 40;
export const MAX_EF_SEARCH = 1000;
/** A bound on one INSERT statement's payload (ColBERT bytes dominate) and its parameters (≤ 65,535). */
export const MAX_STATEMENT_BYTES = 32 * 1024 * 1024;
export const MAX_STATEMENT_ROWS = 500;

/** Throws INVALID_ARGUMENT. */
export function invalid(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}

/** undefined, or a safe integer in 1..max (INVALID_ARGUMENT otherwise). */
export function positiveInt(v: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > max) invalid(`${name} must be an integer in 1..${max}, got ${String(v)}`);
  return v;
}

/** The `where` filter as JSON for `metadata @> $n::jsonb`. */
export function checkWhere(where: unknown): string | undefined {
  if (where === undefined) return undefined;
  if (where === null || typeof where !== 'object' || Array.isArray(where)) invalid('where must be a plain object (matched with metadata @> where)');
  return JSON.stringify(where);
}

/** A function filter, checked. */
export function checkFilter(filter: unknown): M3Filter | undefined {
  if (filter !== undefined && typeof filter !== 'function') invalid('filter must be a function (metadata, id) => boolean');
  return filter as M3Filter | undefined;
}
