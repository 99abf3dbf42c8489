/**
 * The one seam between the store and a database driver. The store speaks plain SQL with `$n`
 * parameters, so the same code runs on a PostgreSQL server through `pg` and in-process on PGlite:
 * an adapter only has to run a statement and a transaction.
 *
 * Values the store sends: strings (text, vector literals, JSON), numbers, string arrays (`text[]`)
 * and Buffers (`bytea`). Values it reads: strings, numbers, parsed JSON (`jsonb`) and
 * Uint8Arrays (`bytea`) — which both drivers return by default.
 */
import type { Pool, PoolClient, Client } from 'pg';

/** A result row: column name → value. */
export type SqlRow = Record<string, unknown>;

/** Something that runs one statement. */
export interface SqlQueryable {
  /** Runs `text` with positional parameters `$1…$n` and resolves to the result rows. */
  query<R extends SqlRow = SqlRow>(text: string, params?: readonly unknown[]): Promise<R[]>;
}

/**
 * What {@link PgM3Store} needs from a database: statements, and transactions on one connection
 * (for batched writes and for `SET LOCAL hnsw.ef_search` before a search).
 */
export interface SqlClient extends SqlQueryable {
  /**
   * How the driver receives `bytea` values: `'binary'` when they arrive as bytes at no extra cost,
   * otherwise (undefined, `'text'`: `pg` and PGlite) as hex text, twice the bytes and slow to
   * decode, in which case the store selects large bytea values as base64 text (1.33×) and
   * decodes them itself.
   */
  readonly byteaFormat?: 'binary' | 'text';
  /**
   * Runs `COPY (<select>) TO STDOUT (FORMAT binary)` (`sql` is the whole COPY statement, with no
   * parameters: COPY takes none) and calls `onRow` with each row's fields as raw bytes (NULL:
   * null), in the server's binary format: a `bytea` arrives as its bytes, not as hex or base64
   * text. The buffers are valid only during the call (the driver reuses its read buffer): copy
   * what you keep. Optional: without it the store reads ColBERT bytes as base64 text.
   */
  copyBinary?(sql: string, onRow: (fields: readonly (Buffer | null)[]) => void): Promise<void>;
  /** How many statements the client runs at once, on separate connections (a pool: its size; default 1). */
  readonly parallelism?: number;
  /**
   * Runs `fn` inside BEGIN … COMMIT on one connection (ROLLBACK if it throws) and resolves to
   * its result. Statements of `fn` must go through the `tx` it receives.
   */
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
}

/** A `pg.Pool`, or anything with its `query`/`connect` shape. */
export type PgPoolLike = Pick<Pool, 'query' | 'connect'> & { totalCount: number; on?: Pool['on']; listenerCount?: Pool['listenerCount'] };

/** A single connected `pg.Client` (or a checked-out `PoolClient`). */
export type PgClientLike = Pick<Client, 'query'> & { on?: Client['on']; listenerCount?: Client['listenerCount'] };

function isPool(x: unknown): x is PgPoolLike {
  return typeof (x as PgPoolLike).connect === 'function' && typeof (x as PgPoolLike).totalCount === 'number';
}

/**
 * Adapts node-postgres. Prefer a `pg.Pool`: each transaction checks out its own connection and a
 * connection the server dropped (restart, failover, idle timeout) is discarded and replaced on
 * the next query. A single `pg.Client` works too, but its statements are serialised (a
 * transaction holds it exclusively) and it cannot reconnect once its connection is lost.
 *
 * A pool or client without an `'error'` listener gets a no-op one: node-postgres emits `'error'`
 * when an *idle* connection dies (e.g. the server restarts), and an unhandled `'error'` event
 * would crash the process. The pool already discards such a connection; the failure of a query
 * in flight still reaches its caller.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * const client = pgClient(new pg.Pool({ connectionString: process.env.DATABASE_URL }));
 * ```
 */
