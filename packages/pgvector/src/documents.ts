/**
 * The values of one table row, from a document core's shared checks accepted (store/validate.ts:
 * ids, text, JSON metadata, encodings, all checked and copied before anything is written). What
 * is left here is what only PostgreSQL needs: pgvector literals, the sparse projection of the
 * HNSW-indexed column, sparsevec's 16,000-non-zero limit, and the postings of the inverted index.
 */
import type { ColbertCodec, EncodedEntry } from '@bgem3/core';
import { invalidArgument } from './options.js';
import { SPARSEVEC_MAX_NNZ, f32, formatDense, formatSparse, nonZeros, projectSparse } from './codec.js';

/** The bind values of one row, in column order (id, text, metadata, dense, sparse, sparse_full, colbert). */
export type RowValues = [string, string, string, string, string, string | null, Buffer | null];

/** A row to write, with the postings of its sparse weights (token ids and weights, for the inverted index). */
export interface Row {
  values: RowValues;
  tokens: Uint32Array;
  weights: Float32Array;
}

/** What the conversion needs to know of the store. */
export interface RowShape {
  vocabSize: number;
  /** Non-zeros kept in the `sparse` column (the HNSW-indexed projection; all of them for postings). */
  indexNnz: number;
  /** undefined when the store keeps no ColBERT vectors. */
  colbert: ColbertCodec | undefined;
}

/**
 * Row values of a checked document: the `sparse` column gets the `indexNnz` largest weights;
 * `sparse_full` gets all of them only when that projection dropped some (NULL otherwise, so the
 * common case stores the weights once). INVALID_ARGUMENT above sparsevec's 16,000 non-zeros.
 */
export function toRow(entry: EncodedEntry, shape: RowShape, where: string): Row {
  const sparse = entry.encoding.sparse;
  const nnz = nonZeros(sparse);
  if (nnz > SPARSEVEC_MAX_NNZ) invalidArgument(`${where}: ${nnz} non-zero sparse weights; pgvector's sparsevec holds at most ${SPARSEVEC_MAX_NNZ}`);
  const projected = projectSparse(sparse, shape.indexNnz);
  const keep: number[] = [];
  for (let i = 0; i < sparse.values.length; i++) if (sparse.values[i] !== 0) keep.push(i);
  return {
    values: [
      entry.id,
      entry.text,
      JSON.stringify(entry.metadata),
      formatDense(entry.encoding.dense),
      formatSparse(projected, shape.vocabSize),
      projected === sparse ? null : formatSparse(sparse, shape.vocabSize),
      shape.colbert ? shape.colbert.encode(entry.encoding.colbert) : null,
    ],
    tokens: Uint32Array.from(keep, (i) => sparse.indices[i]),
    weights: Float32Array.from(keep, (i) => sparse.values[i]),
  };
}

/** Approximate bytes a row puts on the wire (to bound one INSERT statement). */
export function rowBytes(r: RowValues): number {
  return r[0].length + r[1].length * 3 + r[2].length * 3 + r[3].length + r[4].length + (r[5]?.length ?? 0) + 2 * (r[6]?.byteLength ?? 0);
}

/** PostgreSQL array literal of integers (`{1,2,3}`): no quoting needed. */
export function intArray(values: ArrayLike<number>): string {
  return `{${Array.prototype.join.call(values, ',')}}`;
}

/** PostgreSQL array literal of float4 values written so they parse back to the same float32. */
export function realArray(values: Float32Array): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) parts[i] = f32(values[i]);
  return `{${parts.join(',')}}`;
}
