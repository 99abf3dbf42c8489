/**
 * SQL identifiers for user-configurable table names. Values always travel as bind parameters,
 * but identifiers cannot, so they are validated against a strict pattern (no quoting games,
 * no case folding surprises) and then double-quoted. A name may be schema-qualified once.
 */
import { M3Error } from '@bgem3/core';

/** One unquoted identifier: ASCII letter or underscore, then letters, digits, underscores. */
const PART = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1). The longest name derived from
 * a table name is `<table>_sparse_hnsw` (12 extra characters), so tables are capped at 51.
 */
const MAX_TABLE = 63 - '_sparse_hnsw'.length;

/** A validated, possibly schema-qualified table name. */
export interface TableName {
  /** The schema, when the name was qualified (`schema.table`). */
  schema?: string;
  /** The bare table name. */
  name: string;
}

/** Parses and validates `table` or `schema.table`; INVALID_ARGUMENT naming the rule otherwise. */
export function parseTableName(value: unknown, what = 'table'): TableName {
  if (typeof value !== 'string') throw new M3Error('INVALID_ARGUMENT', `${what} must be a string, got ${typeof value}`);
  const parts = value.split('.');
  const bad = (why: string): never => {
    throw new M3Error('INVALID_ARGUMENT', `${what} ${JSON.stringify(value)} is not a valid table name: ${why}`);
  };
  if (parts.length > 2) bad('at most one dot (schema.table)');
  for (const p of parts) {
    if (!PART.test(p)) bad('use ASCII letters, digits and underscores, starting with a letter or underscore');
  }
  const name = parts[parts.length - 1];
  if (name.length > MAX_TABLE) bad(`the table part is limited to ${MAX_TABLE} characters (index names derive from it)`);
  if (parts.length === 2 && parts[0].length > 63) bad('the schema part is limited to 63 characters');
  return parts.length === 2 ? { schema: parts[0], name } : { name };
}

/** Double-quotes one validated identifier part. */
export function quoteIdent(part: string): string {
  // Validated parts contain no quote, but keep the standard escaping so this is safe on its own.
  return `"${part.replace(/"/g, '""')}"`;
}

/** The quoted, qualified name of a table, optionally with a suffix on the bare name. */
export function qualified(table: TableName, suffix = ''): string {
  const name = quoteIdent(table.name + suffix);
  return table.schema !== undefined ? `${quoteIdent(table.schema)}.${name}` : name;
}

/** The quoted bare name of an object derived from the table (index names live in the table's schema). */
export function derived(table: TableName, suffix: string): string {
  return quoteIdent(table.name + suffix);
}
