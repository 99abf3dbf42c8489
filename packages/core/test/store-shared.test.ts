// The checks and ingestion every store shares (packages/core/src/store, scoring/weights.ts):
// the same input gets the same answer in M3Index and PgM3Store because both call these.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { DEFAULT_M3_WEIGHTS, checkM3Weights, combineScores, m3AllScore } from '../src/scoring/weights.js';
import { WriteSequencer, checkEncodedDocuments, ingestDocuments, lastOccurrences } from '../src/store/ingest.js';
import { checkRescoreOptions, checkSearchOptions, checkSingleModeOptions } from '../src/store/options.js';
import { resolveQuery } from '../src/store/query.js';
import { MAX_ID_LENGTH } from '../src/store/types.js';
import { checkDocument, checkEncoding, checkId, checkIdList, checkMetadata, checkText } from '../src/store/validate.js';
import { checkWhere, compareCodePoints, matchesWhere } from '../src/store/where.js';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '../src/types.js';

const invalid = (pattern?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof M3Error, String(e));
  assert.equal(e.code, 'INVALID_ARGUMENT');
  if (pattern) assert.match(e.message, pattern);
  return true;
};

describe('M3 weights: one type, one check, one default', () => {
  test('the default is the model card example and the All score is FlagEmbedding\'s', () => {
    assert.deepEqual([...DEFAULT_M3_WEIGHTS], [0.4, 0.2, 0.4]);
    // research/BGE_M3/README.md, pair (q0, p0): dense 0.62598, sparse 0.19556, colbert 0.77965 → 0.60136
    const s = m3AllScore({ dense: 0.62598, sparse: 0.19556, colbert: 0.77965 });
    assert.ok(Math.abs(s - 0.60136) < 1e-5, String(s));
    assert.equal(m3AllScore({ dense: 1, sparse: 2, colbert: 3 }, [1, 1, 1]), 2);
    assert.equal(m3AllScore({ dense: 1, sparse: 2, colbert: 3 }, [0, 0, 5]), 3);
    const t = m3AllScore({ dense: 0.62598, sparse: 0.19556, colbert: 0.77983 }, [1, 0.3, 1]);
    assert.ok(Math.abs(t - 0.63673) < 1e-5, String(t));
    const c = combineScores({ dense: 0.5, sparse: 0.25, colbert: 1 });
    assert.equal(c['sparse+dense'], 0.375);
    assert.equal(c['colbert+sparse+dense'], 1.75 / 3);
  });

  test('extreme but valid weights rank like their ratios: no NaN, no constant score', () => {
    const scores = { dense: 0.3, sparse: 0.1, colbert: 0.7 };
    assert.deepEqual(checkM3Weights([1e308, 1e308, 1e308]), [1, 1, 1]);
    assert.equal(m3AllScore(scores, [1e308, 1e308, 1e308]), m3AllScore(scores, [1, 1, 1]));
    assert.deepEqual(checkM3Weights([5e-324, 0, 0]), [1, 0, 0]);
    assert.equal(m3AllScore(scores, [5e-324, 0, 0]), 0.3);
    assert.equal(m3AllScore({ dense: 0.9, sparse: 0, colbert: 0 }, [5e-324, 0, 0]), 0.9);
  });

  test('bad weights are INVALID_ARGUMENT naming the entry', () => {
    for (const w of [[0, 0, 0], [-1, 1, 1], [1, Number.NaN, 1], [1, Infinity, 1], [1, 1], '1,1,1', null, [1, '1', 1]]) {
      assert.throws(() => checkM3Weights(w), invalid(/weights/), JSON.stringify(w));
    }
    assert.throws(() => checkM3Weights([1, -2, 1]), invalid(/weights\[1\]/));
    assert.throws(() => m3AllScore({ dense: 1, sparse: Number.NaN, colbert: 1 }), invalid(/sparse/));
  });
});

