/**
 * Validation of documents and encodings before anything is written, and their conversion into
 * the values of one table row. Checking everything first means a bad entry fails the call
 * before the database sees any row of it, as the embedded M3Index does.
 */
import { randomUUID } from 'node:crypto';
import { M3Error, type EncodeResult, type M3Document, type SparseVector } from '@bgem3/core';
import { ColbertCodec, SPARSEVEC_MAX_NNZ, formatDense, formatSparse, nonZeros, projectSparse } from './codec.js';

function invalid(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// PostgreSQL text and jsonb cannot hold U+0000; JSON.stringify writes it as \u0000 (an escape
// preceded by an even number of backslashes, so "\\u0000" text is not mistaken for one).
const JSON_NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/;

/** Checks a document and returns its final id (a random UUID when it has none). */
export function checkDocument(doc: M3Document, where: string): string {
  if (!isPlainObject(doc)) invalid(`${where} must be an object {id?, text, metadata?}`);
  if (typeof doc.text !== 'string') invalid(`${where}.text must be a string`);
  if (doc.text.includes('\u0000')) invalid(`${where}.text contains U+0000, which PostgreSQL text cannot store`);
  if (doc.id !== undefined) {
    if (typeof doc.id !== 'string' || doc.id.length === 0) invalid(`${where}.id must be a non-empty string`);
    if (doc.id.includes('\u0000')) invalid(`${where}.id contains U+0000, which PostgreSQL text cannot store`);
  }
  if (doc.metadata !== undefined && !isPlainObject(doc.metadata)) invalid(`${where}.metadata must be a plain object`);
  return doc.id ?? randomUUID();
}

/** The metadata as JSON text for a jsonb column. */
export function metadataJson(doc: M3Document, where: string): string {
  let json: string;
  try {
    json = JSON.stringify(doc.metadata ?? {});
  } catch (err) {
    return invalid(`${where}.metadata is not JSON-serialisable: ${(err as Error).message}`);
  }
  if (JSON_NUL.test(json)) invalid(`${where}.metadata contains U+0000 in a string, which PostgreSQL jsonb cannot store`);
  return json;
}

/** What the store needs to know to check encodings. */
export interface EncodingShape {
  dim: number;
  vocabSize: number;
  /** undefined when the store keeps no ColBERT vectors. */
  colbert: ColbertCodec | undefined;
}

/** Checks one encoding has what a row needs: dense of `dim`, valid sparse weights, ColBERT if stored. */
export function checkEncoding(enc: EncodeResult | undefined, shape: EncodingShape, where: string): void {
  if (!enc || typeof enc !== 'object') invalid(`${where}: missing encoding`);
  const { dense, sparse, colbert } = enc;
  if (!(dense instanceof Float32Array) || dense.length !== shape.dim) invalid(`${where}: the encoding needs a dense Float32Array of ${shape.dim} values`);
  for (let i = 0; i < dense.length; i++) if (!Number.isFinite(dense[i])) invalid(`${where}: dense value ${i} is not finite`);
  checkSparse(sparse, shape.vocabSize, where);
  if (nonZeros(sparse as SparseVector) > SPARSEVEC_MAX_NNZ) {
    invalid(`${where}: ${nonZeros(sparse as SparseVector)} non-zero sparse weights; pgvector's sparsevec holds at most ${SPARSEVEC_MAX_NNZ}`);
  }
  if (shape.colbert) {
    if (!colbert || !(colbert.data instanceof Float32Array) || colbert.dim !== shape.dim || colbert.data.length !== colbert.count * shape.dim) {
      invalid(`${where}: the encoding needs a ColBERT matrix of ${shape.dim}-dimensional vectors (this store keeps ColBERT vectors)`);
    }
    for (let i = 0; i < colbert.data.length; i++) if (!Number.isFinite(colbert.data[i])) invalid(`${where}: ColBERT value ${i} is not finite`);
  }
}

/** Checks sparse weights: token ids strictly ascending below `vocabSize`, weights finite and ≥ 0. */
export function checkSparse(sparse: SparseVector | undefined, vocabSize: number, where: string): void {
  if (!sparse || !(sparse.indices instanceof Uint32Array) || !(sparse.values instanceof Float32Array) || sparse.indices.length !== sparse.values.length) {
    invalid(`${where}: the encoding needs sparse {indices: Uint32Array, values: Float32Array}`);
  }
  let prev = -1;
  for (let i = 0; i < sparse.indices.length; i++) {
    const t = sparse.indices[i];
    const w = sparse.values[i];
    if (t <= prev || t >= vocabSize) invalid(`${where}: sparse token ids must ascend strictly below ${vocabSize}`);
    if (!(w >= 0) || w === Infinity) invalid(`${where}: sparse weight ${w} must be finite and ≥ 0`);
    prev = t;
  }
}

/** The bind values of one row, in column order (id, text, metadata, dense, sparse, sparse_full, colbert). */
export type RowValues = [string, string, string, string, string, string | null, Buffer | null];

/**
 * Row values of a checked document: the indexed `sparse` column gets the `indexNnz` largest
 * weights; `sparse_full` gets all of them only when that projection dropped some (NULL
 * otherwise, so the common case stores the weights once).
 */
export function toRow(id: string, doc: M3Document, enc: EncodeResult, shape: EncodingShape & { indexNnz: number }, where: string): RowValues {
  const sparse = enc.sparse as SparseVector;
  const projected = projectSparse(sparse, shape.indexNnz);
  return [
    id,
    doc.text,
    metadataJson(doc, where),
    formatDense(enc.dense as Float32Array),
    formatSparse(projected, shape.vocabSize),
    projected === sparse ? null : formatSparse(sparse, shape.vocabSize),
    shape.colbert ? shape.colbert.encode(enc.colbert as NonNullable<EncodeResult['colbert']>) : null,
  ];
}

/** Approximate bytes a row puts on the wire (to bound one INSERT statement). */
export function rowBytes(r: RowValues): number {
  return r[0].length + r[1].length * 3 + r[2].length + r[3].length + r[4].length + (r[5]?.length ?? 0) + 2 * (r[6]?.byteLength ?? 0);
}
