/** Conversions between the typed {@link SparseVector} and FlagEmbedding's `{"<token id>": weight}` dict. */
import { invalidArgument } from '../errors.js';
import type { SparseVector } from '../types.js';

/** `{ "<token id>": weight }`, the shape FlagEmbedding returns as `lexical_weights`. */
export function sparseToRecord(v: SparseVector): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < v.indices.length; i++) out[String(v.indices[i])] = v.values[i];
  return out;
}

/** Builds a {@link SparseVector} from a `{ "<token id>": weight }` dict (non-positive weights dropped). */
export function sparseFromRecord(rec: Record<string, number>): SparseVector {
  const entries = Object.entries(rec)
    .map(([k, w]) => {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) invalidArgument(`sparse key ${JSON.stringify(k)} is not a token id`);
      if (typeof w !== 'number' || Number.isNaN(w)) invalidArgument(`sparse weight of ${k} is not a number`);
      return [id, w] as const;
    })
    .filter(([, w]) => w > 0)
    .sort((a, b) => a[0] - b[0]);
  return { indices: Uint32Array.from(entries, (e) => e[0]), values: Float32Array.from(entries, (e) => e[1]) };
}
