/**
 * An LRU cache of full encodings (dense + sparse + ColBERT), keyed by model, max length and
 * text. It is what lets the embeddings class, the sparse retriever and the reranker share one
 * forward pass per text: whichever asks first computes all three outputs, the others hit.
 */
import { createHash } from 'node:crypto';
import type { FullEncodeResult } from '../types.js';

/** Bytes an entry holds beyond its arrays: the Map entry, the result and array objects, buffers. */
const ENTRY_OVERHEAD = 400;

/** What one entry costs: its arrays, its key (UTF-16, as V8 may hold it) and the objects around them. */
function sizeOf(key: string, r: FullEncodeResult): number {
  return r.dense.byteLength + r.sparse.indices.byteLength + r.sparse.values.byteLength + r.colbert.data.byteLength + 2 * key.length + ENTRY_OVERHEAD;
}

export class EncodeCache {
  private readonly map = new Map<string, FullEncodeResult>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  /**
   * @param maxBytes memory budget of the cache, keys and bookkeeping included (ColBERT vectors
   *   dominate: ~4·dim bytes per token).
   */
  constructor(readonly maxBytes: number) {}

  /**
   * The key of a text: model, max length and the text's SHA-256 (not the text itself, which may
   * be megabytes: the budget would then be spent on keys). Lone surrogates hash as U+FFFD, as
   * they are also encoded.
   */
  static key(modelId: string, maxLength: number, text: string): string {
    return `${modelId}\u0000${maxLength}\u0000${createHash('sha256').update(text).digest('base64')}`;
  }

  get(key: string): FullEncodeResult | undefined {
    const r = this.map.get(key);
    if (r) {
      this.map.delete(key); // refresh recency
      this.map.set(key, r);
      this.hits++;
    } else {
      this.misses++;
    }
    return r;
  }

  set(key: string, value: FullEncodeResult): void {
    const size = sizeOf(key, value);
    if (size > this.maxBytes) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes -= sizeOf(key, old);
      this.map.delete(key);
    }
    this.map.set(key, value);
    this.bytes += size;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= sizeOf(k, v);
    }
  }

  get size(): number {
    return this.map.size;
  }

  get byteSize(): number {
    return this.bytes;
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}
