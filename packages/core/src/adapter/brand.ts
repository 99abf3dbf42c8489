/**
 * Brands: how a class is recognised across copies of a package. The ESM and the CJS build of a
 * package are two module graphs (two classes of the same name), so `instanceof` fails between
 * them; a `Symbol.for` key is the same in both.
 */

/** The registry-wide symbol of a brand name. */
export function brandSymbol(name: string): symbol {
  return Symbol.for(`@bgem3/brand:${name}`);
}

/** Marks a class (its prototype) with a brand. Call once per class, e.g. in a static block. */
export function setBrand(prototype: object, name: string): void {
  Object.defineProperty(prototype, brandSymbol(name), { value: true });
}

/** Whether `value` carries the brand (is an instance of a branded class of any copy). */
export function hasBrand(value: unknown, name: string): boolean {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && (value as Record<symbol, unknown>)[brandSymbol(name)] === true;
}

const SOURCE = Symbol.for('@bgem3/encoder-source');

/**
 * Attaches an object's encoder source (non-enumerable), so classes built on it (a vector store
 * on an embeddings object, an ensemble on a sparse retriever) take the same model, also when
 * they come from another copy of the adapter.
 */
export function attachSource(target: object, source: unknown): void {
  Object.defineProperty(target, SOURCE, { value: source, configurable: true });
}

/** The encoder source attached to `value` (see {@link attachSource}), if any. */
export function sourceOf<T = unknown>(value: unknown): T | undefined {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return undefined;
  return (value as Record<symbol, T | undefined>)[SOURCE];
}

const STORED = Symbol.for('@bgem3/stored-document');

/**
 * Records (non-enumerable) that a framework object returned by a store-backed class is the
 * document `id` of `store`, so an ensemble or a reranker given it later rescores it from the
 * store's vectors instead of encoding its text.
 */
export function attachStored(target: object, store: unknown, id: string): void {
  Object.defineProperty(target, STORED, { value: { store, id }, configurable: true });
}

/** The store and id recorded by {@link attachStored}, if any. */
export function storedOf<S = unknown>(value: unknown): { store: S; id: string } | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  return (value as Record<symbol, { store: S; id: string } | undefined>)[STORED];
}
