/**
 * A store's query: a text, encoded once by the store's encoder with only the outputs the search
 * needs, or an encoding computed elsewhere; either way checked against the store's model (a NaN
 * or wrongly sized query is INVALID_ARGUMENT, never NaN scores).
 */
import { invalidArgument } from '../errors.js';
import type { EncodeResult, OutputSelection, TextEncoder3 } from '../types.js';
import type { M3Query } from './types.js';
import { checkQueryEncoding } from './validate.js';

/** What {@link resolveQuery} needs from the store. */
export interface QueryContext {
  /** Returns the store's encoder, or throws saying the store has none. Called only for text queries. */
  encoder: () => TextEncoder3;
  /** Dense and ColBERT dimension of the store. */
  dim: number;
  /** Vocabulary size of the store (bound of the sparse token ids). */
  vocabSize: number;
  /** Max tokens per text passed to the encoder (the encoder's own when undefined). */
  maxLength?: number;
  /** Stops the query's encoding. */
  signal?: AbortSignal;
}

/** Encodes `query` (only the outputs in `need`) or takes it as given, and checks those outputs. */
export async function resolveQuery(query: M3Query, need: OutputSelection, ctx: QueryContext): Promise<EncodeResult> {
  let q: EncodeResult;
  if (typeof query === 'string') {
    const [r] = await ctx.encoder().encode([query], { ...need, ...(ctx.maxLength ? { maxLength: ctx.maxLength } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) });
    q = r;
  } else if (query !== null && typeof query === 'object') {
    q = query;
  } else {
    invalidArgument('query must be a string or an EncodeResult');
  }
  return checkQueryEncoding(q, need, ctx);
}
