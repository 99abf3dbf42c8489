/**
 * Zero-setup embedded PostgreSQL: PGlite (Postgres compiled to WebAssembly, in-process) with the
 * pgvector extension. Its packages are optional peer dependencies, loaded only when this is used,
 * so applications talking to a real server never install them.
 */
import { M3Error } from '@bgem3/core';
import { pgliteClient, type PGliteLike, type SqlClient } from './sql-client.js';

/** Options of {@link openPglite}. */
export interface OpenPgliteOptions {
  /**
   * Where the database lives: a directory path (persistent, `file://` or a plain path), or
   * undefined for an in-memory database that disappears with the process.
   */
  dataDir?: string;
}

/** An open PGlite database and its {@link SqlClient}. */
export interface OpenedPglite {
  /** The PGlite instance (e.g. to serve it with `@electric-sql/pglite-socket`). */
  db: PGliteLike & { close(): Promise<void> };
  /** The adapter to pass to `PgM3Store.connect`. */
  client: SqlClient;
  /** Closes the database (flushes a dataDir). */
  close(): Promise<void>;
}

/**
 * Opens a PGlite database with pgvector loaded (needs `@electric-sql/pglite` and
 * `@electric-sql/pglite-pgvector` installed). Startup takes seconds (the WebAssembly Postgres
 * boots and, for a new dataDir, runs initdb): open once per process and share it.
 *
 * @example
 * ```ts
 * const { client, close } = await openPglite({ dataDir: './rag-db' });
 * const store = await PgM3Store.connect({ client, encoder });
 * ```
 */
export async function openPglite(options: OpenPgliteOptions = {}): Promise<OpenedPglite> {
  let PGlite: { create(dataDir?: string, options?: Record<string, unknown>): Promise<unknown> };
  let vector: unknown;
  try {
    ({ PGlite } = (await import('@electric-sql/pglite')) as unknown as { PGlite: typeof PGlite });
    ({ vector } = (await import('@electric-sql/pglite-pgvector')) as { vector: unknown });
  } catch (cause) {
    throw new M3Error(
      'INVALID_ARGUMENT',
      'openPglite needs the optional packages @electric-sql/pglite and @electric-sql/pglite-pgvector: npm i @electric-sql/pglite @electric-sql/pglite-pgvector',
      { cause },
    );
  }
  const db = (await PGlite.create(options.dataDir, { extensions: { vector } })) as OpenedPglite['db'];
  return { db, client: pgliteClient(db), close: () => db.close() };
}
