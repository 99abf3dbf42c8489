/**
 * Filters that cannot leak and rows that cannot poison: every `where` that core's grammar
 * refuses is INVALID_ARGUMENT (never a match-all), every metadata value that is not plain JSON is
 * refused before anything is written, ids follow M3Index's rules — with the same messages as
 * M3Index, since both use core's checks. On PGlite, or on the server of BGEM3_PG_URL.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { M3Error, M3Index, type EncodeResult, type M3Encoder } from '@bgem3/core';
import { PgM3Store } from '../src/index.js';
import { RUN, loadEncoder, sharedDatabase, type TestDatabase } from './helpers.js';

let encoder: M3Encoder;
let db: TestDatabase;
let store: PgM3Store;
let index: M3Index;
let q: EncodeResult;

const TENANTS = [
  { id: 'a1', text: 'tenant a document one', metadata: { tenant: 'a', n: 1 } },
  { id: 'a2', text: 'tenant a document two', metadata: { tenant: 'a', n: 2 } },
  { id: 'b1', text: 'tenant b document one', metadata: { tenant: 'b', n: 3 } },
  { id: 'b2', text: 'tenant b secret', metadata: { tenant: 'b', n: 4 } },
];

before(async () => {
  [encoder, db] = await Promise.all([loadEncoder(), sharedDatabase()]);
  store = await PgM3Store.connect({ client: db.client, encoder, table: `${RUN}_hygiene`, denseType: 'vector' });
  index = await M3Index.create({ encoder });
  await Promise.all([store.add(TENANTS), index.add(TENANTS)]);
  [q] = await encoder.encode(['tenant document'], { dense: true, sparse: true, colbert: true });
});
after(async () => {
  await db.close();
});

/** Asserts INVALID_ARGUMENT with the same message from PgM3Store and M3Index. */
async function sameRefusal(what: string, pg: () => Promise<unknown>, embedded: () => Promise<unknown>, re?: RegExp): Promise<void> {
  let pgError: M3Error | undefined;
  await assert.rejects(pg(), (e: M3Error) => {
    assert.ok(e instanceof M3Error, `${what}: an M3Error, got ${String(e)}`);
    assert.equal(e.code, 'INVALID_ARGUMENT', what);
    if (re) assert.match(e.message, re, what);
    pgError = e;
    return true;
  });
  await assert.rejects(embedded(), (e: M3Error) => {
    assert.equal(e.message, pgError?.message, `${what}: the same message as M3Index`);
    return true;
  });
}

class Tenant {
  constructor(readonly name: string) {}
}

