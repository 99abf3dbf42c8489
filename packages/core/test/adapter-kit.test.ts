/**
 * The adapter kit (@bgem3/core/adapter) on its own: the ensemble's dedup rules, alpha weights, the
 * [0, 1] mapping, unknown options, the model named by a store's model id, and the encoder source's
 * refusals (a model that disagrees with what a class is built on).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EncoderSource, checkOptions, dedupe, modelFromId, unitScore, weightsFromAlpha } from '../src/adapter/index.ts';
import { M3Encoder } from '../src/index.ts';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/tiny-m3-A', import.meta.url));

describe('adapter kit', () => {
  test('dedupe: same id merges; same text merges across lists or when an id is missing; two ids with one text in one list stay two; no id invented', () => {
    const c = dedupe([
      [
        { item: 'a1', id: 'a', text: 'alpha' },
        { item: 'b1', id: 'b', text: 'alpha' },
        { item: 'x1', text: 'xray' },
      ],
      [
        { item: 'a2', id: 'a', text: 'ALPHA, edited' },
        { item: 'x2', text: 'xray' },
        { item: 'z2', id: 'z', text: 'alpha' },
        { item: 'y2', text: 'yankee' },
      ],
    ]);
    assert.deepEqual(
      c.map((x) => [x.id, x.items, x.ranks]),
      [
        ['a', ['a1', 'a2'], [1, 1]],
        // z (list 2) has b's text and b is not in list 2 yet: the same chunk under another id
        ['b', ['b1', 'z2'], [2, 3]],
        [undefined, ['x1', 'x2'], [3, 2]],
        [undefined, ['y2'], [null, 4]],
      ],
    );
  });

  test('weightsFromAlpha splits the dense + sparse share; unitScore maps [-1, 1] to [0, 1], clamped', () => {
    assert.deepEqual(weightsFromAlpha(undefined), [1, 0.5, 1]);
    const w1 = weightsFromAlpha(1);
    assert.ok(Math.abs(w1[0] - 1) < 1e-12 && w1[1] === 0 && Math.abs(w1[2] - 0.4 / 0.6) < 1e-12);
    assert.deepEqual(weightsFromAlpha(0.5, [1, 1, 0]), [1, 1, 0]);
    assert.throws(() => weightsFromAlpha(2), /alpha must be a number from 0 to 1/);
    assert.equal(unitScore(-1), 0);
    assert.equal(unitScore(1 + 1e-9), 1);
    assert.equal(unitScore(0.5), 0.75);
    assert.equal(unitScore(Number.NaN), 0);
  });

  test('checkOptions refuses unknown options by name', () => {
    assert.deepEqual(checkOptions({ k: 1 }, ['k'], 'X'), { k: 1 });
    assert.throws(() => checkOptions({ k: 1, topK: 2 } as never, ['k'], 'X'), /X: unknown option "topK" \(known: k\)/);
    assert.throws(() => checkOptions([] as never, ['k'], 'X'), /options must be an object/);
  });

  test('modelFromId: Hub ids name their repo; local ids (content hashes) name no directory', () => {
    assert.deepEqual(modelFromId('hub:BAAI/bge-m3@abc:onnx/model.onnx'), { model: 'BAAI/bge-m3', options: {} });
    assert.deepEqual(modelFromId('hub:Xenova/bge-m3@abc:onnx/model_quantized.onnx'), { model: 'BAAI/bge-m3', options: { dtype: 'q8' } });
    assert.deepEqual(modelFromId('hub:org/m3@abc:onnx/x.onnx'), { model: 'org/m3', options: { onnxFile: 'onnx/x.onnx' } });
    assert.equal(modelFromId('local:sha256-0123'), undefined);
  });

  test('EncoderSource: one of model/encoder/endpoint; load options need a model; a store of another model is INDEX_MISMATCH naming both', async () => {
    const enc = await M3Encoder.load(FIXTURE, { workers: 0 });
    try {
      assert.throws(() => new EncoderSource({ model: FIXTURE, encoder: enc }), /give one of model, encoder and endpoint, not model and encoder/);
      assert.throws(() => new EncoderSource({ encoder: enc, dtype: 'q8' }), /dtype has no effect with encoder/);
      assert.throws(() => new EncoderSource({ endpointOptions: {} }), /endpointOptions has no effect without endpoint/);
      assert.throws(() => new EncoderSource({ dtype: 'q8' }, { what: 'the store', encoder: enc }), /dtype: no model is loaded here \(the model comes from the store\)/);
      const source = new EncoderSource({ encoder: enc }, { what: 'the store', modelId: 'local:sha256-other' });
      void source;
      assert.fail('expected a mismatch');
    } catch (err) {
      if ((err as Error).message === 'expected a mismatch') throw err;
      assert.equal((err as { code?: string }).code, 'INDEX_MISMATCH');
      assert.ok((err as Error).message.includes('local:sha256-other') && (err as Error).message.includes(enc.modelId));
    } finally {
      await enc.close();
    }
  });
});
