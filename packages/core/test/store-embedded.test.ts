/**
 * The embedded store's rules inside one process: call order whatever the encode times, searches
 * racing deletes, no aliasing, input hygiene at the boundary, persistence proportional to the
 * change, compaction, and nothing allocated in proportion to the vocabulary or to a size field
 * before it is checked. (Other processes: store-processes.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { M3Error } from '../src/errors.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { SparseIndex } from '../src/retrieval/sparse-index.js';
import { metaCrc, readMeta } from '../src/store/embedded/database.js';
import { FakeEncoder, corpus } from './helpers/fake-m3.js';

const tmp = mkdtempSync(join(tmpdir(), 'bgem3-store-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const codeOf = (code: string, re?: RegExp) => (e: unknown) => e instanceof M3Error && e.code === code && (re === undefined || re.test(e.message));
const all = { dense: true, sparse: true, colbert: true };
let n = 0;
const fresh = (name: string) => join(tmp, `${name}-${n++}`);

describe('call order', () => {
  test('unawaited add, delete and save take effect in call order, whatever the encode times', async () => {
    // Encode time grows with the text (like a model): the long first add finishes encoding last.
    const encoder = new FakeEncoder('fake/m3', 16, 5000, undefined, 0.5);
    const index = await M3Index.create({ encoder });
    const dir = fresh('order');
    const long = 'apple '.repeat(200);
    const ops = [
      index.add([{ id: 'x', text: long }]),
      index.delete('x'),
      index.add([{ id: 'y', text: 'river' }]),
      index.save(dir), // after y, before z
      index.add([{ id: 'z', text: 'ocean '.repeat(100) }]),
    ];
    await Promise.all(ops);
    assert.equal(await index.has('x'), false, 'add(x) then delete(x) leaves no x');
    assert.deepEqual([...index.ids()].sort(), ['y', 'z']);
    // The index lives in dir since the save: z was committed there after it.
    const reader = await M3Index.load(dir, { readOnly: true });
    assert.deepEqual([...reader.ids()].sort(), ['y', 'z']);
    await reader.close();
    await index.close();
  });

  test('add(id, long v1) then add(id, short v2) keeps v2 with concurrent encodes', async () => {
    const encoder = new FakeEncoder('fake/m3', 16, 5000, undefined, 1);
    const index = await M3Index.open(fresh('v2'), { encoder, batchSize: 1 });
    const v1 = index.add([{ id: 'd', text: `version one ${'long '.repeat(150)}`, metadata: { v: 1 } }]);
    const v2 = index.add([{ id: 'd', text: 'version two', metadata: { v: 2 } }]);
    await Promise.all([v1, v2]);
    assert.deepEqual(await index.get('d'), { id: 'd', text: 'version two', metadata: { v: 2 } });
    await index.close();
    const again = await M3Index.load(index.directory as string);
    assert.equal((await again.get('d'))?.metadata.v, 2);
    await again.close();
  });

  test('a search never fails because a candidate was deleted meanwhile', async () => {
    const encoder = new FakeEncoder();
    const index = await M3Index.open(fresh('race'), { encoder });
    const docs = corpus(300, 5);
    await index.add(docs);
    const queries = ['apple river', 'music history', 'fire stone', 'cloud wind water'];
    const searches: Promise<unknown>[] = [];
    const deletes: Promise<number>[] = [];
    for (let i = 0; i < 60; i++) {
      const q = queries[i % queries.length];
      searches.push(index.search(q, { k: 20, fetchK: 300 }));
      searches.push(index.searchDense(q, { k: 20 }));
      searches.push(index.searchSparse(q, { k: 20 }));
      searches.push(index.rescore(q, docs.slice(i * 5, i * 5 + 20).map((d) => d.id as string)));
      deletes.push(index.delete(docs.slice(i * 5, i * 5 + 5).map((d) => d.id as string)));
      if (i % 7 === 0) await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.allSettled(searches);
    const failed = results.filter((r) => r.status === 'rejected');
    assert.deepEqual(failed, [], 'no search rejected');
    assert.equal((await Promise.all(deletes)).reduce((a, b) => a + b, 0), 300);
    assert.equal(index.size, 0);
    assert.deepEqual(await index.search('apple'), []);
    await index.close();
  });
});

describe('nothing returned aliases storage; hygiene at the boundary', () => {
  test('results, documents and inputs are copies', async () => {
    const encoder = new FakeEncoder();
    const index = await M3Index.create({ encoder });
    const metadata = { tags: ['a'], nested: { x: 1 } };
    await index.add([{ id: 'm', text: 'apple river', metadata }]);
    metadata.tags.push('changed');
    metadata.nested.x = 2;
    const got = await index.get('m');
    assert.deepEqual(got?.metadata, { tags: ['a'], nested: { x: 1 } });
    (got?.metadata.tags as string[]).push('mutated');
    const [hit] = await index.search('apple', { k: 1 });
    (hit.metadata.nested as { x: number }).x = 99;
    hit.scores.dense = -1;
    assert.deepEqual((await index.get('m'))?.metadata, { tags: ['a'], nested: { x: 1 } });
    const again = await index.search('apple', { k: 1 });
    assert.deepEqual(again[0].metadata, { tags: ['a'], nested: { x: 1 } });
    assert.notEqual(again[0].scores.dense, -1);
    // The filter gets a copy too.
    await index.search('apple', { filter: (m) => ((m.tags as string[]).length = 0) === 0 });
    assert.deepEqual((await index.get('m'))?.metadata.tags, ['a']);
    await index.close();
  });

  test('lone surrogates, Date metadata and other unstorable input are INVALID_ARGUMENT, never accepted then unloadable', async () => {
    const encoder = new FakeEncoder();
    const dir = fresh('hygiene');
    const index = await M3Index.open(dir, { encoder });
    await index.add([{ id: 'ok', text: 'apple' }]);
    await assert.rejects(index.add([{ id: 'bad\ud800', text: 'apple' }]), codeOf('INVALID_ARGUMENT', /docs\[0\]\.id.*lone UTF-16 surrogate/));
    await assert.rejects(index.add([{ id: 'd', text: 'x', metadata: { created: new Date() } }]), codeOf('INVALID_ARGUMENT', /docs\[0\]\.metadata\.created is a Date/));
    await assert.rejects(index.add([{ id: 'd', text: 'x', metadata: { a: { b: [1, NaN] } } }]), codeOf('INVALID_ARGUMENT', /docs\[0\]\.metadata\.a\.b\[1\]/));
    await assert.rejects(index.add([{ id: 'd', text: 'x', metadata: { u: undefined } }]), codeOf('INVALID_ARGUMENT', /metadata\.u is undefined/));
    await assert.rejects(index.add([{ id: 'd', text: 'bad \udc00 text' }]), codeOf('INVALID_ARGUMENT', /text/));
    await assert.rejects(index.delete(['ok', 'x\ud800']), codeOf('INVALID_ARGUMENT', /ids\[1\]/));
    await assert.rejects(index.get('x\udbff'), codeOf('INVALID_ARGUMENT'));
    const encoded = { id: 'e', text: 'apple', metadata: { when: new URL('https://example.com') }, encoding: encoder.encodeOne('apple', all) };
    await assert.rejects(index.addEncoded([encoded]), codeOf('INVALID_ARGUMENT', /docs\[0\]\.metadata\.when is a URL/));
    assert.deepEqual([...index.ids()], ['ok']);
    await index.close();
    const loaded = await M3Index.load(dir);
    assert.deepEqual([...loaded.ids()], ['ok']);
    await loaded.close();
  });

  test('a 2^30 vocabulary reserves nothing up front', async () => {
    const before = process.memoryUsage().arrayBuffers;
    const sparse = new SparseIndex({ vocabSize: 2 ** 30 });
    sparse.upsert('a', { indices: Uint32Array.from([3, 2 ** 20]), values: Float32Array.from([0.5, 0.25]) });
    const encoder = new FakeEncoder('fake/huge-vocab', 16, 2 ** 30);
    const index = await M3Index.create({ encoder });
    await index.add(corpus(20, 1));
    assert.equal((await index.search('apple', { k: 3 })).length, 3);
    assert.equal(sparse.search({ indices: Uint32Array.from([3]), values: Float32Array.from([1]) }, 1)[0].id, 'a');
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.ok(grown < 64 * 2 ** 20, `array buffers grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);
    await index.close();
  });

  test('a size field is checked against the real data before it sizes anything', async () => {
    const encoder = new FakeEncoder();
    const dir = fresh('count');
    const index = await M3Index.open(dir, { encoder });
    await index.add(corpus(5, 2));
    await index.close();
    // A crafted file: the count is huge and the meta checksum recomputed to match.
    const db = new Database(join(dir, 'index.sqlite'));
    const meta = readMeta(db, 'x');
    db.prepare("UPDATE meta SET value = '2000000000' WHERE key = 'count'").run();
    db.prepare("UPDATE meta SET value = ? WHERE key = 'metaCrc'").run(String(metaCrc({ ...meta, count: 2000000000 })));
    db.close();
    const before = process.memoryUsage().arrayBuffers;
    await assert.rejects(M3Index.load(dir), codeOf('INDEX_INVALID', /5 documents, the index records 2000000000/));
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 2 ** 20);
  });
});

describe('persistence proportional to the change; compaction', () => {
  test('a small add to a large index writes a small part of it; deleted space is reclaimed', async () => {
    const encoder = new FakeEncoder('fake/m3', 64);
    const dir = fresh('incremental');
    const index = await M3Index.open(dir, { encoder, colbertPrecision: 'fp32' });
    const big = corpus(2000, 3).map((d) => ({ ...d, text: `${d.text} ${'filler '.repeat(40)}` }));
    await index.add(big);
    await index.save(dir); // checkpoint
    const file = join(dir, 'index.sqlite');
    const size = () => statSync(file).size + (statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0);
    const base = statSync(file).size;
    const walBefore = statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0;
    await index.add(corpus(10, 4).map((d) => ({ ...d, id: `new-${d.id}` })));
    const walAfter = statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0;
    // WAL growth = bytes written by the commit (before it is checkpointed into the file).
    const written = Math.max(0, walAfter - walBefore);
    assert.ok(written < base * 0.05, `10 documents wrote ${written} bytes to a ${base}-byte index`);
    // Delete most of it: the automatic compaction gives the space back.
    await index.delete(big.slice(0, 1700).map((d) => d.id as string));
    await index.compact();
    const db = new Database(file, { readonly: true });
    const free = db.pragma('freelist_count', { simple: true }) as number;
    db.close();
    assert.equal(free, 0);
    assert.ok(size() < base * 0.5, `after deleting 85% of the documents: ${size()} bytes of ${base}`);
    assert.equal(index.size, 310);
    await index.close();
    const again = await M3Index.load(dir, { encoder, readOnly: true });
    assert.equal(again.size, 310);
    assert.equal((await again.searchDense('apple', { k: 5 })).length, 5);
    await again.close();
  });

  test('colbertPrecision none keeps no ColBERT vectors and ranks by dense + sparse', async () => {
    const encoder = new FakeEncoder();
    const index = await M3Index.create({ encoder, colbertPrecision: 'none' });
    await index.add(corpus(30, 6));
    const hits = await index.search('apple river', { k: 5 });
    assert.equal(hits.length, 5);
    for (const h of hits) {
      assert.equal(h.scores.colbert, 0);
      assert.ok(Math.abs(h.score - (0.4 * h.scores.dense + 0.2 * h.scores.sparse) / 0.6) < 1e-12);
    }
    await assert.rejects(index.search('apple', { weights: [1, 1, 1] }), codeOf('INVALID_ARGUMENT', /ColBERT/));
    const enc = encoder.encodeOne('x', { dense: true, sparse: true });
    await index.addEncoded([{ id: 'nocolbert', text: 'x', encoding: enc }]);
    assert.equal(await index.has('nocolbert'), true);
    await index.close();
  });
});