describe('where filters that cannot leak', () => {
  const user: { tenant?: string } = {};
  const cases: [string, unknown, RegExp][] = [
    ['undefined value ({ tenant: user.tenant } with no tenant)', { tenant: user.tenant }, /where\.tenant .*undefined/],
    ['a function', { tenant: () => 'a' }, /where\.tenant .*function/],
    ['a symbol', { tenant: Symbol('a') }, /where\.tenant .*symbol/],
    ['a BigInt', { n: 1n }, /where\.n .*BigInt/],
    ['an object with toJSON returning {}', { tenant: { toJSON: () => ({}) } }, /toJSON|unknown operator/],
    ['a filter whose toJSON gives {}', { toJSON: () => ({}) }, /toJSON/],
    ['a Date', { created: new Date(0) }, /where\.created .*Date/],
    ['a class instance', { tenant: new Tenant('a') }, /where\.tenant .*Tenant/],
    ['NaN', { n: Number.NaN }, /finite/],
    ['Infinity in $gt', { n: { $gt: Infinity } }, /finite/],
    ['an unknown operator', { n: { $regex: 'a' } }, /unknown operator/],
    ['an unknown top-level operator', { $where: 'true' }, /unknown operator/],
    ['an array where a scalar belongs', { tenant: ['a'] }, /\$in|\$contains/],
    ['an empty $in', { tenant: { $in: [] } }, /empty/],
    ['an empty $or', { $or: [] }, /non-empty/],
    ['an empty operator object', { tenant: {} }, /empty operator/],
    ['a getter', Object.defineProperty({}, 'tenant', { get: () => 'a', enumerable: true }), /getter/],
    ['a lone surrogate', { tenant: '\uD800' }, /surrogate/],
    ['U+0000', { tenant: 'a\u0000' }, /U\+0000/],
    ['not an object', 'tenant = a', /plain object/],
    ['null', null, /plain object/],
    ['an array', [{ tenant: 'a' }], /plain object/],
    // eslint-disable-next-line no-sparse-arrays
    ['a hole in $and (`$and: [, x]`, which array methods skip)', { $and: [, { tenant: 'a' }] }, /\$and\[0\] is a hole/],
    ['an $and of holes only (`new Array(1)`)', { $and: new Array(1) }, /\$and\[0\] is a hole/],
    // eslint-disable-next-line no-sparse-arrays
    ['a hole in $nin', { tenant: { $nin: [, 'b'] } }, /\$nin\[0\] is a hole/],
  ];
  for (const [what, where, re] of cases) {
    it(`${what}: INVALID_ARGUMENT in search, searchDense and searchSparse, as in M3Index`, async () => {
      const w = where as never;
      await sameRefusal(`search ${what}`, () => store.search(q, { where: w }), () => index.search(q, { where: w }), re);
      await sameRefusal(`searchDense ${what}`, () => store.searchDense(q, { where: w }), () => index.searchDense(q, { where: w }), re);
      await sameRefusal(`searchSparse ${what}`, () => store.searchSparse(q, { where: w }), () => index.searchSparse(q, { where: w }), re);
    });
  }

  it('a valid tenant filter returns only that tenant, in every mode', async () => {
    for (const tenant of ['a', 'b']) {
      for (const hits of [await store.search(q, { where: { tenant } }), await store.searchDense(q, { where: { tenant } }), await store.searchSparse(q, { where: { tenant } })]) {
        assert.ok(hits.length > 0);
        assert.ok(hits.every((h) => h.metadata.tenant === tenant), `only tenant ${tenant}`);
      }
    }
    assert.deepEqual(await store.search(q, { where: { tenant: 'c' } }), []);
  });
});

describe('metadata hygiene: no poison rows', () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const cases: [string, unknown, RegExp][] = [
    ['a Date', new Date(0), /docs\[0\]\.metadata .*Date/],
    ['a Date value', { created: new Date(0) }, /docs\[0\]\.metadata\.created .*Date/],
    ['a URL', { url: new URL('https://example.com') }, /metadata\.url .*URL/],
    ['a Map', { m: new Map() }, /metadata\.m .*Map/],
    ['a Set', { s: new Set([1]) }, /metadata\.s .*Set/],
    ['a typed array', { v: new Float32Array(2) }, /metadata\.v .*Float32Array/],
    ['a BigInt', { big: 1n }, /metadata\.big .*BigInt/],
    ['a function', { f: () => 1 }, /metadata\.f .*function/],
    ['an undefined value', { u: undefined }, /metadata\.u .*undefined/],
    ['NaN', { n: Number.NaN }, /metadata\.n .*finite/],
    ['Infinity', { n: -Infinity }, /metadata\.n .*finite/],
    ['a cycle', cyclic, /cycle/],
    ['a toJSON key', { toJSON: () => ({}) }, /toJSON|function/],
    ['a getter', Object.defineProperty({}, 'g', { get: () => 1, enumerable: true }), /getter/],
    ['a symbol key', { [Symbol('s')]: 1 }, /symbol key/],
    ['a lone surrogate', { s: 'x\uDC00' }, /surrogate/],
    ['U+0000 in a string', { s: 'a\u0000b' }, /U\+0000/],
    ['U+0000 in a key', { 'a\u0000': 1 }, /U\+0000/],
    ['a sparse array', { a: [1, , 3] }, /hole/],
    ['a class instance', { t: new Tenant('a') }, /Tenant/],
  ];
  for (const [what, metadata, re] of cases) {
    it(`${what}: refused before anything is written (add and addEncoded), as in M3Index`, async () => {
      const docs = [{ id: 'ok-first', text: 'fine' }, { id: 'poison', text: 'x', metadata }] as never;
      const before = await store.count();
      await sameRefusal(`add ${what}`, () => store.add([{ id: 'poison', text: 'x', metadata }] as never), () => index.add([{ id: 'poison', text: 'x', metadata }] as never), re.source.startsWith('docs') ? re : undefined);
      await assert.rejects(store.addEncoded([{ ...(docs as object[])[0], encoding: q }, { ...(docs as object[])[1], encoding: q }] as never), (e: M3Error) => e.code === 'INVALID_ARGUMENT' && re.test(e.message.replace('docs[1]', 'docs[0]')));
      assert.equal(await store.count(), before, 'nothing written');
      assert.equal(await store.has('ok-first'), false, 'not even the valid document before it');
      // Every search and get still works: no row was stored that cannot be read.
      assert.ok((await store.search(q, { k: 10 })).length > 0);
      assert.equal(await store.get('poison'), undefined);
    });
  }

  it('stored metadata is a copy: changing the caller object (or a result) changes nothing', async () => {
    const meta = { tenant: 'c', nested: { list: [1, 2] } };
    await store.add([{ id: 'c1', text: 'tenant c', metadata: meta }]);
    meta.nested.list.push(3);
    meta.tenant = 'a';
    const got = await store.get('c1');
    assert.deepEqual(got?.metadata, { tenant: 'c', nested: { list: [1, 2] } });
    (got?.metadata.nested as { list: number[] }).list.push(9);
    assert.deepEqual((await store.get('c1'))?.metadata, { tenant: 'c', nested: { list: [1, 2] } });
    const [hit] = await store.search(q, { where: { tenant: 'c' } });
    assert.deepEqual(hit.metadata, { tenant: 'c', nested: { list: [1, 2] } });
    await store.delete('c1');
  });

  it('a "__proto__" key is stored and read back as an ordinary key', async () => {
    const metadata = JSON.parse('{"__proto__": {"polluted": true}, "tenant": "p"}') as Record<string, unknown>;
    await store.add([{ id: 'p1', text: 'proto', metadata }]);
    const got = await store.get('p1');
    assert.ok(got && Object.hasOwn(got.metadata, '__proto__'));
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal((await store.search(q, { where: { tenant: 'p' } }))[0]?.id, 'p1');
    await store.delete('p1');
  });
});

