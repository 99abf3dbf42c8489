// The check's pure parts: tolerance arithmetic and comparison, the reference-file format and its errors,
// the universal output checks on hand-made encodings, and BAAI's published figures stored once.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { M3Error } from '../src/errors.ts';
import { BGE_M3_REFERENCE, MODEL_CARD_SENTENCES_1, MODEL_CARD_SENTENCES_2, MODEL_CARD_TOKENS } from '../src/check/published.ts';
import { loadCheckReference, parseCheckReference } from '../src/check/reference.ts';
import { checkTolerance, judgeFigure, Q8_CPU_MARGIN, Q8_MEASURED_DRIFT, REFERENCE_ALLOWANCE, toleranceClass } from '../src/check/tolerance.ts';
import { checkOutputs, judgeOnePass, UNIT_NORM_TOLERANCE } from '../src/check/universal.ts';
import { hubRepoOf } from '../src/check/identity.ts';
import type { EncodeResult } from '../src/types.ts';

describe('tolerance', () => {
  test('fp32 vs the fp16 reference: the issue\'s 1e-3 dense and 2e-3 weights', () => {
    const t = checkTolerance('fp32', 'fp16');
    assert.equal(t.dense, 1e-3);
    assert.equal(t.weights, 2e-3);
    assert.match(t.basis, /fp32 model vs fp16 reference/);
    assert.deepEqual(checkTolerance('fp32', 'fp32'), { dense: 1e-4, weights: 2e-4, basis: 'fp32 model vs fp32 reference' });
  });

  test('q8 = reference allowance + margin × measured int8 drift', () => {
    for (const p of ['fp16', 'fp32'] as const) {
      const t = checkTolerance('q8', p);
      const want = {
        dense: REFERENCE_ALLOWANCE[p].dense + Q8_CPU_MARGIN * Q8_MEASURED_DRIFT.dense,
        weights: REFERENCE_ALLOWANCE[p].weights + Q8_CPU_MARGIN * Q8_MEASURED_DRIFT.weights,
      };
      assert.ok(Math.abs(t.dense - want.dense) < 1e-12 && Math.abs(t.weights - want.weights) < 1e-12, JSON.stringify(t));
      assert.match(t.basis, /measured int8 drift/);
    }
    // the figures documented in checkTolerance's TSDoc
    assert.equal(checkTolerance('q8', 'fp16').dense, 0.01165);
    assert.equal(checkTolerance('q8', 'fp16').weights, 0.1025);
    assert.equal(checkTolerance('q8', 'fp32').dense, 0.01075);
    assert.equal(checkTolerance('q8', 'fp32').weights, 0.1007);
  });

  test("a reference file's tolerance replaces a class and says so", () => {
    const t = checkTolerance('q8', 'fp16', { weights: 0.01 });
    assert.equal(t.weights, 0.01);
    assert.equal(t.dense, checkTolerance('q8', 'fp16').dense);
    assert.match(t.basis, /set by the reference file \(weights\)/);
  });

  test('classes: dense similarity and ColBERT are dense-type, lexical figures weight-type', () => {
    assert.equal(toleranceClass('dense_similarity'), 'dense');
    assert.equal(toleranceClass('colbert_score'), 'dense');
    assert.equal(toleranceClass('lexical_weight'), 'weights');
    assert.equal(toleranceClass('lexical_matching_score'), 'weights');
  });

  test('judgeFigure: at most the tolerance passes (boundary included despite float rounding), NaN and ±Infinity never', () => {
    assert.deepEqual(judgeFigure(0.6265, 0.6265, 1e-3), { deviation: 0, ok: true });
    assert.equal(judgeFigure(0.6275, 0.6265, 1e-3).ok, true, '0.6275 − 0.6265 is 1.0000000000000009e-3 in float64');
    assert.equal(judgeFigure(0.6255, 0.6265, 1e-3).ok, true);
    assert.equal(judgeFigure(0.62751, 0.6265, 1e-3).ok, false);
    assert.equal(judgeFigure(0.62549, 0.6265, 1e-3).ok, false);
    assert.ok(Math.abs(judgeFigure(0.63, 0.6265, 1e-3).deviation - 0.0035) < 1e-12);
    assert.equal(judgeFigure(0, 0, 0).ok, true);
    assert.equal(judgeFigure(1e-9, 0, 0).ok, false);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.deepEqual(judgeFigure(bad, 0.5, 1), { deviation: Number.POSITIVE_INFINITY, ok: false });
    }
  });
});

