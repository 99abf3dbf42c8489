/**
 * Bad input through @bgem3/core's public API and the `bgem3` CLI, on the real fixture model:
 * every case gets a defined result or an error that says what is wrong. (What the package tests
 * already cover is referenced from docs/RELIABILITY.md, not repeated here.)
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { computeScore, M3Encoder, M3Index, type M3Weights } from '@bgem3/core';
import { assertOneLineError, FIXTURE, m3, ODD, pool, runCli, tempDir, typeError } from './helpers.ts';

const NOT_TEXT: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 42],
  ['NaN', Number.NaN],
  ['an object', { text: 'x' }],
  ['an array', ['x']],
  ['a String object', new String('x')],
  ['a symbol', Symbol('x')],
];
const BAD_K: unknown[] = [0, -1, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '3'];
const BAD_WEIGHTS: unknown[] = [
  [Number.NaN, 1, 1],
  [1, Number.POSITIVE_INFINITY, 1],
  [-0.1, 1, 1],
  [0, 0, 0],
  [1, 1],
  [1, 1, 1, 1],
  ['1', 1, 1],
  'dense',
];

function isUnit(data: Float32Array, start: number, dim: number): boolean {
  let s = 0;
  for (let i = start; i < start + dim; i++) s += data[i] * data[i];
  return Math.abs(Math.sqrt(s) - 1) < 1e-4;
}

// maxLength 512: the 1 MB string is cut there. At the default 8,192 tokens one text costs the tiny
// model ~3.4 GB and ~45 s here (attention is O(L²)); that case is encoder-runtime.test.ts's.
const MAX = 512;
let enc: M3Encoder;
before(async () => {
  enc = await M3Encoder.load(FIXTURE, { workers: 0, maxLength: MAX });
});
after(() => enc.close());

describe('M3Encoder: every entry point', () => {
  test('non-text entries are a TypeError naming the index, for every output selection, encodeFull and tokenize', async () => {
    for (const [what, bad] of NOT_TEXT) {
      const texts = ['fine', 'also fine', bad] as string[];
      for (const want of [{ dense: true }, { dense: false, sparse: true }, { dense: false, colbert: true }, { dense: false }]) {
        await assert.rejects(enc.encode(texts, want), typeError(/texts\[2\] must be a string/), `${what} ${JSON.stringify(want)}`);
      }
      await assert.rejects(enc.encodeFull(texts), typeError(/texts\[2\]/), `encodeFull ${what}`);
      await assert.rejects(enc.tokenize(texts), typeError(/texts\[2\]/), `tokenize ${what}`);
    }
    for (const notArray of [undefined, 'one text', 42, { 0: 'x', length: 1 }, new Set(['x'])]) {
      await assert.rejects(enc.encode(notArray as never), typeError(/texts must be an array of strings/), String(notArray));
    }
    assert.equal(enc.stats.textsEncoded, 0, 'nothing was encoded before the check');
  });

  test('odd strings: every output is defined (finite dense, unit ColBERT rows, positive sparse weights)', async () => {
    const texts = Object.values(ODD);
    const out = await enc.encode(texts, { dense: true, sparse: true, colbert: true });
    out.forEach((r, i) => {
      const what = Object.keys(ODD)[i];
      assert.equal(r.dense!.length, 32, what);
      assert.ok(r.dense!.every(Number.isFinite) && isUnit(r.dense!, 0, 32), `${what}: finite unit dense`);
      assert.ok(r.sparse!.values.every((v) => Number.isFinite(v) && v > 0), `${what}: sparse weights > 0`);
      assert.equal(r.colbert!.count, r.tokens - 1, `${what}: one ColBERT row per token after <s>`);
      for (let row = 0; row < r.colbert!.count; row++) assert.ok(isUnit(r.colbert!.data, row * 32, 32), `${what}: ColBERT row ${row}`);
    });
    assert.deepEqual([out[0].tokens, out[1].tokens], [2, 2], "'' and whitespace (NBSP, U+3000 included) are <s></s>");
    const [lowFixed] = await enc.encode([ODD.loneLow.replace('\uDC00', '\uFFFD')]);
    // Batched with padding vs alone: the masked and mask-free attention kernels differ in the last bits.
    out[4].dense!.forEach((v, i) => assert.ok(Math.abs(v - lowFixed.dense![i]) < 1e-6, 'a lone low surrogate encodes as U+FFFD'));
    assert.equal(out[5].truncated, true);
    assert.equal(out[5].tokens, MAX);
  });

  test('encode options of the wrong type are INVALID_ARGUMENT before any work', async () => {
    const before = enc.stats.textsEncoded;
    for (const maxLength of ['12', -5, 2.5, Number.POSITIVE_INFINITY, 8193]) {
      await assert.rejects(enc.encode(['x'], { maxLength: maxLength as number }), m3('INVALID_ARGUMENT', /maxLength must be an integer from 2 to 8192/));
      await assert.rejects(enc.tokenize(['x'], maxLength as number), m3('INVALID_ARGUMENT', /maxLength/));
    }
    assert.equal(enc.stats.textsEncoded, before);
  });
});

describe('M3Index on the fixture encoder', () => {
  const corpus = [
    { id: 'paris', text: 'Paris is the capital of France.' },
    { id: 'tea', text: 'Green tea is popular in Japan and China.' },
    { id: 'bge', text: 'BGE-M3 computes dense, sparse and ColBERT vectors in one pass.' },
    { id: 'beijing', text: '北京是中国的首都。' },
  ];
  let index: M3Index;
  before(async () => {
    index = await M3Index.create({ encoder: enc, colbertPrecision: 'fp32' });
    await index.add(corpus);
  });

  test('bad documents are INVALID_ARGUMENT naming docs[i]; nothing of the call is stored', async () => {
    const fresh = await M3Index.create({ encoder: enc });
    const cases: [unknown, RegExp][] = [
      [null, /docs\[1\] must be an object/],
      ['text', /docs\[1\] must be an object/],
      [['x'], /docs\[1\] must be an object/],
      [{}, /docs\[1\]\.text must be a string/],
      [{ text: null }, /docs\[1\]\.text must be a string/],
      [{ text: 42 }, /docs\[1\]\.text must be a string/],
      [{ id: 7, text: 'x' }, /docs\[1\]\.id must be a string, got 7/],
      [{ id: '', text: 'x' }, /docs\[1\]\.id must not be empty/],
      [{ text: 'x', metadata: [1] }, /docs\[1\]\.metadata must be a plain object/],
      [{ text: 'x', metadata: 'm' }, /docs\[1\]\.metadata must be a plain object/],
      // What no store can hold (PostgreSQL cannot store U+0000; M3Index keeps the same rule).
      [{ text: ODD.nul }, /docs\[1\]\.text contains U\+0000, which stores cannot hold \(strip it first\)/],
      [{ text: ODD.loneHigh }, /docs\[1\]\.text contains a lone UTF-16 surrogate .*toWellFormed\(\)/],
      [{ text: ODD.loneLow }, /docs\[1\]\.text contains a lone UTF-16 surrogate/],
      [{ id: 'a\u0000b', text: 'x' }, /docs\[1\]\.id contains U\+0000/],
      [{ id: 'x\uDC00', text: 'x' }, /docs\[1\]\.id contains a lone UTF-16 surrogate/],
      [{ text: 'x', metadata: { note: 'a\u0000b' } }, /docs\[1\]\.metadata\.note contains U\+0000/],
      [{ text: 'x', metadata: { ['k\u0000']: 1 } }, /docs\[1\]\.metadata key "k\\u0000" contains U\+0000/],
    ];
    for (const [bad, pattern] of cases) {
      await assert.rejects(fresh.add([{ id: 'ok', text: 'fine' }, bad as never]), m3('INVALID_ARGUMENT', pattern), JSON.stringify(bad));
      assert.equal(fresh.size, 0, `${JSON.stringify(bad)}: the valid document before it was not stored either`);
    }
    assert.deepEqual(await fresh.add([]), []);
    for (const notDocs of [null, 'text', {}]) {
      await assert.rejects(fresh.add(notDocs as never), m3('INVALID_ARGUMENT', /M3Index\.add: docs must be an array or an iterable of documents/), JSON.stringify(notDocs));
    }
    assert.equal(fresh.size, 0);
  });

  test('odd texts a store can hold are indexed and each finds itself first by dense search; U+0000 and lone-surrogate texts are refused, cleaned they are found by the odd query', async () => {
    const odd = await M3Index.create({ encoder: enc });
    const all = Object.entries(ODD).map(([id, text]) => ({ id, text }));
    const storable = all.filter((d) => d.text.isWellFormed() && !d.text.includes('\u0000'));
    assert.deepEqual(all.filter((d) => !storable.includes(d)).map((d) => d.id), ['nul', 'loneHigh', 'loneLow']);
    await assert.rejects(odd.add([...all, ...corpus]), m3('INVALID_ARGUMENT', /docs\[2\]\.text contains U\+0000/));
    assert.equal(odd.size, 0, 'nothing of the refused call is stored');
    // The remedies the messages give: strip U+0000; text.toWellFormed() (what the encoder reads anyway).
    const cleaned = all.map((d) => ({ id: d.id, text: d.text.replaceAll('\u0000', '').toWellFormed() }));
    await odd.add([...cleaned, ...corpus]);
    assert.equal(odd.size, all.length + corpus.length);
    for (const d of all.filter((x) => x.id !== 'nul')) {
      const hits = await odd.searchDense(d.text, { k: 3 });
      assert.ok(Math.abs(hits[0].score - 1) < 1e-5, `${d.id}: best score ${hits[0].score}`);
      // '' and whitespace both tokenise to <s></s> and so have identical encodings.
      const same = d.id === 'empty' || d.id === 'whitespace' ? ['empty', 'whitespace'] : [d.id];
      assert.ok(same.includes(hits[0].id), `${d.id} found first, got ${hits[0].id}`);
      const fused = await odd.search(d.text, { k: odd.size });
      assert.equal(fused.length, odd.size, 'k = corpus size returns every document');
      assert.ok(fused.every((h) => Number.isFinite(h.score) && Number.isFinite(h.scores.colbert)));
    }
    // U+0000 in a query is encoded like any other character: every document gets a finite score.
    const nulHits = await odd.search(ODD.nul, { k: odd.size });
    assert.equal(nulHits.length, odd.size);
    assert.ok(nulHits.every((h) => Number.isFinite(h.score) && Number.isFinite(h.scores.dense) && Number.isFinite(h.scores.colbert)));
  });

  test('queries that are not text or an encoding are INVALID_ARGUMENT; blank queries are ranked', async () => {
    for (const q of [null, undefined, 42, true]) {
      await assert.rejects(index.search(q as never), m3('INVALID_ARGUMENT', /query must be a string or an EncodeResult/), String(q));
      await assert.rejects(index.searchDense(q as never), m3('INVALID_ARGUMENT'), String(q));
      await assert.rejects(index.searchSparse(q as never), m3('INVALID_ARGUMENT'), String(q));
    }
    for (const q of [{}, [], { tokens: 1, truncated: false, dense: new Float32Array(48) }]) {
      await assert.rejects(index.search(q as never), m3('INVALID_ARGUMENT', /the query needs a dense Float32Array of 32 values/), JSON.stringify(q));
    }
    for (const q of [ODD.empty, ODD.whitespace]) {
      const hits = await index.search(q, { k: 10 });
      assert.equal(hits.length, corpus.length, 'dense candidates always exist');
      assert.ok(hits.every((h) => Number.isFinite(h.score)));
      assert.deepEqual(await index.searchSparse(q), [], 'a query without tokens shares none with any document');
    }
  });

  test('k and fetchK that are not positive integers are INVALID_ARGUMENT; k beyond the corpus returns it all', async () => {
    for (const k of BAD_K) {
      await assert.rejects(index.search('tea', { k: k as number }), m3('INVALID_ARGUMENT', /k must be an integer from 1 to 100000, got/), `search k=${String(k)}`);
      await assert.rejects(index.search('tea', { fetchK: k as number }), m3('INVALID_ARGUMENT', /fetchK must be an integer from 1 to 100000, got/), `fetchK=${String(k)}`);
      await assert.rejects(index.searchDense('tea', { k: k as number }), m3('INVALID_ARGUMENT', /k must be an integer from 1 to 100000, got/), `searchDense k=${String(k)}`);
      await assert.rejects(index.searchSparse('tea', { k: k as number }), m3('INVALID_ARGUMENT', /k must be an integer from 1 to 100000, got/), `searchSparse k=${String(k)}`);
    }
    // Only undefined means the default; null is refused by name, as by every store (one options check).
    await assert.rejects(index.search('tea', { k: null as never }), m3('INVALID_ARGUMENT', /k must be an integer from 1 to 100000, got null/));
    await assert.rejects(index.search('tea', { fetchK: null as never }), m3('INVALID_ARGUMENT', /fetchK must be an integer from 1 to 100000, got null/));
    assert.equal((await index.search('tea', { k: undefined })).length, corpus.length, 'k: undefined is the default (10)');
    await assert.rejects(index.search('tea', { k: 100001 }), m3('INVALID_ARGUMENT', /k must be an integer from 1 to 100000, got 100001/));
    assert.equal((await index.search('tea', { k: 1000, fetchK: 1 })).length, corpus.length, 'fetchK is raised to k');
    assert.equal((await index.searchDense('tea', { k: 1000 })).length, corpus.length);
    const sparse = await index.searchSparse('Green tea', { k: 1000 });
    assert.ok(sparse.length >= 1 && sparse.length <= corpus.length && sparse.every((h) => h.score > 0), 'only documents sharing a token');
  });

  test('weights that are negative, NaN, infinite, all zero or mis-sized are INVALID_ARGUMENT naming weights', async () => {
    for (const w of BAD_WEIGHTS) {
      await assert.rejects(index.search('tea', { weights: w as M3Weights }), m3('INVALID_ARGUMENT', /weights/), JSON.stringify(w));
    }
    const colbertOnly = await index.search('tea', { weights: [0, 0, 1] });
    assert.ok(colbertOnly.every((h) => h.score === h.scores.colbert), 'a single non-zero weight is that mode alone');
  });

  test('delete: unknown, empty and repeated ids; a filter that is not a function', async () => {
    const ix = await M3Index.create({ encoder: enc });
    await ix.add(corpus);
    assert.equal(await ix.delete('no-such-id'), 0);
    assert.equal(await ix.delete([]), 0);
    assert.equal(await ix.delete(['tea', 'tea', 'nope']), 1);
    assert.equal(ix.size, corpus.length - 1);
    // The store's id-list check (one for every store): INVALID_ARGUMENT naming ids or the entry.
    await assert.rejects(ix.delete(42 as never), m3('INVALID_ARGUMENT', /ids must be a string or an array of strings, got 42/), 'a non-iterable is refused naming ids');
    await assert.rejects(ix.delete(['tea', 7] as never), m3('INVALID_ARGUMENT', /ids\[1\] must be a string, got 7/));
    await assert.rejects(ix.delete('a\u0000'), m3('INVALID_ARGUMENT', /ids contains U\+0000/));
    assert.equal(ix.size, corpus.length - 1, 'the refused deletes removed nothing');
    for (const filter of ['lang', 42, {}]) {
      await assert.rejects(ix.search('tea', { filter: filter as never }), m3('INVALID_ARGUMENT', /filter must be a function/));
    }
  });

  test('an empty index returns [] for valid searches and still rejects invalid arguments', async () => {
    const empty = await M3Index.create({ encoder: enc });
    const before = enc.stats.textsEncoded;
    assert.deepEqual(await empty.search('anything', { k: 5 }), []);
    assert.deepEqual(await empty.searchDense('anything'), []);
    assert.deepEqual(await empty.searchSparse('anything'), []);
    assert.equal(enc.stats.textsEncoded, before, 'no query is encoded for an empty index');
    await assert.rejects(empty.search('x', { k: 0 }), m3('INVALID_ARGUMENT'));
    await assert.rejects(empty.search('x', { weights: [0, 0, 0] }), m3('INVALID_ARGUMENT'));
    assert.equal(await empty.delete(['x']), 0);
  });
});

describe('computeScore', () => {
  test('bad pairs are a TypeError naming the pair; [] gives []; odd strings give five finite scores', async () => {
    await assert.rejects(computeScore(enc, 'q' as never), typeError(/pairs must be an array/));
    for (const bad of [['q'], ['q', 5], [null, 'p'], { query: 'q' }, { query: 'q', passage: {} }, null, 'qp']) {
      await assert.rejects(computeScore(enc, [['q', 'p'], bad as never]), typeError(/pairs\[1\] must be \[query, passage\]/), JSON.stringify(bad));
    }
    assert.deepEqual(await computeScore(enc, []), []);
    const odd = Object.values(ODD).map((t) => [t, t] as const);
    for (const s of await computeScore(enc, odd, { maxPassageLength: MAX })) {
      for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense'] as const) assert.ok(Number.isFinite(s[key]), key);
    }
  });

  test('bad weights are INVALID_ARGUMENT before anything is encoded, even for no pairs', async () => {
    const before = enc.stats.textsEncoded;
    for (const w of BAD_WEIGHTS) {
      await assert.rejects(computeScore(enc, [['a query never seen', 'a passage never seen']], { weights: w as never }), m3('INVALID_ARGUMENT', /weights/), JSON.stringify(w));
      await assert.rejects(computeScore(enc, [], { weights: w as never }), m3('INVALID_ARGUMENT', /weights/), `[] pairs, ${JSON.stringify(w)}`);
    }
    assert.equal(enc.stats.textsEncoded, before, 'nothing was encoded');
  });
});

describe('bgem3 CLI', () => {
  let dir: string;
  let docs: string;
  let built: string;
  before(async () => {
    dir = tempDir('bgem3-rel-cli-');
    docs = join(dir, 'docs.jsonl');
    writeFileSync(docs, 'Paris is the capital of France.\nGreen tea is popular in Japan.\n'.split('\n').filter(Boolean).map((text, i) => JSON.stringify({ id: `d${i}`, text })).join('\n'));
    built = join(dir, 'ix');
    const r = await runCli(['index', '--model', FIXTURE, '--input', docs, '--out', built]);
    assert.equal(r.status, 0, r.stderr);
  });

  test('user errors: exit 1, one line on stderr saying what is wrong, no stack trace', async () => {
    const bad3 = join(dir, 'bad3.jsonl');
    writeFileSync(bad3, '{"text":"one"}\n{"text":"two"}\n{"text": "three",}\n');
    const notIndex = join(dir, 'not-an-index');
    mkdirSync(notIndex);
    const brokenIndex = join(dir, 'broken-index');
    mkdirSync(brokenIndex);
    writeFileSync(join(brokenIndex, 'CURRENT'), '{"format":"bgem3-m3index","generation":"../../etc"}');
    const M = ['--model', FIXTURE];
    const cases: [string[], string, RegExp][] = [
      [['encode', ...M], '[1, 2]\n', /stdin line 1: expected a JSON object/],
      [['encode', ...M], '{"text":"a"}\n{"text": null}\n', /stdin line 2: "text" must be a string/],
      [['encode', ...M], '{}\n', /line 1: "text" must be a string/],
      [['encode', ...M, '--input', bad3], '', /bad3\.jsonl line 3: invalid JSON/],
      [['encode', ...M, '--input', join(dir, 'missing.jsonl')], '', /cannot read .*missing\.jsonl: no such file/],
      [['encode', ...M, '--outputs', 'dense,bogus'], '{"text":"a"}\n', /--outputs: unknown output "bogus"/],
      [['encode', ...M, '--batch-size', '0'], '', /--batch-size must be a positive integer/],
      [['encode', ...M, '--dtype', 'fp8'], '', /fp8/],
      [['encode', ...M, '--bogus-flag'], '', /unknown option '--bogus-flag'/],
      [['frobnicate'], '', /unknown command 'frobnicate'/],
      [['score', ...M, '--weights', '0,0,0'], '', /three non-negative numbers/],
      [['score', ...M, '--weights', 'NaN,1,1'], '', /three non-negative numbers/],
      [['score', ...M, '--max-query-length=-3'], '', /--max-query-length must be a positive integer/],
      [['score', ...M], '{"query": 1, "passage": "p"}\n', /line 1: "query" must be a string/],
      [['index', ...M, '--input', '-', '--out', join(dir, 'o2')], '{"id": {}, "text": "x"}\n', /line 1: "id" must be a string/],
      [['index', ...M, '--input', '-', '--out', join(dir, 'o3')], '{"text": "x", "metadata": [1]}\n', /line 1: "metadata" must be an object/],
      [['index', ...M, '--input', docs, '--out', join(dir, 'o4'), '--colbert-precision', 'fp8'], '', /--colbert-precision must be one of int8, fp16, fp32, none/],
      // Texts no store can hold (JSON escapes \u0000 and a lone \ud800): refused, --out is not created.
      [['index', ...M, '--input', '-', '--out', join(dir, 'o5')], '{"text": "ok"}\n{"text": "a\\u0000b"}\n', /docs\[1\]\.text contains U\+0000, which stores cannot hold \(strip it first\)/],
      [['index', ...M, '--input', '-', '--out', join(dir, 'o6')], '{"text": "ok"}\n{"text": "x\\ud800"}\n', /docs\[1\]\.text contains a lone UTF-16 surrogate .*toWellFormed\(\)/],
      [['search', '--index', built, '--query', 'q', '--k', '0'], '', /--k must be a positive integer/],
      [['search', '--index', built, '--query', 'q', '--k=-1'], '', /--k must be a positive integer/],
      [['search', '--index', built, '--query', 'q', '--k', '1.5'], '', /--k must be a positive integer/],
      [['search', '--index', built, '--query', 'q', '--fetch-k', '0'], '', /--fetch-k must be a positive integer/],
      [['search', '--index', built, '--query', 'q', '--weights=-1,1,1'], '', /three non-negative numbers/],
      [['search', '--index', built], '', /required option '-q, --query <text>' not specified/],
      [['search', '--index', notIndex, '--query', 'q', ...M], '', /not an M3Index directory/],
      [['search', '--index', brokenIndex, '--query', 'q', ...M], '', /CURRENT: invalid generation/],
    ];
    // One case per kind of error (each run is a process; most also load the model).
    const runs = await pool(cases.map(([args, input]) => () => runCli(args, input)));
    runs.forEach((r, i) => assertOneLineError(r, cases[i][2], cases[i][0].join(' ')));
    for (const o of ['o5', 'o6']) assert.ok(!existsSync(join(dir, o)), `${o}: a refused index writes nothing`);
  });

  test('odd but valid input gives defined output: empty input, blank lines, odd strings, an empty index', async () => {
    const texts = Object.values(ODD);
    const input = `\n${texts.map((text) => JSON.stringify({ text })).join('\n\n')}\n   \n`;
    const emptyDocs = join(dir, 'empty.jsonl');
    writeFileSync(emptyDocs, '');
    const emptyIndex = join(dir, 'empty-ix');
    const [none, odd, scored, builtEmpty, blankQuery] = await pool([
      () => runCli(['encode', '--model', FIXTURE], ''),
      () => runCli(['encode', '--model', FIXTURE, '--outputs', 'dense,sparse', '--max-length', `${MAX}`], input),
      () => runCli(['score', '--model', FIXTURE, '--max-passage-length', `${MAX}`], texts.map((t) => JSON.stringify({ query: t, passage: t })).join('\n')),
      () => runCli(['index', '--model', FIXTURE, '--input', emptyDocs, '--out', emptyIndex]),
      () => runCli(['search', '--index', built, '--query', '', '--k', '50']),
    ]);
    assert.equal(none.status, 0, none.stderr);
    assert.equal(none.stdout, '', 'no input, no output');
    assert.equal(odd.status, 0, odd.stderr);
    const lines = odd.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, texts.length, 'one output line per input line, blank lines skipped');
    for (const l of lines) assert.ok(l.dense.length === 32 && l.dense.every(Number.isFinite) && l.colbert === undefined);
    assert.equal(scored.status, 0, scored.stderr);
    assert.equal(scored.stdout.trim().split('\n').length, texts.length);
    assert.equal(builtEmpty.status, 0, builtEmpty.stderr);
    assert.equal(JSON.parse(builtEmpty.stdout).documents, 0);
    const searchedEmpty = await runCli(['search', '--index', emptyIndex, '--query', 'anything']);
    assert.equal(searchedEmpty.status, 0, searchedEmpty.stderr);
    assert.deepEqual(JSON.parse(searchedEmpty.stdout).results, []);
    assert.equal(blankQuery.status, 0, blankQuery.stderr);
    assert.equal(JSON.parse(blankQuery.stdout).results.length, 2, 'k beyond the corpus returns the whole corpus');
  });
});
