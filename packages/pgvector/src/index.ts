/**
 * @bgem3/pgvector: BGE-M3 hybrid retrieval stored in PostgreSQL with pgvector — on any server
 * with pgvector ≥ 0.7 through `pg`, or embedded with PGlite. {@link PgM3Store} implements core's
 * `M3Store`, as the embedded `M3Index` does; the database is reached through a two-method
 * {@link SqlClient}.
 */
export { PgM3Store, type PartialWriteError } from './store.js';
export type { PgM3StoreOptions, PgM3SearchOptions, PgM3SingleModeOptions } from './options.js';
export {
  pgClient,
  pgliteClient,
  isConnectionError,
  type SqlClient,
  type SqlQueryable,
  type SqlRow,
  type PgPoolLike,
  type PgClientLike,
  type PGliteLike,
} from './sql-client.js';
export { openPglite, type OpenPgliteOptions, type OpenedPglite } from './pglite.js';
export { SCHEMA_VERSION, MIN_PGVECTOR, type DenseType, type HnswParams, type SparseIndexKind, type StoreMeta } from './schema.js';
export { DEFAULT_POSTINGS_PER_TOKEN, DEFAULT_RERANK_DEPTH } from './options.js';
export { isConflictError, type ReconnectOptions } from './retry.js';
export { whereToSql } from './where-sql.js';
export { HNSW_SPARSE_MAX_NNZ, SPARSEVEC_MAX_NNZ, projectSparse, type PgColbertPrecision } from './codec.js';
export { parseTableName, type TableName } from './identifiers.js';