export function pgClient(db: PgPoolLike | PgClientLike): SqlClient {
  if (db === null || typeof db !== 'object' || typeof db.query !== 'function') {
    throw new TypeError('pgClient expects a pg.Pool or a connected pg.Client');
  }
  if (typeof db.on === 'function' && typeof db.listenerCount === 'function' && db.listenerCount('error') === 0) {
    (db.on as (event: 'error', listener: (err: Error) => void) => unknown)('error', () => undefined);
  }
  if (isPool(db)) {
    /** Checks out a connection for `fn`; one that failed on its socket is destroyed, not reused. */
    const withConnection = async <T>(fn: (conn: PoolClient) => Promise<T>): Promise<T> => {
      const conn: PoolClient = await db.connect();
      let broken: Error | undefined;
      // The pool stops listening for 'error' on a checked-out connection: without a listener of
      // our own, a socket dropped mid-transaction would be an uncaught exception. The failing
      // statement rejects anyway; the listener only marks the connection as unusable.
      const onError = (err: Error) => (broken ??= err);
      conn.on('error', onError);
      try {
        return await fn(conn);
      } catch (err) {
        // A connection-level failure: destroy the connection instead of returning it to the pool.
        if (isConnectionError(err)) broken ??= err as Error;
        throw err;
      } finally {
        conn.off('error', onError);
        conn.release(broken);
      }
    };
    const size = (db as { options?: { max?: unknown } }).options?.max;
    return {
      parallelism: typeof size === 'number' && Number.isSafeInteger(size) && size > 0 ? size : 10,
      copyBinary: (sql, onRow) => withConnection((conn) => copyBinaryOn(conn, sql, onRow)),
      async query<R extends SqlRow>(text: string, params: readonly unknown[] = []): Promise<R[]> {
        return (await db.query(text, params as unknown[])).rows as R[];
      },
      transaction: <T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> => withConnection((conn) => runTransaction(pgQueryable(conn), fn)),
    };
  }
  // One connection: a promise-chain mutex keeps a transaction's statements together.
  const conn = pgQueryable(db as PgClientLike);
  let lock: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = lock.then(fn, fn);
    lock = run.catch(() => undefined);
    return run;
  };
  return {
    parallelism: 1,
    copyBinary: (sql, onRow) => exclusive(() => copyBinaryOn(db as PgClientLike, sql, onRow)),
    query: <R extends SqlRow>(text: string, params: readonly unknown[] = []) => exclusive(() => conn.query<R>(text, params)),
    transaction: <T>(fn: (tx: SqlQueryable) => Promise<T>) => exclusive(() => runTransaction(conn, fn)),
  };
}

function pgQueryable(c: Pick<Client, 'query'>): SqlQueryable {
  return {
    async query<R extends SqlRow>(text: string, params: readonly unknown[] = []): Promise<R[]> {
      return (await c.query(text, params as unknown[])).rows as R[];
    },
  };
}

/** The signature and fixed header fields of PostgreSQL's binary COPY format. */
const COPY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/**
 * A parser of PostgreSQL's binary COPY stream (header, then per row an int16 field count and
 * per field an int32 length, -1 for NULL, and the bytes; a field count of -1 ends the stream),
 * fed the CopyData chunks in order. The server sends one row per CopyData message, so rows are
 * normally parsed in place; a row split over chunks is reassembled.
 */
export class BinaryCopyParser {
  private pending: Buffer | undefined;
  private headerDone = false;
  /** True once the trailer was read. */
  ended = false;

  constructor(private readonly onRow: (fields: readonly (Buffer | null)[]) => void) {}

  push(chunk: Buffer): void {
    const b = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let o = 0;
    if (!this.headerDone) {
      if (b.length < 19) return void (this.pending = b);
      if (!b.subarray(0, 11).equals(COPY_SIGNATURE)) throw new Error('COPY BINARY: the stream does not start with the PGCOPY signature');
      const extension = b.readUInt32BE(15);
      if (b.length < 19 + extension) return void (this.pending = b);
      o = 19 + extension;
      this.headerDone = true;
    }
    while (!this.ended && b.length - o >= 2) {
      const n = b.readInt16BE(o);
      if (n === -1) {
        this.ended = true;
        o += 2;
        break;
      }
      let p = o + 2;
      const fields: (Buffer | null)[] = [];
      for (let i = 0; i < n; i++) {
        if (b.length - p < 4) break;
        const len = b.readInt32BE(p);
        if (len === -1) {
          fields.push(null);
          p += 4;
          continue;
        }
        if (b.length - p - 4 < len) break;
        fields.push(b.subarray(p + 4, p + 4 + len));
        p += 4 + len;
      }
      if (fields.length < n) break; // the rest of this row is in the next chunk
      this.onRow(fields);
      o = p;
    }
    // A partial row is kept as a copy: the driver reuses its read buffer.
    if (o < b.length) this.pending = Buffer.from(b.subarray(o));
  }
}

