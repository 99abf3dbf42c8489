/**
 * The SQL compilation of core's `where` filters means what core's `matchesWhere` means: many
 * random filters over the same random metadata give the same ids in SQL (PGlite, or the server
 * of BGEM3_PG_URL) and in JavaScript.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkWhere, matchesWhere, type JsonValue, type M3Where } from '@bgem3/core';
import { whereToSql } from '../src/where-sql.js';
import { RUN, rng, sharedDatabase, type TestDatabase } from './helpers.js';

let db: TestDatabase;
const table = `${RUN}_where`;
const rand = rng(20261202);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

// Values chosen to hit every edge: equal numbers written differently, negative and fractional
// numbers, strings that sort differently by code unit, code point and locale (é, Z, a, 𝟘 above
// the BMP, U+FFFD), numeric-looking strings, booleans, null, arrays and objects.
const STRINGS = ['a', 'A', 'Z', 'b', 'é', 'e', '𝟘', '\uFFFD', '', '1', '10', '2', 'ab', 'a b', 'Ω', 'aa'];
const NUMBERS = [0, 1, 2, 10, -1, 1.5, 0.1, 0.30000000000000004, 1e21, -2.5, 3, 1e-7];
const KEYS = ['a', 'b', 'c', 'tags', 'n', 'x y', '__proto__'];

function scalar(): string | number | boolean | null {
  const r = rand();
  if (r < 0.4) return pick(STRINGS);
  if (r < 0.8) return pick(NUMBERS);
  if (r < 0.92) return rand() < 0.5;
  return null;
}

function value(depth = 0): JsonValue {
  const r = rand();
  if (r < 0.7 || depth > 1) return scalar();
  if (r < 0.9) return Array.from({ length: Math.floor(rand() * 4) }, () => (rand() < 0.85 ? scalar() : value(depth + 1)));
  return { [pick(KEYS)]: value(depth + 1) };
}

function metadata(): Record<string, JsonValue> {
  const m: Record<string, JsonValue> = {};
  for (const k of KEYS) if (rand() < 0.55) Object.defineProperty(m, k, { value: value(), enumerable: true, writable: true, configurable: true });
  return m;
}

function condition(): M3Where {
  const key = pick(KEYS.filter((k) => k !== '__proto__'));
  const ordered = () => (rand() < 0.5 ? pick(STRINGS) : pick(NUMBERS));
  const list = () => Array.from({ length: 1 + Math.floor(rand() * 3) }, scalar);
  switch (Math.floor(rand() * 11)) {
    case 0:
      return { [key]: scalar() };
    case 1:
      return { [key]: { $eq: scalar() } };
    case 2:
      return { [key]: { $ne: scalar() } };
    case 3:
      return { [key]: { $gt: ordered() } };
    case 4:
      return { [key]: { $gte: ordered() } };
    case 5:
      return { [key]: { $lt: ordered() } };
    case 6:
      return { [key]: { $lte: ordered(), $gte: ordered() } };
    case 7:
      return { [key]: { $in: list() } };
    case 8:
      return { [key]: { $nin: list() } };
    case 9:
      return { [key]: { $contains: scalar() } };
    default:
      return { [key]: { $exists: rand() < 0.5 } };
  }
}

function filter(depth = 0): M3Where {
  const r = rand();
  if (depth > 2 || r < 0.45) return condition();
  if (r < 0.65) return { $and: Array.from({ length: 1 + Math.floor(rand() * 3) }, () => filter(depth + 1)) };
  if (r < 0.85) return { $or: Array.from({ length: 1 + Math.floor(rand() * 3) }, () => filter(depth + 1)) };
  if (r < 0.95) return { $not: filter(depth + 1) };
  return { ...condition(), ...condition() };
}

const docs = Array.from({ length: 400 }, (_, i) => ({ id: `m${String(i).padStart(3, '0')}`, metadata: metadata() }));

before(async () => {
  db = await sharedDatabase();
  await db.client.query(`CREATE TABLE ${table} (id text PRIMARY KEY, metadata jsonb NOT NULL)`);
  await db.client.query(`INSERT INTO ${table} SELECT d->>'id', d->'metadata' FROM jsonb_array_elements($1::jsonb) AS d`, [JSON.stringify(docs)]);
});
after(async () => {
  await db.client.query(`DROP TABLE IF EXISTS ${table}`);
  await db.close();
});

describe('where → SQL', () => {
  it('stored metadata reads back as generated (the inputs of both sides are the same)', async () => {
    const rows = await db.client.query<{ id: string; metadata: Record<string, JsonValue> }>(`SELECT id, metadata FROM ${table} ORDER BY id`);
    assert.equal(rows.length, docs.length);
    rows.forEach((r, i) => assert.deepEqual(r.metadata, JSON.parse(JSON.stringify(docs[i].metadata))));
  });

  it('600 random filters select the same documents as matchesWhere', async () => {
    const parsed = docs.map((d) => ({ id: d.id, metadata: JSON.parse(JSON.stringify(d.metadata)) as Record<string, unknown> }));
    let nonTrivial = 0;
    for (let f = 0; f < 600; f++) {
      const where = filter();
      const node = checkWhere(where);
      assert.ok(node);
      const want = parsed.filter((d) => matchesWhere(node, d.metadata)).map((d) => d.id);
      const params: unknown[] = [];
      const sql = whereToSql(node, params);
      const got = (await db.client.query<{ id: string }>(`SELECT id FROM ${table} WHERE ${sql} ORDER BY id`, params)).map((r) => r.id);
      assert.deepEqual(got, want, `filter ${JSON.stringify(where)}\nSQL ${sql}\nparams ${JSON.stringify(params)}`);
      if (want.length > 0 && want.length < docs.length) nonTrivial++;
    }
    assert.ok(nonTrivial > 300, `most filters select some but not all documents (${nonTrivial})`);
  });

  it('edge cases: type-strict equality, code-point order, absent keys, nested values', async () => {
    await db.client.query(`DELETE FROM ${table} WHERE id LIKE 'e%'`);
    const edge = [
      { id: 'e1', metadata: { v: 1, s: '𝟘', arr: [1, 'x', [2]], obj: { v: 1 } } },
      { id: 'e2', metadata: { v: '1', s: '\uFFFD', arr: 'x' } },
      { id: 'e3', metadata: { v: null, s: 'é', arr: [[1]] } },
      { id: 'e4', metadata: { v: 1.0, s: 'Z', arr: [] } },
      { id: 'e5', metadata: {} },
    ];
    await db.client.query(`INSERT INTO ${table} SELECT d->>'id', d->'metadata' FROM jsonb_array_elements($1::jsonb) AS d`, [JSON.stringify(edge)]);
    const cases: [M3Where, string[]][] = [
      [{ v: 1 }, ['e1', 'e4']],
      [{ v: '1' }, ['e2']],
      [{ v: null }, ['e3']],
      [{ v: { $ne: 1 } }, ['e2', 'e3', 'e5']],
      [{ v: { $gte: 1 } }, ['e1', 'e4']],
      [{ v: { $gte: '1' } }, ['e2']],
      [{ s: { $gt: '\uFFFD' } }, ['e1']], // U+1D7D8 > U+FFFD by code point (not by UTF-16 unit)
      [{ s: { $lt: 'a' } }, ['e4']], // 'Z' < 'a' in "C" order, whatever the database collation
      [{ s: { $gt: 'z', $lt: '\uFFFD' } }, ['e3']],
      [{ arr: { $contains: 'x' } }, ['e1']],
      [{ arr: { $contains: 2 } }, []], // [2] nested is not 2
      [{ arr: { $in: ['x'] } }, ['e2']],
      [{ obj: { $exists: true } }, ['e1']],
      [{ v: { $exists: true } }, ['e1', 'e2', 'e3', 'e4']], // null counts as present
      [{ v: { $nin: [1, null] } }, ['e2', 'e5']],
      [{ $not: { v: 1 } }, ['e2', 'e3', 'e5']],
      [{}, ['e1', 'e2', 'e3', 'e4', 'e5']],
    ];
    for (const [where, want] of cases) {
      const node = checkWhere(where);
      assert.ok(node);
      const params: unknown[] = [];
      const sql = whereToSql(node, params);
      const got = (await db.client.query<{ id: string }>(`SELECT id FROM ${table} WHERE id LIKE 'e%' AND ${sql} ORDER BY id`, params)).map((r) => r.id);
      assert.deepEqual(got, want, JSON.stringify(where));
      assert.deepEqual(edge.filter((d) => matchesWhere(node, d.metadata)).map((d) => d.id), want, `matchesWhere ${JSON.stringify(where)}`);
    }
  });
});
