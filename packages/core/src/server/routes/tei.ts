/**
 * Hugging Face text-embeddings-inference's routes, with TEI's request and response shapes:
 * `POST /embed` (dense), `POST /embed_sparse` (here the M3 lexical weights, `[{index, value}]`
 * per text, ids ascending; TEI itself serves SPLADE only), `POST /rerank` (ColBERT MaxSim or the
 * M3 All score; TEI reranks with cross-encoders) and `GET /info`.
 */
import type { FastifyInstance } from 'fastify';
import { m3Rerank, type M3Encoded } from '../../retrieval/m3-rerank.js';
import type { M3Weights } from '../../scoring/weights.js';
import { badRequest } from '../http-error.js';
import { clientSignal, type ServeContext } from '../context.js';
import { bodyObject, optionalBoolean, optionalEnum, optionalWeights, textList, type Body } from '../validate.js';

const tei = { config: { dialect: 'tei' } };

/** TEI's `truncate` and `truncation_direction` (only "Right": M3 keeps the start, as FlagEmbedding). */
function truncation(body: Body, ctx: ServeContext): boolean {
  const dir = optionalEnum(body, 'truncation_direction', ['Right', 'Left', 'right', 'left'] as const);
  if (dir !== undefined && dir.toLowerCase() === 'left') throw badRequest('truncation_direction "Left" is not supported: M3 truncates on the right, as FlagEmbedding does', 'truncation_direction');
  if (body.prompt_name !== undefined && body.prompt_name !== null) throw badRequest('prompt_name is not supported: BGE-M3 uses no prompts', 'prompt_name');
  return optionalBoolean(body, 'truncate') ?? ctx.autoTruncate;
}

export function registerTeiRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.post('/embed', tei, async (request, reply) => {
    const body = bodyObject(request.body);
    const texts = textList(body.inputs, 'inputs');
    if (optionalBoolean(body, 'normalize') === false) throw badRequest('normalize: false is not supported: the M3 dense vector is the normalised CLS vector', 'normalize');
    const truncate = truncation(body, ctx);
    const results = await ctx.encode(texts, { want: { dense: true, sparse: false, colbert: false }, signal: clientSignal(request, reply), truncate, field: 'inputs' });
    return results.map((r) => Array.from(r.dense!));
  });

  app.post('/embed_sparse', tei, async (request, reply) => {
    const body = bodyObject(request.body);
    const texts = textList(body.inputs, 'inputs');
    const truncate = truncation(body, ctx);
    const results = await ctx.encode(texts, { want: { dense: false, sparse: true, colbert: false }, signal: clientSignal(request, reply), truncate, field: 'inputs' });
    return results.map((r) => Array.from(r.sparse!.indices, (index, i) => ({ index, value: r.sparse!.values[i] })));
  });

  app.post('/rerank', tei, async (request, reply) => {
    const body = bodyObject(request.body);
    if (typeof body.query !== 'string') throw badRequest(`query must be a string, got ${body.query === null ? 'null' : typeof body.query}`, 'query');
    const texts = textList(body.texts, 'texts');
    const truncate = truncation(body, ctx);
    const returnText = optionalBoolean(body, 'return_text') ?? false;
    optionalBoolean(body, 'raw_scores'); // accepted: these scores are similarities, there is no logit to squash
    const mode = optionalEnum(body, 'mode', ['colbert', 'all'] as const) ?? 'colbert';
    const given = optionalWeights(body);
    if (given && mode !== 'all') throw badRequest('weights apply to mode "all" only', 'weights');
    const weights: M3Weights = mode === 'colbert' ? [0, 0, 1] : (given ?? [0.4, 0.2, 0.4]);
    const signal = clientSignal(request, reply);
    const all = { dense: true, sparse: true, colbert: true };
    const [encoded, q] = await Promise.all([
      ctx.encode(texts, { want: all, signal, truncate, field: 'texts' }),
      ctx.encode([body.query], { want: all, signal, truncate, field: 'query' }),
    ]);
    const hits = await m3Rerank(q[0] as M3Encoded, encoded as M3Encoded[], { weights });
    return hits.map((h) => ({ index: h.index, score: h.score, ...(returnText ? { text: texts[h.index] } : {}) }));
  });

  app.get('/info', tei, async () => ({
    model_id: ctx.modelName,
    model_sha: null,
    model_dtype: ctx.modelDtype,
    model_type: { embedding: { pooling: 'cls' } },
    max_concurrent_requests: ctx.batcherOptions.maxQueueTexts,
    max_input_length: ctx.encoder.maxLength,
    max_batch_tokens: ctx.batcherOptions.maxBatchTokens,
    max_batch_requests: ctx.batcherOptions.maxBatchTexts,
    max_client_batch_size: ctx.limits.maxTexts,
    max_client_tokens: ctx.limits.maxTokens,
    max_body_bytes: ctx.limits.bodyLimit,
    auto_truncate: ctx.autoTruncate,
    tokenization_workers: 1,
    version: ctx.version,
    // The M3 fields (what RemoteEncoder reads).
    m3: {
      model_id: ctx.encoder.modelId,
      dim: ctx.encoder.dim,
      colbert_dim: ctx.encoder.colbertDim ?? ctx.encoder.dim,
      vocab_size: ctx.encoder.vocabSize,
      max_length: ctx.encoder.maxLength,
      outputs: ['dense', 'sparse', 'colbert'],
      indexes: ctx.indexNames(),
    },
  }));
}
