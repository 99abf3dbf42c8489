/**
 * `where`: the declarative metadata filter of every store. One grammar, checked once here,
 * evaluated in JavaScript by M3Index ({@link matchesWhere}) and compiled to SQL by PgM3Store
 * (from the checked tree, {@link WhereNode}), so a filter means the same in both.
 *
 * Grammar (keys are top-level metadata keys; several entries in one object all must match):
 *
 *     { tenant: "acme" }                          equality with a scalar (string, finite number, boolean, null)
 *     { year: { $gte: 2020, $lt: 2025 } }         $eq $ne $gt $gte $lt $lte (numbers or strings; same type only)
 *     { lang: { $in: ["en", "fr"] } }             $in / $nin: one of the scalars / none of them
 *     { tags: { $contains: "rag" } }              the value is an array holding the scalar
 *     { source: { $exists: true } }               the key is present (a null value counts as present)
 *     { $and: [w1, w2] }  { $or: [w1, w2] }  { $not: w }
 *
 * Strings compare by code point (what PostgreSQL's "C" collation does on UTF-8), numbers as
 * numbers; a comparison with a value of another type is false, and `$ne`/`$nin` are true when
 * the key is absent. `{}` restricts nothing.
 *
 * Anything else is INVALID_ARGUMENT naming its path, never a match-all: `undefined` values
 * (`{ tenant: user.tenant }` with no tenant), functions, symbols, BigInt, NaN/Infinity, class
 * instances (Date, URL, Map, …), objects with a `toJSON`, getters, unknown operators, arrays
 * where a scalar belongs, empty `$and`/`$or`/`$in`, and holes of sparse arrays (`[, x]`, which
 * JavaScript's array methods skip: `$and: [, ]` would otherwise restrict nothing).
 */
import { invalidArgument } from '../errors.js';

/** A scalar a filter compares with. */
export type M3WhereScalar = string | number | boolean | null;

/** The operators of one key. */
export interface M3WhereOperators {
  $eq?: M3WhereScalar;
  $ne?: M3WhereScalar;
  $gt?: number | string;
  $gte?: number | string;
  $lt?: number | string;
  $lte?: number | string;
  $in?: readonly M3WhereScalar[];
  $nin?: readonly M3WhereScalar[];
  $contains?: M3WhereScalar;
  $exists?: boolean;
}

/** A metadata filter (see the file comment for the grammar). */
export interface M3Where {
  $and?: readonly M3Where[];
  $or?: readonly M3Where[];
  $not?: M3Where;
  [key: string]: M3WhereScalar | M3WhereOperators | readonly M3Where[] | M3Where | undefined;
}

/** A comparison operator of the checked tree. */
export type WhereOp = 'eq' | 'ne' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'nin' | 'contains' | 'exists';

/** The checked form of a filter: what stores evaluate or compile. */
export type WhereNode =
  | { kind: 'and'; children: WhereNode[] }
  | { kind: 'or'; children: WhereNode[] }
  | { kind: 'not'; child: WhereNode }
  | { kind: 'cmp'; key: string; op: 'eq' | 'ne' | 'contains'; value: M3WhereScalar }
  | { kind: 'cmp'; key: string; op: 'gt' | 'gte' | 'lt' | 'lte'; value: number | string }
  | { kind: 'cmp'; key: string; op: 'in' | 'nin'; value: M3WhereScalar[] }
  | { kind: 'cmp'; key: string; op: 'exists'; value: boolean };

const MAX_DEPTH = 32;
const MAX_NODES = 10_000;
const OPS: Record<string, WhereOp> = {
  $eq: 'eq',
  $ne: 'ne',
  $gt: 'gt',
  $gte: 'gte',
  $lt: 'lt',
  $lte: 'lte',
  $in: 'in',
  $nin: 'nin',
  $contains: 'contains',
  $exists: 'exists',
};

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint') return `${v}n (a BigInt)`;
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : `an object (${Object.getPrototypeOf(v)?.constructor?.name ?? 'no prototype'})`;
  return `a ${typeof v}`;
}

