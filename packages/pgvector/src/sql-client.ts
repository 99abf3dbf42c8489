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
    return {
      async query<R extends SqlRow>(text: string, params: readonly unknown[] = []): Promise<R[]> {
        return (await db.query(text, params as unknown[])).rows as R[];
      },
      async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
        const conn: PoolClient = await db.connect();
        let broken: Error | undefined;
        // The pool stops listening for 'error' on a checked-out connection: without a listener of
        // our own, a socket dropped mid-transaction would be an uncaught exception. The failing
        // statement rejects anyway; the listener only marks the connection as unusable.
        const onError = (err: Error) => (broken ??= err);
        conn.on('error', onError);
        try {
          return await runTransaction(pgQueryable(conn), fn);
        } catch (err) {
          // A connection-level failure: destroy the connection instead of returning it to the pool.
          if (isConnectionError(err)) broken ??= err as Error;
          throw err;
        } finally {
          conn.off('error', onError);
          conn.release(broken);
        }
      },
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
