/**
 * A store's query: a string to encode, or a precomputed encoding, checked against the store's
 * dimension. Shared by M3Index and the database stores (@bgem3/pgvector), which accept the same.
 */
import { invalidArgument } from '../errors.js';
import type { EncodeResult, OutputSelection, TextEncoder3 } from '../types.js';

export interface QueryContext {
  /** Returns the store's encoder, or throws saying the store has none. Called only for strings. */
  encoder: () => TextEncoder3;
  /** Dense and ColBERT dimension of the store. */
  dim: number;
  /** Max tokens per text passed to the encoder (the encoder's own when undefined). */
  maxLength?: number;
  /** A store's own check of the sparse weights (default: present, with Uint32Array indices). */
  checkSparse?: (sparse: EncodeResult['sparse']) => void;
}

/**
 * Encodes `query` (only the outputs in `need`) or takes it as a precomputed EncodeResult, and
 * checks its dense and ColBERT dimensions, and its sparse weights (`ctx.checkSparse`, or that
 * they are present).
 */
export async function resolveQuery(query: string | EncodeResult, need: OutputSelection, ctx: QueryContext): Promise<EncodeResult> {
  let q: EncodeResult;
  if (typeof query === 'string') {
    const [r] = await ctx.encoder().encode([query], { ...need, ...(ctx.maxLength ? { maxLength: ctx.maxLength } : {}) });
    q = r;
  } else if (query !== null && typeof query === 'object') {
    q = query;
  } else {
    invalidArgument('query must be a string or an EncodeResult');
  }
  if (need.dense && (!(q?.dense instanceof Float32Array) || q.dense.length !== ctx.dim)) invalidArgument(`the query needs a dense vector of ${ctx.dim} values`);
  if (need.sparse) {
    if (ctx.checkSparse) ctx.checkSparse(q?.sparse);
    else if (!(q?.sparse?.indices instanceof Uint32Array)) invalidArgument('the query needs sparse weights');
  }
  if (need.colbert && (!(q?.colbert?.data instanceof Float32Array) || q.colbert.dim !== ctx.dim)) invalidArgument(`the query needs ColBERT vectors of dimension ${ctx.dim}`);
  return q;
}
