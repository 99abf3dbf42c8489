/**
 * M3Index: the embedded, durable {@link M3Store} of @bgem3/core. One BGE-M3 forward pass per
 * document gives all three representations; the index keeps them in one SQLite database per
 * directory (store/embedded/database.ts has the layout and why SQLite) and keeps in memory only
 * what search needs:
 *
 * - dense vectors in a {@link DenseIndex} (exact inner-product search),
 * - lexical weights in a {@link SparseIndex} (exact MaxScore search),
 * - metadata, for `where` / `filter`.
 *
 * ColBERT vectors are read from disk for the candidates being reranked only, texts for the hits
 * returned only: a 100k-passage index with 256 ColBERT vectors per passage is ~26 GB on disk
 * (int8) and ~0.6 GB in memory.
 *
 * {@link M3Index.search} runs the pipeline recommended for M3 (m3-reference, "hybrid retrieval +
 * rerank"): candidates = dense top-fetchK ∪ sparse top-fetchK, every candidate rescored exactly
 * by all three modes, ranked by the M3 All score. ColBERT is a reranker only, as BAAI recommend.
 *
 * Durability and concurrency (README, "How the index stores data"):
 * - every add batch and every delete is one SQLite transaction, committed (fsynced) when its
 *   call resolves; a kill -9 at any moment leaves the last committed state, nothing committed
 *   is lost; a commit writes what changed, not the index;
 * - one writer per index directory across processes: the writer holds `writer.lock`
 *   (OS-released when the process dies); a second writer gets INDEX_LOCKED naming the lock, or
 *   waits up to `lockTimeoutMs`; readers never block and follow the writer's commits;
 * - mutations and saves take effect in call order (store/ingest.ts, WriteSequencer); a search
 *   never fails because a candidate was deleted meanwhile; nothing returned aliases storage;
 * - space freed by deletes and replacements is reused, and given back by {@link M3Index.compact}
 *   (automatic when more than a quarter of the file is free).
 *
 * Directories written by releases before the database (`CURRENT` + `gen-*`) are migrated on load.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { M3Error, invalidArgument } from '../errors.js';
import type { ColbertMatrix, EncodeResult, OutputSelection, SparseVector, TextEncoder3 } from '../types.js';
import { DEFAULT_M3_WEIGHTS, m3AllScore, type M3Weights } from '../scoring/weights.js';
import { ColbertCodec, checkColbertStorage, type ColbertStorage } from '../store/colbert-codec.js';
import {
  DB_FILE,
  RowCrc,
  WriterLock,
  createDatabaseFile,
  createTemporaryDatabase,
  denseBytes,
  fsyncPath,
  initDatabase,
  openDatabase,
  readDense,
  readMeta,
  readMetadata,
  readSparse,
  readUtf8,
  sparseBytes,
  sqliteError,
  utf8Bytes,
  writeMeta,
  type Db,
  type IndexMeta,
  type Stmt,
} from '../store/embedded/database.js';
import { WriteSequencer, checkEncodedDocuments, ingestDocuments, type EncodedEntry } from '../store/ingest.js';
import { checkRerankDepth, checkRescoreOptions, checkSearchOptions, checkSingleModeOptions, rerankSelection, type CheckedFilters } from '../store/options.js';
import { resolveQuery } from '../store/query.js';
import type {
  JsonObject,
  M3AddOptions,
  M3Document,
  M3EncodedDocument,
  M3Hit,
  M3Query,
  M3RescoreOptions,
  M3SearchOptions,
  M3SearchResult,
  M3SingleModeOptions,
  M3Store,
  M3StoredDocument,
} from '../store/types.js';
import { checkId, checkIdList, copyMetadata } from '../store/validate.js';
import { matchesWhere } from '../store/where.js';
import { DenseIndex } from './dense-index.js';
import { hasLegacyIndex, readLegacyIndex, removeLegacyFiles } from './legacy-index.js';
import { maxSimRaw } from './maxsim.js';
import { SparseIndex, SparseLoadBuffer } from './sparse-index.js';
import { sortHits } from './topk.js';

/** Weights of a store without ColBERT vectors: dense and sparse in the M3 default's ratio. */
const NO_COLBERT_WEIGHTS: M3Weights = Object.freeze([DEFAULT_M3_WEIGHTS[0], DEFAULT_M3_WEIGHTS[1], 0]) as unknown as M3Weights;
/** Auto-compaction runs after a commit when more than this share of the pages is free. */
const COMPACT_FREE_SHARE = 0.25;
/** … and the file has at least this many pages (16 MiB): small indexes are never compacted. */
const COMPACT_MIN_PAGES = 1024;
/** Rows read per chunk while loading. */
const LOAD_CHUNK = 4096;

/** The options an index keeps with its data (what `bgem3 index --append` reuses). */
export interface M3IndexSettings {
  /** The encoder's model id the index was built with. */
  readonly modelId: string;
  /** Max tokens per text given to the encoder (undefined: the encoder's own). */
  readonly maxLength: number | undefined;
  /** How ColBERT vectors are stored. */
  readonly colbertPrecision: ColbertStorage;
  /** Documents per encoder call in {@link M3Index.add}. */
  readonly batchSize: number;
}

/** Options of {@link M3Index.create}. */
export interface M3IndexOptions {
  /** The encoder producing dense, sparse and ColBERT outputs (e.g. `M3Encoder`). */
  encoder: TextEncoder3;
  /**
   * How ColBERT vectors are stored: 'int8' (default: per-vector scale, a quarter of fp32, MaxSim
   * error ~4e-5, see BENCHMARKS.md), 'fp16', 'fp32' (exact) or 'none' (dense + sparse only).
   */
  colbertPrecision?: ColbertStorage;
  /** Max tokens per text passed to the encoder (default: the encoder's own). */
  maxLength?: number;
  /** Documents per encode call (and per commit) in {@link M3Index.add} (default 32). */
  batchSize?: number;
  /** onnxruntime threads for dense search and MaxSim (default: all cores). */
  intraOpNumThreads?: number;
  /** Default `rerankDepth` of {@link M3Index.search} (default `DEFAULT_RERANK_DEPTH`, 40; see M3SearchOptions). */
  rerankDepth?: number;
}

/** Options of {@link M3Index.load}. */
export interface M3IndexLoadOptions {
  /** Encoder for new documents and text queries; must match the index's model, dim and vocabulary. */
  encoder?: TextEncoder3;
  /** Overrides the saved `maxLength`. */
  maxLength?: number;
  /** Overrides the saved `batchSize`. */
  batchSize?: number;
  intraOpNumThreads?: number;
  /** Default `rerankDepth` of {@link M3Index.search} (default `DEFAULT_RERANK_DEPTH`, 40; see M3SearchOptions). */
  rerankDepth?: number;
  /**
   * Opens the index as a reader: mutations are refused, no lock is taken, and searches follow
   * what the directory's writer commits. Default false: the index takes the directory's writer
   * lock at its first mutation (INDEX_LOCKED if another writer holds it).
   */
  readOnly?: boolean;
  /** How long a mutation waits for the writer lock held by another writer (default 0: fail at once). */
  lockTimeoutMs?: number;
}

/** Options of {@link M3Index.open}. */
export interface M3IndexOpenOptions extends Omit<M3IndexOptions, 'encoder'> {
  encoder: TextEncoder3;
  /** Create the index when `dir` holds none (default true). With false, a missing index is INDEX_INVALID. */
  create?: boolean;
  /** How long to wait for the writer lock held by another writer (default 0: fail at once). */
  lockTimeoutMs?: number;
}

