import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { reciprocalRankFusion, weightedScoreFusion } from '../src/retrieval/fusion.js';

const ids = (...xs: string[]) => xs.map((id) => ({ id }));
const isInvalid = (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT';

describe('reciprocalRankFusion', () => {
  test('score = Σ w / (k + rank), sorted, deduplicated across lists', () => {
    const fused = reciprocalRankFusion([ids('a', 'b', 'c'), ids('c', 'a')]);
    assert.deepEqual(fused, [
      { id: 'a', score: 1 / 61 + 1 / 62 },
      { id: 'c', score: 1 / 63 + 1 / 61 },
      { id: 'b', score: 1 / 62 },
    ]);
  });

  test('per-list weights are applied (they change the order)', () => {
    const fused = reciprocalRankFusion([ids('a', 'b', 'c'), ids('c', 'a')], { weights: [1, 3] });
    assert.deepEqual(fused.map((h) => h.id), ['c', 'a', 'b']);
    assert.equal(fused[0].score, 1 / 63 + 3 / 61);
    assert.equal(fused[1].score, 1 / 61 + 3 / 62);
    // a zero weight ignores a list entirely
    assert.deepEqual(reciprocalRankFusion([ids('a'), ids('z')], { weights: [1, 0] }), [{ id: 'a', score: 1 / 61 }]);
    // custom k
    assert.deepEqual(reciprocalRankFusion([ids('a', 'b')], { k: 0 }), [{ id: 'a', score: 1 }, { id: 'b', score: 0.5 }]);
  });

  test('a duplicate inside one list counts once, at its best rank', () => {
    assert.deepEqual(reciprocalRankFusion([ids('a', 'a', 'b')]), [
      { id: 'a', score: 1 / 61 },
      { id: 'b', score: 1 / 62 },
    ]);
  });

  test('ties are ordered by id; empty input gives []', () => {
    assert.deepEqual(reciprocalRankFusion([ids('y'), ids('x')]).map((h) => h.id), ['x', 'y']);
    assert.deepEqual(reciprocalRankFusion([]), []);
    assert.deepEqual(reciprocalRankFusion([[], []]), []);
  });

  test('invalid weights and k are INVALID_ARGUMENT', () => {
    const lists = [ids('a'), ids('b')];
    for (const weights of [[1, -1], [1, Number.NaN], [0, 0], [1], [1, 2, 3], [1, Number.POSITIVE_INFINITY]]) {
      assert.throws(() => reciprocalRankFusion(lists, { weights }), isInvalid, JSON.stringify(weights));
    }
    assert.throws(() => reciprocalRankFusion(lists, { k: -1 }), isInvalid);
    assert.throws(() => reciprocalRankFusion(lists, { k: Number.NaN }), isInvalid);
    assert.throws(() => reciprocalRankFusion([[{ id: 3 as unknown as string }]]), isInvalid);
  });
});

describe('weightedScoreFusion', () => {
  test('min-max per list, then the normalised weighted sum (LlamaIndex relative score)', () => {
    const a = [
      { id: 'a', score: 10 },
      { id: 'b', score: 5 },
      { id: 'c', score: 0 },
    ];
    const b = [
      { id: 'c', score: 0.9 },
      { id: 'a', score: 0.1 },
    ];
    assert.deepEqual(weightedScoreFusion([a, b]), [
      { id: 'a', score: 0.5 },
      { id: 'c', score: 0.5 },
      { id: 'b', score: 0.25 },
    ]);
    const w = weightedScoreFusion([a, b], { weights: [3, 1] });
    assert.deepEqual(w.map((h) => h.id), ['a', 'b', 'c']);
    assert.equal(w[0].score, 0.75);
    assert.equal(w[1].score, 0.375);
    assert.equal(w[2].score, 0.25);
  });

  test('all-equal lists map to 1 (positive) or 0; normalize none sums raw scores', () => {
    assert.deepEqual(weightedScoreFusion([[{ id: 'a', score: 2 }, { id: 'b', score: 2 }]]), [
      { id: 'a', score: 1 },
      { id: 'b', score: 1 },
    ]);
    assert.deepEqual(weightedScoreFusion([[{ id: 'a', score: -1 }]]), [{ id: 'a', score: 0 }]);
    assert.deepEqual(
      weightedScoreFusion([[{ id: 'a', score: 2 }], [{ id: 'a', score: 4 }, { id: 'b', score: 1 }]], { normalize: 'none' }),
      [
        { id: 'a', score: 3 },
        { id: 'b', score: 0.5 },
      ],
    );
  });

  test('validation', () => {
    assert.throws(() => weightedScoreFusion([[{ id: 'a' }]]), isInvalid);
    assert.throws(() => weightedScoreFusion([[{ id: 'a', score: Number.NaN }]]), isInvalid);
    assert.throws(() => weightedScoreFusion([[{ id: 'a', score: 1 }]], { weights: [0] }), isInvalid);
    assert.throws(() => weightedScoreFusion([[{ id: 'a', score: 1 }]], { weights: [-2] }), isInvalid);
    assert.throws(() => weightedScoreFusion([[{ id: 'a', score: 1 }]], { normalize: 'zscore' as 'none' }), isInvalid);
  });
});
