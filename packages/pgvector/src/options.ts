/**
 * Options of PgM3Store. The method options are core's (`M3SearchOptions`, `M3SingleModeOptions`,
 * checked by core's store/options.ts, so a mistake gets the same error as in M3Index, with
 * core's `rerankDepth`) plus what only a database has: `efSearch` (HNSW) and `postingsPerToken`.
 */
import { M3Error, type M3SearchOptions, type M3SingleModeOptions, type TextEncoder3 } from '@bgem3/core';
import type { PgColbertPrecision } from './codec.js';
import type { ReconnectOptions } from './retry.js';
import type { DenseType, HnswParams, SparseIndexKind } from './schema.js';
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
   * ColBERT storage precision of a new store (default core's `DEFAULT_COLBERT_STORAGE`, `'int8'`:
   * ~1 byte per value, MaxSim error ~4e-5; `'fp16'`: 2 bytes, ~1e-6; `'fp32'`; `'none'`: no
   * ColBERT, the rerank uses dense + sparse). When opening an existing store, a given value must
   * match it.
   */
  colbertPrecision?: PgColbertPrecision;
  /**
   * Dense column type of a new store. Default `'halfvec'` (half the size, score error ~1e-5)
   * on a PostgreSQL server, `'vector'` on PGlite: its WebAssembly build converts each half float
   * in software, which made HNSW builds ~7× slower there (measured; see the README).
   */
  denseType?: DenseType;
  /**
   * The sparse first stage of a new store (see the README, "The sparse first stage"):
   * `'postings'` (default), an inverted index table `(token, weight, doc)` searched exactly in
   * SQL; or `'hnsw'`, pgvector's approximate HNSW index over the ≤ 1,000 largest weights.
   */
  sparseIndex?: SparseIndexKind;
  /**
   * `sparseIndex: 'postings'`: postings read per query token, highest weights first (default
   * {@link DEFAULT_POSTINGS_PER_TOKEN}; `Infinity`: all, the exact top). Bounds the work of a query
   * token that occurs in many documents; a token with fewer postings is read whole. Searches with
   * a `where` filter read every posting (the filter applies before the top is taken).
   */
  postingsPerToken?: number;
  /** Non-zeros of the HNSW-indexed sparse projection (`sparseIndex: 'hnsw'` only; default and maximum 1,000, pgvector's limit). */
  sparseIndexNnz?: number;
  /** HNSW build parameters of a new store's HNSW indexes (default m 16, ef_construction 64). */
  hnsw?: HnswParams;
  /** Create the extension, tables and indexes when missing (default true). */
  createSchema?: boolean;
  /**
   * Create a new store's HNSW indexes right away (default true). `false` is for a bulk load:
   * insert first, then {@link PgM3Store.createIndexes} once (an HNSW build over loaded rows is
   * much faster than growing the graph row by row). Searches work without the indexes (exact,
   * sequential scans).
   */
  createIndexes?: boolean;
  /** Max tokens per text passed to the encoder (default: the encoder's own). */
  maxLength?: number;
  /** Documents per encoder call in {@link PgM3Store.add} (default 32); each batch is committed in one transaction. */
  batchSize?: number;
  /** Rows per INSERT statement (default 256; a statement also stays below 32 MB). */
  writeBatchSize?: number;
  /** Default `hnsw.ef_search` floor of every search (default 40, pgvector's own default). */
  efSearch?: number;
  /**
   * Candidates of a hybrid search that get the ColBERT rerank (default {@link DEFAULT_RERANK_DEPTH}):
   * the union of the dense and sparse candidates is ranked by its exact dense and sparse scores
   * in SQL, and only the best `rerankDepth` are fetched with their ColBERT bytes and scored by
   * MaxSim (their M3 All score is exact).
   */
  rerankDepth?: number;
  /**
   * How the ColBERT bytes of the reranked candidates travel (default `'copy'` when the client
   * can, as `pgClient` can): `'copy'` reads them with `COPY … TO STDOUT (FORMAT binary)`, raw
   * bytes on the wire, split over up to `searchConnections` connections and scored group by
   * group as they arrive; `'base64'` selects them as base64 text in the ranking statement (the
   * only way on PGlite). Both give the same scores (see the README, "ColBERT only for the top R").
   */
  colbertTransfer?: 'copy' | 'base64';
  /**
   * Connections one search may use at once (default {@link DEFAULT_SEARCH_CONNECTIONS}, at most
   * the pool's size): its dense and its sparse first stage run side by side on two of them, and
   * the ColBERT bytes of its top candidates are read by COPY in groups on up to this many. 1:
   * one connection at a time (the least load per search on a busy server, the slowest search).
   */
  searchConnections?: number;
  /** @deprecated The former name of {@link searchConnections} (used when that is not given). */
  colbertConnections?: number;
  /** onnxruntime threads of the ColBERT MaxSim (default: all cores). */
  intraOpNumThreads?: number;
  /**
   * Retries of an operation that failed on its connection (server restart, failover, dropped
   * socket), with exponential backoff, until `maxWaitMs` (default 30 s); `false`: none. Writes
   * are idempotent upserts and deletes, so a retry after an unknown commit outcome is harmless.
   */
  reconnect?: ReconnectOptions | false;
  /** Retries of a write transaction that lost a serialization (40001) or deadlock (40P01) conflict (default 8). */
  conflictRetries?: number;
}

/** Options of {@link PgM3Store.search}: core's, plus the HNSW and rerank knobs. */
export interface PgM3SearchOptions extends M3SearchOptions {
  /** `hnsw.ef_search` for this query (default max(store efSearch, rows asked for), at most 1,000). */
  efSearch?: number;
  /** Postings read per query token (default the store's `postingsPerToken`). */
  postingsPerToken?: number;
}

/** Options of {@link PgM3Store.searchDense} / {@link PgM3Store.searchSparse}: core's, plus HNSW knobs. */
export interface PgM3SingleModeOptions extends M3SingleModeOptions {
  /** Rows fetched before a function `filter` runs (default 100 with a filter, else k). */
  fetchK?: number;
  /** `hnsw.ef_search` for this query. */
  efSearch?: number;
  /** Postings read per query token (default the store's `postingsPerToken`). */
  postingsPerToken?: number;
}

/** Defaults and limits. */
export const DEFAULT_TABLE = 'bgem3_documents';
export const PG_DEFAULT_EF_SEARCH = 40;
export const MAX_EF_SEARCH = 1000;
/** Default {@link PgM3StoreOptions.rerankDepth}: core's, the same for every store (chosen by measurement, see the README). */
export { DEFAULT_RERANK_DEPTH } from '@bgem3/core';
/**
 * Default {@link PgM3StoreOptions.postingsPerToken}: chosen by measurement (bench/pgvector.bench.ts,
 * "postingsPerToken"; see the README).
 */
export const DEFAULT_POSTINGS_PER_TOKEN = 2000;
/** Default {@link PgM3StoreOptions.searchConnections} (chosen by measurement, see the README). */
export const DEFAULT_SEARCH_CONNECTIONS = 2;
/** A bound on one INSERT statement's payload (ColBERT bytes dominate) and its parameters (≤ 65,535). */
export const MAX_STATEMENT_BYTES = 32 * 1024 * 1024;

/** Throws M3Error INVALID_ARGUMENT. */
export function invalidArgument(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}