describe('ids', () => {
  test('well-formed bounded strings only', () => {
    for (const id of ['a', 'doc-1', '東京', '😀', ' ', 'x'.repeat(MAX_ID_LENGTH)]) checkId(id);
    assert.throws(() => checkId('a\ud800b', 'docs[0].id'), invalid(/docs\[0\]\.id.*surrogate/));
    assert.throws(() => checkId('\udc00'), invalid(/surrogate/));
    assert.throws(() => checkId(''), invalid(/empty/));
    assert.throws(() => checkId('a\u0000'), invalid(/U\+0000/));
    assert.throws(() => checkId('x'.repeat(MAX_ID_LENGTH + 1)), invalid(/at most/));
    for (const id of [42, 9007199254740993n, null, undefined, {}, ['a']]) assert.throws(() => checkId(id), invalid(/must be a string/));
  });

  test('id lists: a string or an iterable of strings, each checked', () => {
    assert.deepEqual(checkIdList('a'), ['a']);
    assert.deepEqual(checkIdList(new Set(['a', 'b'])), ['a', 'b']);
    assert.throws(() => checkIdList(42), invalid(/ids must be a string or an array/));
    assert.throws(() => checkIdList(['a', 7]), invalid(/ids\[1\]/));
  });
});

describe('metadata: plain JSON, copied', () => {
  test('accepted JSON is copied deeply (the caller may change its object afterwards)', () => {
    const tags = ['a', 'b'];
    const input = { n: 1.5, s: 'x', b: false, z: null, tags, nested: { deep: [1, { x: 'y' }] }, neg: -0 };
    const copy = checkMetadata(input);
    assert.deepEqual(copy, { n: 1.5, s: 'x', b: false, z: null, tags: ['a', 'b'], nested: { deep: [1, { x: 'y' }] }, neg: 0 });
    tags.push('c');
    (input.nested.deep[1] as { x: string }).x = 'changed';
    assert.deepEqual(copy.tags, ['a', 'b']);
    assert.deepEqual(copy.nested, { deep: [1, { x: 'y' }] });
    assert.deepEqual(checkMetadata(undefined), {});
    assert.deepEqual(checkMetadata(Object.create(null)), {});
    // "__proto__" stays an ordinary key and pollutes nothing
    const proto = checkMetadata(JSON.parse('{"__proto__": {"polluted": true}}'));
    assert.deepEqual(Object.keys(proto), ['__proto__']);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(JSON.stringify(proto), '{"__proto__":{"polluted":true}}');
  });

  test('everything that is not plain JSON is refused naming its key path', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = { back: cyclic };
    const sparse = [1, , 3]; // eslint-disable-line no-sparse-arrays
    const cases: [unknown, RegExp][] = [
      [{ created: new Date() }, /metadata\.created is a Date.*toISOString/],
      [{ u: new URL('https://example.com') }, /metadata\.u is a URL/],
      [{ m: new Map() }, /metadata\.m is a Map/],
      [{ s: new Set() }, /metadata\.s is a Set/],
      [{ t: new Float32Array(2) }, /metadata\.t is a Float32Array/],
      [{ big: 1n }, /metadata\.big is a BigInt/],
      [{ f: () => 1 }, /metadata\.f is a function/],
      [{ u: undefined }, /metadata\.u is undefined/],
      [{ x: Number.NaN }, /metadata\.x is NaN/],
      [{ x: [1, Infinity] }, /metadata\.x\[1\] is Infinity/],
      [{ a: { b: { c: -Infinity } } }, /metadata\.a\.b\.c is -Infinity/],
      [cyclic, /metadata\.self\.back .*cycle/],
      [{ arr: sparse }, /metadata\.arr\[1\] is a hole/],
      [{ s: 'a\ud800' }, /metadata\.s .*surrogate/],
      [{ 'k\udc00': 1 }, /surrogate/],
      [{ s: 'a\u0000b' }, /U\+0000/],
      [{ toJSON: 'x' }, /toJSON/],
      [{ [Symbol('s')]: 1 }, /symbol key/],
      [Object.defineProperty({}, 'g', { get: () => 1, enumerable: true }), /metadata\.g is a getter/],
      [new (class Meta {})(), /must be a plain object|not plain JSON/],
      [[1, 2], /must be a plain object/],
      ['text', /must be a plain object/],
      [null, /must be a plain object/],
    ];
    for (const [value, pattern] of cases) assert.throws(() => checkMetadata(value), invalid(pattern), String(pattern));
    let deep: Record<string, unknown> = {};
    const root = deep;
    for (let i = 0; i < 80; i++) deep = deep.x = {} as Record<string, unknown>;
    assert.throws(() => checkMetadata(root), invalid(/nests more than/));
    assert.throws(() => checkMetadata({ big: 'x'.repeat(2 << 20) }), invalid(/larger than/));
  });

  test('documents: text, id and metadata checked together; a missing id becomes a UUID', () => {
    const d = checkDocument({ text: 'hello', metadata: { a: 1 } }, 'docs[0]');
    assert.match(d.id, /^[0-9a-f-]{36}$/);
    assert.deepEqual(d.metadata, { a: 1 });
    assert.throws(() => checkDocument({ text: 1 }, 'docs[2]'), invalid(/docs\[2\]\.text must be a string/));
    assert.throws(() => checkDocument(null, 'docs[0]'), invalid(/docs\[0\] must be an object/));
    assert.throws(() => checkDocument({ id: 'a', text: 'x', metadata: { d: new Date() } }, 'docs[1]'), invalid(/docs\[1\]\.metadata\.d is a Date/));
    assert.throws(() => checkText('a\ud800'), invalid(/surrogate.*toWellFormed/));
    assert.throws(() => checkText('a\u0000'), invalid(/U\+0000/));
  });
});

