/**
 * PgM3Store: core's `M3Store` over PostgreSQL + pgvector. Every document is one row holding all
 * three BGE-M3 representations (see schema.ts). Everything a store shares with M3Index comes
 * from core: the checks of ids, metadata, encodings and options (store/validate.ts,
 * store/options.ts), call-order ingestion (store/ingest.ts), the `where` grammar
 * (store/where.ts, compiled to SQL by where-sql.ts), the weights (scoring/weights.ts) and the
 * ColBERT bytes (store/colbert-codec.ts).
 *
 * A hybrid search is the M3 pipeline split where it runs best:
 *
 * 1. first stages: dense top-fetchK from the HNSW index (`ORDER BY dense <#> q`), sparse
 *    top-fetchK from the postings table (exact) or the sparse HNSW index, as two statements
 *    run side by side on two connections of a pool (`searchConnections`; one after the other
 *    on a single connection), each returning rowids;
 * 2. one statement scores every candidate of the union exactly by dense (the float32 query
 *    against the stored vector) and sparse (all its weights), computed by pgvector, tests the
 *    `where` filter again, ranks them by w_d·dense + w_s·sparse and returns the best
 *    `rerankDepth` with their text and metadata;
 * 3. only those get ColBERT: their bytes are read by binary COPY (`pg`: raw bytes, in groups
 *    over up to `searchConnections` connections, each group scored as it arrives) or, on
 *    PGlite, returned by the ranking statement as base64 text; scored by MaxSim in the
 *    application (core's `maxSimPacked`) and ranked by core's `m3AllScore` (ties: id). Their
 *    M3 All scores are exact.
 *
 * Every score and field of a result comes from the ranking statement of step 2 (one
 * snapshot); the first stages only nominate candidates, so a row changed or deleted after its
 * stage read it is scored as it is now, or not found. The COPY that follows checks each row's
 * version (xmin) against the one ranked; a row changed or deleted in between makes the search
 * run again with the ColBERT bytes inline in the ranking statement, so no result mixes versions.
 *
 * Over `pg` without a filter ({@link PgM3Store.hybridByCopy}, the common case) the same steps
 * take three round trips instead of eight: each first stage is one simple query (settings and
 * COPY), and steps 2 and 3's transfer are ONE `COPY (ranking) TO STDOUT (FORMAT binary)`, so
 * the ColBERT bytes come from the ranking's own snapshot and need no version check.
 *
 * `<#>` is pgvector's NEGATIVE inner product (smaller is closer). An HNSW scan returns at most
 * `hnsw.ef_search` rows, so every search sets it (transaction-locally) to at least the number
 * of rows it asks for.
 */
import {
  ColbertCodec,
  ColbertPackBuilder,
  M3Error,
  WriteSequencer,
  assertTextEncoder3,
  checkColbertStorage,
  checkEncodedDocuments,
  checkId,
  checkIdList,
  checkPositiveInt,
  checkRescoreOptions,
  checkSearchOptions,
  checkSingleModeOptions,
  compareCodePoints,
  copyMetadata,
  ingestDocuments,
  m3AllScore,
  maxSimPacked,
  resolveQuery,
  type CheckedFilters,
  type ColbertMatrix,
  type EncodeResult,
  type EncodedEntry,
  type JsonObject,
  type M3AddOptions,
  type M3Document,
  type M3EncodedDocument,
  type M3Hit,
  type M3Query,
  type M3RescoreOptions,
  type M3SearchResult,
  type M3Store,
  type M3StoredDocument,
  type M3Weights,
  type OutputSelection,
  type PackedColbert,
  type SparseVector,
  type TextEncoder3,
} from '@bgem3/core';
import { HNSW_SPARSE_MAX_NNZ, SPARSEVEC_MAX_NNZ, formatDense, formatSparse, type PgColbertPrecision } from './codec.js';
import { intArray, realArray, rowBytes, toRow, type Row, type RowShape } from './documents.js';
import { parseTableName, qualified, type TableName } from './identifiers.js';
import {
  invalidArgument,
  DEFAULT_POSTINGS_PER_TOKEN,
  DEFAULT_SEARCH_CONNECTIONS,
  DEFAULT_RERANK_DEPTH,
  DEFAULT_TABLE,
  MAX_EF_SEARCH,
  MAX_STATEMENT_BYTES,
  PG_DEFAULT_EF_SEARCH,
  type PgM3SearchOptions,
  type PgM3SingleModeOptions,
  type PgM3StoreOptions,
} from './options.js';
import { checkRetryPolicy, withRetries, type RetryPolicy } from './retry.js';
import { SCHEMA_VERSION, READABLE_SCHEMA_VERSIONS, ensureSchema, indexStatements, isPglite, metaDifferences, versionAtLeast, type DenseType, type HnswParams, type SparseIndexKind, type StoreMeta } from './schema.js';
import type { SqlClient, SqlQueryable, SqlRow } from './sql-client.js';
import { whereToSql } from './where-sql.js';

/** A `postingsPerToken` option: a positive integer or Infinity (undefined: the default). */
function checkPostingsPerToken(v: unknown): number | undefined {
  if (v === undefined || v === Infinity) return v;
  return checkPositiveInt(v, 'postingsPerToken', 0);
}

/**
 * `sql` with its `$n` parameters written in as literals, for a statement that takes none (COPY).
 * Only what the store itself formats may be written in: finite numbers, and strings made of
 * digits and the punctuation of pgvector's and PostgreSQL's array text forms (`[1.5e-3,…]`,
 * `{1:0.25,…}/250002`, `{1,2,3}`) — no quote, letter or space can reach the statement, so no
 * value can change its meaning. Anything else is a bug and throws. Quoted identifiers are
 * skipped (a table name may contain `$1`).
 */
export function inlineParams(sql: string, params: readonly unknown[]): string {
  return sql.replace(/"(?:[^"]|"")*"|\$(\d+)/g, (match, n: string | undefined) => {
    if (n === undefined) return match;
    const v = params[Number(n) - 1];
    if (typeof v === 'number' && Number.isFinite(v)) return String(v);
    if (typeof v === 'string' && /^[-+0-9.eE,:{}[\]/]*$/.test(v)) return `'${v}'`;
    throw new Error(`bug: parameter $${n} of a COPY statement is not a number or a numeric text form (${typeof v})`);
  });
}

/** Groups the top rows' MaxSim is split into, each scored as soon as its rows have arrived (see hybridByCopy). */
const MAXSIM_GROUPS = 4;
/** Rows of the smallest MaxSim group: below that an onnxruntime run costs more than it overlaps. */
const MIN_MAXSIM_GROUP = 5;

