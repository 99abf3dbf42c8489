/**
 * `POST /v1/embeddings`, OpenAI-compatible (and `GET /v1/models`, listing the one model) (dense vectors): `input` a string or an array of
 * strings, `encoding_format` `float` or `base64` (float32 little-endian, what the `openai` package
 * requests by default and decodes), `usage` token counts, errors in OpenAI's JSON shape. `model`
 * is accepted and ignored (clients always send one); the answer names the served model.
 */
import type { FastifyInstance } from 'fastify';
import { badRequest } from '../http-error.js';
import { clientSignal, usage, type ServeContext } from '../context.js';
import { bodyObject, optionalEnum, optionalInteger, textList } from '../validate.js';
import { float32ToBase64 } from '../wire-format.js';

export function registerOpenAiRoutes(app: FastifyInstance, ctx: ServeContext): void {
  // The one served model, for clients that list models before use.
  app.get('/v1/models', async () => ({ object: 'list', data: [{ id: ctx.modelName, object: 'model', created: 0, owned_by: 'bgem3' }] }));

  app.post('/v1/embeddings', async (request, reply) => {
    const body = bodyObject(request.body);
    if (body.input === undefined) throw badRequest('input is required: a string or an array of strings', 'input');
    const texts = textList(body.input, 'input');
    if (texts.length === 0) throw badRequest('input must not be an empty array', 'input');
    const format = optionalEnum(body, 'encoding_format', ['float', 'base64'] as const) ?? 'float';
    const dimensions = optionalInteger(body, 'dimensions', 1);
    if (dimensions !== undefined && dimensions !== ctx.encoder.dim) {
      throw badRequest(`dimensions must be ${ctx.encoder.dim} (this model's dense dimension), got ${dimensions}`, 'dimensions');
    }
    const results = await ctx.encode(texts, { want: { dense: true, sparse: false, colbert: false }, signal: clientSignal(request, reply) });
    return {
      object: 'list',
      data: results.map((r, index) => ({
        object: 'embedding',
        index,
        embedding: format === 'base64' ? float32ToBase64(r.dense!) : Array.from(r.dense!),
      })),
      model: ctx.modelName,
      usage: usage(results),
    };
  });
}
