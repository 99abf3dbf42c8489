/**
 * A small deterministic stand-in for BGE-M3 for the store tests (the subject is the store, not
 * the model): words → token ids by hash, dense = normalised sum of word vectors, ColBERT = one
 * vector per word plus `</s>`. `delayPerChar` makes encode times grow with the text, like a real
 * model, so call-order rules can be tested; calls run concurrently (like a worker pool).
 */
import { M3Error } from '../../src/errors.js';
import type { M3Document } from '../../src/store/types.js';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '../../src/types.js';

export function hash(s: string, seed = 0): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

function unitFor(key: string, dim: number): Float32Array {
  const v = new Float32Array(dim);
  let n = 0;
  for (let j = 0; j < dim; j++) {
    v[j] = (hash(key, j + 1) / 2 ** 32) * 2 - 1;
    n += v[j] * v[j];
  }
  return v.map((x) => x / Math.sqrt(n));
}

/** Words → token ids by hash; lexical weight per token; dense = normalised sum of word vectors; ColBERT = word vectors + `</s>`. */
export class FakeEncoder implements TextEncoder3 {
  readonly calls: { texts: string[]; options: EncodeOptions | undefined }[] = [];
  constructor(
    readonly modelId = 'fake/m3',
    readonly dim = 16,
    readonly vocabSize = 5000,
    private readonly broken?: 'dim',
    readonly delayPerChar = 0,
  ) {}

  encodeOne(text: string, options: EncodeOptions = {}): EncodeResult {
    const words = text.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
    const D = this.dim;
    const out: EncodeResult = { tokens: words.length + 2, truncated: false };
    if (options.dense) {
      const d = new Float32Array(this.broken === 'dim' ? D + 1 : D);
      for (const w of words) unitFor(w, D).forEach((x, j) => (d[j] += x));
      const n = Math.hypot(...d) || 1;
      out.dense = d.map((x) => x / n);
    }
    if (options.sparse) {
      const weights = new Map<number, number>();
      for (const w of words) {
        const id = 4 + (hash(w) % (this.vocabSize - 4));
        weights.set(id, Math.max(weights.get(id) ?? 0, Math.fround(0.05 + (hash(w, 99) % 300) / 1000)));
      }
      const indices = Uint32Array.from([...weights.keys()].sort((a, b) => a - b));
      out.sparse = { indices, values: Float32Array.from(indices, (i) => weights.get(i) as number) };
    }
    if (options.colbert) {
      const rows = [...words, '</s>'];
      const data = new Float32Array(rows.length * D);
      rows.forEach((w, i) => data.set(unitFor(`c:${w}`, D), i * D));
      out.colbert = { data, count: rows.length, dim: D };
    }
    return out;
  }

  async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.calls.push({ texts: [...texts], options });
    if (options?.signal?.aborted) throw new M3Error('ABORTED', 'aborted');
    if (this.delayPerChar > 0) await new Promise((r) => setTimeout(r, this.delayPerChar * texts.reduce((n, t) => n + t.length, 0)));
    return texts.map((t) => this.encodeOne(t, options));
  }
}

export const WORDS = 'apple banana cherry river mountain ocean forest desert city village music painting science history energy water fire stone cloud wind'.split(' ');

export function corpus(n: number, seed: number): M3Document[] {
  const docs: M3Document[] = [];
  for (let i = 0; i < n; i++) {
    const len = 3 + (hash(`len${i}`, seed) % 8);
    const words = Array.from({ length: len }, (_, j) => WORDS[hash(`${i}:${j}`, seed) % WORDS.length]);
    docs.push({ id: `doc-${i}`, text: words.join(' '), metadata: { i, even: i % 2 === 0 } });
  }
  return docs;
}