describe('encodings', () => {
  const shape = { modelId: 'm', dim: 3, vocabSize: 10 };
  const good = (): EncodeResult => ({
    dense: Float32Array.of(1, 0, 0),
    sparse: { indices: Uint32Array.of(1, 4), values: Float32Array.of(0.5, 0.1) },
    colbert: { data: Float32Array.of(1, 0, 0, 0, 1, 0), count: 2, dim: 3 },
    tokens: 3,
    truncated: false,
  });

  test('a good encoding is copied: nothing shares the caller\'s arrays', () => {
    const e = good();
    const c = checkEncoding(e, shape, 'enc');
    e.dense![0] = 9;
    e.sparse!.values[0] = 9;
    e.colbert!.data[0] = 9;
    assert.equal(c.dense[0], 1);
    assert.equal(c.sparse.values[0], 0.5);
    assert.equal(c.colbert.data[0], 1);
  });

  test('wrong shapes and non-finite values are refused saying what', () => {
    const cases: [(e: EncodeResult) => void, RegExp][] = [
      [(e) => (e.dense = Float32Array.of(1, 0)), /dense Float32Array of 3/],
      [(e) => (e.dense![1] = Number.NaN), /dense value 1 is NaN/],
      [(e) => (e.sparse = { indices: Uint32Array.of(4, 1), values: Float32Array.of(1, 1) }), /ascend/],
      [(e) => (e.sparse = { indices: Uint32Array.of(10), values: Float32Array.of(1) }), /below 10/],
      [(e) => (e.sparse!.values[0] = -1), /sparse weight 0 is -1/],
      [(e) => (e.sparse!.values[1] = Infinity), /sparse weight 1 is Infinity/],
      [(e) => (e.colbert = { data: new Float32Array(5), count: 2, dim: 3 }), /ColBERT matrix/],
      [(e) => (e.colbert!.data[4] = Number.NaN), /ColBERT value 4 is NaN/],
      [(e) => delete e.colbert, /ColBERT matrix/],
    ];
    for (const [mutate, pattern] of cases) {
      const e = good();
      mutate(e);
      assert.throws(() => checkEncoding(e, shape, 'enc'), invalid(pattern), String(pattern));
    }
    const noColbert = good();
    delete noColbert.colbert;
    assert.equal(checkEncoding(noColbert, { ...shape, colbert: false }, 'enc').colbert.count, 0);
  });

  test('queries: NaN or wrongly sized query encodings never reach scoring', async () => {
    const ctx = { dim: 3, vocabSize: 10, encoder: () => assert.fail('not a text query') };
    const q = good();
    q.dense![0] = Number.NaN;
    await assert.rejects(resolveQuery(q, { dense: true }, ctx), invalid(/the query.*NaN/));
    const c = good();
    c.colbert!.data[0] = Number.NaN;
    await assert.rejects(resolveQuery(c, { colbert: true }, ctx), invalid(/the query.*ColBERT value 0 is NaN/));
    await assert.rejects(resolveQuery(null as never, { dense: true }, ctx), invalid(/query must be a string or an EncodeResult/));
    assert.equal(await resolveQuery(good(), { dense: true, sparse: true, colbert: true }, ctx).then((r) => r.tokens), 3);
  });
});

