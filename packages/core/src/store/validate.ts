/**
 * Input hygiene at the boundary of every store: what M3Index and PgM3Store accept is checked
 * here, once, so the same input gets the same error in both and nothing accepted can later fail
 * to be stored, saved or loaded. Everything that crosses into a store is copied: the caller may
 * change or reuse its objects afterwards.
 */
import { randomUUID } from 'node:crypto';
import { invalidArgument } from '../errors.js';
import type { ColbertMatrix, EncodeResult, FullEncodeResult, OutputSelection, SparseVector } from '../types.js';
import { MAX_ID_LENGTH, type JsonObject, type JsonValue, type M3Document, type M3StoreModel } from './types.js';

/** Largest metadata object, as JSON text (it is kept in memory for filters by M3Index). */
export const MAX_METADATA_BYTES = 1 << 20;
/** Deepest nesting of metadata objects and arrays. */
export const MAX_METADATA_DEPTH = 64;

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint') return `${v}n (a BigInt)`;
  if (typeof v === 'object') {
    if (Array.isArray(v)) return 'an array';
    const name = Object.getPrototypeOf(v)?.constructor?.name;
    return name && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return `a ${typeof v}`;
}

/**
 * Checks a document id: a non-empty string of at most {@link MAX_ID_LENGTH} UTF-16 units,
 * well-formed Unicode (no lone surrogate) and without U+0000 (no store can key on those
 * reliably). INVALID_ARGUMENT naming `what` otherwise.
 */
export function checkId(id: unknown, what = 'id'): asserts id is string {
  if (typeof id !== 'string') invalidArgument(`${what} must be a string, got ${describe(id)}`);
  if (id.length === 0) invalidArgument(`${what} must not be empty`);
  if (id.length > MAX_ID_LENGTH) invalidArgument(`${what} is ${id.length} characters long; ids have at most ${MAX_ID_LENGTH}`);
  if (!id.isWellFormed()) invalidArgument(`${what} contains a lone UTF-16 surrogate (not valid Unicode): ${JSON.stringify(id)}`);
  if (id.includes('\u0000')) invalidArgument(`${what} contains U+0000`);
}

/**
 * Checks a list of ids given to `delete`/`getMany`: one string or an iterable of strings.
 * Returns them as an array (TypeError-free: INVALID_ARGUMENT naming the entry).
 */
export function checkIdList(ids: unknown, what = 'ids'): string[] {
  if (typeof ids === 'string') {
    checkId(ids, what);
    return [ids];
  }
  if (ids === null || typeof ids !== 'object' || !(Symbol.iterator in ids)) {
    invalidArgument(`${what} must be a string or an array of strings, got ${describe(ids)}`);
  }
  const list = [...(ids as Iterable<unknown>)];
  list.forEach((id, i) => checkId(id, `${what}[${i}]`));
  return list as string[];
}

/**
 * Checks a document's text: a string of well-formed Unicode without U+0000 (what every store can
 * hold and give back unchanged). Use `text.toWellFormed()` and strip NULs to store such text.
 */
export function checkText(text: unknown, what = 'text'): asserts text is string {
  if (typeof text !== 'string') invalidArgument(`${what} must be a string, got ${describe(text)}`);
  if (!text.isWellFormed()) invalidArgument(`${what} contains a lone UTF-16 surrogate (not valid Unicode; text.toWellFormed() replaces it with U+FFFD)`);
  if (text.includes('\u0000')) invalidArgument(`${what} contains U+0000, which stores cannot hold (strip it first)`);
}

function checkString(s: string, path: string): void {
  if (!s.isWellFormed()) invalidArgument(`${path} is a string with a lone UTF-16 surrogate (not valid Unicode)`);
  if (s.includes('\u0000')) invalidArgument(`${path} contains U+0000, which stores cannot hold`);
}

/**
 * Checks that `value` is plain JSON metadata and returns an independent deep copy. Accepted:
 * objects (prototype Object or null, data properties only), arrays, well-formed strings without
 * U+0000, finite numbers, booleans, null. Refused with INVALID_ARGUMENT naming the key path
 * (`docs[3].metadata.created`): Date, URL, Map, Set, typed arrays, BigInt, functions, symbols,
 * `undefined` values, NaN/±Infinity, getters, sparse arrays, cycles, more than
 * {@link MAX_METADATA_DEPTH} levels or {@link MAX_METADATA_BYTES} of JSON.
 */
export function checkMetadata(value: unknown, what = 'metadata'): JsonObject {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalidArgument(`${what} must be a plain object, got ${describe(value)}`);
  const budget = { bytes: 2 };
  const seen = new Set<object>();
  return copyJson(value, what, 0, seen, budget) as JsonObject;
}

