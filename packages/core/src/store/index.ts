/** The store layer: the `M3Store` interface and the checks and ingestion every store shares. */
export * from './types.js';
export * from './where.js';
export * from './validate.js';
export * from './options.js';
export * from './ingest.js';
export * from './query.js';