describe('ids', () => {
  const cases: [string, unknown, RegExp][] = [
    ['a lone surrogate', 'id\uD800', /surrogate/],
    ['U+0000', 'a\u0000b', /U\+0000/],
    ['empty', '', /empty/],
    ['too long', 'x'.repeat(513), /512/],
    ['a number', 42, /string/],
  ];
  for (const [what, id, re] of cases) {
    it(`${what}: INVALID_ARGUMENT in add, get, has, getMany and delete, as in M3Index`, async () => {
      const i = id as string;
      await sameRefusal(`add ${what}`, () => store.add([{ id: i, text: 'x' }]), () => index.add([{ id: i, text: 'x' }]), re);
      await sameRefusal(`get ${what}`, () => store.get(i), () => index.get(i), re);
      await sameRefusal(`has ${what}`, () => store.has(i), () => index.has(i), re);
      await sameRefusal(`getMany ${what}`, () => store.getMany(['a1', i]), () => index.getMany(['a1', i]), re);
      await sameRefusal(`delete ${what}`, () => store.delete(['a1', i]), () => index.delete(['a1', i]), re);
      assert.equal(await store.has('a1'), true, 'a refused delete deletes nothing');
    });
  }

  it('getMany keeps the order of ids, once each, and leaves out unknown ids', async () => {
    assert.deepEqual((await store.getMany(['b2', 'nope', 'a1', 'b2'])).map((d) => d.id), ['b2', 'a1']);
    assert.deepEqual((await store.getMany(['b2', 'nope', 'a1', 'b2'])).map((d) => d.id), (await index.getMany(['b2', 'nope', 'a1', 'b2'])).map((d) => d.id));
  });

  it('rescore equals M3Index.rescore on the same ids', async () => {
    const ids = ['b2', 'a1', 'missing', 'a2'];
    const [a, b] = await Promise.all([store.rescore('tenant document', ids), index.rescore('tenant document', ids)]);
    assert.deepEqual(a.map((h) => h.id), b.map((h) => h.id));
    a.forEach((h, i) => assert.ok(Math.abs(h.score - b[i].score) < 1e-5, `${h.id} ${h.score} vs ${b[i].score}`));
  });
});