/** Checks that `encoder` has the TextEncoder3 shape (INVALID_ARGUMENT naming `what` if not); shared by the stores. */
export function assertTextEncoder3(encoder: TextEncoder3 | undefined, what = 'encoder'): asserts encoder is TextEncoder3 {
  if (
    encoder === null ||
    typeof encoder !== 'object' ||
    typeof encoder.encode !== 'function' ||
    typeof encoder.modelId !== 'string' ||
    !Number.isSafeInteger(encoder.dim) ||
    encoder.dim <= 0 ||
    !Number.isSafeInteger(encoder.vocabSize) ||
    encoder.vocabSize <= 0
  ) {
    invalidArgument(`${what} must be a TextEncoder3 {modelId, dim, vocabSize, encode()}`);
  }
}

function checkPositiveInt(v: unknown, name: string): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)) invalidArgument(`${name} must be a positive integer, got ${String(v)}`);
}

function checkLockTimeout(v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) invalidArgument(`lockTimeoutMs must be an integer ≥ 0, got ${String(v)}`);
  return v;
}

function checkDir(dir: unknown, what = 'dir'): string {
  if (typeof dir !== 'string' || dir.length === 0) invalidArgument(`${what} must be a directory path`);
  return dir;
}

/** A row ready to commit. */
interface Row {
  id: string;
  text: string;
  metadata: JsonObject;
  dense: Float32Array;
  sparse: SparseVector;
  colbert: Buffer;
}

/** What the index keeps in memory per document. */
interface DocRef {
  rid: number;
  metadata: JsonObject;
}

/** The in-memory mirror of a database: what search needs. */
interface Mirror {
  dense: DenseIndex;
  sparse: SparseIndex;
  docs: Map<string, DocRef>;
  idOfRid: Map<number, string>;
  lastRid: number;
  lastDeletion: number;
}

/** Prepared statements of one connection. */
interface Statements {
  insertDoc: Stmt;
  insertText: Stmt;
  insertColbert: Stmt;
  deleteDoc: Stmt;
  deleteText: Stmt;
  deleteColbert: Stmt;
  logDeletion: Stmt;
  getText: Stmt;
  getColbert: Stmt;
  hasDoc: Stmt;
}

function prepare(db: Db): Statements {
  return {
    insertDoc: db.prepare('INSERT INTO docs(rid, id, metadata, dense, sparse, crc) VALUES (?, ?, ?, ?, ?, ?)'),
    insertText: db.prepare('INSERT INTO texts(rid, text, crc) VALUES (?, ?, ?)'),
    insertColbert: db.prepare('INSERT INTO colbert(rid, data, crc) VALUES (?, ?, ?)'),
    deleteDoc: db.prepare('DELETE FROM docs WHERE rid = ?'),
    deleteText: db.prepare('DELETE FROM texts WHERE rid = ?'),
    deleteColbert: db.prepare('DELETE FROM colbert WHERE rid = ?'),
    logDeletion: db.prepare('INSERT INTO deletions(rid) VALUES (?)'),
    getText: db.prepare('SELECT text, crc FROM texts WHERE rid = ?'),
    getColbert: db.prepare('SELECT data, crc FROM colbert WHERE rid = ?'),
    hasDoc: db.prepare('SELECT 1 FROM docs WHERE rid = ?').pluck(true),
  };
}

/**
 * The embedded hybrid index (see the file comment), an {@link M3Store}. Create with
 * {@link M3Index.open} (durable in a directory from the start), {@link M3Index.create} (a
 * temporary index, made durable by {@link M3Index.save}) or {@link M3Index.load}.
 */
export class M3Index implements M3Store {
  readonly modelId: string;
  readonly dim: number;
  readonly vocabSize: number;
  /** How ColBERT vectors are stored ('none': not kept). */
  readonly colbertPrecision: ColbertStorage;
  private encoderRef: TextEncoder3 | undefined;
  private maxLength: number | undefined;
  private batchSize: number;
  private readonly threads: { intraOpNumThreads?: number };
  private readonly rerankDepth: number;
  private readonly codec: ColbertCodec;
  private readonly readOnly: boolean;
  private readonly lockTimeoutMs: number;
  private db: Db;
  private file: string;
  private home: string | undefined; // the directory the index lives in (undefined: temporary)
  private lock: WriterLock | undefined;
  private meta: IndexMeta;
  private crc: RowCrc;
  private stmts: Statements;
  private mirror: Mirror;
  private dataVersion = 0;
  private nextRid = 1;
  private closed = false;
  private readonly writes = new WriteSequencer();

  private constructor(init: {
    db: Db;
    file: string;
    home: string | undefined;
    meta: IndexMeta;
    mirror: Mirror;
    encoder?: TextEncoder3 | undefined;
    maxLength?: number | undefined;
    batchSize?: number | undefined;
    intraOpNumThreads?: number | undefined;
    rerankDepth?: number | undefined;
    readOnly?: boolean;
    lockTimeoutMs?: number;
    lock?: WriterLock | undefined;
  }) {
    const m = init.meta;
    this.modelId = m.modelId;
    this.dim = m.dim;
    this.vocabSize = m.vocabSize;
    this.colbertPrecision = m.colbertPrecision;
    this.encoderRef = init.encoder;
    this.maxLength = init.maxLength ?? m.maxLength ?? undefined;
    this.batchSize = init.batchSize ?? m.batchSize;
    this.threads = init.intraOpNumThreads !== undefined ? { intraOpNumThreads: init.intraOpNumThreads } : {};
    this.rerankDepth = checkRerankDepth(init.rerankDepth);
    this.codec = new ColbertCodec(m.colbertPrecision, m.dim);
    this.readOnly = init.readOnly === true;
    this.lockTimeoutMs = init.lockTimeoutMs ?? 0;
    this.db = init.db;
    this.file = init.file;
    this.home = init.home;
    this.lock = init.lock;
    this.meta = m;
    this.crc = new RowCrc(m.uuid);
    this.stmts = prepare(init.db);
    this.mirror = init.mirror;
    this.syncVersion();
    this.nextRid = this.readNextRid();
  }

  private emptyMirror(): Mirror {
    return emptyMirror(this.meta, this.threads);
  }

  // ---------------------------------------------------------------------------------------------
  // Opening

  /**
   * Creates an empty temporary index for `encoder`'s model: an anonymous database on disk (not
   * in memory: ColBERT vectors never are), removed when the index is closed or the process
   * ends. {@link save} writes it to a directory, where it then lives.
   */
  static async create(options: M3IndexOptions): Promise<M3Index> {
    assertTextEncoder3(options?.encoder);
    const precision = checkColbertStorage(options.colbertPrecision);
    checkPositiveInt(options.maxLength, 'maxLength');
    checkPositiveInt(options.batchSize, 'batchSize');
    checkPositiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    checkRerankDepth(options.rerankDepth);
    const { encoder } = options;
    const db = createTemporaryDatabase();
    const meta = initDatabase(db, { modelId: encoder.modelId, dim: encoder.dim, vocabSize: encoder.vocabSize, colbertPrecision: precision, maxLength: options.maxLength ?? null, batchSize: options.batchSize ?? 32 }, false);
    return new M3Index({ db, file: '<temporary index>', home: undefined, meta, mirror: emptyMirror(meta, threadsOf(options)), encoder, intraOpNumThreads: options.intraOpNumThreads, rerankDepth: options.rerankDepth });
  }

