/**
 * Core's `where` filters (store/where.ts: the grammar, checked into a {@link WhereNode} tree)
 * compiled to SQL over the `metadata jsonb` column, with exactly the semantics of core's
 * `matchesWhere` (tested against it on random filters and metadata):
 *
 * - equality is type-strict (`1` ≠ `"1"`; an array or object never equals a scalar): `metadata @>
 *   {"key": value}` — jsonb containment compares strings byte for byte and numbers numerically,
 *   and an object value only contains a scalar that is the same scalar (the "array contains a
 *   primitive" exception applies at the top level only). Containment can use a GIN index on
 *   `metadata` (`CREATE INDEX … USING gin (metadata jsonb_path_ops)`);
 * - `$gt/$gte/$lt/$lte` hold only between values of the same JSON type: numbers as numbers
 *   (`numeric`, exact for the shortest decimal text of a double), strings in code-point order
 *   (`COLLATE "C"` on UTF-8 text, whatever the database's collation); guarded by a CASE so a
 *   string is never cast to a number;
 * - `$ne`/`$nin` are true when the key is absent; `$exists` is top-level key presence (`?`);
 * - every compiled condition is TRUE or FALSE, never NULL, so `$not` is plain negation.
 *
 * Every key and value travels as a bind parameter; the SQL text holds only operators and `$n`.
 */
import type { WhereNode } from '@bgem3/core';

/**
 * Compiles a checked filter into a boolean SQL expression over `column` (a trusted SQL
 * expression such as `metadata` or `t.metadata`), pushing its values onto `params` (the
 * statement's bind list, so the numbering continues from it).
 */
export function whereToSql(node: WhereNode, params: unknown[], column = 'metadata'): string {
  const p = (v: unknown) => `$${params.push(v)}`;
  switch (node.kind) {
    case 'and':
      return node.children.length === 0 ? 'true' : `(${node.children.map((c) => whereToSql(c, params, column)).join(' AND ')})`;
    case 'or':
      return `(${node.children.map((c) => whereToSql(c, params, column)).join(' OR ')})`;
    case 'not':
      return `(NOT ${whereToSql(node.child, params, column)})`;
    case 'cmp': {
      const key = node.key;
      switch (node.op) {
        case 'eq':
          return `(${column} @> ${p(JSON.stringify({ [key]: node.value }))}::jsonb)`;
        case 'ne':
          return `(NOT ${column} @> ${p(JSON.stringify({ [key]: node.value }))}::jsonb)`;
        case 'contains':
          // {"key": [value]} is contained only when the key's value is an array holding value.
          return `(${column} @> ${p(JSON.stringify({ [key]: [node.value] }))}::jsonb)`;
        case 'in':
        case 'nin': {
          const inList = `EXISTS (SELECT 1 FROM jsonb_array_elements(${p(JSON.stringify(node.value))}::jsonb) AS w(v) WHERE w.v = ${column} -> ${p(key)}::text)`;
          return node.op === 'in' ? `(${inList})` : `(NOT ${inList})`;
        }
        case 'exists':
          return node.value ? `(${column} ? ${p(key)}::text)` : `(NOT ${column} ? ${p(key)}::text)`;
        default: {
          const op = node.op === 'gt' ? '>' : node.op === 'gte' ? '>=' : node.op === 'lt' ? '<' : '<=';
          const k = p(key);
          if (typeof node.value === 'number') {
            return `(CASE WHEN jsonb_typeof(${column} -> ${k}::text) = 'number' THEN (${column} -> ${k}::text)::numeric ${op} ${p(JSON.stringify(node.value))}::numeric ELSE false END)`;
          }
          return `(CASE WHEN jsonb_typeof(${column} -> ${k}::text) = 'string' THEN (${column} ->> ${k}::text) COLLATE "C" ${op} ${p(node.value)}::text COLLATE "C" ELSE false END)`;
        }
      }
    }
  }
}