/**
 * Runs a COPY … TO STDOUT (FORMAT binary) on one `pg` connection: a "submittable" (the interface
 * of pg-cursor and pg-copy-streams) that sends the statement with the simple query protocol and
 * receives the CopyData messages, which `pg` hands over as raw bytes. Its DataRow parsing cannot
 * be used for binary results: it decodes every field as UTF-8 text first.
 */
function copyBinaryOn(conn: Pick<Client, 'query'>, sql: string, onRow: (fields: readonly (Buffer | null)[]) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const parser = new BinaryCopyParser(onRow);
    let failed: unknown;
    let settled = false;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      if (err !== undefined) reject(err);
      else if (!parser.ended) reject(new Error('COPY BINARY: the stream ended without its trailer'));
      else resolve();
    };
    const submittable = {
      submit(connection: { query(text: string): void }) {
        connection.query(sql);
      },
      handleCopyData(msg: { chunk: Buffer }) {
        if (failed !== undefined) return;
        try {
          parser.push(msg.chunk);
        } catch (err) {
          failed = err;
        }
      },
      handleRowDescription() {},
      handleDataRow() {},
      handleCommandComplete() {},
      handleEmptyQuery() {},
      handlePortalSuspended() {},
      handleCopyInResponse(connection: { sendCopyFail(msg: string): void }) {
        connection.sendCopyFail('not a COPY FROM');
      },
      // A server error is followed by ReadyForQuery; a connection error is not: settle now.
      handleError(err: unknown) {
        settle(err);
      },
      handleReadyForQuery() {
        settle(failed);
      },
    };
    try {
      (conn.query as unknown as (s: unknown) => unknown)(submittable);
    } catch (err) {
      settle(err);
    }
  });
}

async function runTransaction<T>(conn: SqlQueryable, fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
  await conn.query('BEGIN');
  let result: T;
  try {
    result = await fn(conn);
  } catch (err) {
    await conn.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  await conn.query('COMMIT');
  return result;
}

/** The part of a PGlite instance the adapter uses (`PGlite`, `PGliteWorker`, …). */
export interface PGliteLike {
  query<R>(text: string, params?: unknown[]): Promise<{ rows: R[] }>;
  transaction<T>(fn: (tx: { query<R>(text: string, params?: unknown[]): Promise<{ rows: R[] }> }) => Promise<T>): Promise<T>;
}

/**
 * Adapts an in-process PGlite database (create it with the pgvector extension:
 * `new PGlite({ extensions: { vector } })` with `vector` from `@electric-sql/pglite-pgvector`).
 * PGlite is single-connection; it serialises statements and transactions itself.
 */
export function pgliteClient(db: PGliteLike): SqlClient {
  if (db === null || typeof db !== 'object' || typeof db.query !== 'function' || typeof db.transaction !== 'function') {
    throw new TypeError('pgliteClient expects a PGlite instance');
  }
  return {
    // PGlite receives bytea as hex text too, and decodes it slowly: 40 rows of 256 KB took 2.2 s
    // as bytea against 44–228 ms as base64 (measured), so the store asks for base64.
    byteaFormat: 'text',
    async query<R extends SqlRow>(text: string, params: readonly unknown[] = []): Promise<R[]> {
      return (await db.query<R>(text, [...params])).rows;
    },
    transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      return db.transaction((tx) =>
        fn({
          async query<R extends SqlRow>(text: string, params: readonly unknown[] = []): Promise<R[]> {
            return (await tx.query<R>(text, [...params])).rows;
          },
        }),
      );
    },
  };
}

/** SQLSTATE classes and Node error codes that mean "the connection, not the statement, failed". */
const CONNECTION_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const CONNECTION_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN', 'EHOSTUNREACH', 'ECONNABORTED']);

/**
 * True for failures of the connection rather than of the statement: the server closed or reset
 * the socket, shut down (SQLSTATE 57P0x), refused the connection, or a class 08 error. Such an
 * operation may be retried on a fresh connection; a statement error (syntax, constraint) may not.
 */
export function isConnectionError(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; errors?: unknown };
  if (typeof e.code === 'string') {
    if (e.code.startsWith('08') || CONNECTION_SQLSTATES.has(e.code) || CONNECTION_ERRNOS.has(e.code)) return true;
  }
  // node-postgres reports a dropped socket with plain Errors.
  if (typeof e.message === 'string' && /Connection terminated|connection error and is not queryable|Client was closed|not queryable/i.test(e.message)) return true;
  // An AggregateError from a multi-address connect (e.g. localhost → ::1 and 127.0.0.1).
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(isConnectionError)) return true;
  return false;
}
