/**
 * `@bgem3/core/server`: serve one loaded BGE-M3 model over HTTP (OpenAI, TEI and M3 routes, hybrid
 * search over served indexes, Prometheus metrics). See {@link createServer}.
 */
export { createServer, type M3Server } from './server.js';
export type { ServerOptions, ServerEncoder, RequestLimits, BatchingOptions } from './options.js';
export { DEFAULT_BATCHING, DEFAULT_LIMITS } from './options.js';
export type { BatcherOptions } from './batcher.js';
export { ApiError } from './http-error.js';