/** `fn()`, its INDEX_INVALID (stored bytes that do not decode) naming the document `id`. */
function namingDocument<T>(fn: () => T, id: string): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof M3Error && err.code === 'INDEX_INVALID') throw new M3Error('INDEX_INVALID', `document ${JSON.stringify(id)}: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * A row of a store that keeps ColBERT vectors with none (`colbert` NULL): written outside
 * PgM3Store. INDEX_INVALID naming the document, as M3Index for a missing ColBERT row, never a
 * MaxSim of 0 that would rank it silently. (A document with no ColBERT vectors, e.g. an empty
 * text, is stored as zero bytes, not NULL.)
 */
function missingColbert(id: string): never {
  throw new M3Error('INDEX_INVALID', `document ${JSON.stringify(id)}: no ColBERT vectors stored (colbert is NULL) in a store that keeps them; the row was not written by PgM3Store: add the document again`);
}

/** Adds a row's ColBERT bytes (as COPY delivered them) to `pack`; INDEX_INVALID naming the document if they are NULL or do not decode. */
function addColbert(pack: ColbertPackBuilder, bytes: Buffer | null | undefined, id: string): void {
  if (bytes === null || bytes === undefined) missingColbert(id);
  namingDocument(() => pack.add(bytes), id);
}

/** Sorts by score descending, then id ascending (M3Index's order). */
function byScoreThenId<T extends { id: string; score: number }>(a: T, b: T): number {
  return b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function parseMetadata(v: unknown): JsonObject {
  // Both drivers parse jsonb; a client configured to return text still works.
  return (typeof v === 'string' ? JSON.parse(v) : v) as JsonObject;
}

/** ColBERT bytes of document `id` as the driver returned them: raw bytes, or base64 text (see the file comment); NULL is INDEX_INVALID. */
function colbertBytes(v: unknown, id: string): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return Buffer.from(v, 'base64');
  return missingColbert(id);
}

interface CandidateRow extends SqlRow {
  id: string;
  text: string;
  metadata: unknown;
  /** Exact scores computed by pgvector (float8 of a float32 accumulation). */
  dense: number;
  sparse: number;
  colbert?: Uint8Array | string | null;
  /** The row's rowid and xmin (its version), as text: what a binary COPY of its ColBERT bytes checks. */
  rowid?: string;
  xmin?: string;
}

/**
 * The error of an `add` that failed after some of its batches were committed (an M3Error, or
 * the driver's error): which ids are stored (each batch is one transaction, stored whole or not
 * at all).
 */
export interface PartialWriteError extends Error {
  /** Ids of this call committed before the failure, in commit order. */
  committedIds: string[];
}

/**
 * BGE-M3 hybrid retrieval stored in PostgreSQL with pgvector: an `M3Store` (the interface of
 * core's embedded `M3Index`), so an application can swap one for the other. Open with
 * {@link PgM3Store.connect}. Several processes may share one store (see the README's
 * "Concurrency" section for what is guaranteed).
 *
 * @example
 * ```ts
 * const store = await PgM3Store.connect({ client: pgClient(pool), encoder: await M3Encoder.load(dir) });
 * await store.add([{ id: 'a', text: 'BGE-M3 does dense, sparse and ColBERT.' }]);
 * const hits = await store.search('which model has three modes?', { k: 5 });
 * ```
 */
export class PgM3Store implements M3Store {
  /** Model id recorded in the meta table. */
  readonly modelId: string;
  /** Dense / ColBERT vector dimension. */
  readonly dim: number;
  /** Vocabulary size (the sparsevec dimension). */
  readonly vocabSize: number;
  /** ColBERT storage precision (`'none'`: not stored). */
  readonly colbertPrecision: PgColbertPrecision;
  /** Column type of the dense vectors. */
  readonly denseType: DenseType;
  /** The sparse first stage. */
  readonly sparseIndex: SparseIndexKind;
  /** Non-zeros kept in the `sparse` column (the HNSW projection; all for postings). */
  readonly sparseIndexNnz: number;
  /** The installed pgvector version. */
  readonly pgvectorVersion: string;
  /** The table name as given (validated). */
  readonly table: string;
  /** Default number of candidates that get the ColBERT rerank. */
  readonly rerankDepth: number;
  /** Default postings read per query token (`'postings'`; Infinity: all). */
  readonly postingsPerToken: number;

  private readonly client: SqlClient;
  private readonly encoderRef: TextEncoder3 | undefined;
  private readonly tableName: TableName;
  private readonly t: string;
  private readonly postings: string;
  private readonly codec: ColbertCodec | undefined;
  private readonly rowShape: RowShape;
  private readonly maxLength: number | undefined;
  private readonly batchSize: number;
  private readonly statementRows: number;
  private readonly efSearch: number;
  private readonly retry: RetryPolicy;
  private readonly threads: { intraOpNumThreads?: number };
  private readonly iterative: boolean;
  private readonly hnsw: Required<HnswParams>;
  private readonly colbertSql: string;
  private readonly colbertCopy: boolean;
  private readonly searchConnections: number;
  private readonly writes = new WriteSequencer();
  private closed = false;

  private constructor(client: SqlClient, table: string, tableName: TableName, meta: StoreMeta, version: string, options: PgM3StoreOptions, retry: RetryPolicy, hnsw: Required<HnswParams>) {
    this.client = client;
    this.table = table;
    this.tableName = tableName;
    this.t = qualified(tableName);
    this.postings = qualified(tableName, '_postings');
    this.modelId = meta.modelId;
    this.dim = meta.dim;
    this.vocabSize = meta.vocabSize;
    this.colbertPrecision = meta.colbertPrecision;
    this.denseType = meta.denseType;
    this.sparseIndex = meta.sparseIndex;
    this.sparseIndexNnz = meta.sparseIndexNnz;
    this.pgvectorVersion = version;
    this.encoderRef = options.encoder;
    this.codec = meta.colbertPrecision === 'none' ? undefined : new ColbertCodec(meta.colbertPrecision, meta.dim);
    this.rowShape = { vocabSize: meta.vocabSize, indexNnz: meta.sparseIndexNnz, colbert: this.codec };
    this.maxLength = options.maxLength;
    this.batchSize = options.batchSize ?? 32;
    this.statementRows = options.writeBatchSize ?? 256;
    this.efSearch = options.efSearch ?? PG_DEFAULT_EF_SEARCH;
    this.rerankDepth = options.rerankDepth ?? DEFAULT_RERANK_DEPTH;
    this.postingsPerToken = options.postingsPerToken ?? DEFAULT_POSTINGS_PER_TOKEN;
    this.retry = retry;
    this.threads = options.intraOpNumThreads !== undefined ? { intraOpNumThreads: options.intraOpNumThreads } : {};
    // Iterative index scans (keep scanning until enough rows pass a filter) arrived in 0.8.0.
    this.iterative = versionAtLeast(version, '0.8.0');
    this.hnsw = hnsw;
    // ColBERT bytes in a statement: base64 text unless the driver receives bytea as bytes (1.33×
    // the bytes, where `pg` and PGlite receive bytea as hex, 2×). pg's per-query binary result
    // format is not an option: pg-protocol decodes every DataRow field as UTF-8 text, which
    // corrupts binary values. So over `pg` the bytes come by binary COPY (see maxSimByCopy):
    // 40 real-size int8 rows in 16 ms against 68 ms as base64, whose server-side encoding alone
    // took 27 ms (bench/pgvector.bench.ts, breakdown).
    this.colbertSql = client.byteaFormat === 'binary' ? 't.colbert' : `encode(t.colbert, 'base64')`;
    this.colbertCopy = (options.colbertTransfer ?? 'copy') === 'copy' && typeof client.copyBinary === 'function';
    this.searchConnections = Math.max(1, Math.min(options.searchConnections ?? options.colbertConnections ?? DEFAULT_SEARCH_CONNECTIONS, client.parallelism ?? 1));
  }

  /**
   * Opens the store in `options.table`, creating the extension, tables and indexes when missing
   * (unless `createSchema: false`), safely when several processes connect at once (see
   * schema.ts). INDEX_MISMATCH, naming each difference, when the existing store was made for
   * another model, dimension, vocabulary, ColBERT precision, dense type, sparse stage or schema
   * version; INVALID_ARGUMENT when pgvector is missing, cannot be created (with the server's
   * hint) or is older than 0.7; INDEX_INVALID when the table exists but is not a store.
   */
  static async connect(options: PgM3StoreOptions): Promise<PgM3Store> {
    if (options === null || typeof options !== 'object') invalidArgument('PgM3Store.connect needs options {client, encoder?, table?}');
    const { client } = options;
    if (client === null || typeof client !== 'object' || typeof client.query !== 'function' || typeof client.transaction !== 'function') {
      invalidArgument('options.client must be a SqlClient: pgClient(pool) or pgliteClient(db)');
    }
    if (options.encoder !== undefined) assertTextEncoder3(options.encoder);
    const table = options.table ?? DEFAULT_TABLE;
    const tableName = parseTableName(table);
    const colbertPrecision = options.colbertPrecision === undefined ? undefined : checkColbertStorage(options.colbertPrecision);
    if (options.denseType !== undefined && options.denseType !== 'halfvec' && options.denseType !== 'vector') invalidArgument(`denseType must be 'halfvec' or 'vector', got ${String(options.denseType)}`);
    if (options.sparseIndex !== undefined && options.sparseIndex !== 'postings' && options.sparseIndex !== 'hnsw') invalidArgument(`sparseIndex must be 'postings' or 'hnsw', got ${String(options.sparseIndex)}`);
    if (options.sparseIndexNnz !== undefined && options.sparseIndex === 'postings') invalidArgument("sparseIndexNnz applies to sparseIndex 'hnsw' only (the postings keep every weight)");
    checkPositiveInt(options.sparseIndexNnz, 'sparseIndexNnz', 0, HNSW_SPARSE_MAX_NNZ);
    for (const key of ['maxLength', 'batchSize', 'writeBatchSize', 'intraOpNumThreads', 'dim', 'vocabSize', 'rerankDepth', 'searchConnections', 'colbertConnections'] as const) checkPositiveInt(options[key], key, 0);
    if (options.colbertTransfer !== undefined && options.colbertTransfer !== 'copy' && options.colbertTransfer !== 'base64') invalidArgument(`colbertTransfer must be 'copy' or 'base64', got ${String(options.colbertTransfer)}`);
    checkPositiveInt(options.efSearch, 'efSearch', 0, MAX_EF_SEARCH);
    checkPostingsPerToken(options.postingsPerToken);
    if (options.modelId !== undefined && typeof options.modelId !== 'string') invalidArgument('modelId must be a string');
    const retry = checkRetryPolicy(options.reconnect, options.conflictRetries);
    const m = checkPositiveInt(options.hnsw?.m, 'hnsw.m', 16, 100);
    const efConstruction = checkPositiveInt(options.hnsw?.efConstruction, 'hnsw.efConstruction', 64, 1000);
    if (m < 2 || efConstruction < 2 * m) invalidArgument(`hnsw needs m ≥ 2 and efConstruction ≥ 2·m (pgvector's rules), got m ${m}, efConstruction ${efConstruction}`);

    const enc = options.encoder;
    // What the caller asks for; undefined fields are taken from an existing store.
    const wanted: Partial<StoreMeta> = {
      modelId: enc?.modelId ?? options.modelId,
      dim: enc?.dim ?? options.dim,
      vocabSize: enc?.vocabSize ?? options.vocabSize,
      colbertPrecision,
      denseType: options.denseType,
      sparseIndex: options.sparseIndex,
      sparseIndexNnz: options.sparseIndexNnz,
    };
    if (enc) {
      const given: string[] = [];
      if (options.modelId !== undefined && options.modelId !== enc.modelId) given.push(`modelId ${JSON.stringify(options.modelId)} vs the encoder's ${JSON.stringify(enc.modelId)}`);
      if (options.dim !== undefined && options.dim !== enc.dim) given.push(`dim ${options.dim} vs the encoder's ${enc.dim}`);
      if (options.vocabSize !== undefined && options.vocabSize !== enc.vocabSize) given.push(`vocabSize ${options.vocabSize} vs the encoder's ${enc.vocabSize}`);
      if (given.length) invalidArgument(`options disagree with the encoder: ${given.join('; ')}`);
    }
    const createWanted = options.createSchema ?? true;
    return withRetries(retry, async () => {
      let create: ((db: SqlQueryable) => Promise<StoreMeta>) | undefined;
      const { modelId, dim, vocabSize } = wanted;
      if (createWanted && modelId !== undefined && dim !== undefined && vocabSize !== undefined) {
        create = async (db) => {
          const denseType = wanted.denseType ?? ((await isPglite(db)) ? 'vector' : 'halfvec');
          const maxDim = denseType === 'halfvec' ? 4000 : 2000;
          if (dim > maxDim) invalidArgument(`pgvector's HNSW indexes ${denseType} of at most ${maxDim} dimensions, got ${dim}${denseType === 'vector' ? " (use denseType 'halfvec')" : ''}`);
          // sparseIndexNnz alone asks for the HNSW projection it configures.
          const sparseIndex = wanted.sparseIndex ?? (wanted.sparseIndexNnz !== undefined ? 'hnsw' : 'postings');
          return {
            schemaVersion: SCHEMA_VERSION,
            modelId,
            dim,
            vocabSize,
            colbertPrecision: wanted.colbertPrecision ?? checkColbertStorage(undefined),
            denseType,
            sparseIndex,
            sparseIndexNnz: sparseIndex === 'hnsw' ? (wanted.sparseIndexNnz ?? HNSW_SPARSE_MAX_NNZ) : SPARSEVEC_MAX_NNZ,
          };
        };
      }
      const { version, meta } = await ensureSchema(client, tableName, { create, hnsw: { m, efConstruction }, withIndexes: options.createIndexes ?? true, createExtension: createWanted });
      if (!meta) {
        if (!createWanted) throw new M3Error('INDEX_INVALID', `there is no store in table ${qualified(tableName)} (connect with createSchema: true to create it)`);
        return invalidArgument(`table ${qualified(tableName)} does not exist yet: pass an encoder (or modelId, dim and vocabSize) to create it`);
      }
      const diffs = metaDifferences(meta, wanted);
      if (!READABLE_SCHEMA_VERSIONS.includes(meta.schemaVersion)) diffs.unshift(`schema version ${meta.schemaVersion} (table) vs ${READABLE_SCHEMA_VERSIONS.join(' or ')} (this build of @bgem3/pgvector)`);
      if (diffs.length) throw new M3Error('INDEX_MISMATCH', `table ${qualified(tableName)} does not match: ${diffs.join('; ')}`);
      return new PgM3Store(client, table, tableName, meta, version, options, retry, { m, efConstruction });
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing

  /** The encoder for {@link add} and text queries (undefined when connected without one). */
  get encoder(): TextEncoder3 | undefined {
    return this.encoderRef;
  }

  /** Runs `fn` with the store's retries (see retry.ts). */
  private run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new M3Error('INVALID_ARGUMENT', 'this PgM3Store is closed'));
    return withRetries(this.retry, fn);
  }

  private requireEncoder(): TextEncoder3 {
    if (!this.encoderRef) return invalidArgument('this PgM3Store has no encoder: pass { encoder } to PgM3Store.connect, or query with a precomputed EncodeResult');
    return this.encoderRef;
  }

  private encodeQuery(query: M3Query, need: OutputSelection, signal: AbortSignal | undefined): Promise<EncodeResult> {
    return resolveQuery(query, need, {
      encoder: () => this.requireEncoder(),
      dim: this.dim,
      vocabSize: this.vocabSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * Runs a read with `hnsw.ef_search` (and, for a filter on pgvector ≥ 0.8 or more rows than
   * ef_search allows, an iterative scan) set for this transaction only.
   */
  private async read<R extends SqlRow>(rows: number, efSearch: number | undefined, filtered: boolean, sql: string, params: unknown[]): Promise<R[]> {
    return this.run(() =>
      this.client.transaction(async (tx) => {
        await tx.query(this.readSettings(rows, efSearch, filtered));
        return tx.query<R>(sql, params);
      }),
    );
  }

  /** The statement that sets a read's planner and HNSW settings for its transaction (see {@link read}). */
  private readSettings(rows: number, efSearch: number | undefined, filtered: boolean): string {
    // An integer (efSearch and rows are checked): written into the statement.
    const ef = Math.min(MAX_EF_SEARCH, Math.max(efSearch ?? this.efSearch, rows));
    const iterative = this.iterative && (filtered || rows > MAX_EF_SEARCH);
    // enable_seqscan off: with ef_search raised to fetchK the planner's HNSW cost estimate grows
    // until a sequential scan and sort of the whole table looks cheaper (measured on PGlite at
    // 20k documents: hybrid search 933 ms, the dense stage an exact scan). Without an index the
    // scan still runs.
    // enable_bitmapscan off (unfiltered searches): a bitmap scan of a token's postings must read
    // and sort ALL of them before postingsPerToken applies, where the (token, weight DESC) index
    // scan stops after postingsPerToken (the planner picks the bitmap scan while the visibility
    // map is not yet set). A `where` filter keeps bitmap scans (GIN indexes).
    return `SELECT set_config('hnsw.ef_search', '${ef}', true), set_config('enable_seqscan', 'off', true)${iterative ? `, set_config('hnsw.iterative_scan', 'relaxed_order', true)` : ''}${filtered ? '' : `, set_config('enable_bitmapscan', 'off', true)`}`;
  }

  private denseCast(): string {
    return this.denseType === 'halfvec' ? 'halfvec' : 'vector';
  }

  /** The `where` condition (`true` without one), its values pushed onto `params`. */
  private condition(f: CheckedFilters, params: unknown[], column = 'metadata'): string {
    return f.where === undefined ? 'true' : whereToSql(f.where, params, column);
  }

  // ---------------------------------------------------------------------------------------------
  // Writes

  /**
   * Encodes and stores documents (core's ingestion: checked, batched, one encoder call per
   * `batchSize` texts with all the outputs the store keeps), each batch upserted by id in one
   * transaction. A repeated id replaces the earlier document. Returns the ids, in input order.
   * Takes effect in call order relative to this store object's other writes. On failure, the
   * batches already committed stay: the error (a {@link PartialWriteError}) lists their ids.
   */
  add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    let encoder: TextEncoder3;
    try {
      encoder = this.requireEncoder();
    } catch (err) {
      turn.release();
      return Promise.reject(err);
    }
    const committed: string[] = [];
    return ingestDocuments(docs, turn, {
      encoder,
      model: this,
      colbert: this.codec !== undefined,
      batchSize: this.batchSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(options?.signal ? { signal: options.signal } : {}),
      what: 'PgM3Store.add',
      apply: async (batch) => {
        const rows = this.rows(batch, 'encoding of document');
        await this.writeRows(rows);
        for (const r of rows) committed.push(r.values[0]);
      },
    }).catch((err: unknown) => {
      // Which ids are stored: on the error itself (a driver's error keeps its class and code).
      if (committed.length > 0 && err instanceof Error) Object.assign(err, { committedIds: committed });
      throw err;
    });
  }

  /**
   * Stores documents whose encodings were computed elsewhere (dense, sparse, and ColBERT unless
   * the store keeps none, from the store's model). All entries are checked before any is
   * written, and all are written in ONE transaction: the call is atomic. Returns the ids, in
   * input order (a repeated id: the last one wins).
   */
  addEncoded(docs: Iterable<M3EncodedDocument>, _options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    return (async () => {
      try {
        const { ids, entries } = checkEncodedDocuments(docs, { ...this.model(), colbert: this.codec !== undefined }, 'PgM3Store.addEncoded');
        const rows = this.rows(entries, 'document');
        await turn.ready;
        await this.writeRows(rows);
        return ids;
      } finally {
        turn.release();
      }
    })();
  }

  private model(): { modelId: string; dim: number; vocabSize: number } {
    return { modelId: this.modelId, dim: this.dim, vocabSize: this.vocabSize };
  }

  /** Rows of checked entries, sorted by id in code-point order (the lock order of every write). */
  private rows(entries: EncodedEntry[], what: string): Row[] {
    const rows = entries.map((e) => toRow(e, this.rowShape, `${what} ${JSON.stringify(e.id)}`));
    return rows.sort((a, b) => compareCodePoints(a.values[0], b.values[0]));
  }

  /**
   * Upserts rows (unique ids, sorted) in ONE transaction, split into bounded INSERT statements,
   * retried whole on a lost conflict or a dropped connection. Rows are locked in id order, so two
   * writers of overlapping ids wait for each other instead of deadlocking.
   */
  private async writeRows(rows: readonly Row[]): Promise<void> {
    if (rows.length === 0) return;
    await this.run(() =>
      this.client.transaction(async (tx) => {
        let s = 0;
        while (s < rows.length) {
          let e = s;
          let bytes = 0;
          while (e < rows.length && e - s < this.statementRows && (e === s || bytes + rowBytes(rows[e].values) <= MAX_STATEMENT_BYTES)) bytes += rowBytes(rows[e++].values);
          await this.insert(tx, rows.slice(s, e));
          s = e;
        }
      }),
    );
  }

  private async insert(tx: SqlQueryable, rows: readonly Row[]): Promise<void> {
    const d = this.denseCast();
    const values: string[] = [];
    const params: unknown[] = [];
    for (const r of rows) {
      const p = params.length;
      values.push(`($${p + 1}, $${p + 2}, $${p + 3}::jsonb, $${p + 4}::${d}, $${p + 5}::sparsevec, $${p + 6}::sparsevec, $${p + 7}::bytea)`);
      params.push(...r.values);
    }
    const returned = await tx.query<{ id: string; rowid: string | number }>(
      `INSERT INTO ${this.t} (id, text, metadata, dense, sparse, sparse_full, colbert) VALUES ${values.join(', ')}
       ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, dense = EXCLUDED.dense,
         sparse = EXCLUDED.sparse, sparse_full = EXCLUDED.sparse_full, colbert = EXCLUDED.colbert
       RETURNING id${this.sparseIndex === 'postings' ? ', rowid' : ''}`,
      params,
    );
    if (this.sparseIndex !== 'postings') return;
    // The postings of these documents: the old ones go, the new ones come (all weights).
    const rowid = new Map(returned.map((r) => [r.id, String(r.rowid)]));
    const docs = rows.map((r) => rowid.get(r.values[0]) as string);
    await tx.query(`DELETE FROM ${this.postings} WHERE doc = ANY($1::bigint[])`, [`{${docs.join(',')}}`]);
    let n = 0;
    for (const r of rows) n += r.tokens.length;
    const tokens = new Uint32Array(n);
    const weights = new Float32Array(n);
    const owners: string[] = new Array(n);
    let o = 0;
    rows.forEach((r, i) => {
      tokens.set(r.tokens, o);
      weights.set(r.weights, o);
      owners.fill(docs[i], o, o + r.tokens.length);
      o += r.tokens.length;
    });
    if (n > 0) {
      await tx.query(`INSERT INTO ${this.postings} (token, weight, doc) SELECT * FROM unnest($1::int4[], $2::float4[], $3::bigint[])`, [intArray(tokens), realArray(weights), `{${owners.join(',')}}`]);
    }
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. Takes effect in call order. */
  delete(ids: string | Iterable<string>): Promise<number> {
    let list: string[];
    try {
      list = [...new Set(checkIdList(ids))].sort(compareCodePoints);
    } catch (err) {
      return Promise.reject(err);
    }
    // One transaction, rows locked in id order (as writes lock them): atomic, deadlock-free.
    return this.writes.run(() =>
      list.length === 0
        ? 0
        : this.run(() =>
            this.client.transaction(async (tx) => {
              const rows = await tx.query<{ n: number }>(
                `WITH l AS (SELECT id, rowid FROM ${this.t} WHERE id = ANY($1::text[]) ORDER BY id COLLATE "C" FOR UPDATE),
                  d AS (DELETE FROM ${this.t} t USING l WHERE t.id = l.id RETURNING 1)${
                    this.sparseIndex === 'postings' ? `, p AS (DELETE FROM ${this.postings} p USING l WHERE p.doc = l.rowid RETURNING 1)` : ''
                  }
                 SELECT count(*)::int AS n FROM d`,
                [list],
              );
              return Number(rows[0]?.n ?? 0);
            }),
          ),
    );
  }

  /**
   * Builds the HNSW indexes if they are missing (after a bulk load into a store connected with
   * `createIndexes: false`), with the store's `hnsw` parameters. `maintenanceWorkMem` (e.g.
   * `'1GB'`) is set for the build only: pgvector builds fast while the graph fits in it and falls
   * back to a much slower on-disk build when it does not.
   */
  async createIndexes(options: { maintenanceWorkMem?: string } = {}): Promise<void> {
    const mem = options.maintenanceWorkMem;
    if (mem !== undefined && !/^\d+\s*(kB|MB|GB|TB)$/.test(mem)) invalidArgument(`maintenanceWorkMem must look like '512MB' or '2GB', got ${JSON.stringify(mem)}`);
    await this.run(() =>
      this.client.transaction(async (tx) => {
        if (mem !== undefined) await tx.query(`SELECT set_config('maintenance_work_mem', $1, true)`, [mem]);
        for (const statement of indexStatements(this.tableName, this.denseType, this.hnsw, this.sparseIndex)) await tx.query(statement);
      }),
    );
  }

  /** Removes every document (the tables and indexes stay). Takes effect in call order. */
  clear(): Promise<void> {
    return this.writes.run(async () => {
      await this.run(() => this.client.query(`TRUNCATE ${this.t}${this.sparseIndex === 'postings' ? `, ${this.postings}` : ''}`));
    });
  }

  /** Drops the store's tables (and so its indexes). The object is unusable afterwards. */
  async drop(): Promise<void> {
    await this.writes.run(() => this.run(() => this.client.query(`DROP TABLE IF EXISTS ${this.postings}, ${this.t}, ${qualified(this.tableName, '_meta')}`)));
    this.closed = true;
  }

  /** Waits for this object's pending writes (each committed when it resolves) and closes it; the client stays open (it is the caller's). */
  async close(): Promise<void> {
    await this.writes.idle();
    this.closed = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  /** Number of documents. */
  async count(): Promise<number> {
    const rows = await this.run(() => this.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${this.t}`));
    return Number(rows[0].n);
  }

  /** Whether a document with this id is stored. */
  async has(id: string): Promise<boolean> {
    checkId(id);
    const rows = await this.run(() => this.client.query(`SELECT 1 FROM ${this.t} WHERE id = $1`, [id]));
    return rows.length > 0;
  }

  /** The stored document, or undefined. */
  async get(id: string): Promise<M3StoredDocument | undefined> {
    checkId(id);
    const rows = await this.run(() => this.client.query<{ id: string; text: string; metadata: unknown }>(`SELECT id, text, metadata FROM ${this.t} WHERE id = $1`, [id]));
    const r = rows[0];
    return r ? { id: r.id, text: r.text, metadata: parseMetadata(r.metadata) } : undefined;
  }

  /** The stored documents of `ids` that exist, in the order of `ids` (duplicates once). */
  async getMany(ids: readonly string[]): Promise<M3StoredDocument[]> {
    const list = [...new Set(checkIdList(ids))];
    if (list.length === 0) return [];
    const rows = await this.run(() => this.client.query<{ id: string; text: string; metadata: unknown }>(`SELECT id, text, metadata FROM ${this.t} WHERE id = ANY($1::text[])`, [list]));
    const byId = new Map(rows.map((r) => [r.id, r]));
    const out: M3StoredDocument[] = [];
    for (const id of list) {
      const r = byId.get(id);
      if (r) out.push({ id: r.id, text: r.text, metadata: parseMetadata(r.metadata) });
    }
    return out;
  }

  /** Ids of the stored documents in code-point order, fetched in pages of `pageSize`. */
  async *ids(pageSize = 1000): AsyncGenerator<string> {
    checkPositiveInt(pageSize, 'pageSize', 1000);
    let after: string | undefined;
    for (;;) {
      const from = after;
      const rows = await this.run(() =>
        from === undefined
          ? this.client.query<{ id: string }>(`SELECT id FROM ${this.t} ORDER BY id COLLATE "C" LIMIT $1`, [pageSize])
          : this.client.query<{ id: string }>(`SELECT id FROM ${this.t} WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2`, [from, pageSize]),
      );
      for (const r of rows) yield r.id;
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1].id;
    }
  }

  /**
   * The SQL of the sparse first stage: ids of the top `n` documents by sparse score that pass
   * the `where` filter and share at least one token with the query. `sq` is the query sparsevec.
   */
  private sparseStage(q: SparseVector, n: string, f: CheckedFilters, params: unknown[], sq: string, perToken: number | undefined, column: 'id' | 'rowid' = 'id'): string {
    if (this.sparseIndex === 'hnsw') {
      return `SELECT ${column} FROM (SELECT ${column}, sparse <#> ${sq} AS dist FROM ${this.t} WHERE ${this.condition(f, params)} ORDER BY sparse <#> ${sq} LIMIT ${n}) x WHERE dist < 0`;
    }
    // Postings: exact top n by Σ query weight × document weight over the shared tokens.
    const keep: number[] = [];
    for (let i = 0; i < q.values.length; i++) if (q.values[i] > 0) keep.push(i);
    const tok = `$${params.push(intArray(keep.map((i) => q.indices[i])))}::int4[]`;
    const w = `$${params.push(realArray(Float32Array.from(keep, (i) => q.values[i])))}::float8[]`;
    const depth = checkPostingsPerToken(perToken) ?? this.postingsPerToken;
    // Per query token, its postings by weight (index order), at most `depth` of them; with a
    // filter, the heaviest `depth` of the documents that pass it (each posting joined to its
    // document to test the filter, in weight order, until `depth` passed). Before, a filter
    // read every posting of the query's tokens: 1.3 s per search at 100k documents for a filter
    // every document passed (bench/pgvector.bench.ts, searchWhereAll).
    const filter = f.where !== undefined ? ` JOIN ${this.t} f ON f.rowid = x.doc WHERE x.token = q.token AND ${this.condition(f, params, 'f.metadata')}` : ' WHERE x.token = q.token';
    const postings =
      depth === Infinity
        ? `CROSS JOIN LATERAL (SELECT x.doc, x.weight FROM ${this.postings} x${filter}) p`
        : `CROSS JOIN LATERAL (SELECT x.doc, x.weight FROM ${this.postings} x${filter} ORDER BY x.weight DESC LIMIT $${params.push(depth)}) p`;
    const top = `SELECT p.doc, sum(p.weight * q.w) AS score FROM unnest(${tok}, ${w}) AS q(token, w)
        ${postings}
        GROUP BY p.doc ORDER BY score DESC, p.doc LIMIT ${n}`;
    // A posting's doc is its document's rowid (kept in step in the same transactions).
    return column === 'rowid' ? `SELECT x.doc AS rowid FROM (${top}) x` : `SELECT t.id FROM (${top}) x JOIN ${this.t} t ON t.rowid = x.doc`;
  }

  /**
   * Hybrid search, the M3 pipeline (see the file comment): dense top-fetchK ∪ sparse top-fetchK,
   * every candidate scored exactly by dense and sparse in SQL, the best `rerankDepth` of them by
   * w_d·dense + w_s·sparse also by ColBERT MaxSim (weight 0: skipped, not fetched), ranked by
   * (w_d·dense + w_s·sparse + w_c·colbert)/Σw → top k (ties: id ascending). Equal to
   * M3Index.search when HNSW finds the same candidates and they fit in `rerankDepth`.
   */
  async search(query: M3Query, options: PgM3SearchOptions = {}): Promise<M3SearchResult[]> {
    const o = checkSearchOptions(options, 'options', this.codec ? undefined : ([1, 0.5, 0] as const), this.rerankDepth);
    checkPositiveInt(options.efSearch, 'efSearch', 0, MAX_EF_SEARCH);
    const depth = o.rerankDepth;
    const [wd, ws, wc] = o.weights;
    if (!this.codec && wc > 0) invalidArgument(`this store keeps no ColBERT vectors (colbertPrecision 'none'): use weights with colbert 0, e.g. [${wd}, ${ws}, 0]`);
    const useColbert = wc > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert }, o.signal);
    // A row that changed between the ranking statement and its binary COPY: the search again,
    // with the ColBERT bytes in the ranking statement (one snapshot).
    if (this.colbertCopy && o.where === undefined && o.filter === undefined && wd + ws > 0) return this.hybridByCopy(q, o, options, depth);
    return (await this.hybrid(q, o, options, depth, this.colbertCopy)) ?? (this.hybrid(q, o, options, depth, false) as Promise<M3SearchResult[]>);
  }

  /**
   * The search of {@link search} over binary COPY, for a search without filters (the common
   * case) on a client that can COPY (`pg`): the same pipeline and scores as {@link hybrid} in
   * fewer round trips, which cost more than the statements' work at this size (a pooled `pg`
   * round trip measured ~0.5–1 ms on a loaded 2-core machine, eight of them on the critical path
   * of {@link hybrid}):
   *
   * - each first stage is ONE simple query: its settings and `COPY (stage) TO STDOUT`, on its
   *   own connection (the settings are transaction-local: a multi-statement query is one
   *   implicit transaction);
   * - the ranking and the top rows' fields and ColBERT bytes are ONE `COPY (ranking) TO
   *   STDOUT`: one statement, so one snapshot, and no version check is needed; the rows arrive
   *   in rank order, and the MaxSim of the first half runs while the server sends the rest.
   *
   * COPY takes no parameters: the query is written into the statements as literals, which are
   * numbers and the punctuation of pgvector's text forms only (checked by {@link inlineParams}),
   * never text from the caller. A `where` filter has text values: it takes {@link hybrid}.
   */
  private async hybridByCopy(q: EncodeResult, o: ReturnType<typeof checkSearchOptions>, options: PgM3SearchOptions, depth: number): Promise<M3SearchResult[]> {
    const [wd, ws, wc] = o.weights;
    const useColbert = wc > 0;
    const n = o.fetchK;
    const dq = formatDense(q.dense as Float32Array);
    const sq = formatSparse(q.sparse as SparseVector, this.vocabSize);
    const copyBinary = this.client.copyBinary as NonNullable<SqlClient['copyBinary']>;
    const settings = this.readSettings(n, options.efSearch, false);
    const stage = async (sql: string, params: unknown[]): Promise<string[]> => {
      const statement = `${settings}; COPY (${inlineParams(sql, params)}) TO STDOUT (FORMAT binary)`;
      return this.run(async () => {
        const ids: string[] = [];
        await copyBinary(statement, (f) => ids.push(String((f[0] as Buffer).readBigInt64BE(0))));
        return ids;
      });
    };
    const denseParams: unknown[] = [dq, n];
    const sparseParams: unknown[] = [n];
    const sparseQuery = this.sparseIndex === 'hnsw' ? `$${sparseParams.push(sq)}::sparsevec` : '';
    const denseStage = () => stage(`SELECT rowid FROM ${this.t} ORDER BY dense <#> $1::${this.denseCast()} LIMIT $2`, denseParams);
    const sparseStage = () => stage(this.sparseStage(q.sparse as SparseVector, '$1', o, sparseParams, sparseQuery, options.postingsPerToken, 'rowid'), sparseParams);
    // Side by side on two connections, or one after the other (searchConnections 1).
    const [denseIds, sparseIds] = this.searchConnections > 1 ? await Promise.all([denseStage(), sparseStage()]) : [await denseStage(), await sparseStage()];
    const candidates = [...new Set([...denseIds, ...sparseIds])];
    if (candidates.length === 0) return [];
    const limit = useColbert ? depth : o.k;
    const ranking = inlineParams(
      `WITH c AS (SELECT t.rowid, t.id, -(t.dense::vector <#> $1::vector) AS dense, -(coalesce(t.sparse_full, t.sparse) <#> $2::sparsevec) AS sparse
            FROM ${this.t} t WHERE t.rowid = ANY($3::bigint[])),
      r AS (SELECT c.rowid, c.id, c.dense, c.sparse, $4::float8 * c.dense + $5::float8 * c.sparse AS partial FROM c ORDER BY partial DESC, c.id COLLATE "C" LIMIT $6)
      SELECT r.id, r.dense, r.sparse, t.text, t.metadata::text${useColbert ? ', t.colbert' : ''}
      FROM r JOIN ${this.t} t ON t.rowid = r.rowid ORDER BY r.partial DESC, r.id COLLATE "C"`,
      [dq, sq, `{${candidates.join(',')}}`, wd, ws, limit],
    );
    const codec = this.codec as ColbertCodec;
    // The rows' ColBERT bytes are scored in groups of `group` rows, each as soon as it has
    // arrived (blocking this thread while it runs, as onnxruntime does), the server meanwhile
    // sending the next rows into the socket.
    const group = Math.max(MIN_MAXSIM_GROUP, Math.ceil(Math.min(limit, candidates.length) / MAXSIM_GROUPS));
    let rows: CandidateRow[] = [];
    const packs: ColbertPackBuilder[] = [];
    const scoring: Promise<Float64Array>[] = [];
    const score = (pack: ColbertPackBuilder) => {
      const scored = maxSimPacked(q.colbert as ColbertMatrix, pack.packed(), this.threads);
      // Handled now (awaited after the COPY): a rejection meanwhile must not be "unhandled".
      scored.catch(() => undefined);
      scoring.push(scored);
    };
    try {
      await this.run(async () => {
        // A retry after a lost connection: the previous attempt's MaxSims end before their buffers go back.
        await Promise.allSettled(scoring.splice(0));
        for (const p of packs.splice(0)) p.release();
        rows = [];
        await copyBinary(`COPY (${ranking}) TO STDOUT (FORMAT binary)`, (f) => {
          rows.push({
            id: (f[0] as Buffer).toString('utf8'),
            dense: (f[1] as Buffer).readDoubleBE(0),
            sparse: (f[2] as Buffer).readDoubleBE(0),
            text: (f[3] as Buffer).toString('utf8'),
            metadata: (f[4] as Buffer).toString('utf8'),
          });
          if (!useColbert) return;
          if (rows.length % group === 1 || group === 1) packs.push(new ColbertPackBuilder(codec, group * 256));
          const pack = packs[packs.length - 1];
          addColbert(pack, f[5], rows[rows.length - 1].id); // copied as it arrives: the driver reuses its read buffer
          if (pack.length === group) score(pack);
        });
      });
      if (!useColbert) return this.ranked(rows, new Float64Array(rows.length), o.weights).slice(0, o.k);
      const last = packs[packs.length - 1];
      if (last && last.length < group) score(last);
      const colbert = new Float64Array(rows.length);
      let at = 0;
      for (const part of await Promise.all(scoring)) {
        colbert.set(part, at);
        at += part.length;
      }
      return this.ranked(rows, colbert, o.weights).slice(0, o.k);
    } finally {
      await Promise.allSettled(scoring);
      for (const p of packs) p.release();
    }
  }

  /** The search of {@link search} with the ColBERT bytes read inline or by binary COPY; undefined when a COPY found a row changed. */
  private async hybrid(q: EncodeResult, o: ReturnType<typeof checkSearchOptions>, options: PgM3SearchOptions, depth: number, copy: boolean): Promise<M3SearchResult[] | undefined> {
    const [wd, ws, wc] = o.weights;
    const useColbert = wc > 0;
    const n = o.fetchK;
    const dq = formatDense(q.dense as Float32Array);
    const sq = formatSparse(q.sparse as SparseVector, this.vocabSize);
    const filtered = o.where !== undefined;
    // 1. The first stages, side by side on two connections (one after the other on one): each
    // statement returns the rowids of its top fetchK that pass the `where` filter.
    const denseParams: unknown[] = [dq, n];
    const denseSql = `SELECT rowid FROM ${this.t} WHERE ${this.condition(o, denseParams)} ORDER BY dense <#> $1::${this.denseCast()} LIMIT $2`;
    const sparseParams: unknown[] = [n];
    // (The postings stage takes the query as token and weight arrays, HNSW as a sparsevec.)
    const sparseQuery = this.sparseIndex === 'hnsw' ? `$${sparseParams.push(sq)}::sparsevec` : '';
    const sparseSql = this.sparseStage(q.sparse as SparseVector, '$1', o, sparseParams, sparseQuery, options.postingsPerToken, 'rowid');
    const denseStage = () => this.read<{ rowid: unknown }>(n, options.efSearch, filtered, denseSql, denseParams);
    const sparseStage = () => this.read<{ rowid: unknown }>(n, options.efSearch, filtered, sparseSql, sparseParams);
    const [denseIds, sparseIds] = this.searchConnections > 1 ? await Promise.all([denseStage(), sparseStage()]) : [await denseStage(), await sparseStage()];
    const candidates = [...new Set([...denseIds, ...sparseIds].map((r) => String(r.rowid)))];
    if (candidates.length === 0) return [];
    // 2. One statement (one snapshot) scores every candidate exactly by dense and sparse, tests
    // the filter again (a row may have changed since its stage read it), ranks by the partial
    // score and returns the best rows with what the result needs. A candidate deleted since is
    // simply not found. Rank all candidates if a function filter must see them first, or if
    // dense and sparse carry no weight (the rank would then be arbitrary).
    const rankAll = o.filter !== undefined || wd + ws === 0;
    const inline = useColbert && !rankAll && !copy;
    const params: unknown[] = [dq, sq, candidates];
    const cond = this.condition(o, params, 't.metadata');
    const limit = rankAll ? '' : `LIMIT $${params.push(useColbert ? depth : o.k)}`;
    const partial = `$${params.push(wd)}::float8 * c.dense + $${params.push(ws)}::float8 * c.sparse`;
    const sql = `WITH c AS (SELECT t.rowid, t.id, -(t.dense::vector <#> $1::vector) AS dense, -(coalesce(t.sparse_full, t.sparse) <#> $2::sparsevec) AS sparse
            FROM ${this.t} t WHERE t.rowid = ANY($3::bigint[]) AND ${cond}),
      r AS (SELECT c.rowid, c.id, c.dense, c.sparse, ${partial} AS partial FROM c ORDER BY partial DESC, c.id COLLATE "C" ${limit})
      SELECT r.id, r.dense, r.sparse, r.partial, t.text, t.metadata${inline ? `, ${this.colbertSql} AS colbert` : ''}${copy && useColbert ? ', t.rowid::text AS rowid, t.xmin::text AS xmin' : ''}
      FROM r JOIN ${this.t} t ON t.rowid = r.rowid ORDER BY r.partial DESC, r.id COLLATE "C"`;
    // In a transaction like every read (no cost on a server but a round trip): a PGlite served
    // over a socket (PGLiteSocketServer) runs the messages of concurrent connections on its one
    // session in arrival order, and keeps one connection's messages together only inside a
    // transaction; outside one, another connection's Parse can replace this one's unnamed portal.
    let rows = await this.run(() => this.client.transaction((tx) => tx.query<CandidateRow>(sql, params)));
    if (o.filter) {
      const fn = o.filter;
      rows = rows.filter((r) => fn(copyMetadata(parseMetadata(r.metadata)), r.id) === true);
    }
    if (rows.length === 0) return [];
    if (!useColbert) return this.ranked(rows, new Float64Array(rows.length), o.weights).slice(0, o.k);
    // 3. ColBERT for the best `depth` by partial score (ranked in full above: a function filter,
    // or only ColBERT counts).
    if (rankAll && wd + ws > 0) rows = rows.slice(0, depth);
    if (copy) {
      const colbert = await this.maxSimByCopy(q.colbert as ColbertMatrix, rows);
      if (colbert.some(Number.isNaN)) return undefined;
      return this.ranked(rows, colbert, o.weights).slice(0, o.k);
    }
    if (rankAll) {
      const bytes = await this.fetchColbert(rows.map((r) => r.id));
      rows = rows.filter((r) => bytes.has(r.id)); // deleted meanwhile: dropped, never an error
      rows.forEach((r) => (r.colbert = bytes.get(r.id)));
    }
    const colbert = await this.maxSim(q.colbert as ColbertMatrix, rows);
    return this.ranked(rows, colbert, o.weights).slice(0, o.k);
  }

  /**
   * MaxSim of `query` against the ColBERT vectors of `rows` (each with the rowid and xmin the
   * ranking statement read), fetched by binary COPY: the server sends the bytea bytes as they
   * are (no base64 encoding, the most expensive step of a base64 read, nor hex), `pg` hands them
   * over unparsed. The rows are split into groups fetched at once on up to `searchConnections`
   * connections (the server reads their TOAST chunks in parallel), and each group is scored as
   * soon as it has arrived, while the others are still in transit. NaN for a row that is gone or
   * whose version (xmin) is no longer the one ranked.
   */
  private async maxSimByCopy(query: ColbertMatrix, rows: readonly CandidateRow[]): Promise<Float64Array> {
    const out = new Float64Array(rows.length).fill(Number.NaN);
    const codec = this.codec as ColbertCodec;
    const index = new Map(rows.map((r, i) => [String(r.rowid), i]));
    const copyBinary = this.client.copyBinary as NonNullable<SqlClient['copyBinary']>;
    // At least ~5 rows per group: below that a statement costs more than it overlaps.
    const groups = Math.max(1, Math.min(Math.max(2, this.searchConnections), Math.ceil(rows.length / 5)));
    const size = Math.ceil(rows.length / groups);
    let scoring: Promise<unknown> = Promise.resolve();
    // With searchConnections 1 each group's COPY starts when the previous one has ended.
    let previousFetch: Promise<unknown> = Promise.resolve();
    const groupsDone: Promise<void>[] = [];
    for (let g = 0; g < rows.length; g += size) {
      const part = rows.slice(g, g + size);
      // Integers only (checked): COPY takes no parameters, so the list is a literal.
      const ids = part.map((r) => {
        if (!/^[0-9]+$/.test(String(r.rowid))) throw new M3Error('INDEX_INVALID', `rowid ${String(r.rowid)} of ${JSON.stringify(r.id)} is not an integer`);
        return String(r.rowid);
      });
      const sql = `COPY (SELECT rowid, xmin::text, colbert FROM ${this.t} WHERE rowid = ANY('{${ids.join(',')}}'::bigint[])) TO STDOUT (FORMAT binary)`;
      const packs: ColbertPackBuilder[] = [];
      const fetchGroup = () =>
        this.run(async () => {
          for (const p of packs.splice(0)) p.release();
          const pack = new ColbertPackBuilder(codec, part.length * 256); // BGE-M3's usual 256 vectors; grows when needed
          packs.push(pack);
          const at: number[] = [];
          await copyBinary(sql, (f) => {
            const i = index.get(f[0] ? String(f[0].readBigInt64BE(0)) : '');
            // Copied into the group's buffer as it arrives: the driver reuses its read buffer.
            if (i !== undefined && f[1]?.toString('utf8') === rows[i].xmin) {
              addColbert(pack, f[2], rows[i].id);
              at.push(i);
            }
          });
          return { pack, at };
        });
      const fetch = this.searchConnections > 1 ? fetchGroup() : previousFetch.then(fetchGroup);
      previousFetch = fetch.catch(() => undefined);
      // One MaxSim at a time (each already uses all cores), in arrival order.
      const scored = fetch.then(({ pack, at }) => {
        const run = scoring.then(async () => {
          if (at.length === 0) return;
          const scores = await maxSimPacked(query, pack.packed(), this.threads);
          at.forEach((i, k) => (out[i] = scores[k]));
        });
        scoring = run.catch(() => undefined);
        return run;
      });
      groupsDone.push(scored.finally(() => packs.forEach((p) => p.release())));
    }
    await Promise.all(groupsDone);
    return out;
  }

  /** ColBERT bytes of `ids` that exist. */
  private async fetchColbert(ids: string[]): Promise<Map<string, Uint8Array>> {
    if (ids.length === 0) return new Map();
    const sql = `SELECT t.id, ${this.colbertSql} AS colbert FROM ${this.t} t WHERE t.id = ANY($1::text[])`;
    const rows = await this.run(() => this.client.query<{ id: string; colbert: unknown }>(sql, [ids]));
    return new Map(rows.map((r) => [r.id, colbertBytes(r.colbert, r.id)]));
  }

  private ranked(rows: readonly CandidateRow[], colbert: Float64Array, weights: M3Weights): M3SearchResult[] {
    const results = rows.map((r, i): M3SearchResult => {
      const scores = { dense: Number(r.dense), sparse: Number(r.sparse), colbert: colbert[i] };
      return { id: r.id, text: r.text, metadata: parseMetadata(r.metadata), score: m3AllScore(scores, weights), scores };
    });
    return results.sort(byScoreThenId);
  }

  /** MaxSim of the query against the candidates' stored ColBERT bytes (a document stored with no vectors scores 0). */
  private maxSim(query: ColbertMatrix, rows: readonly CandidateRow[]): Promise<Float64Array> {
    const codec = this.codec as ColbertCodec;
    const bytes = rows.map((r) => colbertBytes(r.colbert, r.id));
    let packed: PackedColbert;
    try {
      packed = codec.pack(bytes);
    } catch (err) {
      // Which document: the first whose bytes do not decode.
      bytes.forEach((b, i) => namingDocument(() => codec.view(b), rows[i].id));
      throw err;
    }
    return maxSimPacked(query, packed, this.threads);
  }

  /**
   * The M3 rerank of stored documents `ids` (nothing but the query is encoded): each that exists
   * is scored by dense, sparse and ColBERT from its stored vectors, best first (ties: id).
   */
  async rescore(query: M3Query, ids: readonly string[], options: M3RescoreOptions = {}): Promise<M3SearchResult[]> {
    const o = checkRescoreOptions(options, 'options', this.codec ? undefined : ([1, 0.5, 0] as const));
    const list = [...new Set(checkIdList(ids))];
    if (!this.codec && o.weights[2] > 0) invalidArgument(`this store keeps no ColBERT vectors (colbertPrecision 'none'): use weights with colbert 0`);
    const useColbert = o.weights[2] > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert }, o.signal);
    if (list.length === 0) return [];
    const params: unknown[] = [list, formatDense(q.dense as Float32Array), formatSparse(q.sparse as SparseVector, this.vocabSize)];
    const select = (copy: boolean) =>
      `SELECT t.id, t.text, t.metadata, -(t.dense::vector <#> $2::vector) AS dense, -(coalesce(t.sparse_full, t.sparse) <#> $3::sparsevec) AS sparse${
        useColbert && !copy ? `, ${this.colbertSql} AS colbert` : ''
      }${copy ? ', t.rowid::text AS rowid, t.xmin::text AS xmin' : ''} FROM ${this.t} t WHERE t.id = ANY($1::text[])`;
    let rows = await this.run(() => this.client.query<CandidateRow>(select(useColbert && this.colbertCopy), params));
    let colbert: Float64Array = new Float64Array(rows.length);
    if (useColbert && this.colbertCopy) colbert = await this.maxSimByCopy(q.colbert as ColbertMatrix, rows);
    if (useColbert && (!this.colbertCopy || colbert.some(Number.isNaN))) {
      // Inline (or again in one statement: a row changed between the statement and its COPY).
      if (this.colbertCopy) rows = await this.run(() => this.client.query<CandidateRow>(select(false), params));
      colbert = await this.maxSim(q.colbert as ColbertMatrix, rows);
    }
    const results = this.ranked(rows, colbert, o.weights);
    return o.k === undefined ? results : results.slice(0, o.k);
  }

  /**
   * Dense-only search: HNSW top-k by inner product, each hit scored exactly (the float32 query
   * against the stored vector, as M3Index.searchDense).
   */
  async searchDense(query: M3Query, options: PgM3SingleModeOptions = {}): Promise<M3Hit[]> {
    const { o, n } = this.singleModeOptions(options);
    const q = await this.encodeQuery(query, { dense: true }, o.signal);
    const params: unknown[] = [formatDense(q.dense as Float32Array), n];
    const exactDense = this.denseType === 'vector' ? '$1::vector' : `$${params.push(params[0])}::vector`;
    const cond = this.condition(o, params);
    const rows = await this.read<CandidateRow>(
      n,
      options.efSearch,
      o.where !== undefined,
      `SELECT id, text, metadata, -(dense::vector <#> ${exactDense}) AS dense FROM ${this.t} WHERE ${cond} ORDER BY dense <#> $1::${this.denseCast()} LIMIT $2`,
      params,
    );
    return this.hits(rows, o.filter, o.k, (r) => Number(r.dense));
  }

  /**
   * Sparse-only search: top-k from the postings (exact) or the sparse HNSW index (the
   * projection), each hit scored exactly with all its stored weights (lexical matching score, as
   * M3Index.searchSparse); documents sharing no token with the query are not returned.
   */
  async searchSparse(query: M3Query, options: PgM3SingleModeOptions = {}): Promise<M3Hit[]> {
    const { o, n } = this.singleModeOptions(options);
    const q = await this.encodeQuery(query, { sparse: true }, o.signal);
    const params: unknown[] = [formatSparse(q.sparse as SparseVector, this.vocabSize), n];
    const stage = this.sparseStage(q.sparse as SparseVector, '$2', o, params, '$1::sparsevec', options.postingsPerToken);
    const rows = await this.read<CandidateRow>(
      n,
      options.efSearch,
      o.where !== undefined,
      `SELECT t.id, t.text, t.metadata, -(coalesce(t.sparse_full, t.sparse) <#> $1::sparsevec) AS sparse
       FROM ${this.t} t WHERE t.id IN (${stage})`,
      params,
    );
    return this.hits(rows, o.filter, o.k, (r) => Number(r.sparse)).filter((h) => h.score > 0);
  }

  private hits(rows: readonly CandidateRow[], filter: CheckedFilters['filter'], k: number, score: (r: CandidateRow) => number): M3Hit[] {
    const hits: M3Hit[] = [];
    for (const r of rows) {
      const metadata = parseMetadata(r.metadata);
      if (filter && filter(copyMetadata(metadata), r.id) !== true) continue;
      hits.push({ id: r.id, text: r.text, metadata, score: score(r) });
    }
    return hits.sort(byScoreThenId).slice(0, k);
  }

  private singleModeOptions(options: PgM3SingleModeOptions): { o: ReturnType<typeof checkSingleModeOptions>; n: number } {
    const o = checkSingleModeOptions(options);
    const fetchK = options?.fetchK === undefined ? undefined : checkPositiveInt(options.fetchK, 'fetchK', 0);
    checkPositiveInt(options?.efSearch, 'efSearch', 0, MAX_EF_SEARCH);
    return { o, n: Math.max(o.k, fetchK ?? (o.filter ? 100 : o.k)) };
  }
}
