/**
 * The served indexes (`--index NAME=DIR`), each an `M3Store` (the embedded `M3Index`) whose
 * encoder is the server's shared batcher, so documents and queries are batched with every other
 * request and cancelled with their own client:
 *
 *     GET    /v1/indexes                         the indexes and their sizes
 *     POST   /v1/indexes/NAME/documents          {documents: [{id?, text, metadata?}]} → {ids}
 *     GET    /v1/indexes/NAME/documents/ID       the stored document, or 404
 *     DELETE /v1/indexes/NAME/documents/ID       → {deleted: 0 | 1}
 *     POST   /v1/indexes/NAME/delete             {ids: [...]} → {deleted}
 *     POST   /v1/indexes/NAME/search             {query, k?, fetch_k?, rerank_depth?, weights?, where?} → hybrid hits with per-mode scores
 *
 * Durability: each index is opened with `M3Index.open` (created when `DIR` holds none), which
 * commits every add batch and delete (one fsynced SQLite transaction) before the call resolves,
 * so a write is answered only once it is on disk, and a kill at any moment leaves the index
 * loadable with every acknowledged write. The index holds its directory's writer lock: a second
 * server (or any other writer) on the same directory is refused at start.
 */
import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { invalidArgument } from '../../errors.js';
import { M3Index } from '../../retrieval/m3-index.js';
import type { M3Document, M3Store } from '../../store/types.js';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '../../types.js';
import { ApiError, badRequest } from '../http-error.js';
import { clientSignal, type ServeContext } from '../context.js';
import { bodyObject, describe, optionalInteger, optionalWeights, rejectUnknown } from '../validate.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** One served index. */
interface ServedIndex {
  readonly name: string;
  readonly dir: string;
  /** The routes use the store interface only. */
  readonly store: M3Store;
}

/** The indexes of one server, opened with an encoder that goes through the server's batcher. */
export class IndexRegistry {
  private readonly served = new Map<string, ServedIndex>();
  constructor(private readonly encoder: () => TextEncoder3) {}

  names(): string[] {
    return [...this.served.keys()];
  }

  get(name: string): ServedIndex {
    const s = this.served.get(name);
    if (!s) throw new ApiError(404, 'index_not_found', `no index named ${JSON.stringify(name)} (served: ${this.names().join(', ') || 'none'})`);
    return s;
  }

  /** Opens the index of `dir` as its writer (created when `dir` holds none). */
  async open(name: string, dir: string): Promise<void> {
    if (!NAME_RE.test(name)) invalidArgument(`index name ${JSON.stringify(name)} must be 1-64 letters, digits, '_', '.', '-'`);
    if (this.served.has(name)) invalidArgument(`index name ${JSON.stringify(name)} is given twice`);
    const path = resolve(dir);
    const store = await M3Index.open(path, { encoder: this.encoder() });
    this.served.set(name, { name, dir: path, store });
  }

  async close(): Promise<void> {
    const all = [...this.served.values()];
    this.served.clear();
    await Promise.all(all.map((s) => s.store.close()));
  }
}

/**
 * The server's encoder seen as a `TextEncoder3` whose calls go through the shared batcher with
 * the caller's signal (what the indexes encode with).
 */
export function batchedEncoder(ctx: () => ServeContext, base: TextEncoder3): TextEncoder3 {
  return {
    modelId: base.modelId,
    dim: base.dim,
    vocabSize: base.vocabSize,
    ...(base.colbertDim !== undefined ? { colbertDim: base.colbertDim } : {}),
    ...(base.maxLength !== undefined ? { maxLength: base.maxLength } : {}),
    encode(texts: readonly string[], o: EncodeOptions = {}): Promise<EncodeResult[]> {
      const signal = o.signal ?? new AbortController().signal;
      return ctx().encode(texts, {
        want: { dense: o.dense ?? true, sparse: o.sparse ?? false, colbert: o.colbert ?? false },
        signal,
        field: 'documents',
        perRequestLimits: false, // the request's documents were counted by the route
        ...(o.maxLength !== undefined ? { maxLength: o.maxLength } : {}),
      });
    },
  };
}