/** True for `{}`-literal objects (prototype Object.prototype or null) with only plain data properties. */
function isPlainData(v: unknown, path: string): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key of Reflect.ownKeys(v)) {
    if (typeof key === 'symbol') invalidArgument(`${path} has a symbol key: filters are plain JSON`);
    const d = Object.getOwnPropertyDescriptor(v, key);
    if (d && !('value' in d)) invalidArgument(`${path}.${key} is a getter: filters are plain JSON`);
  }
  return true;
}

function checkKey(key: string, path: string): void {
  if (key.length === 0) invalidArgument(`${path} has an empty key`);
  if (key.length > 512) invalidArgument(`${path} has a key longer than 512 characters`);
  if (!key.isWellFormed()) invalidArgument(`${path} has a key with a lone surrogate`);
  if (key.includes('\u0000')) invalidArgument(`${path} has a key containing U+0000`);
  if (key === 'toJSON') invalidArgument(`${path}.toJSON: a filter is compared as written, not through toJSON`);
}

function checkScalar(v: unknown, path: string): M3WhereScalar {
  if (v === null || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) invalidArgument(`${path} must be a finite number, got ${v}`);
    return v;
  }
  if (typeof v === 'string') {
    if (!v.isWellFormed()) invalidArgument(`${path} is a string with a lone surrogate`);
    if (v.includes('\u0000')) invalidArgument(`${path} contains U+0000, which no store can hold`);
    return v;
  }
  return invalidArgument(`${path} must be a string, a finite number, a boolean or null, got ${describe(v)}`);
}

function checkOrdered(v: unknown, path: string): number | string {
  const s = checkScalar(v, path);
  if (typeof s !== 'number' && typeof s !== 'string') invalidArgument(`${path} must be a number or a string, got ${describe(v)}`);
  return s;
}

/**
 * The elements of array `v`, each read once as a plain value: a hole (an index never set) or a
 * getter is INVALID_ARGUMENT, since `map`/`every`/`some` would skip the hole and the filter mean
 * less than it says.
 */
function elementsOf(v: readonly unknown[], path: string): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < v.length; i++) {
    const d = Object.getOwnPropertyDescriptor(v, i);
    if (d === undefined) invalidArgument(`${path}[${i}] is a hole in a sparse array (undefined): filters are plain JSON`);
    if (!('value' in d)) invalidArgument(`${path}[${i}] is a getter: filters are plain JSON`);
    out.push(d.value);
  }
  return out;
}

function checkScalarList(v: unknown, path: string): M3WhereScalar[] {
  if (!Array.isArray(v)) invalidArgument(`${path} must be an array of scalars, got ${describe(v)}`);
  if (v.length === 0) invalidArgument(`${path} is empty`);
  if (v.length > MAX_NODES) invalidArgument(`${path} has more than ${MAX_NODES} values`);
  return elementsOf(v, path).map((x, i) => checkScalar(x, `${path}[${i}]`));
}

/**
 * Checks a `where` filter and returns its tree (undefined when `where` is undefined). Throws
 * INVALID_ARGUMENT naming the path of the first problem (`where.tenant`, `where.$or[1].year.$gt`).
 */
export function checkWhere(where: unknown, what = 'where'): WhereNode | undefined {
  if (where === undefined) return undefined;
  const count = { n: 0 };
  const node = parseObject(where, what, 0, count);
  return node;
}

function parseObject(v: unknown, path: string, depth: number, count: { n: number }): WhereNode {
  if (depth > MAX_DEPTH) invalidArgument(`${path}: filters nest at most ${MAX_DEPTH} levels`);
  if (!isPlainData(v, path)) invalidArgument(`${path} must be a plain object filter, got ${describe(v)}`);
  const children: WhereNode[] = [];
  for (const key of Object.keys(v)) {
    if (++count.n > MAX_NODES) invalidArgument(`${path}: a filter has at most ${MAX_NODES} conditions`);
    const value = v[key];
    const p = `${path}.${key}`;
    if (key === '$and' || key === '$or') {
      if (!Array.isArray(value) || value.length === 0) invalidArgument(`${p} must be a non-empty array of filters, got ${describe(value)}`);
      if (value.length > MAX_NODES) invalidArgument(`${p}: a filter has at most ${MAX_NODES} conditions`);
      children.push({ kind: key === '$and' ? 'and' : 'or', children: elementsOf(value, p).map((w, i) => parseObject(w, `${p}[${i}]`, depth + 1, count)) });
    } else if (key === '$not') {
      children.push({ kind: 'not', child: parseObject(value, p, depth + 1, count) });
    } else if (key.startsWith('$')) {
      invalidArgument(`${p}: unknown operator (a top-level key starting with $ must be $and, $or or $not)`);
    } else {
      checkKey(key, path);
      children.push(...parseKey(key, value, p));
    }
  }
  return children.length === 1 ? children[0] : { kind: 'and', children };
}