describe("BAAI's published example", () => {
  test('the model card inputs, misspelling included, and figures as the issue quotes them', () => {
    assert.deepEqual(MODEL_CARD_SENTENCES_1, ['What is BGE M3?', 'Defination of BM25']);
    assert.equal(MODEL_CARD_SENTENCES_2.length, 2);
    assert.equal(BGE_M3_REFERENCE.model, 'BAAI/bge-m3');
    assert.equal(BGE_M3_REFERENCE.precision, 'fp16');
    assert.match(BGE_M3_REFERENCE.source, /huggingface\.co\/BAAI\/bge-m3/);
    assert.match(BGE_M3_REFERENCE.source, /use_fp16=True/);
    assert.deepEqual(BGE_M3_REFERENCE.dense_similarity, [
      [0.6265, 0.3477],
      [0.3499, 0.678],
    ]);
    assert.equal(BGE_M3_REFERENCE.lexical_matching_score![0].value, 0.19554901123046875);
    assert.deepEqual(BGE_M3_REFERENCE.colbert_score!.map((p) => p.value), [0.7797, 0.462]);
    // the tokens listed for identity are the published dicts' keys, in text order
    BGE_M3_REFERENCE.lexical_weights!.forEach((d, i) => assert.deepEqual(Object.keys(d).sort(), [...MODEL_CARD_TOKENS[i]].sort()));
  });

  test('it is a valid reference in the file format, and frozen', () => {
    assert.deepEqual(parseCheckReference(JSON.parse(JSON.stringify(BGE_M3_REFERENCE))), BGE_M3_REFERENCE);
    assert.ok(Object.isFrozen(BGE_M3_REFERENCE) && Object.isFrozen(BGE_M3_REFERENCE.dense_similarity![0]));
    assert.throws(() => {
      (BGE_M3_REFERENCE.dense_similarity![0] as number[])[0] = 1;
    }, TypeError);
  });

  test('the figures are stored once: no other source file holds them', () => {
    const src = join(import.meta.dirname, '../src');
    const files: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (n === 'node_modules') continue;
        if (statSync(p).isDirectory()) walk(p);
        else if (/\.(ts|js|mjs)$/.test(n)) files.push(p);
      }
    };
    walk(src);
    walk(join(import.meta.dirname, '../../../examples'));
    for (const needle of ['0.19554901123046875', '0.08356', '0.3335', '0.7797']) {
      const holders = files.filter((f) => !f.includes('node_modules') && readFileSync(f, 'utf8').includes(needle));
      assert.deepEqual(holders, [join(src, 'check/published.ts')], needle);
    }
  });

  test('hub ids name their repo; paths are never taken for one', () => {
    assert.equal(hubRepoOf('hub:BAAI/bge-m3@5617a9f6:onnx/model.onnx'), 'BAAI/bge-m3');
    assert.equal(hubRepoOf('local:/models/BAAI/bge-m3/onnx/model.onnx'), undefined);
    assert.equal(hubRepoOf('local:sha256:abcd'), undefined);
  });
});

