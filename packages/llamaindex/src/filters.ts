/**
 * LlamaIndex `MetadataFilters` as a store's `where` filter (core's grammar, evaluated where the
 * data lives: in JavaScript by M3Index, in SQL by PgM3Store). What the grammar cannot express is
 * refused with INVALID_ARGUMENT, never ignored.
 *
 * | LlamaIndex | where |
 * | --- | --- |
 * | `==` `!=` `>` `>=` `<` `<=` | `$eq` `$ne` `$gt` `$gte` `$lt` `$lte` |
 * | `in`, `nin` | `$in`, `$nin` |
 * | `contains` (the metadata array holds the value) | `$contains` |
 * | `any` / `all` (the array holds any / all of the values) | `$or` / `$and` of `$contains` |
 * | `is_empty` | the key is absent or null (`$exists: false` or `null`); an empty array does not count |
 * | `text_match` | refused: the grammar has no substring match |
 * | condition `and` / `or` | `$and` / `$or` |
 */
import type { M3Where } from '@bgem3/core';
import { invalid } from '@bgem3/core/adapter';
import { FilterCondition, FilterOperator, type MetadataFilter, type MetadataFilters } from 'llamaindex';

function scalar(v: unknown, where: string): string | number {
  if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) return v;
  return invalid(`${where}: the value must be a string or a finite number, got ${Array.isArray(v) ? 'an array' : String(v)}`);
}

function list(v: unknown, where: string): (string | number)[] {
  if (!Array.isArray(v) || v.length === 0) invalid(`${where}: the value must be a non-empty array of strings or numbers`);
  return v.map((x, i) => scalar(x, `${where}[${i}]`));
}

function one(f: MetadataFilter | MetadataFilters, where: string): M3Where {
  if (f !== null && typeof f === 'object' && 'filters' in f) return toWhere(f, where) ?? {};
  if (f === null || typeof f !== 'object' || typeof f.key !== 'string' || f.key.length === 0) invalid(`${where} must be a MetadataFilter { key, value, operator }`);
  const { key, value, operator } = f;
  const w = `${where} (${JSON.stringify(key)} ${String(operator)})`;
  switch (operator) {
    case FilterOperator.EQ:
      return { [key]: { $eq: scalar(value, w) } };
    case FilterOperator.NE:
      return { [key]: { $ne: scalar(value, w) } };
    case FilterOperator.GT:
      return { [key]: { $gt: scalar(value, w) } };
    case FilterOperator.GTE:
      return { [key]: { $gte: scalar(value, w) } };
    case FilterOperator.LT:
      return { [key]: { $lt: scalar(value, w) } };
    case FilterOperator.LTE:
      return { [key]: { $lte: scalar(value, w) } };
    case FilterOperator.IN:
      return { [key]: { $in: list(value, w) } };
    case FilterOperator.NIN:
      return { [key]: { $nin: list(value, w) } };
    case FilterOperator.CONTAINS:
      return { [key]: { $contains: scalar(value, w) } };
    case FilterOperator.ANY:
      return { $or: list(value, w).map((x) => ({ [key]: { $contains: x } })) };
    case FilterOperator.ALL:
      return { $and: list(value, w).map((x) => ({ [key]: { $contains: x } })) };
    case FilterOperator.IS_EMPTY:
      if (value !== undefined) invalid(`${w}: is_empty takes no value`);
      return { $or: [{ [key]: { $exists: false } }, { [key]: null }] };
    case FilterOperator.TEXT_MATCH:
      return invalid(`${w}: text_match (substring match) cannot be expressed as a store filter; filter the results yourself, or store the words to match as an array and use contains/any`);
    default:
      return invalid(`${w}: unknown filter operator ${JSON.stringify(operator)}`);
  }
}

/** The `where` of `filters` (undefined for none); INVALID_ARGUMENT for what cannot be translated. */
export function toWhere(filters: MetadataFilters | undefined, where = 'filters'): M3Where | undefined {
  if (filters === undefined || filters === null) return undefined;
  if (typeof filters !== 'object' || !Array.isArray(filters.filters)) invalid(`${where} must be MetadataFilters { filters: [...], condition? }`);
  if (filters.filters.length === 0) return undefined;
  const parts = filters.filters.map((f, i) => one(f, `${where}.filters[${i}]`));
  const condition = filters.condition ?? FilterCondition.AND;
  if (condition === FilterCondition.AND) return parts.length === 1 ? (parts[0] as M3Where) : { $and: parts };
  if (condition === FilterCondition.OR) return { $or: parts };
  return invalid(`${where}.condition must be "and" or "or", got ${JSON.stringify(condition)}`);
}
