/**
 * Request-body checks with messages that name the field and what was sent, e.g.
 * `input[3] must be a string, got number`. Every failure is a 400 {@link ApiError}.
 */
import { badRequest } from './http-error.js';

export type Body = Record<string, unknown>;

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** The JSON body as an object (not an array, not null). */
export function bodyObject(body: unknown): Body {
  if (body === null || body === undefined) throw badRequest('request body must be a JSON object, got nothing (send Content-Type: application/json)');
  if (typeof body !== 'object' || Array.isArray(body)) throw badRequest(`request body must be a JSON object, got ${describe(body)}`);
  return body as Body;
}

/** A string or an array of strings; a single string is returned as one text. */
export function textList(v: unknown, field: string, options: { allowTokenIds?: boolean } = {}): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) throw badRequest(`${field} must be a string or an array of strings, got ${describe(v)}`, field);
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== 'string') {
      const tokenIds = typeof v[i] === 'number' || (Array.isArray(v[i]) && typeof v[i][0] === 'number');
      const hint = tokenIds && !options.allowTokenIds ? ' (token-id inputs are not supported: send the texts)' : '';
      throw badRequest(`${field}[${i}] must be a string, got ${describe(v[i])}${hint}`, field);
    }
  }
  return v as string[];
}

export function optionalBoolean(body: Body, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`${field} must be true or false, got ${describe(v)}`, field);
  return v;
}

export function optionalString(body: Body, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest(`${field} must be a string, got ${describe(v)}`, field);
  return v;
}

export function optionalEnum<T extends string>(body: Body, field: string, allowed: readonly T[]): T | undefined {
  const v = optionalString(body, field);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw badRequest(`${field} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(v)}`, field);
  return v as T;
}

export function optionalInteger(body: Body, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badRequest(`${field} must be an integer from ${min} to ${max}, got ${typeof v === 'number' ? v : describe(v)}`, field);
  }
  return v;
}

/** `[dense, sparse, colbert]` weights as sent (checked again, and rescaled, by core). */
export function optionalWeights(body: Body, field = 'weights'): [number, number, number] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x < 0)) {
    throw badRequest(`${field} must be three finite numbers ≥ 0 [dense, sparse, colbert], got ${JSON.stringify(v)}`, field);
  }
  if (v.every((x) => x === 0)) throw badRequest(`${field} are all zero: at least one must be positive`, field);
  return v as [number, number, number];
}

/** Rejects fields the server does not know, so a typo is not silently ignored. */
export function rejectUnknown(body: Body, known: readonly string[]): void {
  for (const k of Object.keys(body)) {
    if (!known.includes(k)) throw badRequest(`unknown field ${JSON.stringify(k)} (accepted: ${known.join(', ')})`, k);
  }
}
