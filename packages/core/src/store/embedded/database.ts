/**
 * The on-disk form of the embedded M3Index: one SQLite database per index directory
 * (better-sqlite3), and a writer lock beside it.
 *
 *     <dir>/index.sqlite        the index (WAL mode: index.sqlite-wal, index.sqlite-shm beside it)
 *     <dir>/writer.lock         a small SQLite database the writer holds EXCLUSIVE-locked
 *
 * Why SQLite: it gives, for free and well tested, what an index that holds a real corpus needs —
 * atomic commit of a batch, crash safety (a kill -9 at any moment leaves the last committed state;
 * WAL with synchronous=FULL loses nothing committed), readers that never block and always see a
 * committed state, incremental writes (a commit writes the pages it changed, not the index), and
 * space reuse (freed pages are reused; `PRAGMA incremental_vacuum` gives them back to the OS).
 *
 * Tables (every row carries a CRC-32 of its content seeded with the index UUID and its row id, so
 * a row copied from another index — same ids — or edited in place is detected when read):
 *
 *     meta(key, value)                       format, version, uuid, model, dim, vocabSize,
 *                                            colbertPrecision, maxLength, batchSize, count,
 *                                            deletionsTrimmed, metaCrc (CRC of all of them)
 *     docs(rid, id, metadata, dense, sparse, crc)   read whole at load (what search needs in memory)
 *     texts(rid, text, crc)                  read for the hits returned
 *     colbert(rid, data, crc)                read for the candidates being reranked
 *     deletions(seq, rid)                    log of removed rows, so other processes' readers can
 *                                            follow a writer incrementally (trimmed by compaction)
 *
 * Row ids (`rid`) are AUTOINCREMENT: never reused, so a reader that knows the largest rid it has
 * loaded and the last deletion it applied can catch up with what a writer committed since.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { M3Error } from '../../errors.js';
import { crc32 } from '../../retrieval/binary-format.js';
import type { SparseVector } from '../../types.js';
import type { ColbertStorage } from '../colbert-codec.js';
import type { JsonObject } from '../types.js';

/** The database's file name inside an index directory. */
export const DB_FILE = 'index.sqlite';
/** The writer lock's file name inside an index directory. */
export const LOCK_FILE = 'writer.lock';
/** `meta.format` of an M3Index database. */
export const DB_FORMAT = 'bgem3-m3index-sqlite';
/** `meta.version` this build writes and reads. */
export const DB_VERSION = 2;
/** SQLite page size of new indexes: 16 KiB keeps a 256-vector int8 ColBERT blob to 17 overflow pages. */
export const PAGE_SIZE = 16384;

// better-sqlite3 is CommonJS; loaded lazily so that importing core does not load the native addon.
let sqlite: typeof BetterSqlite3 | undefined;
function Database(): typeof BetterSqlite3 {
  sqlite ??= createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
  return sqlite;
}

/** A better-sqlite3 connection. */
export type Db = BetterSqlite3.Database;
/** A prepared statement. */
export type Stmt = BetterSqlite3.Statement<unknown[]>;

/** The model and layout fields of an index (what `metaCrc` protects). */
export interface IndexIdentity {
  uuid: string;
  modelId: string;
  dim: number;
  vocabSize: number;
  colbertPrecision: ColbertStorage;
}

/** Everything in `meta`. */
export interface IndexMeta extends IndexIdentity {
  maxLength: number | null;
  batchSize: number;
  count: number;
  deletionsTrimmed: number;
}

const SCHEMA = `
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE docs(rid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, metadata BLOB NOT NULL, dense BLOB NOT NULL, sparse BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE texts(rid INTEGER PRIMARY KEY, text BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE colbert(rid INTEGER PRIMARY KEY, data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE deletions(seq INTEGER PRIMARY KEY AUTOINCREMENT, rid INTEGER NOT NULL);
`;