function documents(v: unknown, max: number): M3Document[] {
  if (!Array.isArray(v) || v.length === 0) throw badRequest(`documents must be a non-empty array of {id?, text, metadata?}, got ${describe(v)}`, 'documents');
  if (v.length > max) throw new ApiError(413, 'too_many_texts', `documents has ${v.length} entries; this server takes at most ${max} per request`, { param: 'documents' });
  return v.map((d: unknown, i: number): M3Document => {
    if (d === null || typeof d !== 'object' || Array.isArray(d)) throw badRequest(`documents[${i}] must be an object {id?, text, metadata?}, got ${describe(d)}`, 'documents');
    const o = d as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['id', 'text', 'metadata'].includes(k)) throw badRequest(`documents[${i}]: unknown field ${JSON.stringify(k)}`, 'documents');
    if (typeof o.text !== 'string') throw badRequest(`documents[${i}].text must be a string, got ${describe(o.text)}`, 'documents');
    if (o.id !== undefined && typeof o.id !== 'string') throw badRequest(`documents[${i}].id must be a string, got ${describe(o.id)}`, 'documents');
    if (o.metadata !== undefined && (o.metadata === null || typeof o.metadata !== 'object' || Array.isArray(o.metadata))) {
      throw badRequest(`documents[${i}].metadata must be an object, got ${describe(o.metadata)}`, 'documents');
    }
    return { text: o.text, ...(o.id !== undefined ? { id: o.id as string } : {}), ...(o.metadata !== undefined ? { metadata: o.metadata as Record<string, unknown> } : {}) };
  });
}

function idList(v: unknown): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw badRequest(`ids must be an array of strings, got ${describe(v)}`, 'ids');
  return v as string[];
}

export function registerIndexRoutes(app: FastifyInstance, ctx: ServeContext): void {
  const reg = ctx.indexes;
  type P = { Params: { name: string; id?: string } };

  app.get('/v1/indexes', async () => ({
    object: 'list',
    data: await Promise.all(reg.names().map(async (name) => ({ name, documents: await reg.get(name).store.count(), model: reg.get(name).store.modelId, dir: reg.get(name).dir }))),
  }));

  app.post<P>('/v1/indexes/:name/documents', async (request, reply) => {
    const index = reg.get(request.params.name);
    const body = bodyObject(request.body);
    rejectUnknown(body, ['documents']);
    const docs = documents(body.documents, ctx.limits.maxTexts);
    const ids = await index.store.add(docs, { signal: clientSignal(request, reply) });
    return { object: 'list', ids, documents: await index.store.count() };
  });

  app.get<P>('/v1/indexes/:name/documents/:id', async (request) => {
    const doc = await reg.get(request.params.name).store.get(request.params.id!);
    if (!doc) throw new ApiError(404, 'document_not_found', `no document ${JSON.stringify(request.params.id)} in index ${request.params.name}`);
    return doc;
  });

  app.delete<P>('/v1/indexes/:name/documents/:id', async (request) => {
    const index = reg.get(request.params.name);
    const deleted = await index.store.delete([request.params.id!]);
    return { deleted };
  });

  app.post<P>('/v1/indexes/:name/delete', async (request) => {
    const index = reg.get(request.params.name);
    const body = bodyObject(request.body);
    rejectUnknown(body, ['ids']);
    const deleted = await index.store.delete(idList(body.ids));
    return { deleted };
  });

  app.post<P>('/v1/indexes/:name/search', async (request, reply) => {
    const index = reg.get(request.params.name);
    const body = bodyObject(request.body);
    rejectUnknown(body, ['query', 'k', 'fetch_k', 'rerank_depth', 'weights', 'where']);
    if (typeof body.query !== 'string') throw badRequest(`query must be a string, got ${describe(body.query)}`, 'query');
    const k = optionalInteger(body, 'k', 1, 10_000);
    const fetchK = optionalInteger(body, 'fetch_k', 1, 100_000);
    const rerankDepth = optionalInteger(body, 'rerank_depth', 1, 200_000);
    const weights = optionalWeights(body);
    const results = await index.store.search(body.query, {
      ...(k !== undefined ? { k } : {}),
      ...(fetchK !== undefined ? { fetchK } : {}),
      ...(rerankDepth !== undefined ? { rerankDepth } : {}),
      ...(weights ? { weights } : {}),
      ...(body.where !== undefined ? { where: body.where as never } : {}),
      signal: clientSignal(request, reply),
    });
    return { object: 'list', data: results };
  });
}
