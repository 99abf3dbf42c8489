/**
 * Option checks shared by the adapters: an unknown option is an error (a typo never becomes a
 * silently ignored option), and every bad value is INVALID_ARGUMENT naming the option.
 */
import { M3Error } from './core.js';

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

/** Throws M3Error INVALID_ARGUMENT. */
export function invalid(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}

/**
 * Checks that `options` is undefined or a plain object whose keys are all in `known`; returns it
 * (or `{}`). INVALID_ARGUMENT names the first unknown key and `what` it was given to.
 */
export function checkOptions<T extends object>(options: T | undefined, known: readonly string[], what: string): Partial<T> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) invalid(`${what}: options must be an object, got ${describe(options)}`);
  for (const key of Object.keys(options)) {
    if (!known.includes(key) && (options as Record<string, unknown>)[key] !== undefined) {
      invalid(`${what}: unknown option ${JSON.stringify(key)} (known: ${known.join(', ')})`);
    }
  }
  return options;
}

/** Largest count option (k, topN, batch sizes): core's bound on the work of one call. */
const MAX_COUNT = 100_000;

/** A positive integer option, at most 100000 (undefined gives `fallback`). */
export function positiveInt(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) invalid(`${name} must be a positive integer, got ${describe(value)}`);
  if (value > MAX_COUNT) invalid(`${name} must be at most ${MAX_COUNT}, got ${value}`);
  return value;
}

/** An optional positive integer option. */
export function optionalPositiveInt(value: unknown, name: string): number | undefined {
  return value === undefined ? undefined : positiveInt(value, name, 1);
}

/** One of `allowed` (undefined gives `fallback`). */
export function oneOf<T extends string>(value: unknown, allowed: readonly T[], name: string, fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value as T)) invalid(`${name} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describe(value)}`);
  return value as T;
}

/** A finite number ≥ 0 (undefined gives `fallback`). */
export function nonNegative(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) invalid(`${name} must be a finite number ≥ 0, got ${describe(value)}`);
  return value;
}

/** A boolean (undefined gives `fallback`). */
export function bool(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') invalid(`${name} must be true or false, got ${describe(value)}`);
  return value;
}

/** A query text: a string (TypeError otherwise, as for any text given to the encoder). */
export function queryString(query: unknown, what = 'query'): string {
  if (typeof query !== 'string') throw new TypeError(`${what} must be a string, got ${describe(query)}`);
  return query;
}