const SCHEMA_TABLES = new Map(
  SCHEMA.trim()
    .split('\n')
    .map((sql) => sql.replace(/;$/, ''))
    .map((sql) => [/^CREATE TABLE (\w+)\(/.exec(sql)![1], sql] as const),
);

/**
 * Checks that the database holds exactly this format's schema before anything runs on it: a
 * crafted file could carry triggers or views (plain SQL that would run on our own writes, e.g. a
 * trigger deleting rows) or tables of another shape. Only our five tables, SQLite's own
 * bookkeeping (sqlite_sequence, sqlite_stat*) and the automatic indexes of their constraints are
 * accepted.
 */
function checkSchema(db: Db, file: string): void {
  const rows = db.prepare('SELECT type, name, tbl_name AS tbl, sql FROM sqlite_schema').all() as { type: string; name: string; tbl: string; sql: string | null }[];
  const seen = new Set<string>();
  const norm = (sql: string) => sql.replace(/\s+/g, ' ').trim();
  for (const r of rows) {
    if (r.type === 'table' && SCHEMA_TABLES.has(r.name)) {
      if (r.sql === null || norm(r.sql) !== norm(SCHEMA_TABLES.get(r.name)!)) invalid(file, `table ${r.name} has another definition than this format's (${JSON.stringify(r.sql)})`);
      seen.add(r.name);
    } else if (r.type === 'table' && (r.name === 'sqlite_sequence' || /^sqlite_stat\d$/.test(r.name))) {
      // SQLite's own bookkeeping
    } else if (r.type === 'index' && r.sql === null && r.name.startsWith('sqlite_autoindex_') && SCHEMA_TABLES.has(r.tbl)) {
      // the automatic index of a PRIMARY KEY or UNIQUE constraint
    } else {
      invalid(file, `unexpected ${r.type} ${JSON.stringify(r.name)} in the index database: not this format's schema (a crafted or foreign file)`);
    }
  }
  for (const name of SCHEMA_TABLES.keys()) if (!seen.has(name)) invalid(file, `table ${name} is missing: not an index database of this format`);
}

function invalid(file: string, what: string, cause?: unknown): never {
  throw new M3Error('INDEX_INVALID', `${file}: ${what}`, { file, ...(cause !== undefined ? { cause } : {}) });
}

/** Wraps an SQLite error (corrupt file, I/O error, not a database) as INDEX_INVALID naming the file. */
export function sqliteError(file: string, err: unknown, doing: string): never {
  if (err instanceof M3Error) throw err;
  const code = (err as { code?: string }).code ?? '';
  // Disk and permission trouble is not corruption (a short read is: the file is truncated).
  if (code === 'SQLITE_FULL' || (code.startsWith('SQLITE_IOERR') && code !== 'SQLITE_IOERR_SHORT_READ') || code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM') {
    throw new M3Error('INVALID_ARGUMENT', `${file}: ${doing} failed: ${(err as Error).message} (${code})`, { file, cause: err });
  }
  invalid(file, `${doing} failed: ${(err as Error).message}${code ? ` (${code})` : ''}`, err);
}

function applyPragmas(db: Db, readOnly: boolean): void {
  db.pragma('cache_size = -16384'); // 16 MiB of page cache per connection
  if (!readOnly) {
    db.pragma('synchronous = FULL');
    db.pragma('journal_size_limit = 67108864');
  }
}

/** Opens an existing index database (INDEX_INVALID when it is not one). */
export function openDatabase(dir: string, readOnly: boolean): Db {
  const file = join(dir, DB_FILE);
  let db: Db;
  try {
    db = new (Database())(file, { readonly: readOnly, fileMustExist: true, timeout: 5000 });
  } catch (err) {
    sqliteError(file, err, 'opening the index database');
  }
  try {
    // Functions with side effects are never run from the schema (triggers, views, defaults).
    db.pragma('trusted_schema = OFF');
    checkSchema(db, file);
    applyPragmas(db, readOnly);
    if (!readOnly && db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL');
  } catch (err) {
    db.close();
    sqliteError(file, err, 'opening the index database');
  }
  return db;
}

/** Creates the schema and meta of a new index in an open, empty database. */
export function initDatabase(db: Db, identity: Omit<IndexIdentity, 'uuid'> & { maxLength: number | null; batchSize: number }, wal: boolean): IndexMeta {
  db.pragma(`page_size = ${PAGE_SIZE}`);
  db.pragma('auto_vacuum = INCREMENTAL');
  if (wal) db.pragma('journal_mode = WAL');
  applyPragmas(db, false);
  const meta: IndexMeta = { ...identity, uuid: randomUUID(), count: 0, deletionsTrimmed: 0 };
  db.transaction(() => {
    db.exec(SCHEMA);
    const put = db.prepare('INSERT INTO meta(key, value) VALUES (?, ?)');
    put.run('format', DB_FORMAT);
    put.run('version', String(DB_VERSION));
    writeMeta(db, meta);
  })();
  return meta;
}

/** The CRC of every meta field (an edited model, precision, count or setting is detected). */
export function metaCrc(m: IndexMeta): number {
  return crc32(Buffer.from(JSON.stringify([DB_FORMAT, DB_VERSION, m.uuid, m.modelId, m.dim, m.vocabSize, m.colbertPrecision, m.maxLength, m.batchSize, m.count, m.deletionsTrimmed])));
}

/** Writes every meta field (inside the caller's transaction). */
export function writeMeta(db: Db, m: IndexMeta): void {
  const put = db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
  put.run('uuid', m.uuid);
  put.run('modelId', m.modelId);
  put.run('dim', String(m.dim));
  put.run('vocabSize', String(m.vocabSize));
  put.run('colbertPrecision', m.colbertPrecision);
  put.run('maxLength', m.maxLength === null ? 'null' : String(m.maxLength));
  put.run('batchSize', String(m.batchSize));
  put.run('count', String(m.count));
  put.run('deletionsTrimmed', String(m.deletionsTrimmed));
  put.run('metaCrc', String(metaCrc(m)));
}

/** Reads and checks meta (INDEX_INVALID naming the field when anything is off). */
export function readMeta(db: Db, file: string): IndexMeta {
  let rows: { key: string; value: string }[];
  try {
    rows = db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[];
  } catch (err) {
    sqliteError(file, err, 'reading the index metadata');
  }
  const m = new Map(rows.map((r) => [r.key, r.value]));
  if (m.get('format') !== DB_FORMAT) invalid(file, `not an M3Index database (format ${JSON.stringify(m.get('format'))})`);
  if (m.get('version') !== String(DB_VERSION)) invalid(file, `unsupported M3Index format version ${JSON.stringify(m.get('version'))} (this build reads ${DB_VERSION})`);
  const int = (key: string, min: number, max: number): number => {
    const v = m.get(key);
    const n = v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : NaN;
    if (!(n >= min && n <= max)) invalid(file, `invalid meta field ${key}: ${JSON.stringify(v)}`);
    return n;
  };
  const uuid = m.get('uuid');
  if (typeof uuid !== 'string' || !/^[0-9a-f-]{36}$/.test(uuid)) invalid(file, `invalid meta field uuid: ${JSON.stringify(uuid)}`);
  const modelId = m.get('modelId');
  if (typeof modelId !== 'string' || modelId.length > 4096) invalid(file, 'invalid meta field modelId');
  const colbertPrecision = m.get('colbertPrecision') as ColbertStorage;
  if (!['int8', 'fp16', 'fp32', 'none'].includes(colbertPrecision)) invalid(file, `invalid meta field colbertPrecision: ${JSON.stringify(colbertPrecision)}`);
  const maxLengthText = m.get('maxLength');
  const meta: IndexMeta = {
    uuid,
    modelId,
    dim: int('dim', 1, 65536),
    vocabSize: int('vocabSize', 1, 0x7ffffffe),
    colbertPrecision,
    maxLength: maxLengthText === 'null' ? null : int('maxLength', 1, 1 << 20),
    batchSize: int('batchSize', 1, 1 << 20),
    count: int('count', 0, 0x7fffffff),
    deletionsTrimmed: int('deletionsTrimmed', 0, Number.MAX_SAFE_INTEGER),
  };
  if (m.get('metaCrc') !== String(metaCrc(meta))) invalid(file, 'meta checksum mismatch: its fields (model, dimension, vocabulary, precision, settings, count) were edited');
  return meta;
}

// ---------------------------------------------------------------------------------------------
// Row checksums

const utf8 = new TextEncoder();

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

/** Seeds of the row CRCs of one index (the UUID enters every row's checksum). */
export class RowCrc {
  private readonly seed: number;
  private readonly head = Buffer.alloc(9);
  private readonly lens = Buffer.alloc(16);
  private readonly idScratch = Buffer.alloc(4096);

  constructor(uuid: string) {
    this.seed = crc32(uuidBytes(uuid));
  }

  private start(table: number, rid: number): number {
    this.head.writeUInt8(table, 0);
    this.head.writeDoubleLE(rid, 1);
    return crc32(this.head, this.seed);
  }

  // Values read from a damaged or crafted file may be NULL, numbers or text instead of blobs: they
  // get a checksum no stored integer equals, so every caller's comparison refuses the row as
  // INDEX_INVALID instead of throwing a TypeError on them.
  private static blobs(...xs: unknown[]): boolean {
    return xs.every((x) => x instanceof Uint8Array);
  }

  /** The CRC of a docs row; `id` as its UTF-8 bytes or as the string (encoded into a scratch buffer: no allocation per row at load). */
  docs(rid: number, idOrBytes: Uint8Array | string, metadata: Uint8Array, dense: Uint8Array, sparse: Uint8Array): number {
    let id: Uint8Array;
    if (typeof idOrBytes === 'string') {
      // At most 3 UTF-8 bytes per UTF-16 unit, so a string that fits is never cut.
      id = idOrBytes.length * 3 <= this.idScratch.length ? this.idScratch.subarray(0, this.idScratch.write(idOrBytes, 0, 'utf8')) : Buffer.from(idOrBytes, 'utf8');
    } else id = idOrBytes;
    if (!RowCrc.blobs(id, metadata, dense, sparse) || !Number.isSafeInteger(rid)) return Number.NaN;
    const lens = this.lens;
    lens.writeUInt32LE(id.byteLength, 0);
    lens.writeUInt32LE(metadata.byteLength, 4);
    lens.writeUInt32LE(dense.byteLength, 8);
    lens.writeUInt32LE(sparse.byteLength, 12);
    let c = crc32(lens, this.start(1, rid));
    c = crc32(id, c);
    c = crc32(metadata, c);
    c = crc32(dense, c);
    return crc32(sparse, c);
  }

  text(rid: number, text: Uint8Array): number {
    if (!RowCrc.blobs(text) || !Number.isSafeInteger(rid)) return Number.NaN;
    return crc32(text, this.start(2, rid));
  }

  colbert(rid: number, data: Uint8Array): number {
    if (!RowCrc.blobs(data) || !Number.isSafeInteger(rid)) return Number.NaN;
    return crc32(data, this.start(3, rid));
  }
}

/** UTF-8 bytes of a string. */
export function utf8Bytes(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** The stored bytes of a dense vector (float32, little-endian). */
export function denseBytes(v: Float32Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** The stored bytes of sparse weights: n u32 token ids, then n f32 weights. */
export function sparseBytes(s: SparseVector): Buffer {
  const n = s.indices.length;
  const out = Buffer.allocUnsafe(8 * n);
  out.set(new Uint8Array(s.indices.buffer, s.indices.byteOffset, 4 * n), 0);
  out.set(new Uint8Array(s.values.buffer, s.values.byteOffset, 4 * n), 4 * n);
  return out;
}

/** Reads stored dense bytes (length checked against `dim` before anything is allocated). */
export function readDense(file: string, bytes: Uint8Array, dim: number, what: string): Float32Array {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength !== 4 * dim) invalid(file, `${what}: dense vector of ${bytes?.byteLength} bytes, expected ${4 * dim}`);
  const v = new Float32Array(dim);
  new Uint8Array(v.buffer).set(bytes);
  for (let i = 0; i < dim; i++) if (!Number.isFinite(v[i])) invalid(file, `${what}: dense value ${i} is not finite`);
  return v;
}

/** Reads stored sparse bytes: ids strictly ascending below `vocabSize`, weights finite and ≥ 0. */
export function readSparse(file: string, bytes: Uint8Array, vocabSize: number, what: string): SparseVector {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength % 8 !== 0) invalid(file, `${what}: sparse weights of ${bytes?.byteLength} bytes (not a multiple of 8)`);
  const n = bytes.byteLength / 8;
  const indices = new Uint32Array(n);
  const values = new Float32Array(n);
  new Uint8Array(indices.buffer).set(bytes.subarray(0, 4 * n));
  new Uint8Array(values.buffer).set(bytes.subarray(4 * n));
  let prev = -1;
  for (let i = 0; i < n; i++) {
    if (indices[i] <= prev || indices[i] >= vocabSize) invalid(file, `${what}: sparse token ids must ascend strictly below ${vocabSize}`);
    if (!(values[i] >= 0) || values[i] === Infinity) invalid(file, `${what}: sparse weight ${i} is not finite and ≥ 0`);
    prev = indices[i];
  }
  return { indices, values };
}

const fatal = new TextDecoder('utf-8', { fatal: true });

/** Decodes stored UTF-8 (INDEX_INVALID if it is not valid UTF-8). */
export function readUtf8(file: string, bytes: Uint8Array, what: string): string {
  try {
    return fatal.decode(bytes);
  } catch {
    invalid(file, `${what} is not valid UTF-8`);
  }
}

/** Parses stored metadata JSON (an object). */
export function readMetadata(file: string, bytes: Uint8Array, what: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(readUtf8(file, bytes, what));
  } catch (err) {
    if (err instanceof M3Error) throw err;
    invalid(file, `${what} is not valid JSON`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) invalid(file, `${what} is not a JSON object`);
  return v as JsonObject;
}

export { utf8 };

// ---------------------------------------------------------------------------------------------
// The writer lock

/**
 * The writer lock of an index directory: `writer.lock`, a SQLite database opened in EXCLUSIVE
 * locking mode with a write, so the OS lock (fcntl, per inode — SQLite also makes two
 * connections of one process conflict) is held until {@link WriterLock.release} or the process
 * ends, however it ends: a kill -9 leaves nothing stale behind.
 */
export class WriterLock {
  private constructor(
    private db: Db | undefined,
    readonly file: string,
  ) {}

  /**
   * Takes the lock of `dir`, waiting up to `timeoutMs`; INDEX_LOCKED naming the lock file when
   * another writer holds it.
   */
  static acquire(dir: string, timeoutMs: number): WriterLock {
    const file = join(dir, LOCK_FILE);
    let db: Db;
    try {
      db = new (Database())(file, { timeout: Math.max(0, timeoutMs) });
    } catch (err) {
      sqliteError(file, err, 'opening the writer lock');
    }
    try {
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = DELETE');
      db.exec('CREATE TABLE IF NOT EXISTS writer(pid INTEGER, since TEXT)');
      db.exec('BEGIN IMMEDIATE');
      db.prepare('DELETE FROM writer').run();
      db.prepare('INSERT INTO writer VALUES (?, ?)').run(process.pid, new Date().toISOString());
      db.exec('COMMIT');
    } catch (err) {
      try {
        db.close();
      } catch {
        /* already closed */
      }
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
        throw new M3Error(
          'INDEX_LOCKED',
          `${dir}: another writer holds the index's lock ${file} (one writer per index: close the other M3Index or process, or open this one with { readOnly: true }${timeoutMs > 0 ? `; waited ${timeoutMs} ms` : '; pass lockTimeoutMs to wait'})`,
          { file, cause: err },
        );
      }
      sqliteError(file, err, 'taking the writer lock');
    }
    return new WriterLock(db, file);
  }

  /**
   * {@link acquire} without blocking the event loop while it waits: tries at once, then every
   * 25 ms until `timeoutMs` has passed (INDEX_LOCKED then).
   */
  static async acquireAsync(dir: string, timeoutMs: number): Promise<WriterLock> {
    const deadline = Date.now() + Math.max(0, timeoutMs);
    for (;;) {
      try {
        return WriterLock.acquire(dir, 0);
      } catch (err) {
        if (!(err instanceof M3Error && err.code === 'INDEX_LOCKED') || Date.now() >= deadline) {
          if (err instanceof M3Error && err.code === 'INDEX_LOCKED' && timeoutMs > 0) err.message = err.message.replace('; pass lockTimeoutMs to wait', `; waited ${timeoutMs} ms`);
          throw err;
        }
      }
      await new Promise((r) => setTimeout(r, Math.min(25, Math.max(1, deadline - Date.now()))));
    }
  }

  /** Releases the lock (idempotent). */
  release(): void {
    const db = this.db;
    this.db = undefined;
    try {
      db?.close();
    } catch {
      /* closing releases the OS lock in any case */
    }
  }
}

/** fsyncs a file or directory (best effort for directories on filesystems that refuse it). */
export function fsyncPath(path: string, directory = false): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch (err) {
    if (!directory) throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Opens a new (not yet existing or empty) database file for writing. */
export function createDatabaseFile(file: string): Db {
  try {
    return new (Database())(file, { timeout: 5000 });
  } catch (err) {
    sqliteError(file, err, 'creating the index database');
  }
}

/** An anonymous on-disk database (SQLite deletes it when closed; nothing is left after a crash). */
export function createTemporaryDatabase(): Db {
  return new (Database())('');
}