function copyJson(v: unknown, path: string, depth: number, seen: Set<object>, budget: { bytes: number }): JsonValue {
  const spend = (n: number) => {
    budget.bytes += n;
    if (budget.bytes > MAX_METADATA_BYTES) invalidArgument(`${path}: metadata is larger than ${MAX_METADATA_BYTES} bytes of JSON`);
  };
  switch (typeof v) {
    case 'string':
      checkString(v, path);
      spend(v.length + 2);
      return v;
    case 'number':
      if (!Number.isFinite(v)) invalidArgument(`${path} is ${v}: metadata numbers must be finite`);
      spend(24);
      return Object.is(v, -0) ? 0 : v; // as JSON would give it back
    case 'boolean':
      spend(5);
      return v;
    case 'object': {
      if (v === null) {
        spend(4);
        return null;
      }
      if (depth >= MAX_METADATA_DEPTH) invalidArgument(`${path}: metadata nests more than ${MAX_METADATA_DEPTH} levels`);
      if (seen.has(v)) invalidArgument(`${path} refers back to an enclosing object (a cycle): metadata must be a tree`);
      seen.add(v);
      try {
        if (Array.isArray(v)) {
          if (Object.getPrototypeOf(v) !== Array.prototype) invalidArgument(`${path} is ${describe(v)}, not plain JSON`);
          const out: JsonValue[] = new Array(v.length);
          for (let i = 0; i < v.length; i++) {
            if (!Object.hasOwn(v, i)) invalidArgument(`${path}[${i}] is a hole in a sparse array`);
            const d = Object.getOwnPropertyDescriptor(v, i);
            if (d && !('value' in d)) invalidArgument(`${path}[${i}] is a getter, not plain data`);
            out[i] = copyJson(v[i], `${path}[${i}]`, depth + 1, seen, budget);
            spend(1);
          }
          return out;
        }
        const proto = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) {
          invalidArgument(`${path} is ${describe(v)}, not plain JSON (convert it first, e.g. a Date with toISOString())`);
        }
        const out: { [key: string]: JsonValue } = {};
        for (const key of Reflect.ownKeys(v)) {
          if (typeof key === 'symbol') invalidArgument(`${path} has a symbol key, not plain JSON`);
          const kp = `${path}.${key}`;
          checkString(key, `${path} key ${JSON.stringify(key)}`);
          const d = Object.getOwnPropertyDescriptor(v, key) as PropertyDescriptor;
          if (!d.enumerable) continue;
          if (!('value' in d)) invalidArgument(`${kp} is a getter, not plain data`);
          const x = d.value as unknown;
          if (x === undefined) invalidArgument(`${kp} is undefined: leave the key out, or use null`);
          if (typeof x === 'function') invalidArgument(`${kp} is a function, not plain JSON`);
          if (key === 'toJSON') invalidArgument(`${kp}: metadata is stored as written, not through toJSON`);
          spend(key.length + 4);
          // Define, not assign: a "__proto__" key stays an ordinary key of the copy.
          Object.defineProperty(out, key, { value: copyJson(x, kp, depth + 1, seen, budget), enumerable: true, writable: true, configurable: true });
        }
        return out;
      } finally {
        seen.delete(v);
      }
    }
    case 'bigint':
      return invalidArgument(`${path} is a BigInt (${v}n): JSON has no BigInt; store it as a string`);
    case 'undefined':
      return invalidArgument(`${path} is undefined: use null`);
    default:
      return invalidArgument(`${path} is ${describe(v)}, not plain JSON`);
  }
}

/** Deep copy of stored metadata for a caller (stored objects are never handed out). */
export function copyMetadata(metadata: JsonObject): JsonObject {
  return structuredClone(metadata);
}

/** A checked document: its final id, text and metadata copy. */
export interface CheckedDocument {
  id: string;
  text: string;
  metadata: JsonObject;
}

/** Checks a document ({id?, text, metadata?}) and returns its id (a random UUID when absent) and copies. */
export function checkDocument(doc: unknown, where: string): CheckedDocument {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) invalidArgument(`${where} must be an object {id?, text, metadata?}, got ${describe(doc)}`);
  const d = doc as M3Document;
  checkText(d.text, `${where}.text`);
  if (d.id !== undefined) checkId(d.id, `${where}.id`);
  const metadata = checkMetadata(d.metadata, `${where}.metadata`);
  return { id: d.id ?? randomUUID(), text: d.text, metadata };
}

function checkDense(dense: unknown, dim: number, where: string): Float32Array {
  if (!(dense instanceof Float32Array) || dense.length !== dim) invalidArgument(`${where} needs a dense Float32Array of ${dim} values`);
  for (let i = 0; i < dense.length; i++) if (!Number.isFinite(dense[i])) invalidArgument(`${where}: dense value ${i} is ${dense[i]}, not finite`);
  return dense;
}

/**
 * Checks sparse weights: Uint32Array token ids strictly ascending below `vocabSize`, one finite
 * weight ≥ 0 each (Float32Array).
 */
