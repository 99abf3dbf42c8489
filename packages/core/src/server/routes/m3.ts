/**
 * The M3 routes: `POST /v1/m3/encode` (any of the three outputs from one pass; ColBERT as base64
 * float16 or float32 with its shape, sparse as `{indices, values}`) and `POST /v1/m3/score`
 * (FlagEmbedding's `compute_score`, its five keys per pair).
 */
import type { FastifyInstance } from 'fastify';
import type { M3Encoder } from '../../inference/encoder.js';
import { computeScore, type ScorePair } from '../../scoring/compute-score.js';
import type { EncodeOptions, EncodeResult, OutputSelection, TextEncoder3 } from '../../types.js';
import { badRequest } from '../http-error.js';
import { clientSignal, usage, type ServeContext } from '../context.js';
import { bodyObject, describe, optionalEnum, optionalInteger, optionalWeights, rejectUnknown, textList } from '../validate.js';
import { colbertToWire, float32ToBase64, sparseToWire } from '../wire-format.js';

const OUTPUTS = ['dense', 'sparse', 'colbert'] as const;

function outputs(v: unknown): Required<OutputSelection> {
  if (v === undefined || v === null) return { dense: true, sparse: false, colbert: false };
  if (!Array.isArray(v) || v.length === 0) throw badRequest(`outputs must be a non-empty array of "dense", "sparse", "colbert", got ${describe(v)}`, 'outputs');
  const want = { dense: false, sparse: false, colbert: false };
  for (const o of v) {
    if (!OUTPUTS.includes(o)) throw badRequest(`outputs: unknown output ${JSON.stringify(o)} (use "dense", "sparse", "colbert")`, 'outputs');
    want[o as (typeof OUTPUTS)[number]] = true;
  }
  return want;
}

/** One encoding in the wire format of `/v1/m3/encode`. */
function toWire(r: EncodeResult, index: number, denseFormat: 'float' | 'base64', colbertDtype: 'float32' | 'float16'): Record<string, unknown> {
  const o: Record<string, unknown> = { index, tokens: r.tokens, truncated: r.truncated };
  if (r.dense) o.dense = denseFormat === 'base64' ? float32ToBase64(r.dense) : Array.from(r.dense);
  if (r.sparse) o.sparse = sparseToWire(r.sparse);
  if (r.colbert) o.colbert = colbertToWire(r.colbert, colbertDtype);
  return o;
}

export function registerM3Routes(app: FastifyInstance, ctx: ServeContext): void {
  app.post('/v1/m3/encode', async (request, reply) => {
    const body = bodyObject(request.body);
    rejectUnknown(body, ['input', 'outputs', 'max_length', 'dense_format', 'colbert_dtype', 'model']);
    if (body.input === undefined) throw badRequest('input is required: a string or an array of strings', 'input');
    const texts = textList(body.input, 'input');
    const want = outputs(body.outputs);
    const maxLength = optionalInteger(body, 'max_length', 2, ctx.encoder.maxLength);
    const denseFormat = optionalEnum(body, 'dense_format', ['float', 'base64'] as const) ?? 'float';
    const colbertDtype = optionalEnum(body, 'colbert_dtype', ['float32', 'float16'] as const) ?? 'float32';
    const results = await ctx.encode(texts, { want, signal: clientSignal(request, reply), ...(maxLength !== undefined ? { maxLength } : {}) });
    return { object: 'list', model: ctx.modelName, data: results.map((r, i) => toWire(r, i, denseFormat, colbertDtype)), usage: usage(results) };
  });

  app.post('/v1/m3/score', async (request, reply) => {
    const body = bodyObject(request.body);
    rejectUnknown(body, ['pairs', 'weights', 'max_query_length', 'max_passage_length', 'batch_size', 'model']);
    if (!Array.isArray(body.pairs)) throw badRequest(`pairs must be an array of [query, passage] or {query, passage}, got ${describe(body.pairs)}`, 'pairs');
    const pairs = body.pairs.map((p: unknown, i: number): ScorePair => {
      const q = Array.isArray(p) ? p[0] : (p as { query?: unknown } | null)?.query;
      const d = Array.isArray(p) ? p[1] : (p as { passage?: unknown } | null)?.passage;
      if (typeof q !== 'string' || typeof d !== 'string' || (Array.isArray(p) && p.length !== 2)) {
        throw badRequest(`pairs[${i}] must be [query, passage] or {query, passage} with string values`, 'pairs');
      }
      return [q, d];
    });
    const weights = optionalWeights(body);
    const maxQueryLength = optionalInteger(body, 'max_query_length', 2, ctx.encoder.maxLength) ?? Math.min(512, ctx.encoder.maxLength);
    const maxPassageLength = optionalInteger(body, 'max_passage_length', 2, ctx.encoder.maxLength) ?? ctx.encoder.maxLength;
    const batchSize = optionalInteger(body, 'batch_size', 0) ?? 256;
    const signal = clientSignal(request, reply);
    const all: Required<OutputSelection> = { dense: true, sparse: true, colbert: true };
    let tokens = 0;
    // computeScore only calls `encode`: give it one that goes through the shared batcher.
    const viaBatcher: Pick<TextEncoder3, 'encode'> = {
      encode: async (texts: readonly string[], o: EncodeOptions = {}) => {
        const r = await ctx.encode(texts, { want: all, signal, field: 'pairs', ...(o.maxLength !== undefined ? { maxLength: o.maxLength } : {}) });
        tokens += r.reduce((s, x) => s + x.tokens, 0);
        return r;
      },
    };
    const scores = await computeScore(viaBatcher as unknown as M3Encoder, pairs, {
      maxQueryLength,
      maxPassageLength,
      batchSize,
      ...(weights ? { weights } : {}),
    });
    return {
      object: 'list',
      model: ctx.modelName,
      data: scores.map((s, index) => ({ index, ...s })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  });
}
