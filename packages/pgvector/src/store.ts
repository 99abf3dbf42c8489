/**
 * PgM3Store: the M3Index API over PostgreSQL + pgvector. Every document is one row holding all
 * three BGE-M3 representations (see schema.ts); search is the core pipeline split where it runs
 * best:
 *
 * 1. in SQL, two approximate HNSW searches: dense top-fetchK (`ORDER BY dense <#> q`) and sparse
 *    top-fetchK on the indexed ≤ 1,000-weight projection (`ORDER BY sparse <#> q`), unioned, and
 *    each candidate's full data fetched in the same statement (one round trip, one snapshot);
 * 2. the exact rescoring of every candidate: the dense inner product with the stored vector and
 *    the lexical matching score with ALL its sparse weights are computed by pgvector in that same
 *    statement (two numbers per candidate cross the wire instead of ~5 KB of vectors: measured
 *    3–4× faster on PGlite), ColBERT MaxSim runs in the application on the stored fp16/int8
 *    bytes (core's `maxSimPacked`, the path M3Index takes), and core's `m3AllScore` combines
 *    them, ties by id: M3Index's numbers for the same candidates (pgvector accumulates in
 *    float32: differences ~1e-7).
 *
 * `<#>` is pgvector's NEGATIVE inner product (smaller is closer), so `ORDER BY … <#> q` is
 * highest-score first. An HNSW scan returns at most `hnsw.ef_search` rows, so every search sets
 * it (transaction-locally) to at least the number of rows it asks for.
 */
import {
  M3Error,
  assertTextEncoder3,
  checkFusionWeights,
  m3AllScore,
  maxSimPacked,
  resolveQuery,
  type ColbertMatrix,
  type EncodeResult,
  type M3AddOptions,
  type M3Document,
  type M3EncodedDocument,
  type M3Filter,
  type M3Hit,
  type M3ScoreWeights,
  type M3SearchResult,
  type M3StoredDocument,
  type OutputSelection,
  type SparseVector,
  type TextEncoder3,
} from '@bgem3/core';
import { ColbertCodec, HNSW_SPARSE_MAX_NNZ, formatDense, formatSparse, type PgColbertPrecision } from './codec.js';
import { checkDocument, checkEncoding, checkSparse, rowBytes, toRow, type EncodingShape, type RowValues } from './documents.js';
import { parseTableName, qualified, type TableName } from './identifiers.js';
import { SCHEMA_VERSION, createSchema, ensurePgvector, indexStatements, isPglite, metaDifferences, readMeta, versionAtLeast, type DenseType, type HnswParams, type StoreMeta } from './schema.js';
import {
  DEFAULT_TABLE,
  MAX_EF_SEARCH,
  MAX_STATEMENT_BYTES,
  MAX_STATEMENT_ROWS,
  PG_DEFAULT_EF_SEARCH,
  checkFilter,
  checkWhere,
  invalid,
  positiveInt,
  type PgM3SearchOptions,
  type PgM3SingleModeOptions,
  type PgM3StoreOptions,
} from './options.js';
import { isConnectionError, type SqlClient, type SqlQueryable, type SqlRow } from './sql-client.js';