describe('where: one filter grammar for every store', () => {
  const docs: Record<string, unknown>[] = [
    { tenant: 'a', year: 2020, tags: ['x', 'y'], lang: 'en', score: 0.5 },
    { tenant: 'b', year: 2024, tags: ['y'], lang: 'fr', draft: null },
    { tenant: 'a', year: '2022', tags: [], lang: 'de' },
    { year: 2019, tags: 'x' },
    {},
  ];
  const match = (where: unknown) => docs.flatMap((d, i) => (matchesWhere(checkWhere(where) as never, d) ? [i] : []));

  test('operators, with the same-type rule and absent keys', () => {
    assert.deepEqual(match({ tenant: 'a' }), [0, 2]);
    assert.deepEqual(match({ tenant: 'a', lang: 'en' }), [0]);
    assert.deepEqual(match({ tenant: { $ne: 'a' } }), [1, 3, 4]);
    assert.deepEqual(match({ year: { $gte: 2020 } }), [0, 1]); // "2022" is a string: not compared with a number
    assert.deepEqual(match({ year: { $gt: 2019, $lt: 2024 } }), [0]);
    assert.deepEqual(match({ year: { $lte: '2023' } }), [2]);
    assert.deepEqual(match({ lang: { $in: ['en', 'de'] } }), [0, 2]);
    assert.deepEqual(match({ lang: { $nin: ['en', 'de'] } }), [1, 3, 4]);
    assert.deepEqual(match({ tags: { $contains: 'x' } }), [0]); // a string "x" is not an array holding "x"
    assert.deepEqual(match({ draft: { $exists: true } }), [1]);
    assert.deepEqual(match({ draft: null }), [1]);
    assert.deepEqual(match({ score: { $exists: false } }), [1, 2, 3, 4]);
    assert.deepEqual(match({ $or: [{ tenant: 'b' }, { year: 2019 }] }), [1, 3]);
    assert.deepEqual(match({ $and: [{ tenant: 'a' }, { $not: { lang: 'en' } }] }), [2]);
    assert.deepEqual(match({}), [0, 1, 2, 3, 4]);
  });

  test('strings compare by code point, as PostgreSQL\'s C collation does', () => {
    // U+FF5E (one UTF-16 unit) sorts below U+1F600 (a surrogate pair) by code point,
    // but above it by UTF-16 units.
    assert.equal(compareCodePoints('\uff5e', '😀'), -1);
    assert.ok('\uff5e' > '😀');
    assert.equal(compareCodePoints('ab', 'abc'), -1);
    assert.equal(compareCodePoints('b', 'abc'), 1);
    assert.equal(compareCodePoints('東京', '東京'), 0);
  });

  test('a value that would match everything is refused naming its path, never a match-all', () => {
    const user: { tenant?: string } = {};
    const cases: [unknown, RegExp][] = [
      [{ tenant: user.tenant }, /where\.tenant must be a string, a finite number, a boolean or null, got undefined/],
      [{ tenant: () => 'a' }, /where\.tenant .*function/],
      [{ tenant: Symbol('a') }, /where\.tenant .*symbol/],
      [{ tenant: 1n }, /where\.tenant .*BigInt/],
      [{ tenant: Number.NaN }, /where\.tenant must be a finite number/],
      [{ tenant: { toJSON: () => ({}) } }, /toJSON|function/],
      [{ toJSON: () => ({}) }, /toJSON/],
      [{ created: new Date() }, /where\.created must be a scalar or an operator object/],
      [{ tags: ['a'] }, /where\.tags is an array: use \{ \$in/],
      [{ year: { $gte: true } }, /where\.year\.\$gte must be a number or a string/],
      [{ year: { $between: [1, 2] } }, /unknown operator/],
      [{ $where: 'x' }, /unknown operator/],
      [{ lang: { $in: [] } }, /where\.lang\.\$in is empty/],
      [{ $or: [] }, /where\.\$or must be a non-empty array/],
      [{ $or: [{ a: undefined }] }, /where\.\$or\[0\]\.a/],
      [{ year: {} }, /empty operator object/],
      [new Map([['a', 1]]), /must be a plain object filter/],
      [null, /must be a plain object filter/],
      ['tenant = a', /must be a plain object filter/],
      [Object.defineProperty({}, 'tenant', { get: () => 'a', enumerable: true }), /getter/],
      // Holes of sparse arrays, which map/every/some skip: `$and: [, ]` would restrict nothing.
      // eslint-disable-next-line no-sparse-arrays
      [{ $and: [, { tenant: 'a' }] }, /where\.\$and\[0\] is a hole in a sparse array/],
      [{ $and: new Array(2) }, /where\.\$and\[0\] is a hole/],
      // eslint-disable-next-line no-sparse-arrays
      [{ $or: [{ tenant: 'a' }, , { tenant: 'b' }] }, /where\.\$or\[1\] is a hole/],
      // eslint-disable-next-line no-sparse-arrays
      [{ tenant: { $nin: [, 'a'] } }, /where\.tenant\.\$nin\[0\] is a hole/],
      [{ tenant: { $in: Object.defineProperty(['a', 'b'], 1, { get: () => 'c', enumerable: true }) } }, /where\.tenant\.\$in\[1\] is a getter/],
    ];
    for (const [w, pattern] of cases) assert.throws(() => checkWhere(w), invalid(pattern), String(pattern));
  });
});

describe('options', () => {
  test('defaults, fetchK at least k, weights rescaled', () => {
    const o = checkSearchOptions(undefined);
    assert.equal(o.k, 10);
    assert.equal(o.fetchK, 100);
    assert.deepEqual(o.weights, [1, 0.5, 1]);
    assert.equal(checkSearchOptions({ k: 200 }).fetchK, 200);
    assert.deepEqual(checkSearchOptions(undefined, 'options', [0.4, 0.2, 0]).weights, [1, 0.5, 0]);
    assert.equal(checkRescoreOptions({}).k, undefined);
    assert.equal(checkSingleModeOptions({ k: 3 }).k, 3);
  });

  test('bad options are refused by name', () => {
    assert.throws(() => checkSearchOptions({ k: 0 }), invalid(/^k must be/));
    assert.throws(() => checkSearchOptions({ fetchK: 1.5 }), invalid(/fetchK/));
    assert.throws(() => checkSearchOptions({ weights: [1, 1] as never }), invalid(/weights/));
    assert.throws(() => checkSearchOptions({ filter: 'x' as never }), invalid(/filter must be a function/));
    assert.throws(() => checkSearchOptions({ signal: {} as never }), invalid(/signal must be an AbortSignal/));
    assert.throws(() => checkSearchOptions({ where: { a: undefined } as never }), invalid(/where\.a/));
    assert.throws(() => checkSingleModeOptions(5 as never), invalid(/options must be an object/));
  });
});

describe('ingestion in call order', () => {
  test('turns apply in reservation order whatever finishes first', async () => {
    const seq = new WriteSequencer();
    const log: string[] = [];
    const slow = seq.reserve();
    const fast = seq.reserve();
    const p2 = fast.ready.then(() => log.push('second')).finally(() => fast.release());
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(log, []); // the second waits for the first
    await slow.ready;
    log.push('first');
    slow.release();
    await p2;
    assert.deepEqual(log, ['first', 'second']);
    await seq.run(() => log.push('third'));
    assert.deepEqual(log, ['first', 'second', 'third']);
    assert.equal(seq.size, 0);
    // a failing turn releases its successors
    await assert.rejects(seq.run(() => { throw new Error('boom'); }), /boom/);
    assert.equal(await seq.run(() => 'after'), 'after');
  });

  // An encoder whose calls finish in the opposite order of their start: long texts take longer.
  function slowEncoder(): TextEncoder3 & { calls: number } {
    const enc = {
      modelId: 'fake',
      dim: 2,
      vocabSize: 4,
      calls: 0,
      async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
        enc.calls++;
        await new Promise((r) => setTimeout(r, texts.reduce((a, t) => a + t.length, 0)));
        if (options?.signal?.aborted) throw new M3Error('ABORTED', 'aborted');
        return texts.map((t) => ({
          dense: Float32Array.of(t.length, 1),
          sparse: { indices: Uint32Array.of(1), values: Float32Array.of(t.length) },
          colbert: { data: Float32Array.of(1, 0), count: 1, dim: 2 },
          tokens: t.length,
          truncated: false,
        }));
      },
    };
    return enc;
  }

  test('a long add called first is applied before a short add called second', async () => {
    const encoder = slowEncoder();
    const seq = new WriteSequencer();
    const stored = new Map<string, string>();
    const ctx = { encoder, model: encoder, batchSize: 8, what: 'test.add', apply: (b: { id: string; text: string }[]) => { for (const e of b) stored.set(e.id, e.text); } };
    const first = ingestDocuments([{ id: 'x', text: 'v1'.repeat(40) }], seq.reserve(), ctx);
    const second = ingestDocuments([{ id: 'x', text: 'v2' }], seq.reserve(), ctx);
    await Promise.all([first, second]);
    assert.equal(stored.get('x'), 'v2');
  });

  test('batches, last occurrence wins, ids in input order, abort and partial failure are reported', async () => {
    const encoder = slowEncoder();
    const seq = new WriteSequencer();
    const batches: string[][] = [];
    const ctx = { encoder, model: encoder, batchSize: 2, what: 'test.add', apply: (b: { id: string }[]) => void batches.push(b.map((e) => e.id)) };
    const ids = await ingestDocuments([{ id: 'a', text: 'x' }, { id: 'a', text: 'y' }, { id: 'b', text: 'z' }], seq.reserve(), ctx);
    assert.deepEqual(ids, ['a', 'a', 'b']);
    assert.deepEqual(batches, [['a'], ['b']]);
    assert.deepEqual(lastOccurrences([{ id: 'a', n: 1 }, { id: 'b', n: 2 }, { id: 'a', n: 3 }]), [{ id: 'b', n: 2 }, { id: 'a', n: 3 }]);
    async function* gen() {
      yield { id: 'g1', text: 'x' };
      yield { id: 'g2', text: 'y' };
      yield { id: 'g3', text: 7 as unknown as string };
    }
    await assert.rejects(ingestDocuments(gen(), seq.reserve(), ctx), invalid(/docs\[2\]\.text must be a string.*2 documents of this call were stored/));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(ingestDocuments([{ text: 'x' }], seq.reserve(), { ...ctx, signal: ac.signal }), (e: unknown) => e instanceof M3Error && e.code === 'ABORTED');
    await assert.rejects(ingestDocuments(42 as never, seq.reserve(), ctx), invalid(/docs must be an array/));
    assert.equal(seq.size, 0); // every turn was released
  });

  test('addEncoded entries are all checked before any is returned', () => {
    const model = { modelId: 'm', dim: 2, vocabSize: 4 };
    const enc = { dense: Float32Array.of(1, 0), sparse: { indices: Uint32Array.of(1), values: Float32Array.of(1) }, colbert: { data: Float32Array.of(1, 0), count: 1, dim: 2 }, tokens: 2, truncated: false };
    const { ids, entries } = checkEncodedDocuments([{ id: 'a', text: 't', encoding: enc }, { id: 'a', text: 'u', encoding: enc }], model, 'x');
    assert.deepEqual(ids, ['a', 'a']);
    assert.equal(entries.length, 1);
    assert.equal(entries[0].text, 'u');
    assert.throws(() => checkEncodedDocuments([{ id: 'a', text: 't', encoding: enc }, { id: 'b', text: 't', encoding: { ...enc, dense: Float32Array.of(1) } }], model, 'x'), invalid(/docs\[1\]\.encoding/));
  });
});
