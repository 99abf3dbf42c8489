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