export function checkSparse(sparse: unknown, vocabSize: number, where: string): SparseVector {
  const s = sparse as SparseVector | undefined;
  if (!s || !(s.indices instanceof Uint32Array) || !(s.values instanceof Float32Array) || s.indices.length !== s.values.length) {
    invalidArgument(`${where} needs sparse weights {indices: Uint32Array, values: Float32Array} of equal length`);
  }
  let prev = -1;
  for (let i = 0; i < s.indices.length; i++) {
    const t = s.indices[i];
    const w = s.values[i];
    if (t <= prev || t >= vocabSize) invalidArgument(`${where}: sparse token ids must ascend strictly below ${vocabSize} (entry ${i} is ${t})`);
    if (!(w >= 0) || w === Infinity) invalidArgument(`${where}: sparse weight ${i} is ${w}; weights must be finite and ≥ 0`);
    prev = t;
  }
  return s;
}

function checkColbert(colbert: unknown, dim: number, where: string): ColbertMatrix {
  const c = colbert as ColbertMatrix | undefined;
  if (!c || !(c.data instanceof Float32Array) || c.dim !== dim || !Number.isSafeInteger(c.count) || c.count < 0 || c.data.length !== c.count * dim) {
    invalidArgument(`${where} needs a ColBERT matrix {data: Float32Array, count, dim: ${dim}} with count × ${dim} values`);
  }
  for (let i = 0; i < c.data.length; i++) if (!Number.isFinite(c.data[i])) invalidArgument(`${where}: ColBERT value ${i} is ${c.data[i]}, not finite`);
  return c;
}

/**
 * Checks that a document's encoding has all three outputs of the store's shape (dense of `dim`,
 * sparse ids below `vocabSize`, ColBERT rows of `dim`; everything finite) and returns a copy that
 * shares nothing with the caller's arrays. `colbert: false` for a store that keeps no ColBERT
 * vectors (then the ColBERT output may be absent).
 */
export function checkEncoding(enc: unknown, shape: Pick<M3StoreModel, 'dim' | 'vocabSize'> & { colbert?: boolean }, where: string): FullEncodeResult {
  if (enc === null || typeof enc !== 'object') invalidArgument(`${where}: missing encoding`);
  const e = enc as EncodeResult;
  const dense = checkDense(e.dense, shape.dim, where);
  const sparse = checkSparse(e.sparse, shape.vocabSize, where);
  const wantColbert = shape.colbert !== false;
  const colbert = wantColbert || e.colbert !== undefined ? checkColbert(e.colbert, shape.dim, where) : { data: new Float32Array(0), count: 0, dim: shape.dim };
  return {
    dense: dense.slice(),
    sparse: { indices: sparse.indices.slice(), values: sparse.values.slice() },
    colbert: { data: colbert.data.slice(), count: colbert.count, dim: colbert.dim },
    tokens: typeof e.tokens === 'number' ? e.tokens : 0,
    truncated: e.truncated === true,
  };
}

/**
 * Checks the outputs `need` of a query encoding (precomputed by the caller or returned by the
 * store's encoder): dense of `dim` and finite, sparse ids below `vocabSize` with finite weights,
 * ColBERT rows of `dim` and finite. INVALID_ARGUMENT saying what is wrong (a NaN query never
 * returns NaN scores).
 */
export function checkQueryEncoding(q: unknown, need: OutputSelection, shape: Pick<M3StoreModel, 'dim' | 'vocabSize'>): EncodeResult {
  if (q === null || typeof q !== 'object') invalidArgument('query must be a string or an EncodeResult');
  const e = q as EncodeResult;
  if (need.dense) checkDense(e.dense, shape.dim, 'the query');
  if (need.sparse) checkSparse(e.sparse, shape.vocabSize, 'the query');
  if (need.colbert) checkColbert(e.colbert, shape.dim, 'the query');
  return e;
}

/** Checks a positive integer option (undefined gives `fallback`); INVALID_ARGUMENT naming it. */
export function checkPositiveInt(v: unknown, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > max) {
    invalidArgument(`${name} must be an integer from 1 to ${max}, got ${describe(v)}`);
  }
  return v;
}

/** Checks an optional function filter. */
export function checkFilterFunction(filter: unknown): ((metadata: JsonObject, id: string) => boolean) | undefined {
  if (filter !== undefined && typeof filter !== 'function') invalidArgument(`filter must be a function (metadata, id) => boolean, got ${describe(filter)}`);
  return filter as ((metadata: JsonObject, id: string) => boolean) | undefined;
}

/** Checks an optional AbortSignal option. */
export function checkSignal(signal: unknown, what = 'signal'): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalidArgument(`${what} must be an AbortSignal, got ${describe(signal)}`);
  return signal as AbortSignal | undefined;
}
