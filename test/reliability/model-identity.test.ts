/**
 * A local model's id comes from its files, not its path (issue 17): the same model copied to
 * another directory has the same `modelId` (so an index built from one copy is searched with
 * the other), a different model has another, and the id loads cheaply. An index saved with the old
 * path form (`local:<graph path>`) is searched by passing that id as the `modelId` load option.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { M3Encoder, M3Error } from '@bgem3/core';
import { FIXTURE, copyModel, otherModel } from './helpers.ts';

async function idOf(dir: string, options: Parameters<typeof M3Encoder.load>[1] = {}): Promise<string> {
  const enc = await M3Encoder.load(dir, { workers: 0, ...options });
  try {
    return enc.modelId;
  } finally {
    await enc.close();
  }
}

describe('model identity from the model files', () => {
  test('two copies of one model in different directories have the same id, of the content form', async () => {
    const a = copyModel();
    const b = copyModel();
    const [ia, ib] = [await idOf(a), await idOf(b)];
    assert.match(ia, /^local:sha256-[0-9a-f]{24}$/);
    assert.equal(ia, ib);
    assert.ok(!ia.includes(a) && !ia.includes('tiny-m3-A'), 'no path in the id');
    // The same files given as ModelPaths give the same id.
    const enc = await M3Encoder.load(
      { onnx: join(a, 'onnx/model.onnx'), tokenizer: join(a, 'tokenizer.json'), colbertHead: join(a, 'colbert_linear.pt'), sparseHead: join(a, 'sparse_linear.pt'), config: join(a, 'config.json') },
      { workers: 0 },
    );
    assert.equal(enc.modelId, ia);
    await enc.close();
  });

  test('a different model, or one changed file, has another id', async () => {
    const base = await idOf(copyModel());
    const ids = new Set([base]);
    const changed = (edit: (dir: string) => void) => {
      const dir = copyModel();
      edit(dir);
      return idOf(dir);
    };
    // Weights changed in place (same size): one float of the external data.
    ids.add(
      await changed((d) => {
        const p = join(d, 'onnx/model.onnx_data');
        const b = readFileSync(p);
        b[b.length - 7] ^= 0x01;
        writeFileSync(p, b);
      }),
    );
    ids.add(await changed((d) => writeFileSync(join(d, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')), layer_norm_eps: 1e-6 }))));
    ids.add(await changed((d) => writeFileSync(join(d, 'sparse_linear.pt'), readFileSync(join(FIXTURE, 'sparse_linear.pt'))) /* same: not counted below */));
    ids.add(await idOf(await otherModel()));
    // The sparse head copied back unchanged gave the base id again: 3 new ids, not 4.
    assert.equal(ids.size, 4, [...ids].join(' '));
  });

  test('the modelId option overrides it (to keep using an index saved with the old path form), and is validated', async () => {
    const dir = copyModel();
    const oldId = `local:${join(dir, 'onnx/model.onnx')}`;
    for (const workers of [0, 1]) {
      const enc = await M3Encoder.load(dir, { workers, modelId: oldId });
      assert.equal(enc.modelId, oldId);
      await enc.close();
    }
    for (const bad of ['', 42, 'x'.repeat(4097)]) {
      await assert.rejects(M3Encoder.load(dir, { workers: 0, modelId: bad as string }), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /modelId must be a non-empty string/.test(e.message));
    }
  });
});