function parseKey(key: string, value: unknown, path: string): WhereNode[] {
  if (value === null || typeof value !== 'object') return [{ kind: 'cmp', key, op: 'eq', value: checkScalar(value, path) }];
  if (Array.isArray(value)) invalidArgument(`${path} is an array: use { $in: [...] } for one of several values, or { $contains: x } for an array holding x`);
  if (!isPlainData(value, path)) invalidArgument(`${path} must be a scalar or an operator object, got ${describe(value)}`);
  const ops = Object.keys(value);
  if (ops.length === 0) invalidArgument(`${path} is an empty operator object`);
  return ops.map((name): WhereNode => {
    const op = OPS[name];
    const p = `${path}.${name}`;
    if (op === undefined) invalidArgument(`${p}: unknown operator (known: ${Object.keys(OPS).join(', ')})`);
    const x = value[name];
    switch (op) {
      case 'eq':
      case 'ne':
      case 'contains':
        return { kind: 'cmp', key, op, value: checkScalar(x, p) };
      case 'gt':
      case 'gte':
      case 'lt':
      case 'lte':
        return { kind: 'cmp', key, op, value: checkOrdered(x, p) };
      case 'in':
      case 'nin':
        return { kind: 'cmp', key, op, value: checkScalarList(x, p) };
      case 'exists':
        if (typeof x !== 'boolean') invalidArgument(`${p} must be true or false, got ${describe(x)}`);
        return { kind: 'cmp', key, op, value: x };
    }
  });
}

/** Code-point order of two strings (PostgreSQL's "C" collation over UTF-8), -1/0/1. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i) as number;
    const y = b.codePointAt(i) as number;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

function scalarEquals(a: unknown, b: M3WhereScalar): boolean {
  return a === b; // type-strict: 1 ≠ "1"; objects and arrays never equal a scalar
}

function ordered(a: unknown, b: number | string): number | undefined {
  if (typeof b === 'number') return typeof a === 'number' ? (a < b ? -1 : a > b ? 1 : 0) : undefined;
  return typeof a === 'string' ? compareCodePoints(a, b) : undefined;
}

/** Evaluates a checked filter against one document's metadata. */
export function matchesWhere(node: WhereNode, metadata: Record<string, unknown>): boolean {
  switch (node.kind) {
    case 'and':
      return node.children.every((c) => matchesWhere(c, metadata));
    case 'or':
      return node.children.some((c) => matchesWhere(c, metadata));
    case 'not':
      return !matchesWhere(node.child, metadata);
    case 'cmp': {
      const present = Object.hasOwn(metadata, node.key);
      const v = present ? metadata[node.key] : undefined;
      switch (node.op) {
        case 'eq':
          return present && scalarEquals(v, node.value);
        case 'ne':
          return !present || !scalarEquals(v, node.value);
        case 'in':
          return present && node.value.some((x) => scalarEquals(v, x));
        case 'nin':
          return !present || !node.value.some((x) => scalarEquals(v, x));
        case 'contains':
          return Array.isArray(v) && v.some((x) => scalarEquals(x, node.value));
        case 'exists':
          return present === node.value;
        default: {
          if (!present) return false;
          const c = ordered(v, node.value);
          if (c === undefined) return false;
          return node.op === 'gt' ? c > 0 : node.op === 'gte' ? c >= 0 : node.op === 'lt' ? c < 0 : c <= 0;
        }
      }
    }
  }
}
