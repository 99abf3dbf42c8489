/**
 * @bgem3/pgvector for the reliability tests, from its build (the workspace's test package does not
 * depend on it; its own dependencies, PGlite included, resolve from its directory). The store it
 * exports shares @bgem3/core with the adapters: the same M3Error class and store checks.
 */
export { PgM3Store, openPglite, type OpenedPglite } from '../../packages/pgvector/dist/index.js';
