/**
 * `createServer(options)`: one loaded BGE-M3 model shared over HTTP (fastify), speaking the APIs
 * clients already have: OpenAI `/v1/embeddings`, TEI `/embed`, `/embed_sparse`, `/rerank`,
 * `/info`, and the M3 routes (`/v1/m3/encode`, `/v1/m3/score`, `/v1/indexes/NAME/...`), plus
 * `GET /health` and `GET /metrics` (Prometheus).
 *
 * Requests are batched together across clients (a token budget and a maximum wait), the queue is
 * bounded (429 with Retry-After when full, 503 while shutting down), every request has limits on
 * texts, tokens and body bytes, a client that disconnects cancels only its own share of the work,
 * and {@link M3Server.close} stops accepting, drains what is in flight, then releases the model.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { checkModel, type CheckEncoder, type CheckResult } from '../check/index.js';
import { M3Encoder } from '../inference/encoder.js';
import { invalidArgument } from '../errors.js';
import { BearerKey } from './auth.js';
import { EncodeBatcher, type BatcherOptions } from './batcher.js';
import { ServeContext } from './context.js';
import { ApiError, errorBody, toApiError, type ErrorDialect } from './http-error.js';
import { ServerMetrics } from './metrics.js';
import { DEFAULT_BATCHING, DEFAULT_LIMITS, type RequestLimits, type ServerEncoder, type ServerOptions } from './options.js';
import { registerM3Routes } from './routes/m3.js';
import { registerOpenAiRoutes } from './routes/openai.js';
import { registerTeiRoutes } from './routes/tei.js';
import { IndexRegistry, batchedEncoder, registerIndexRoutes } from './routes/indexes.js';

/** A running (or ready to run) server. */
export interface M3Server {
  /** The fastify instance (add routes or hooks before {@link listen}). */
  readonly app: FastifyInstance;
  /** The encoder being served. */
  readonly encoder: ServerEncoder;
  /** `http://host:port` once listening. */
  readonly url: string | undefined;
  /** Starts listening; resolves with the URL. */
  listen(): Promise<string>;
  /**
   * Graceful shutdown: stops accepting connections, lets the requests in flight finish (up to
   * `drainTimeoutMs`), makes the indexes durable and closes them, then closes the encoder if the
   * server loaded it. Idempotent.
   */
  close(): Promise<void>;
}

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) invalidArgument(`${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function checkBatching(b: Partial<BatcherOptions> | undefined): BatcherOptions {
  const o = { ...DEFAULT_BATCHING, ...(b ?? {}) };
  for (const k of ['maxBatchTexts', 'maxBatchTokens', 'aloneAbove', 'maxInflight', 'maxQueueTokens', 'maxQueueTexts'] as const) positiveInt(o[k], `batching.${k}`);
  if (typeof o.maxWaitMs !== 'number' || !Number.isFinite(o.maxWaitMs) || o.maxWaitMs < 0) invalidArgument(`batching.maxWaitMs must be a number ≥ 0, got ${o.maxWaitMs}`);
  return o;
}

function checkLimits(l: RequestLimits | undefined): Required<RequestLimits> {
  const o = { ...DEFAULT_LIMITS, ...(l ?? {}) };
  positiveInt(o.bodyLimit, 'limits.bodyLimit');
  positiveInt(o.maxTexts, 'limits.maxTexts');
  positiveInt(o.maxTokens, 'limits.maxTokens');
  return o;
}

/**
 * Creates the server: loads the model when `options.model` is given (or serves `options.encoder`,
 * which it then does not close), runs the model check, opens the indexes. Call
 * {@link M3Server.listen} to accept connections and {@link M3Server.close} to drain and stop.
 *
 * @example
 * const server = await createServer({ model: 'BAAI/bge-m3', indexes: { docs: './my-index' }, apiKey: process.env.KEY });
 * console.log(await server.listen()); // http://127.0.0.1:8080
 * process.once('SIGTERM', () => void server.close());
 */
export async function createServer(options: ServerOptions = {}): Promise<M3Server> {
  if (!options.encoder && !options.model) invalidArgument('createServer needs an encoder or a model (a directory or a Hub repo id)');
  const batching = checkBatching(options.batching);
  const limits = checkLimits(options.limits);
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 8080;
  if (!Number.isInteger(port) || port < 0 || port > 65535) invalidArgument(`port must be an integer from 0 to 65535, got ${port}`);
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const log = options.log ?? (() => undefined);
  const key = options.apiKey !== undefined ? new BearerKey(options.apiKey) : undefined;

  const owned = !options.encoder;
  const encoder: ServerEncoder = options.encoder ?? (await M3Encoder.load(options.model, options.load));
  // The model check, once, before serving: `GET /health` reports it (and is 503 when it failed).
  let modelCheck: Pick<CheckResult, 'ok' | 'applies' | 'verified' | 'summary' | 'failures' | 'checkedAt'> | { ok: false; error: string } | undefined;
  if (options.modelCheck !== false && (encoder as Partial<CheckEncoder>).tokenizer !== undefined) {
    try {
      // The check's tolerance depends on the weights: a q8 model is held to the measured int8 drift.
      const dtype = options.load?.dtype ?? (options.modelDtype === 'int8' ? 'q8' : undefined);
      const r = await checkModel(encoder as unknown as CheckEncoder, dtype ? { dtype } : {});
      modelCheck = { ok: r.ok, applies: r.applies, verified: r.verified, summary: r.summary, failures: r.failures, checkedAt: r.checkedAt };
      log(`model check: ${r.summary}`);
    } catch (e) {
      modelCheck = { ok: false, error: (e as Error).message };
      log(`model check failed to run: ${(e as Error).message}`);
    }
  }

  let batcher!: EncodeBatcher;
  const metrics = new ServerMetrics(() => batcher);
  batcher = new EncodeBatcher(encoder, batching, {
    batch: (texts, padded, real, seconds) => metrics.batch(texts, padded, real, seconds),
    queueWait: (s) => metrics.queueWait.observe(s),
  });
  let ctx!: ServeContext;
  const indexes = new IndexRegistry(() => batchedEncoder(() => ctx, encoder));
  ctx = new ServeContext({
    encoder,
    limits,
    batcher,
    batching,
    metrics,
    modelName: options.modelName ?? encoder.modelId,
    modelDtype: options.modelDtype ?? (options.load?.dtype === 'q8' ? 'int8' : 'float32'),
    autoTruncate: options.autoTruncate ?? true,
    indexes,
  });
  try {
    for (const [name, dir] of Object.entries(options.indexes ?? {})) await indexes.open(name, dir);
  } catch (e) {
    await indexes.close();
    if (owned) await encoder.close?.();
    throw e;
  }

  const app = Fastify({
    logger: false,
    bodyLimit: limits.bodyLimit,
    // Idle keep-alive connections are closed at shutdown; requests arriving meanwhile get 503
    // from the onRequest hook below (in the route's error shape, with Retry-After).
    forceCloseConnections: 'idle',
    return503OnClosing: false,
    requestTimeout: 120_000,
    // Document ids in paths (/v1/indexes/NAME/documents/ID) may be 512 characters, percent-encoded.
    routerOptions: { maxParamLength: 8192 },
  });

  let draining = false;
  const started = Date.now();

  app.setErrorHandler((err, request, reply) => {
    const { api, unexpected } = toApiError(err);
    if (unexpected) log(`error on ${request.method} ${request.url}: ${(err as Error)?.stack ?? String(err)}`);
    metrics.errors.inc({ code: api.code });
    if (api.retryAfter !== undefined) reply.header('retry-after', String(api.retryAfter));
    const dialect = ((request.routeOptions.config as { dialect?: ErrorDialect } | undefined)?.dialect ?? 'openai') as ErrorDialect;
    return reply.status(api.status).send(errorBody(api, dialect));
  });
  app.setNotFoundHandler((request, reply) => {
    const api = new ApiError(404, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
    metrics.errors.inc({ code: api.code });
    return reply.status(404).send(errorBody(api, 'openai'));
  });
  app.addHook('onRequest', async (request) => {
    if (draining && request.url !== '/health') throw new ApiError(503, 'shutting_down', 'the server is shutting down', { retryAfter: 1 });
    if (key && !(request.method === 'GET' && request.url === '/health') && !key.accepts(request.headers.authorization)) {
      throw new ApiError(401, 'invalid_api_key', 'missing or wrong API key: send Authorization: Bearer <key>');
    }
  });
  let active = 0;
  app.addHook('onRequest', async (_request, reply) => {
    active++;
    reply.raw.once('close', () => active--); // answered or abandoned alike
  });
  // While draining, every answer closes its connection: keep-alive connections would otherwise
  // hold the shutdown until the drain timeout.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (draining) reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requestDuration.observe(
      { route: request.routeOptions.url ?? 'unknown', method: request.method, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  registerOpenAiRoutes(app, ctx);
  registerTeiRoutes(app, ctx);
  registerM3Routes(app, ctx);
  registerIndexRoutes(app, ctx);

  app.get('/health', async (_request, reply) => {
    const status = draining ? 'draining' : modelCheck && !modelCheck.ok ? 'model_check_failed' : 'ok';
    if (status !== 'ok') reply.status(503);
    return {
      status,
      model: ctx.modelName,
      uptime_seconds: Math.round((Date.now() - started) / 1000),
      // Requests being handled, this one included.
      requests_inflight: active,
      queue: { texts: batcher.queuedTexts, tokens: batcher.queuedTokenCount, batches_inflight: batcher.inflightBatches },
      indexes: indexes.names(),
      ...(modelCheck ? { model_check: modelCheck } : {}),
    };
  });
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  let url: string | undefined;
  let closing: Promise<void> | undefined;
  const server: M3Server = {
    app,
    encoder,
    get url() {
      return url;
    },
    async listen() {
      const address = await app.listen({ host, port });
      const a = app.server.address();
      url = a && typeof a === 'object' ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : address;
      log(`bgem3 serve: ${ctx.modelName} on ${url}`);
      return url;
    },
    close() {
      closing ??= (async () => {
        draining = true;
        log('draining: no new requests; finishing those in flight');
        const timer = setTimeout(() => {
          log(`drain timeout (${drainTimeoutMs} ms): closing the remaining connections`);
          app.server.closeAllConnections?.();
        }, drainTimeoutMs);
        try {
          await app.close();
          await batcher.drain();
        } finally {
          clearTimeout(timer);
          await indexes.close();
          if (owned) await encoder.close?.();
        }
        log('stopped');
      })();
      return closing;
    },
  };
  return server;
}