describe('reference files', () => {
  const minimal = { model: 'm', source: 's', precision: 'fp32', dense_similarity: [[1, 0], [0, 1]] };

  test('defaults: the model card inputs', () => {
    const r = parseCheckReference(minimal);
    assert.deepEqual(r.sentences_1, MODEL_CARD_SENTENCES_1);
    assert.deepEqual(r.sentences_2, MODEL_CARD_SENTENCES_2);
    assert.equal(r.lexical_weights, undefined);
  });

  const bad: [string, unknown, RegExp][] = [
    ['not an object', [1], /expected a JSON object of reference figures, got an array of 1/],
    ['typo field', { ...minimal, lexical_weight: [] }, /unknown field "lexical_weight" \(known fields: model, source/],
    ['no model', { ...minimal, model: '' }, /"model" must be a non-empty string/],
    ['no source', { model: 'm', precision: 'fp32' }, /"source" must be a non-empty string, got nothing/],
    ['precision', { ...minimal, precision: 'bf16' }, /"precision" must be "fp16" or "fp32".*got "bf16"/],
    ['no figures', { model: 'm', source: 's', precision: 'fp16' }, /no figures: give at least one of dense_similarity/],
    ['dense rows', { ...minimal, dense_similarity: [[1, 0]] }, /"dense_similarity" must be a 2 × 2 matrix/],
    ['dense cols', { ...minimal, dense_similarity: [[1, 0], [0]] }, /"dense_similarity"\[1\] must have 2 numbers/],
    ['dense NaN', { ...minimal, dense_similarity: [[1, 0], [0, 'x']] }, /"dense_similarity"\[1\]\[1\] must be a finite number, got "x"/],
    ['sentences', { ...minimal, sentences_1: ['a', 3] }, /"sentences_1"\[1\] must be a string, got number 3/],
    ['weights count', { ...minimal, lexical_weights: [{}] }, /"lexical_weights" must be an array of 2 objects/],
    ['negative weight', { ...minimal, lexical_weights: [{ a: -1 }, {}] }, /"lexical_weights"\[0\]\["a"\] must be ≥ 0/],
    ['pair ref', { ...minimal, colbert_score: [{ query: 's1[0]', passage: 'sentences_2[0]', value: 1 }] }, /"colbert_score"\[0\]\.query must name an input such as "sentences_1\[0\]", got "s1\[0\]"/],
    ['pair range', { ...minimal, lexical_matching_score: [{ query: 'sentences_1[0]', passage: 'sentences_2[5]', value: 1 }] }, /passage is sentences_2\[5\], but sentences_2 has 2 texts/],
    ['pair field', { ...minimal, colbert_score: [{ query: 'sentences_1[0]', passage: 'sentences_2[0]', score: 1 }] }, /unknown field "score" \(expected query, passage, value\)/],
    ['tolerance', { ...minimal, tolerance: { dense: -1 } }, /"tolerance"\.dense must be ≥ 0/],
  ];
  for (const [what, input, message] of bad) {
    test(`rejected with a clear message: ${what}`, () => {
      assert.throws(
        () => parseCheckReference(input, 'ref.json'),
        (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && e.message.startsWith('ref.json: ') && message.test(e.message),
      );
    });
  }

  test('loadCheckReference names the file for missing, non-JSON and invalid content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bgem3-ref-'));
    try {
      const f = join(dir, 'r.json');
      assert.throws(() => loadCheckReference(f), /reference file .*r\.json: not found/);
      writeFileSync(f, '{"model": ');
      assert.throws(() => loadCheckReference(f), /reference file .*r\.json is not valid JSON/);
      writeFileSync(f, JSON.stringify({ ...minimal, precision: 'fp8' }));
      assert.throws(() => loadCheckReference(f), /reference file .*r\.json: "precision" must be/);
      writeFileSync(f, JSON.stringify(minimal));
      assert.equal(loadCheckReference(f).model, 'm');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('universal checks', () => {
  const unit = (n: number, at = 0) => Float32Array.from({ length: n }, (_, i) => (i === at ? 1 : 0));
  const good = (): EncodeResult => ({
    dense: unit(4),
    sparse: { indices: Uint32Array.from([5, 9]), values: Float32Array.from([0.2, 0.1]) },
    colbert: { data: Float32Array.from([...unit(4, 1), ...unit(4, 2)]), count: 2, dim: 4 },
    tokens: 3,
    truncated: false,
  });
  const statuses = (r: EncodeResult) => Object.fromEntries(checkOutputs([{ label: 't', result: r }], [0, 1, 2, 3]).map((c) => [c.name, c.status]));

  test('a well-formed encoding passes every output check', () => {
    assert.ok(Object.values(statuses(good())).every((s) => s === 'pass'));
  });

  test('each broken property fails its own check with the offending value', () => {
    const cases: [string, (r: EncodeResult) => void, RegExp][] = [
      ['finite', (r) => (r.dense![2] = Number.NaN), /dense\[2\] is NaN/],
      ['finite', (r) => (r.colbert!.data[5] = Number.POSITIVE_INFINITY), /ColBERT row 1 has Infinity/],
      ['dense-unit-norm', (r) => (r.dense![0] = 1 + 2 * UNIT_NORM_TOLERANCE), /‖dense‖ = 1\.0002/],
      ['colbert-unit-norm', (r) => r.colbert!.data.fill(0, 4), /ColBERT row 1 has norm 0/],
      ['colbert-rows', (r) => (r.tokens = 4), /2 ColBERT vectors for 4 tokens \(expected 3/],
      ['sparse-positive', (r) => (r.sparse!.values[1] = 0), /lexical weight of token 9 is 0/],
      ['sparse-no-special-tokens', (r) => (r.sparse!.indices[0] = 2), /special token id 2 has lexical weight 0\.2/],
    ];
    for (const [name, breakIt, detail] of cases) {
      const r = good();
      breakIt(r);
      const checks = checkOutputs([{ label: 'sentences_1[0]', result: r }], [0, 1, 2, 3]);
      const c = checks.find((x) => x.name === name)!;
      assert.equal(c.status, 'fail', name);
      assert.match(c.detail, /^sentences_1\[0\]: /);
      assert.match(c.detail, detail);
    }
    const missing = checkOutputs([{ label: 'x', result: { tokens: 3, truncated: false, dense: unit(4) } }], []);
    assert.match(missing.find((c) => c.name === 'finite')!.detail, /returned no sparse, colbert output/);
  });

  test('one forward pass: judged only when the counters are attributable to the one text', () => {
    const c = (forwardPasses: number, textsEncoded: number) => ({ forwardPasses, textsEncoded });
    assert.equal(judgeOnePass(c(5, 10), c(6, 11), true)?.status, 'pass');
    assert.match(judgeOnePass(c(5, 10), c(8, 11), true)!.detail, /ran 3 forward passes/);
    assert.equal(judgeOnePass(c(5, 10), c(8, 11), true)!.status, 'fail');
    assert.equal(judgeOnePass(c(5, 10), c(6, 11), false)!.status, 'fail');
    assert.equal(judgeOnePass(c(5, 10), c(7, 13), true), undefined, 'other texts ran meanwhile: retry');
    assert.equal(judgeOnePass(c(5, 10), c(5, 10), true), undefined, 'served without encoding: retry');
  });
});
