/**
 * An LRU cache of full encodings (dense + sparse + ColBERT), keyed by model, max length and
 * text. It is what lets the embeddings class, the sparse retriever and the reranker share one
 * forward pass per text: whichever asks first computes all three outputs, the others hit.
 */
import type { FullEncodeResult } from '../types.js';

function sizeOf(r: FullEncodeResult): number {
  return r.dense.byteLength + r.sparse.indices.byteLength + r.sparse.values.byteLength + r.colbert.data.byteLength + 64;
}

export class EncodeCache {
  private readonly map = new Map<string, FullEncodeResult>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  /** @param maxBytes memory budget of cached encodings (ColBERT vectors dominate: ~4·dim bytes per token). */
  constructor(readonly maxBytes: number) {}

  static key(modelId: string, maxLength: number, text: string): string {
    return `${modelId}\u0000${maxLength}\u0000${text}`;
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
    const size = sizeOf(value);
    if (size > this.maxBytes) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes -= sizeOf(old);
      this.map.delete(key);
    }
    this.map.set(key, value);
    this.bytes += size;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= sizeOf(v);
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