/** Sorts by score descending, then id ascending (M3Index's order). */
function byScoreThenId<T extends { id: string; score: number }>(a: T, b: T): number {
  return b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function parseMetadata(v: unknown): Record<string, unknown> {
  // Both drivers parse jsonb; a client configured to return text still works.
  return (typeof v === 'string' ? JSON.parse(v) : v) as Record<string, unknown>;
}

function abortError(): M3Error {
  return new M3Error('ABORTED', 'PgM3Store.add was aborted');
}

interface CandidateRow extends SqlRow {
  id: string;
  text: string;
  metadata: unknown;
  /** Exact scores computed by pgvector (float8 of a float32 accumulation). */
  dense?: number;
  sparse?: number;
  colbert?: Uint8Array | null;
}

/**
 * BGE-M3 hybrid retrieval stored in PostgreSQL with pgvector, with the API of the embedded
 * `M3Index` (`add`, `addEncoded`, `delete`, `search`, `searchDense`, `searchSparse`, `get`,
 * `has`) so an application can swap one for the other. Open with {@link PgM3Store.connect}.
 *
 * The differences, all from living in a database: `size`/`ids` are the async {@link count} and
 * {@link ids}; the first stage is approximate (HNSW: raise `fetchK`/`efSearch` for recall, see
 * the README); a function `filter` runs on the fetched candidates, while `where` filters in SQL;
 * text, ids and metadata cannot contain U+0000; metadata goes through jsonb (key order and
 * number formatting normalised). Several processes may share one store.
 *
 * @example
 * ```ts
 * const store = await PgM3Store.connect({ client: pgClient(pool), encoder: await M3Encoder.load(dir) });
 * await store.add([{ id: 'a', text: 'BGE-M3 does dense, sparse and ColBERT.' }]);
 * const hits = await store.search('which model has three modes?', { k: 5 });
 * ```
 */
export class PgM3Store {
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
  /** Non-zeros kept in the HNSW-indexed sparse projection. */
  readonly sparseIndexNnz: number;
  /** The installed pgvector version. */
  readonly pgvectorVersion: string;
  /** The table name as given (validated). */
  readonly table: string;

  private readonly client: SqlClient;
  private encoder: TextEncoder3 | undefined;
  private readonly tableName: TableName;
  private readonly t: string;
  private readonly codec: ColbertCodec | undefined;
  private readonly shape: EncodingShape & { indexNnz: number };
  private readonly maxLength: number | undefined;
  private readonly batchSize: number;
  private readonly writeBatchSize: number;
  private readonly efSearch: number;
  private readonly retries: number;
  private readonly threads: { intraOpNumThreads?: number };
  private readonly iterative: boolean;
  private readonly hnsw: Required<HnswParams>;

  private constructor(client: SqlClient, table: string, tableName: TableName, meta: StoreMeta, version: string, options: PgM3StoreOptions) {
    this.client = client;
    this.table = table;
    this.tableName = tableName;
    this.t = qualified(tableName);
    this.modelId = meta.modelId;
    this.dim = meta.dim;
    this.vocabSize = meta.vocabSize;
    this.colbertPrecision = meta.colbertPrecision;
    this.denseType = meta.denseType;
    this.sparseIndexNnz = meta.sparseIndexNnz;
    this.pgvectorVersion = version;
    this.encoder = options.encoder;
    this.codec = meta.colbertPrecision === 'none' ? undefined : new ColbertCodec(meta.colbertPrecision, meta.dim);
    this.shape = { dim: meta.dim, vocabSize: meta.vocabSize, colbert: this.codec, indexNnz: meta.sparseIndexNnz };
    this.maxLength = options.maxLength;
    this.batchSize = options.batchSize ?? 32;
    this.writeBatchSize = options.writeBatchSize ?? 256;
    this.efSearch = options.efSearch ?? PG_DEFAULT_EF_SEARCH;
    this.retries = options.connectionRetries ?? 1;
    this.threads = options.intraOpNumThreads !== undefined ? { intraOpNumThreads: options.intraOpNumThreads } : {};
    // Iterative index scans (keep scanning until enough rows pass a filter) arrived in 0.8.0.
    this.iterative = versionAtLeast(version, '0.8.0');
    this.hnsw = { m: options.hnsw?.m ?? 16, efConstruction: options.hnsw?.efConstruction ?? 64 };
  }

  /**
   * Opens the store in `options.table`, creating the extension, tables and indexes when missing
   * (unless `createSchema: false`). INDEX_MISMATCH, naming each difference, when the existing
   * store was made for another model, dimension, vocabulary, ColBERT precision, dense type or
   * schema version; INVALID_ARGUMENT when pgvector is missing or older than 0.7 (sparsevec);
   * INDEX_INVALID when the table exists but is not a store.
   */
  static async connect(options: PgM3StoreOptions): Promise<PgM3Store> {
    if (options === null || typeof options !== 'object') invalid('PgM3Store.connect needs options {client, encoder?, table?}');
    const { client } = options;
    if (client === null || typeof client !== 'object' || typeof client.query !== 'function' || typeof client.transaction !== 'function') {
      invalid('options.client must be a SqlClient: pgClient(pool) or pgliteClient(db)');
    }
    if (options.encoder !== undefined) assertTextEncoder3(options.encoder);
    const table = options.table ?? DEFAULT_TABLE;
    const tableName = parseTableName(table);
    if (options.colbertPrecision !== undefined && !['fp32', 'fp16', 'int8', 'none'].includes(options.colbertPrecision)) {
      invalid(`colbertPrecision must be 'fp32', 'fp16', 'int8' or 'none', got ${String(options.colbertPrecision)}`);
    }
    if (options.denseType !== undefined && options.denseType !== 'halfvec' && options.denseType !== 'vector') invalid(`denseType must be 'halfvec' or 'vector', got ${String(options.denseType)}`);
    positiveInt(options.sparseIndexNnz, 'sparseIndexNnz', HNSW_SPARSE_MAX_NNZ);
    positiveInt(options.maxLength, 'maxLength');
    positiveInt(options.batchSize, 'batchSize');
    positiveInt(options.writeBatchSize, 'writeBatchSize');
    positiveInt(options.efSearch, 'efSearch', MAX_EF_SEARCH);
    positiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    positiveInt(options.dim, 'dim');
    positiveInt(options.vocabSize, 'vocabSize');
    if (options.modelId !== undefined && typeof options.modelId !== 'string') invalid('modelId must be a string');
    if (options.connectionRetries !== undefined && (!Number.isSafeInteger(options.connectionRetries) || options.connectionRetries < 0)) invalid('connectionRetries must be an integer ≥ 0');
    const m = positiveInt(options.hnsw?.m, 'hnsw.m', 100) ?? 16;
    const efConstruction = positiveInt(options.hnsw?.efConstruction, 'hnsw.efConstruction', 1000) ?? 64;
    if (m < 2 || efConstruction < 2 * m) invalid(`hnsw needs m ≥ 2 and efConstruction ≥ 2·m (pgvector's rules), got m ${m}, efConstruction ${efConstruction}`);

    const enc = options.encoder;
    // What the caller asks for; undefined fields are taken from an existing store.
    const wanted: Partial<StoreMeta> = {
      modelId: enc?.modelId ?? options.modelId,
      dim: enc?.dim ?? options.dim,
      vocabSize: enc?.vocabSize ?? options.vocabSize,
      colbertPrecision: options.colbertPrecision,
      denseType: options.denseType,
      sparseIndexNnz: options.sparseIndexNnz,
    };
    if (enc) {
      const given: string[] = [];
      if (options.modelId !== undefined && options.modelId !== enc.modelId) given.push(`modelId ${JSON.stringify(options.modelId)} vs the encoder's ${JSON.stringify(enc.modelId)}`);
      if (options.dim !== undefined && options.dim !== enc.dim) given.push(`dim ${options.dim} vs the encoder's ${enc.dim}`);
      if (options.vocabSize !== undefined && options.vocabSize !== enc.vocabSize) given.push(`vocabSize ${options.vocabSize} vs the encoder's ${enc.vocabSize}`);
      if (given.length) invalid(`options disagree with the encoder: ${given.join('; ')}`);
    }
    const createWanted = options.createSchema ?? true;
    const retries = options.connectionRetries ?? 1;
    return withRetries(retries, async () => {
      const version = await ensurePgvector(client, createWanted);
      let meta = await readMeta(client, tableName);
      if (!meta) {
        if (!createWanted) throw new M3Error('INDEX_INVALID', `there is no store in table ${qualified(tableName)} (connect with createSchema: true to create it)`);
        if (wanted.modelId === undefined || wanted.dim === undefined || wanted.vocabSize === undefined) {
          invalid(`table ${qualified(tableName)} does not exist yet: pass an encoder (or modelId, dim and vocabSize) to create it`);
        }
        const denseType = wanted.denseType ?? ((await isPglite(client)) ? 'vector' : 'halfvec');
        const maxDim = denseType === 'halfvec' ? 4000 : 2000;
        if (wanted.dim > maxDim) invalid(`pgvector's HNSW indexes ${denseType} of at most ${maxDim} dimensions, got ${wanted.dim}${denseType === 'vector' ? " (use denseType 'halfvec')" : ''}`);
        meta = await createSchema(
          client,
          tableName,
          {
            schemaVersion: SCHEMA_VERSION,
            modelId: wanted.modelId,
            dim: wanted.dim,
            vocabSize: wanted.vocabSize,
            colbertPrecision: wanted.colbertPrecision ?? 'fp16',
            denseType,
            sparseIndexNnz: wanted.sparseIndexNnz ?? HNSW_SPARSE_MAX_NNZ,
          },
          { m, efConstruction },
          options.createIndexes ?? true,
        );
      }
      const diffs = metaDifferences(meta, wanted);
      if (meta.schemaVersion !== SCHEMA_VERSION) diffs.unshift(`schema version ${meta.schemaVersion} (table) vs ${SCHEMA_VERSION} (this build of @bgem3/pgvector)`);
      if (diffs.length) throw new M3Error('INDEX_MISMATCH', `table ${qualified(tableName)} does not match: ${diffs.join('; ')}`);
      return new PgM3Store(client, table, tableName, meta, version, options);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing

  /** Runs `fn`, again on a connection-level failure (see {@link PgM3StoreOptions.connectionRetries}). */
  private run<T>(fn: () => Promise<T>): Promise<T> {
    return withRetries(this.retries, fn);
  }

  private requireEncoder(): TextEncoder3 {
    if (!this.encoder) invalid('this PgM3Store has no encoder: pass { encoder } to PgM3Store.connect, or query with a precomputed EncodeResult');
    return this.encoder;
  }

  private encodeQuery(query: string | EncodeResult, need: OutputSelection): Promise<EncodeResult> {
    return resolveQuery(query, need, {
      encoder: () => this.requireEncoder(),
      dim: this.dim,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      checkSparse: (sparse) => checkSparse(sparse, this.vocabSize, 'the query'),
    });
  }

  /**
   * Runs a read with `hnsw.ef_search` (and, for a filter on pgvector ≥ 0.8 or more rows than
   * ef_search allows, an iterative scan) set for this transaction only.
   */
  private async read<R extends SqlRow>(rows: number, efSearch: number | undefined, filtered: boolean, sql: string, params: unknown[]): Promise<R[]> {
    const ef = Math.min(MAX_EF_SEARCH, Math.max(efSearch ?? this.efSearch, rows));
    const iterative = this.iterative && (filtered || rows > MAX_EF_SEARCH);
    return this.run(() =>
      this.client.transaction(async (tx) => {
        if (iterative) {
          await tx.query(`SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)`, [String(ef)]);
        } else {
          await tx.query(`SELECT set_config('hnsw.ef_search', $1, true)`, [String(ef)]);
        }
        return tx.query<R>(sql, params);
      }),
    );
  }

  private denseCast(): string {
    return this.denseType === 'halfvec' ? 'halfvec' : 'vector';
  }

  /**
   * The SQL operand of the exact dense score: the query in full float32 (`$1::vector` when the
   * column is `vector`; for `halfvec`, a second copy of the query text, so that only the stored
   * side is half precision — the HNSW order uses `$1::halfvec`).
   */
  private exactDenseParam(params: unknown[]): string {
    if (this.denseType === 'vector') return '$1::vector';
    return `$${params.push(params[0])}::vector`;
  }

  // ---------------------------------------------------------------------------------------------
  // Writes

  /**
   * Encodes and stores documents: every batch of `batchSize` texts costs ONE encoder call with
   * all the outputs the store keeps, and is written (upserted by id) in one transaction while the
   * next batch is encoded. A repeated id replaces the earlier document (within a batch, the last
   * one is encoded). Returns the ids, in input order. On failure, batches already written stay.
   */
  async add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options: M3AddOptions = {}): Promise<string[]> {
    const encoder = this.requireEncoder();
    const signal = options.signal;
    const ids: string[] = [];
    let batch: { id: string; doc: M3Document }[] = [];
    let pending: Promise<void> | undefined;
    const flush = async () => {
      if (batch.length === 0) return;
      const last = new Map<string, number>();
      batch.forEach((b, i) => last.set(b.id, i));
      const unique = batch.filter((b, i) => last.get(b.id) === i);
      batch = [];
      if (signal?.aborted) throw abortError();
      const encodeOptions = {
        dense: true,
        sparse: true,
        colbert: this.codec !== undefined,
        ...(this.maxLength ? { maxLength: this.maxLength } : {}),
        ...(signal ? { signal } : {}),
      };
      const encoded = await encoder.encode(unique.map((u) => u.doc.text), encodeOptions);
      if (!Array.isArray(encoded) || encoded.length !== unique.length) {
        throw new M3Error('INVALID_ARGUMENT', `the encoder returned ${Array.isArray(encoded) ? encoded.length : 'no'} results for ${unique.length} texts`);
      }
      const rows = unique.map((u, i) => {
        const where = `encoding of document ${JSON.stringify(u.id)}`;
        checkEncoding(encoded[i], this.shape, where);
        return toRow(u.id, u.doc, encoded[i], this.shape, where);
      });
      // Writes stay in input order: the previous batch must be written before this one starts.
      if (pending) await pending;
      pending = this.writeRows(rows);
      pending.catch(() => undefined); // observed by the next flush or the final await
    };
    let i = 0;
    const take = async (doc: M3Document) => {
      const id = checkDocument(doc, `docs[${i++}]`);
      ids.push(id);
      batch.push({ id, doc });
      if (batch.length >= this.batchSize) await flush();
    };
    try {
      if (Symbol.asyncIterator in Object(docs)) {
        for await (const doc of docs as AsyncIterable<M3Document>) await take(doc);
      } else {
        for (const doc of docs as Iterable<M3Document>) await take(doc);
      }
      await flush();
    } catch (err) {
      if (pending) await pending.catch(() => undefined); // never leave a write running unobserved
      throw err;
    }
    if (pending) await pending;
    return ids;
  }

  /**
   * Stores documents whose encodings were computed elsewhere. Each `encoding` needs dense and
   * sparse outputs, and ColBERT unless the store keeps none, from the store's model. All entries
   * are validated before any is written; rows are then upserted in transactions of
   * `writeBatchSize`. Returns the ids, in input order (a repeated id: the last one wins).
   */
  async addEncoded(docs: Iterable<M3EncodedDocument>): Promise<string[]> {
    const list = [...docs];
    const ids: string[] = [];
    const byId = new Map<string, RowValues>();
    list.forEach((doc, i) => {
      const id = checkDocument(doc, `docs[${i}]`);
      checkEncoding(doc.encoding, this.shape, `docs[${i}].encoding`);
      ids.push(id);
      byId.delete(id); // the last occurrence wins
      byId.set(id, toRow(id, doc, doc.encoding, this.shape, `docs[${i}]`));
    });
    await this.writeRows([...byId.values()]);
    return ids;
  }

  /** Upserts rows (unique ids) in transactions of `writeBatchSize` rows, each split into bounded INSERTs. */
  private async writeRows(rows: readonly RowValues[]): Promise<void> {
    for (let start = 0; start < rows.length; start += this.writeBatchSize) {
      const chunk = rows.slice(start, start + this.writeBatchSize);
      await this.run(() =>
        this.client.transaction(async (tx) => {
          let s = 0;
          while (s < chunk.length) {
            let e = s;
            let bytes = 0;
            while (e < chunk.length && e - s < MAX_STATEMENT_ROWS && (e === s || bytes + rowBytes(chunk[e]) <= MAX_STATEMENT_BYTES)) bytes += rowBytes(chunk[e++]);
            await this.insert(tx, chunk.slice(s, e));
            s = e;
          }
        }),
      );
    }
  }

  private insert(tx: SqlQueryable, rows: readonly RowValues[]): Promise<unknown> {
    const d = this.denseCast();
    const values: string[] = [];
    const params: unknown[] = [];
    for (const r of rows) {
      const p = params.length;
      values.push(`($${p + 1}, $${p + 2}, $${p + 3}::jsonb, $${p + 4}::${d}, $${p + 5}::sparsevec, $${p + 6}::sparsevec, $${p + 7}::bytea)`);
      params.push(...r);
    }
    return tx.query(
      `INSERT INTO ${this.t} (id, text, metadata, dense, sparse, sparse_full, colbert) VALUES ${values.join(', ')}
       ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, dense = EXCLUDED.dense,
         sparse = EXCLUDED.sparse, sparse_full = EXCLUDED.sparse_full, colbert = EXCLUDED.colbert`,
      params,
    );
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. */
  async delete(ids: string | Iterable<string>): Promise<number> {
    const list = typeof ids === 'string' ? [ids] : [...ids];
    list.forEach((id, i) => {
      if (typeof id !== 'string') invalid(`ids[${i}] must be a string, got ${typeof id}`);
    });
    let n = 0;
    for (let s = 0; s < list.length; s += 10000) {
      const part = list.slice(s, s + 10000).filter((id) => !id.includes('\u0000'));
      const rows = await this.run(() =>
        this.client.query<{ n: number }>(`WITH d AS (DELETE FROM ${this.t} WHERE id = ANY($1::text[]) RETURNING 1) SELECT count(*)::int AS n FROM d`, [part]),
      );
      n += Number(rows[0]?.n ?? 0);
    }
    return n;
  }

  /**
   * Builds the two HNSW indexes if they are missing (after a bulk load into a store connected
   * with `createIndexes: false`), with the store's `hnsw` parameters. `maintenanceWorkMem`
   * (e.g. `'1GB'`) is set for the build only: pgvector builds fast while the graph fits in it
   * and falls back to a much slower on-disk build when it does not.
   */
  async createIndexes(options: { maintenanceWorkMem?: string } = {}): Promise<void> {
    const mem = options.maintenanceWorkMem;
    if (mem !== undefined && !/^\d+\s*(kB|MB|GB|TB)$/.test(mem)) invalid(`maintenanceWorkMem must look like '512MB' or '2GB', got ${JSON.stringify(mem)}`);
    await this.run(() =>
      this.client.transaction(async (tx) => {
        if (mem !== undefined) await tx.query(`SELECT set_config('maintenance_work_mem', $1, true)`, [mem]);
        for (const statement of indexStatements(this.tableName, this.denseType, this.hnsw)) await tx.query(statement);
      }),
    );
  }

  /** Removes every document (the tables and indexes stay). */
  async clear(): Promise<void> {
    await this.run(() => this.client.query(`TRUNCATE ${this.t}`));
  }

  /** Drops the store's two tables (and so its indexes). The object is unusable afterwards. */
  async drop(): Promise<void> {
    await this.run(() => this.client.query(`DROP TABLE IF EXISTS ${this.t}, ${qualified(this.tableName, '_meta')}`));
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
    if (typeof id !== 'string' || id.includes('\u0000')) return false;
    const rows = await this.run(() => this.client.query(`SELECT 1 FROM ${this.t} WHERE id = $1`, [id]));
    return rows.length > 0;
  }

  /** The stored document, or undefined. */
  async get(id: string): Promise<M3StoredDocument | undefined> {
    if (typeof id !== 'string' || id.includes('\u0000')) return undefined;
    const rows = await this.run(() => this.client.query<{ id: string; text: string; metadata: unknown }>(`SELECT id, text, metadata FROM ${this.t} WHERE id = $1`, [id]));
    const r = rows[0];
    return r ? { id: r.id, text: r.text, metadata: parseMetadata(r.metadata) } : undefined;
  }

  /** Ids of the stored documents, in the database's order for text, fetched in pages of `pageSize`. */
  async *ids(pageSize = 1000): AsyncGenerator<string> {
    positiveInt(pageSize, 'pageSize');
    let after: string | undefined;
    for (;;) {
      const from = after;
      const rows = await this.run(() =>
        from === undefined
          ? this.client.query<{ id: string }>(`SELECT id FROM ${this.t} ORDER BY id LIMIT $1`, [pageSize])
          : this.client.query<{ id: string }>(`SELECT id FROM ${this.t} WHERE id > $1 ORDER BY id LIMIT $2`, [from, pageSize]),
      );
      for (const r of rows) yield r.id;
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1].id;
    }
  }

  /**
   * Hybrid search, the recommended M3 pipeline: dense top-fetchK ∪ sparse top-fetchK from the
   * HNSW indexes (a sparse candidate needs a shared token), then every candidate rescored exactly
   * by dense, sparse (all its weights) and ColBERT (weight 0: skipped and not fetched), combined
   * as (w_d·dense + w_s·sparse + w_c·colbert)/Σw → top k (ties: id ascending). Equal to
   * M3Index.search whenever HNSW finds the same candidates (e.g. fetchK ≥ the number of documents).
   */
  async search(query: string | EncodeResult, options: PgM3SearchOptions = {}): Promise<M3SearchResult[]> {
    const k = positiveInt(options.k ?? 10, 'k') as number;
    const fetchK = positiveInt(options.fetchK ?? 100, 'fetchK') as number;
    const weights: M3ScoreWeights = options.weights ?? (this.codec ? [0.4, 0.2, 0.4] : [0.4, 0.2, 0]);
    checkFusionWeights(weights, 3);
    if (!this.codec && weights[2] > 0) invalid(`this store keeps no ColBERT vectors (colbertPrecision 'none'): use weights with colbert 0, e.g. [${weights[0]}, ${weights[1]}, 0]`);
    const where = checkWhere(options.where);
    const filter = checkFilter(options.filter);
    positiveInt(options.efSearch, 'efSearch', MAX_EF_SEARCH);
    const useColbert = weights[2] > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert });
    const n = Math.max(fetchK, k);

    const params: unknown[] = [formatDense(q.dense as Float32Array), formatSparse(q.sparse as SparseVector, this.vocabSize), n];
    const cond = where !== undefined ? `WHERE metadata @> $${params.push(where)}::jsonb` : '';
    const exactDense = this.exactDenseParam(params);
    const sql = `WITH d AS (SELECT id FROM ${this.t} ${cond} ORDER BY dense <#> $1::${this.denseCast()} LIMIT $3),
      s AS (SELECT id, sparse <#> $2::sparsevec AS dist FROM ${this.t} ${cond} ORDER BY sparse <#> $2::sparsevec LIMIT $3)
      SELECT t.id, t.text, t.metadata, -(t.dense::vector <#> ${exactDense}) AS dense,
        -(coalesce(t.sparse_full, t.sparse) <#> $2::sparsevec) AS sparse${useColbert ? ', t.colbert' : ''}
      FROM ${this.t} t WHERE t.id IN (SELECT id FROM d UNION SELECT id FROM s WHERE dist < 0)`;
    let rows = await this.read<CandidateRow>(n, options.efSearch, where !== undefined, sql, params);
    if (filter) rows = rows.filter((r) => filter(parseMetadata(r.metadata), r.id) === true);
    if (rows.length === 0) return [];

    const colbert = useColbert ? await this.maxSim(q.colbert as ColbertMatrix, rows) : new Float64Array(rows.length);
    const results = rows.map((r, i): M3SearchResult => {
      const scores = { dense: Number(r.dense), sparse: Number(r.sparse), colbert: colbert[i] };
      return { id: r.id, text: r.text, metadata: parseMetadata(r.metadata), score: m3AllScore(scores, weights), scores };
    });
    return results.sort(byScoreThenId).slice(0, k);
  }

  /** MaxSim of the query against the candidates' stored ColBERT bytes (a row without any scores 0). */
  private maxSim(query: ColbertMatrix, rows: readonly CandidateRow[]): Promise<Float64Array> {
    const codec = this.codec as ColbertCodec;
    const empty = new Uint8Array(0);
    return maxSimPacked(query, codec.pack(rows.map((r) => r.colbert ?? empty)), this.threads);
  }

  /**
   * Dense-only search: HNSW top-k by inner product, each hit scored exactly (the float32 query
   * against the stored vector, as M3Index.searchDense).
   */
  async searchDense(query: string | EncodeResult, options: PgM3SingleModeOptions = {}): Promise<M3Hit[]> {
    const { k, n, where, filter } = this.singleModeOptions(options);
    const q = await this.encodeQuery(query, { dense: true });
    const params: unknown[] = [formatDense(q.dense as Float32Array), n];
    const cond = where !== undefined ? `WHERE metadata @> $${params.push(where)}::jsonb` : '';
    const exactDense = this.exactDenseParam(params);
    const rows = await this.read<CandidateRow>(
      n,
      options.efSearch,
      where !== undefined,
      `SELECT id, text, metadata, -(dense::vector <#> ${exactDense}) AS dense FROM ${this.t} ${cond} ORDER BY dense <#> $1::${this.denseCast()} LIMIT $2`,
      params,
    );
    const hits: M3Hit[] = [];
    for (const r of rows) {
      const metadata = parseMetadata(r.metadata);
      if (filter && filter(metadata, r.id) !== true) continue;
      hits.push({ id: r.id, text: r.text, metadata, score: Number(r.dense) });
    }
    return hits.sort(byScoreThenId).slice(0, k);
  }

  /**
   * Sparse-only search: HNSW top-k on the indexed projection, each hit scored exactly with all
   * its stored weights (lexical matching score, as M3Index.searchSparse); documents sharing no
   * token with the query are not returned.
   */
  async searchSparse(query: string | EncodeResult, options: PgM3SingleModeOptions = {}): Promise<M3Hit[]> {
    const { k, n, where, filter } = this.singleModeOptions(options);
    const q = await this.encodeQuery(query, { sparse: true });
    const params: unknown[] = [formatSparse(q.sparse as SparseVector, this.vocabSize), n];
    const cond = where !== undefined ? `WHERE metadata @> $${params.push(where)}::jsonb` : '';
    const rows = await this.read<CandidateRow>(
      n,
      options.efSearch,
      where !== undefined,
      `SELECT id, text, metadata, -(coalesce(sparse_full, sparse) <#> $1::sparsevec) AS sparse
       FROM ${this.t} ${cond} ORDER BY sparse <#> $1::sparsevec LIMIT $2`,
      params,
    );
    const hits: M3Hit[] = [];
    for (const r of rows) {
      const metadata = parseMetadata(r.metadata);
      if (filter && filter(metadata, r.id) !== true) continue;
      const score = Number(r.sparse);
      if (score > 0) hits.push({ id: r.id, text: r.text, metadata, score });
    }
    return hits.sort(byScoreThenId).slice(0, k);
  }

  private singleModeOptions(options: PgM3SingleModeOptions): { k: number; n: number; where: string | undefined; filter: M3Filter | undefined } {
    const k = positiveInt(options.k ?? 10, 'k') as number;
    const fetchK = positiveInt(options.fetchK, 'fetchK');
    positiveInt(options.efSearch, 'efSearch', MAX_EF_SEARCH);
    const filter = checkFilter(options.filter);
    const n = Math.max(k, fetchK ?? (filter ? 100 : k));
    return { k, n, where: checkWhere(options.where), filter };
  }
}

async function withRetries<T>(retries: number, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= retries || !isConnectionError(err)) throw err;
      // A pool hands out its remaining stale connections one by one; a short pause lets a
      // restarting server come back.
      await new Promise((resolve) => setTimeout(resolve, 100 * (attempt + 1)));
    }
  }
}