  /**
   * Opens the durable index of directory `dir` as its writer (taking the writer lock at once:
   * INDEX_LOCKED if another writer holds it), creating it when `dir` holds none (unless
   * `create: false`). Every add batch and delete is committed when its call resolves. An
   * existing index must match the encoder (INDEX_MISMATCH) and keeps its saved settings;
   * `colbertPrecision`, `maxLength` and `batchSize` apply to a new index (and the last two
   * override the saved ones for this session).
   */
  static async open(dir: string, options: M3IndexOpenOptions): Promise<M3Index> {
    checkDir(dir);
    assertTextEncoder3(options?.encoder, 'options.encoder');
    const precision = checkColbertStorage(options.colbertPrecision);
    checkPositiveInt(options.maxLength, 'maxLength');
    checkPositiveInt(options.batchSize, 'batchSize');
    checkPositiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    checkRerankDepth(options.rerankDepth);
    const lockTimeoutMs = checkLockTimeout(options.lockTimeoutMs);
    if (existsSync(join(dir, DB_FILE)) || (await hasLegacyIndex(dir))) {
      const index = await M3Index.load(dir, {
        encoder: options.encoder,
        ...(options.maxLength !== undefined ? { maxLength: options.maxLength } : {}),
        ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
        ...(options.intraOpNumThreads !== undefined ? { intraOpNumThreads: options.intraOpNumThreads } : {}),
        ...(options.rerankDepth !== undefined ? { rerankDepth: options.rerankDepth } : {}),
        lockTimeoutMs,
      });
      await index.writes.run(() => index.takeLock());
      return index;
    }
    if (options.create === false) throw new M3Error('INDEX_INVALID', `${dir} holds no M3Index (no ${DB_FILE}); pass create: true to create one`, { file: join(dir, DB_FILE) });
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new M3Error('INVALID_ARGUMENT', `cannot create the index directory ${dir}: ${(err as Error).message}`, { file: dir, cause: err });
    }
    const lock = await WriterLock.acquireAsync(dir, lockTimeoutMs);
    try {
      const file = join(dir, DB_FILE);
      if (existsSync(file)) {
        // Another process created it between our check and the lock: open it as usual.
        lock.release();
        return await M3Index.open(dir, options);
      }
      removeTemporaryFiles(dir);
      const tmp = join(dir, `${DB_FILE}.tmp-${randomBytes(4).toString('hex')}`);
      const db = createDatabaseFile(tmp);
      const { encoder } = options;
      const meta = initDatabase(db, { modelId: encoder.modelId, dim: encoder.dim, vocabSize: encoder.vocabSize, colbertPrecision: precision, maxLength: options.maxLength ?? null, batchSize: options.batchSize ?? 32 }, true);
      db.close();
      fsyncPath(tmp);
      renameSync(tmp, file); // the commit point of the creation: no half-made index.sqlite ever exists
      fsyncPath(dir, true);
      const live = openDatabase(dir, false);
      return new M3Index({ db: live, file, home: resolve(dir), meta, mirror: emptyMirror(meta, threadsOf(options)), encoder, intraOpNumThreads: options.intraOpNumThreads, rerankDepth: options.rerankDepth, lockTimeoutMs, lock });
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /**
   * Loads the index of directory `dir`: INDEX_INVALID (naming the file) when the directory holds
   * no index or the index is damaged (every row's checksum and every size is checked);
   * INDEX_MISMATCH when `options.encoder` has another model id, dimension or vocabulary size
   * than the index (the message lists what differs). Without an encoder the index can still be
   * searched with EncodeResult queries. A directory written by an earlier release
   * (`CURRENT` + `gen-*`) is migrated to the database (left as is with `readOnly`).
   */
  static async load(dir: string, options: M3IndexLoadOptions = {}): Promise<M3Index> {
    checkDir(dir);
    if (options === null || typeof options !== 'object') invalidArgument('options must be an object');
    if (options.encoder !== undefined) assertTextEncoder3(options.encoder, 'options.encoder');
    checkPositiveInt(options.maxLength, 'maxLength');
    checkPositiveInt(options.batchSize, 'batchSize');
    checkPositiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    checkRerankDepth(options.rerankDepth);
    const lockTimeoutMs = checkLockTimeout(options.lockTimeoutMs);
    const readOnly = options.readOnly === true;
    const file = join(dir, DB_FILE);
    if (!existsSync(file)) {
      if (await hasLegacyIndex(dir)) return M3Index.migrate(dir, options);
      throw new M3Error('INDEX_INVALID', `${dir} is not an M3Index directory (no ${DB_FILE}${existsSync(dir) ? '' : '; the directory does not exist'})`, { file });
    }
    const db = openDatabase(dir, readOnly);
    try {
      const meta = readMeta(db, file);
      checkEncoderMatches(options.encoder, meta, dir, file);
      const mirror = loadMirror(db, file, meta, threadsOf(options));
      return new M3Index({ db, file, home: resolve(dir), meta, mirror, encoder: options.encoder, maxLength: options.maxLength, batchSize: options.batchSize, intraOpNumThreads: options.intraOpNumThreads, rerankDepth: options.rerankDepth, readOnly, lockTimeoutMs });
    } catch (err) {
      db.close();
      sqliteError(file, err, 'loading the index');
    }
  }

  // A directory of the pre-database layout: read it with the old loaders, write the database
  // beside it (atomically) and remove the old files, all under the directory's writer lock,
  // taken before the old files are read. A second process loading the same directory meanwhile
  // waits for the lock (lockTimeoutMs) or gets INDEX_LOCKED, then finds the database and loads
  // it, instead of migrating again over the first one's writes. A reader migrates in memory only
  // and takes no lock; if the old files vanish under it (another process just migrated), it
  // loads the database instead.
  private static async migrate(dir: string, options: M3IndexLoadOptions): Promise<M3Index> {
    const file = join(dir, DB_FILE);
    let lock: WriterLock | undefined;
    if (options.readOnly !== true) {
      lock = await WriterLock.acquireAsync(dir, checkLockTimeout(options.lockTimeoutMs));
      if (existsSync(file)) {
        lock.release();
        return M3Index.load(dir, options);
      }
    }
    try {
      let legacy: Awaited<ReturnType<typeof readLegacyIndex>>;
      try {
        legacy = await readLegacyIndex(dir);
      } catch (err) {
        if (!lock && existsSync(file)) return M3Index.load(dir, options);
        throw err;
      }
      const index = await M3Index.migrateRows(dir, legacy, options);
      if (!lock) return index;
      const held = lock;
      lock = undefined; // saveTo owns it now: kept by the index, or released on failure
      await index.saveTo(dir, held);
      return index;
    } finally {
      lock?.release();
    }
  }

  private static async migrateRows(dir: string, legacy: Awaited<ReturnType<typeof readLegacyIndex>>, options: M3IndexLoadOptions): Promise<M3Index> {
    checkEncoderMatches(options.encoder, legacy, dir, join(dir, 'CURRENT'));
    const db = createTemporaryDatabase();
    const meta = initDatabase(db, { modelId: legacy.modelId, dim: legacy.dim, vocabSize: legacy.vocabSize, colbertPrecision: legacy.colbertPrecision, maxLength: legacy.maxLength, batchSize: options.batchSize ?? 32 }, false);
    const index = new M3Index({ db, file: '<temporary index>', home: undefined, meta, mirror: emptyMirror(meta, threadsOf(options)), encoder: options.encoder, maxLength: options.maxLength, batchSize: options.batchSize, intraOpNumThreads: options.intraOpNumThreads, rerankDepth: options.rerankDepth, lockTimeoutMs: options.lockTimeoutMs ?? 0, readOnly: options.readOnly === true });
    const sparse = legacy.sparse.vectors();
    let rows: Row[] = [];
    for (const [id, d] of legacy.docs) {
      const raw = legacy.colbert.getRaw(id);
      const dense = legacy.dense.get(id);
      const sv = sparse.get(id);
      if (!raw || !dense || !sv) throw new M3Error('INDEX_INVALID', `${dir}: document ${JSON.stringify(id)} is missing from a part`, { file: join(dir, 'CURRENT') });
      const data = Buffer.from(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
      const colbert = raw.scales ? Buffer.concat([Buffer.from(raw.scales.buffer, raw.scales.byteOffset, raw.scales.byteLength), data]) : Buffer.from(data);
      rows.push({ id, text: d.text, metadata: d.metadata, dense: dense.slice(), sparse: sv, colbert });
      if (rows.length >= LOAD_CHUNK) {
        index.commitRows(rows);
        rows = [];
      }
    }
    index.commitRows(rows);
    return index;
  }

  // ---------------------------------------------------------------------------------------------
  // State

  /** The encoder for {@link add} and text queries (undefined for an index loaded without one). */
  get encoder(): TextEncoder3 | undefined {
    return this.encoderRef;
  }

  /** The options kept with the index (what `bgem3 index --append` reuses). */
  get settings(): M3IndexSettings {
    return { modelId: this.modelId, maxLength: this.maxLength, colbertPrecision: this.colbertPrecision, batchSize: this.batchSize };
  }

  /** The directory the index lives in (undefined for a temporary index not saved yet). */
  get directory(): string | undefined {
    return this.home;
  }

  /** Number of documents (synchronous form of {@link count}). */
  get size(): number {
    this.refresh();
    return this.mirror.docs.size;
  }

  async count(): Promise<number> {
    return this.size;
  }

  async has(id: string): Promise<boolean> {
    checkId(id);
    this.refresh();
    return this.mirror.docs.has(id);
  }

  /** The stored document (a copy), or undefined. */
  async get(id: string): Promise<M3StoredDocument | undefined> {
    checkId(id);
    this.refresh();
    return this.stored(id);
  }

  async getMany(ids: readonly string[]): Promise<M3StoredDocument[]> {
    const list = checkIdList(ids);
    this.refresh();
    const out: M3StoredDocument[] = [];
    for (const id of new Set(list)) {
      const d = this.stored(id);
      if (d) out.push(d);
    }
    return out;
  }

  /** Ids of the stored documents (a snapshot). */
  ids(): IterableIterator<string> {
    this.refresh();
    return [...this.mirror.docs.keys()][Symbol.iterator]();
  }

  private assertOpen(): void {
    if (this.closed) invalidArgument('this M3Index is closed');
  }

  // The text of row `rid` (undefined when the row is gone, e.g. deleted by the writer meanwhile).
  private readText(rid: number): string | undefined {
    let row: { text: Buffer; crc: number } | undefined;
    try {
      row = this.stmts.getText.get(rid) as typeof row;
    } catch (err) {
      sqliteError(this.file, err, 'reading a text');
    }
    if (!row) return undefined;
    if (this.crc.text(rid, row.text) !== row.crc) throw new M3Error('INDEX_INVALID', `${this.file}: the text of row ${rid} fails its checksum (edited, damaged or from another index)`, { file: this.file });
    return readUtf8(this.file, row.text, `text of row ${rid}`);
  }

  private stored(id: string): M3StoredDocument | undefined {
    this.assertOpen();
    const d = this.mirror.docs.get(id);
    if (!d) return undefined;
    const text = this.readText(d.rid);
    return text === undefined ? undefined : { id, text, metadata: copyMetadata(d.metadata) };
  }

  private requireEncoder(): TextEncoder3 {
    if (!this.encoderRef) invalidArgument('this M3Index has no encoder: pass { encoder } to M3Index.create/open/load, or query with a precomputed EncodeResult');
    return this.encoderRef;
  }

  // ---------------------------------------------------------------------------------------------
  // Following other connections' commits

  private syncVersion(): void {
    try {
      this.dataVersion = this.db.pragma('data_version', { simple: true }) as number;
    } catch (err) {
      sqliteError(this.file, err, 'reading the data version');
    }
  }

  private readNextRid(): number {
    let row: { seq: unknown } | undefined;
    try {
      row = this.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'docs'").get() as { seq: unknown } | undefined;
    } catch (err) {
      sqliteError(this.file, err, 'reading the row sequence');
    }
    const seq = row?.seq ?? 0;
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) throw new M3Error('INDEX_INVALID', `${this.file}: invalid row sequence ${String(seq)}`, { file: this.file });
    return Math.max(seq, this.mirror.lastRid) + 1;
  }

  /**
   * Catches up with what another connection (the writer, in this or another process) committed
   * since this index last looked: new rows are loaded, deleted ones dropped. A no-op for the
   * writer itself and for temporary indexes. Runs at the start of every read.
   */
  private refresh(): void {
    if (this.closed || this.lock || this.home === undefined) return;
    const version = this.db.pragma('data_version', { simple: true }) as number;
    if (version === this.dataVersion) return;
    this.dataVersion = version;
    try {
      this.db.exec('BEGIN');
      try {
        const meta = readMeta(this.db, this.file);
        if (meta.uuid !== this.meta.uuid || meta.deletionsTrimmed > this.mirror.lastDeletion) {
          // Replaced by another index (a save into this directory) or compacted past our
          // position: reload whole (an index of another model or layout cannot be followed).
          if (meta.colbertPrecision !== this.colbertPrecision || meta.dim !== this.dim || meta.vocabSize !== this.vocabSize || meta.modelId !== this.modelId) {
            throw new M3Error('INDEX_INVALID', `${this.file} was replaced by an index of another model or layout while open; load it again`, { file: this.file });
          }
          this.crc = new RowCrc(meta.uuid);
          this.mirror = loadMirror(this.db, this.file, meta, this.threads);
        } else {
          const m = this.mirror;
          const gone = this.db.prepare('SELECT seq, rid FROM deletions WHERE seq > ? ORDER BY seq').all(m.lastDeletion) as { seq: number; rid: number }[];
          const ids: string[] = [];
          for (const g of gone) {
            const id = m.idOfRid.get(g.rid);
            if (id !== undefined) {
              ids.push(id);
              m.idOfRid.delete(g.rid);
              m.docs.delete(id);
            }
            m.lastDeletion = g.seq;
          }
          if (ids.length) {
            m.dense.delete(ids);
            m.sparse.delete(ids);
          }
          readDocRows(this.db, this.file, meta, this.crc, m, m.lastRid);
        }
        this.meta = meta;
      } finally {
        this.db.exec('COMMIT');
      }
    } catch (err) {
      sqliteError(this.file, err, 'following the writer');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Writing

  // Takes the writer lock (inside a write turn): INDEX_LOCKED when another writer holds it.
  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) invalidArgument(`this M3Index was loaded with { readOnly: true }: it cannot be modified (load it without readOnly to write)`);
  }

  private async takeLock(): Promise<void> {
    this.assertWritable();
    if (this.lock || this.home === undefined) return;
    const lock = await WriterLock.acquireAsync(this.home, this.lockTimeoutMs);
    if (this.lock) {
      lock.release();
      return;
    }
    try {
      removeTemporaryFiles(this.home);
      this.refresh(); // catch up with the previous writer before writing
      this.lock = lock;
      this.nextRid = this.readNextRid();
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  // Commits rows in ONE transaction, then mirrors them (synchronously: no search can observe a
  // half-applied batch). A failed commit changes nothing, on disk or in memory.
  private commitRows(rows: Row[]): void {
    if (rows.length === 0) return;
    const m = this.mirror;
    const s = this.stmts;
    let rid = this.nextRid;
    const placed: { row: Row; rid: number; old: number | undefined }[] = [];
    const meta = { ...this.meta };
    try {
      this.db.transaction(() => {
        let count = meta.count;
        for (const row of rows) {
          const old = m.docs.get(row.id)?.rid;
          if (old !== undefined) {
            s.deleteDoc.run(old);
            s.deleteText.run(old);
            s.deleteColbert.run(old);
            s.logDeletion.run(old);
            count--;
          }
          const r = rid++;
          const idBytes = utf8Bytes(row.id);
          const metaBytes = utf8Bytes(JSON.stringify(row.metadata));
          const dense = denseBytes(row.dense);
          const sparse = sparseBytes(row.sparse);
          s.insertDoc.run(r, row.id, metaBytes, dense, sparse, this.crc.docs(r, idBytes, metaBytes, dense, sparse));
          placed.push({ row, rid: r, old });
          count++;
        }
        // Table by table, not row by row: the pages a commit adds to `docs` (what a load reads)
        // are then contiguous in the file instead of interleaved with ColBERT overflow pages.
        for (const { row, rid: r } of placed) {
          const text = utf8Bytes(row.text);
          s.insertText.run(r, text, this.crc.text(r, text));
        }
        if (this.colbertPrecision !== 'none') for (const { row, rid: r } of placed) s.insertColbert.run(r, row.colbert, this.crc.colbert(r, row.colbert));
        meta.count = count;
        writeMeta(this.db, meta);
      })();
    } catch (err) {
      sqliteError(this.file, err, 'committing documents');
    }
    this.nextRid = rid;
    this.meta = meta;
    // Checked at the boundary (checkEncoding) or when read back (readDense/readSparse).
    m.dense.upsertMany(placed.map((p) => ({ id: p.row.id, vector: p.row.dense })), { checked: true });
    m.sparse.upsertMany(placed.map((p) => ({ id: p.row.id, vector: p.row.sparse })), { checked: true });
    for (const p of placed) {
      if (p.old !== undefined) m.idOfRid.delete(p.old);
      m.docs.set(p.row.id, { rid: p.rid, metadata: p.row.metadata });
      m.idOfRid.set(p.rid, p.row.id);
    }
    m.lastRid = rid - 1;
    this.maybeCompact();
  }

  private rowsOf(batch: EncodedEntry[]): Row[] {
    return batch.map((b) => ({ id: b.id, text: b.text, metadata: b.metadata, dense: b.encoding.dense, sparse: b.encoding.sparse, colbert: this.codec.encode(b.encoding.colbert) }));
  }

  /**
   * Encodes and adds documents: every batch of `batchSize` texts costs ONE encoder call with
   * dense, sparse and ColBERT requested together, and is committed (one transaction) before the
   * next batch is encoded, so a large (async) iterable is never held whole in memory. A repeated
   * id replaces the earlier document. Returns the ids, in input order. Takes effect in call
   * order. On failure, batches already committed stay (the error says how many documents).
   */
  add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    let encoder: TextEncoder3;
    try {
      this.assertOpen();
      this.assertWritable();
      encoder = this.requireEncoder();
    } catch (err) {
      turn.release();
      return Promise.reject(err);
    }
    let locked = false;
    return ingestDocuments(docs, turn, {
      encoder,
      model: { modelId: this.modelId, dim: this.dim, vocabSize: this.vocabSize },
      colbert: this.colbertPrecision !== 'none',
      batchSize: this.batchSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(options?.signal ? { signal: options.signal } : {}),
      what: 'M3Index.add',
      apply: async (batch) => {
        if (!locked) {
          await this.takeLock();
          locked = true;
        }
        this.commitRows(this.rowsOf(batch));
      },
    });
  }

  /**
   * Adds documents whose encodings were computed elsewhere (e.g. by an adapter that already
   * embedded them). Each `encoding` needs dense, sparse and ColBERT outputs from the same model
   * (ColBERT may be absent for `colbertPrecision: 'none'`). All entries are checked before any
   * is stored, and committed in one transaction. Returns the ids, in input order.
   */
  addEncoded(docs: Iterable<M3EncodedDocument>, _options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    return (async () => {
      try {
        this.assertOpen();
        const { ids, entries } = checkEncodedDocuments(docs, { modelId: this.modelId, dim: this.dim, vocabSize: this.vocabSize, colbert: this.colbertPrecision !== 'none' }, 'M3Index.addEncoded');
        const rows = this.rowsOf(entries);
        await turn.ready;
        await this.takeLock();
        this.commitRows(rows);
        return ids;
      } finally {
        turn.release();
      }
    })();
  }

  /** Removes documents (one transaction); unknown ids are ignored. Returns how many were removed. Takes effect in call order. */
  delete(ids: string | Iterable<string>): Promise<number> {
    let list: string[];
    try {
      list = checkIdList(ids);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.writes.run(async () => {
      await this.takeLock();
      const m = this.mirror;
      const present = [...new Set(list)].filter((id) => m.docs.has(id));
      if (present.length === 0) return 0;
      const s = this.stmts;
      const meta = { ...this.meta };
      try {
        this.db.transaction(() => {
          for (const id of present) {
            const rid = (m.docs.get(id) as DocRef).rid;
            s.deleteDoc.run(rid);
            s.deleteText.run(rid);
            s.deleteColbert.run(rid);
            s.logDeletion.run(rid);
          }
          meta.count -= present.length;
          writeMeta(this.db, meta);
        })();
      } catch (err) {
        sqliteError(this.file, err, 'deleting documents');
      }
      this.meta = meta;
      m.dense.delete(present);
      m.sparse.delete(present);
      for (const id of present) {
        m.idOfRid.delete((m.docs.get(id) as DocRef).rid);
        m.docs.delete(id);
      }
      this.maybeCompact();
      return present.length;
    });
  }

  private maybeCompact(): void {
    if (this.home === undefined) return;
    let pages: number;
    let free: number;
    try {
      pages = this.db.pragma('page_count', { simple: true }) as number;
      free = this.db.pragma('freelist_count', { simple: true }) as number;
    } catch (err) {
      sqliteError(this.file, err, 'reading the free space');
    }
    if (pages >= COMPACT_MIN_PAGES && free > pages * COMPACT_FREE_SHARE) this.compactNow();
  }

  private compactNow(): void {
    try {
      const meta = { ...this.meta };
      this.db.transaction(() => {
        const last = this.db.prepare('SELECT max(seq) AS seq FROM deletions').get() as { seq: number | null };
        if (last.seq !== null) {
          this.db.prepare('DELETE FROM deletions').run();
          meta.deletionsTrimmed = last.seq;
          writeMeta(this.db, meta);
        }
      })();
      this.meta = meta;
      this.mirror.lastDeletion = Math.max(this.mirror.lastDeletion, meta.deletionsTrimmed);
      this.db.pragma('incremental_vacuum');
      if (this.home !== undefined) this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch (err) {
      sqliteError(this.file, err, 'compacting');
    }
  }

  /**
   * Gives the space of deleted and replaced documents back to the file system (and trims the
   * deletion log readers follow; a reader further behind reloads whole). Runs automatically
   * after a commit when more than a quarter of the file is free. Takes effect in call order;
   * crash-safe (one transaction).
   */
  compact(): Promise<void> {
    return this.writes.run(async () => {
      await this.takeLock();
      this.compactNow();
    });
  }

  /**
   * Makes the index durable in directory `dir` (created if needed). For the index's own
   * directory this is a checkpoint (every batch is committed already). A temporary index is
   * written to `dir` and lives there from then on (it becomes `dir`'s writer). An index living
   * elsewhere is copied to `dir` and stays where it is. An index `dir` held already is replaced
   * atomically (readers see the old or the new one). Takes `dir`'s writer lock (INDEX_LOCKED if
   * another writer holds it). Takes effect in call order.
   */
  save(dir: string): Promise<void> {
    try {
      checkDir(dir);
      this.assertWritable();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.saveTo(dir);
  }

  // `held`: the caller already holds dir's writer lock (a migration), which this takes over.
  private saveTo(dir: string, held?: WriterLock): Promise<void> {
    return this.writes.run(async () => {
      if (this.home !== undefined && isSameDir(this.home, dir)) {
        await this.takeLock();
        try {
          this.db.pragma('wal_checkpoint(PASSIVE)');
        } catch (err) {
          sqliteError(this.file, err, 'checkpointing');
        }
        return;
      }
      try {
        mkdirSync(dir, { recursive: true });
      } catch (err) {
        throw new M3Error('INVALID_ARGUMENT', `cannot create the index directory ${dir}: ${(err as Error).message}`, { file: dir, cause: err });
      }
      const lock = held ?? (await WriterLock.acquireAsync(dir, this.lockTimeoutMs));
      let keep = false;
      try {
        removeTemporaryFiles(dir);
        const file = join(dir, DB_FILE);
        const tmp = join(dir, `${DB_FILE}.tmp-${randomBytes(4).toString('hex')}`);
        try {
          this.db.prepare('VACUUM INTO ?').run(tmp);
          fsyncPath(tmp);
        } catch (err) {
          rmSync(tmp, { force: true });
          sqliteError(file, err, 'writing the index');
        }
        if (existsSync(file)) {
          // Replace the index there in one transaction of its own database.
          const target = openDatabase(dir, false);
          try {
            target.prepare('ATTACH DATABASE ? AS src').run(tmp);
            target.transaction(() => {
              for (const t of ['docs', 'texts', 'colbert', 'deletions', 'meta']) {
                target.exec(`DELETE FROM main.${t}`);
                target.exec(`INSERT INTO main.${t} SELECT * FROM src.${t}`);
              }
              const seq = target.prepare("SELECT seq FROM src.sqlite_sequence WHERE name = 'docs'").get() as { seq: number } | undefined;
              target.exec("DELETE FROM main.sqlite_sequence WHERE name = 'docs'");
              if (seq) target.prepare("INSERT INTO main.sqlite_sequence(name, seq) VALUES ('docs', ?)").run(seq.seq);
            })();
            target.exec('DETACH DATABASE src');
            target.pragma('incremental_vacuum');
          } catch (err) {
            sqliteError(file, err, 'replacing the index');
          } finally {
            target.close();
            rmSync(tmp, { force: true });
          }
        } else {
          try {
            const t = createDatabaseFile(tmp);
            t.pragma('journal_mode = WAL');
            t.close();
            fsyncPath(tmp);
            renameSync(tmp, file); // the commit point
            fsyncPath(dir, true);
          } catch (err) {
            rmSync(tmp, { force: true });
            sqliteError(file, err, 'writing the index');
          }
        }
        if (await hasLegacyIndex(dir)) await removeLegacyFiles(dir);
        if (this.home === undefined) {
          // The temporary index now lives in dir, as its writer.
          const live = openDatabase(dir, false);
          this.db.close();
          this.db = live;
          this.file = file;
          this.home = resolve(dir);
          this.stmts = prepare(live);
          this.lock = lock;
          this.meta = readMeta(live, file);
          this.syncVersion();
          this.nextRid = this.readNextRid();
          keep = true;
        }
      } finally {
        if (!keep) lock.release();
      }
    });
  }

  /** Waits for pending writes, checkpoints, releases the writer lock and closes the database (idempotent). */
  async close(): Promise<void> {
    await this.writes.idle();
    if (this.closed) return;
    this.closed = true;
    try {
      this.db.close();
    } finally {
      this.lock?.release();
      this.lock = undefined;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Search

  private encodeQuery(query: M3Query, need: OutputSelection, signal: AbortSignal | undefined): Promise<EncodeResult> {
    return resolveQuery(query, need, {
      encoder: () => this.requireEncoder(),
      dim: this.dim,
      vocabSize: this.vocabSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  private idFilter(f: CheckedFilters, docs: Map<string, DocRef>): ((id: string) => boolean) | undefined {
    const { where, filter } = f;
    if (where === undefined && filter === undefined) return undefined;
    return (id) => {
      const d = docs.get(id);
      if (d === undefined) return false;
      if (where !== undefined && !matchesWhere(where, d.metadata)) return false;
      return filter === undefined || filter(copyMetadata(d.metadata), id) === true;
    };
  }

  private defaultWeights(): M3Weights | undefined {
    return this.colbertPrecision === 'none' ? NO_COLBERT_WEIGHTS : undefined;
  }

  private checkColbertWeight(weights: M3Weights): void {
    if (this.colbertPrecision === 'none' && weights[2] > 0) invalidArgument('this M3Index keeps no ColBERT vectors (colbertPrecision "none"): give weights with a ColBERT weight of 0');
  }

  /**
   * Hybrid search, the recommended M3 pipeline: dense top-fetchK ∪ sparse top-fetchK (deduped)
   * → every candidate scored exactly by dense (inner product) and sparse (lexical matching
   * score) → the best `rerankDepth` of them by w_d·dense + w_s·sparse also by ColBERT (MaxSim
   * over the stored vectors, read from disk for those candidates only) → combined score
   * (w_d·dense + w_s·sparse + w_c·colbert)/Σw → top k (ties: id ascending). A string query is
   * encoded once (ColBERT is skipped when its weight is 0). An empty index returns [].
   */
  async search(query: M3Query, options: M3SearchOptions = {}): Promise<M3SearchResult[]> {
    const o = checkSearchOptions(options, 'options', this.defaultWeights(), this.rerankDepth);
    this.checkColbertWeight(o.weights);
    this.assertOpen();
    this.refresh();
    if (this.mirror.docs.size === 0) return [];
    const useColbert = o.weights[2] > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert }, o.signal);
    this.assertOpen();
    this.refresh();
    const m = this.mirror;
    const filter = this.idFilter(o, m.docs);
    const denseHits = await m.dense.search(q.dense as Float32Array, o.fetchK, filter ? { filter } : {});
    this.assertOpen();
    // From here to the ColBERT reads everything is synchronous: the candidates exist in every part.
    const mirror = this.mirror;
    const sparseHits = mirror.sparse.search(q.sparse as SparseVector, o.fetchK, filter ? { filter } : {});
    const candidates = [...new Set([...denseHits.map((h) => h.id), ...sparseHits.map((h) => h.id)])].filter((id) => mirror.docs.has(id));
    const results = await this.scoreCandidates(q, candidates, o.weights, o.rerankDepth);
    return this.withTexts(results, o.k);
  }

  // The M3 rerank of candidates that exist now (synchronous up to MaxSim): all scored by dense and
  // sparse, the best `depth` of them by ColBERT (all when depth is undefined: rescore). ColBERT
  // rows are read here; a row gone meanwhile (a reader behind its writer) drops its candidate,
  // never an error.
  private async scoreCandidates(q: EncodeResult, all: string[], weights: M3Weights, depth?: number): Promise<{ id: string; rid: number; metadata: JsonObject; score: number; scores: { dense: number; sparse: number; colbert: number } }[]> {
    if (all.length === 0) return [];
    const m = this.mirror;
    const useColbert = weights[2] > 0;
    const denseAll = m.dense.scoreIds(q.dense as Float32Array, all);
    const sparseAll = m.sparse.scoreIds(q.sparse as SparseVector, all);
    const chosen = depth === undefined ? all.map((_, i) => i) : rerankSelection(all, denseAll, sparseAll, weights, depth);
    const ids = chosen.map((i) => all[i]);
    const dense = chosen.map((i) => denseAll[i]);
    const sparse = chosen.map((i) => sparseAll[i]);
    const refs = ids.map((id) => m.docs.get(id) as DocRef);
    let colbert: Float64Array = new Float64Array(ids.length);
    let keep: boolean[] = ids.map(() => true);
    if (useColbert) {
      const sources = refs.map((r) => this.readColbert(r.rid));
      keep = sources.map((s) => s !== undefined);
      const present = sources.filter((s): s is NonNullable<typeof s> => s !== undefined);
      const precision = this.colbertPrecision === 'none' ? 'fp32' : this.colbertPrecision;
      const scores = await maxSimRaw(q.colbert as ColbertMatrix, precision, this.dim, present, this.threads);
      colbert = new Float64Array(ids.length);
      let j = 0;
      for (let i = 0; i < ids.length; i++) if (keep[i]) colbert[i] = scores[j++];
    }
    const out: { id: string; rid: number; metadata: JsonObject; score: number; scores: { dense: number; sparse: number; colbert: number } }[] = [];
    ids.forEach((id, i) => {
      if (!keep[i]) return;
      const scores = { dense: dense[i], sparse: sparse[i], colbert: colbert[i] };
      out.push({ id, rid: refs[i].rid, metadata: refs[i].metadata, score: m3AllScore(scores, weights), scores });
    });
    return sortHits(out);
  }

  private readColbert(rid: number): ReturnType<ColbertCodec['view']> | undefined {
    let row: { data: Buffer; crc: number } | undefined;
    try {
      row = this.stmts.getColbert.get(rid) as typeof row;
    } catch (err) {
      sqliteError(this.file, err, 'reading ColBERT vectors');
    }
    if (!row) {
      // Deleted meanwhile (the docs row goes in the same commit; rids are never reused), or
      // missing from a damaged file, which the load does not scan for (it would read a b-tree
      // leaf per ColBERT row): a document whose row is still there has lost its vectors.
      let live: unknown;
      try {
        live = this.stmts.hasDoc.get(rid);
      } catch (err) {
        sqliteError(this.file, err, 'reading ColBERT vectors');
      }
      if (live !== undefined) throw new M3Error('INDEX_INVALID', `${this.file}: row ${rid} has no ColBERT vectors (damaged or edited; rebuild the index)`, { file: this.file });
      return undefined;
    }
    if (this.crc.colbert(rid, row.data) !== row.crc) throw new M3Error('INDEX_INVALID', `${this.file}: the ColBERT vectors of row ${rid} fail their checksum (edited, damaged or from another index)`, { file: this.file });
    try {
      return this.codec.view(row.data);
    } catch (err) {
      throw new M3Error('INDEX_INVALID', `${this.file}: row ${rid}: ${(err as Error).message}`, { file: this.file, cause: err });
    }
  }

  // The best `k` ranked hits with their texts (read now; a hit whose row is gone is skipped).
  private withTexts<T extends { id: string; rid: number; metadata: JsonObject; score: number }>(ranked: T[], k: number | undefined): (Omit<T, 'rid'> & M3StoredDocument)[] {
    const out: (Omit<T, 'rid'> & M3StoredDocument)[] = [];
    for (const r of ranked) {
      if (k !== undefined && out.length >= k) break;
      const text = this.closed ? undefined : this.readText(r.rid);
      if (text === undefined) continue;
      const { rid: _rid, ...rest } = r;
      out.push({ ...rest, text, metadata: copyMetadata(r.metadata) } as Omit<T, 'rid'> & M3StoredDocument);
    }
    return out;
  }

  /** The M3 rerank of stored documents `ids` (see {@link M3Store.rescore}); unknown ids are left out. */
  async rescore(query: M3Query, ids: readonly string[], options: M3RescoreOptions = {}): Promise<M3SearchResult[]> {
    const o = checkRescoreOptions(options, 'options', this.defaultWeights());
    this.checkColbertWeight(o.weights);
    const list = [...new Set(checkIdList(ids))];
    this.assertOpen();
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: o.weights[2] > 0 }, o.signal);
    this.assertOpen();
    this.refresh();
    const results = await this.scoreCandidates(q, list.filter((id) => this.mirror.docs.has(id)), o.weights);
    return this.withTexts(results, o.k);
  }

  private async single(mode: 'dense' | 'sparse', query: M3Query, options: M3SingleModeOptions): Promise<M3Hit[]> {
    const o = checkSingleModeOptions(options);
    this.assertOpen();
    this.refresh();
    if (this.mirror.docs.size === 0) return [];
    const q = await this.encodeQuery(query, mode === 'dense' ? { dense: true } : { sparse: true }, o.signal);
    this.assertOpen();
    this.refresh();
    const m = this.mirror;
    const filter = this.idFilter(o, m.docs);
    const hits = mode === 'dense' ? await m.dense.search(q.dense as Float32Array, o.k, filter ? { filter } : {}) : m.sparse.search(q.sparse as SparseVector, o.k, filter ? { filter } : {});
    const ranked = hits.flatMap((h) => {
      const d = this.mirror.docs.get(h.id);
      return d ? [{ id: h.id, rid: d.rid, metadata: d.metadata, score: h.score }] : [];
    });
    return this.withTexts(ranked, undefined);
  }

  /** Dense-only exact search (inner product of the normalised vectors). */
  searchDense(query: M3Query, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    return this.single('dense', query, options);
  }

  /** Sparse-only exact search (lexical matching score; documents sharing no token are not returned). */
  searchSparse(query: M3Query, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    return this.single('sparse', query, options);
  }
}

function threadsOf(o: { intraOpNumThreads?: number | undefined }): { intraOpNumThreads?: number } {
  return o.intraOpNumThreads !== undefined ? { intraOpNumThreads: o.intraOpNumThreads } : {};
}

function emptyMirror(meta: Pick<IndexMeta, 'dim' | 'modelId' | 'vocabSize'>, threads: { intraOpNumThreads?: number }): Mirror {
  return {
    dense: new DenseIndex({ dim: meta.dim, modelId: meta.modelId, ...threads }),
    sparse: new SparseIndex({ vocabSize: meta.vocabSize, modelId: meta.modelId }),
    docs: new Map(),
    idOfRid: new Map(),
    lastRid: 0,
    lastDeletion: 0,
  };
}

function checkEncoderMatches(enc: TextEncoder3 | undefined, meta: { modelId: string; dim: number; vocabSize: number }, dir: string, file: string): void {
  if (!enc) return;
  const diffs: string[] = [];
  if (enc.modelId !== meta.modelId) diffs.push(`model id ${JSON.stringify(meta.modelId)} (index) vs ${JSON.stringify(enc.modelId)} (encoder)`);
  if (enc.dim !== meta.dim) diffs.push(`dimension ${meta.dim} vs ${enc.dim}`);
  if (enc.vocabSize !== meta.vocabSize) diffs.push(`vocabulary size ${meta.vocabSize} vs ${enc.vocabSize}`);
  if (diffs.length) throw new M3Error('INDEX_MISMATCH', `${dir}: the index does not match the encoder: ${diffs.join('; ')}`, { file });
}

// Reads docs rows (checked: CRC, sizes, values) into the mirror. Into a new mirror (`bulk`: a load)
// the vectors go straight from the row bytes into the dense matrix and a sparse load buffer,
// built into the inverted index in one pass at the end: no arrays per row, no sparse rebuild,
// which is what loading 100,000 documents spends its time on otherwise. Into a live mirror (a
// reader following its writer) they are upserted in chunks.
function readDocRows(db: Db, file: string, meta: IndexMeta, crc: RowCrc, m: Mirror, afterRid: number, bulk = false): { n: number; rids: number[] } {
  const bulkIds: string[] = [];
  const bulkSparse = new SparseLoadBuffer(meta.vocabSize);
  let dense: { id: string; vector: Float32Array }[] = [];
  let sparse: { id: string; vector: SparseVector }[] = [];
  const rids: number[] = [];
  const flush = () => {
    m.dense.upsertMany(dense, { checked: true });
    m.sparse.upsertMany(sparse, { checked: true });
    dense = [];
    sparse = [];
  };
  try {
    // Chunks of rows by rid (inside the caller's read transaction): `all()` per chunk costs less
    // per row than an iterator's step per row, and the three blobs of a row come as one (a
    // byte-exact concatenation, split by their byte lengths): one Buffer per row instead of
    // three is a third of the allocations a 100k load makes.
    const stmt = db
      .prepare(
        `SELECT rid, id, typeof(metadata) = 'blob' AND typeof(dense) = 'blob' AND typeof(sparse) = 'blob', octet_length(dense), octet_length(sparse),
         CAST(dense || sparse || metadata AS BLOB), crc FROM docs WHERE rid > ? ORDER BY rid LIMIT ?`,
      )
      .raw(true);
    let after = afterRid;
    for (;;) {
      const chunk = stmt.all(after, LOAD_CHUNK) as [number, string, number, number, number, Buffer, number][];
      if (chunk.length === 0) break;
      for (const row of chunk) {
        const [rid, id, blobs, denseLength, sparseLength, bytes, rowCrc] = row;
        const what = `row ${rid}`;
        if (!Number.isSafeInteger(rid) || rid <= 0 || typeof id !== 'string' || blobs !== 1 || !(bytes instanceof Uint8Array) || denseLength + sparseLength > bytes.byteLength) {
          throw new M3Error('INDEX_INVALID', `${file}: ${what} has columns of the wrong type`, { file });
        }
        // Dense first (4·dim bytes), then sparse: the sparse weights stay 4-byte aligned for their views.
        const denseBytes = bytes.subarray(0, denseLength);
        const sparseBytes = bytes.subarray(denseLength, denseLength + sparseLength);
        const metadataBytes = bytes.subarray(denseLength + sparseLength);
        if (crc.docs(rid, id, metadataBytes, denseBytes, sparseBytes) !== rowCrc) {
          throw new M3Error('INDEX_INVALID', `${file}: ${what} (document ${JSON.stringify(id)}) fails its checksum (edited, damaged or from another index)`, { file });
        }
        try {
          checkId(id);
        } catch (err) {
          throw new M3Error('INDEX_INVALID', `${file}: ${what}: ${(err as Error).message}`, { file });
        }
        if (m.docs.has(id)) throw new M3Error('INDEX_INVALID', `${file}: duplicate id ${JSON.stringify(id)}`, { file });
        const metadata = readMetadata(file, metadataBytes, `metadata of ${what}`);
        if (bulk) {
          // The same checks as readDense / readSparse, on the bytes in place; a refusal is
          // reported by them (naming the fault), and is never skipped if their rules ever differ.
          if (!m.dense.appendBytes(id, denseBytes)) {
            readDense(file, denseBytes, meta.dim, what);
            throw new M3Error('INDEX_INVALID', `${file}: ${what}: invalid dense vector`, { file });
          }
          if (!bulkSparse.push(sparseBytes)) {
            readSparse(file, sparseBytes, meta.vocabSize, what);
            throw new M3Error('INDEX_INVALID', `${file}: ${what}: invalid sparse weights`, { file });
          }
          bulkIds.push(id);
        } else {
          dense.push({ id, vector: readDense(file, denseBytes, meta.dim, what) });
          sparse.push({ id, vector: readSparse(file, sparseBytes, meta.vocabSize, what) });
          if (dense.length >= LOAD_CHUNK) flush();
        }
        m.docs.set(id, { rid, metadata });
        m.idOfRid.set(rid, id);
        rids.push(rid);
        if (rid > m.lastRid) m.lastRid = rid;
        after = rid;
      }
    }
  } catch (err) {
    sqliteError(file, err, 'reading documents');
  }
  if (bulk) m.sparse.loadChecked(bulkIds, bulkSparse);
  else flush();
  return { n: rids.length, rids };
}

// How many rows `table` has, and whether their rids are exactly `rids` (ascending): one pass
// over the table's b-tree.
function matchRids(db: Db, table: 'texts', rids: readonly number[]): { rows: number; same: boolean } {
  let rows = 0;
  let same = true;
  for (const rid of db.prepare(`SELECT rid FROM ${table} ORDER BY rid`).pluck(true).iterate() as IterableIterator<number>) {
    if (rids[rows] !== rid) same = false;
    rows++;
  }
  return { rows, same: same && rows === rids.length };
}

// Loads what search needs of a database (inside the caller's read, or alone).
function loadMirror(db: Db, file: string, meta: IndexMeta, threads: { intraOpNumThreads?: number }): Mirror {
  const m = emptyMirror(meta, threads);
  const crc = new RowCrc(meta.uuid);
  const read = () => {
    // The recorded count sizes the dense matrix only up to what the file can hold (a row has at
    // least its dense vector), so a crafted count cannot allocate more than the file's size; the
    // rows read are then checked against it.
    const fileBytes = Number(db.pragma('page_count', { simple: true })) * Number(db.pragma('page_size', { simple: true }));
    m.dense.reserve(Math.min(meta.count, Math.floor(fileBytes / (4 * meta.dim))));
    const { n, rids } = readDocRows(db, file, meta, crc, m, 0, true);
    if (n !== meta.count) throw new M3Error('INDEX_INVALID', `${file}: ${n} documents, the index records ${meta.count}`, { file });
    // Every document has its text, and no other text exists.
    const texts = matchRids(db, 'texts', rids);
    if (!texts.same) throw new M3Error('INDEX_INVALID', `${file}: ${texts.rows} texts for ${n} documents, not one per document`, { file });
    // Without ColBERT vectors the table must be empty. With them, a missing row is found when it
    // is read (see readColbert): checking here would read a b-tree leaf per ColBERT row.
    if (meta.colbertPrecision === 'none') {
      const colbert = (db.prepare('SELECT count(*) FROM colbert').pluck(true).get() as number) ?? 0;
      if (colbert !== 0) throw new M3Error('INDEX_INVALID', `${file}: ${colbert} ColBERT rows for ${n} documents of an index without ColBERT vectors`, { file });
    }
    const last = db.prepare('SELECT max(seq) AS seq FROM deletions').get() as { seq: number | null };
    m.lastDeletion = Math.max(last.seq ?? 0, meta.deletionsTrimmed);
  };
  try {
    if (db.inTransaction) read();
    else {
      db.exec('BEGIN');
      try {
        read();
      } finally {
        db.exec('COMMIT');
      }
    }
  } catch (err) {
    sqliteError(file, err, 'loading the index');
  }
  m.sparse.compact();
  return m;
}

function isSameDir(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return resolve(a) === resolve(b);
  }
}

// Leftovers of a save or creation killed before its rename (only called under the writer lock).
function removeTemporaryFiles(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (name.startsWith(`${DB_FILE}.tmp-`)) {
      try {
        if (statSync(join(dir, name)).isFile()) rmSync(join(dir, name), { force: true });
      } catch {
        /* another cleanup got it */
      }
    }
  }
}
