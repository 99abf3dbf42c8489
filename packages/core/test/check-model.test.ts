// checkModel on the real fixture model (onnxruntime, in-thread): a reference made from FlagEmbedding's golden
// outputs passes, damaged copies of the model fail with a message naming the output and the deviation, no
// published reference is claimed for the fixture, and the q8 tolerance holds the fixture's measured int8 drift.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkModel } from '../src/check/check-model.ts';
import { measureDrift } from '../src/check/drift.ts';
import { BGE_M3_REFERENCE, MODEL_CARD_SENTENCES_1, MODEL_CARD_SENTENCES_2 } from '../src/check/published.ts';
import { parseCheckReference } from '../src/check/reference.ts';
import { checkTolerance, Q8_MEASURED_DRIFT } from '../src/check/tolerance.ts';
import { M3Encoder } from '../src/inference/encoder.ts';
import { copyFixture, editInitializerRow, goldenReference, modelCardReference, shiftSparseBias } from './helpers/check-reference.ts';
import { FakeHub, fixtureRepos } from './helpers/fake-hub.ts';
import { FIXTURE, golden } from './helpers/fixture.ts';

const g = golden();
const SHORT = g.texts.map((_: string, i: number) => i).filter((i: number) => g.colbert[i] !== null && g.texts[i].length < 200);

describe('checkModel on tiny-m3-A', () => {
  let enc: M3Encoder;
  let dir: string;
  before(async () => {
    enc = await M3Encoder.load(FIXTURE, { workers: 0 });
    dir = mkdtempSync(join(tmpdir(), 'bgem3-check-'));
  });
  after(async () => {
    await enc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the fixture's golden texts are the model card's inputs", () => {
    assert.deepEqual([g.texts[0], g.texts[1]], MODEL_CARD_SENTENCES_1);
    assert.deepEqual([g.passages[0], g.passages[1]], MODEL_CARD_SENTENCES_2);
  });

  test('no published reference applies: the figures are computed and reported, only universal checks decide', async () => {
    const r = await checkModel(enc);
    assert.equal(r.applies, false);
    assert.equal(r.verified, false);
    assert.equal(r.ok, true, r.summary);
    assert.equal(r.reference, undefined);
    assert.equal(r.tolerance, undefined);
    assert.match(r.summary, /^no published reference applies to this model/);
    assert.doesNotMatch(r.summary, /verified/);
    assert.match(r.reason, /dense dimension 32, not 1024/);
    assert.match(r.reason, /tokenizer splits "What is BGE M3\?"/);
    // the same computation as with a reference: 4 dense, 2 lexical, 2 ColBERT figures plus the lexical weights
    const of = (o: string) => r.figures.filter((f) => f.output === o);
    assert.equal(of('dense_similarity').length, 4);
    assert.equal(of('lexical_matching_score').length, 2);
    assert.equal(of('colbert_score').length, 2);
    assert.ok(r.figures.every((f) => f.published === undefined && f.ok === undefined && f.deviation === undefined));
    // lexical weights are our own tokens only, equal to FlagEmbedding's convert_id_to_token
    const ours = Object.fromEntries(of('lexical_weight').filter((f) => f.texts[0] === 'sentences_1[1]').map((f) => [f.token!, f.value]));
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(g.lexical_tokens[1]).sort());
    for (const [t, w] of Object.entries(g.lexical_tokens[1] as Record<string, number>)) assert.ok(Math.abs(ours[t] - w) < 1e-6, t);
    assert.ok(Math.abs(of('dense_similarity')[0].value - g.encode_scores.dense[0][0]) < 1e-6);
    assert.ok(Math.abs(of('colbert_score')[1].value - g.encode_scores.colbert[0][1]) < 1e-6);
    assert.deepEqual(
      r.universal.map((u) => [u.name, u.status]),
      ['finite', 'dense-unit-norm', 'colbert-unit-norm', 'colbert-rows', 'sparse-positive', 'sparse-no-special-tokens', 'one-forward-pass'].map((n) => [n, 'pass']),
    );
    assert.deepEqual(r.inputs, { sentences_1: MODEL_CARD_SENTENCES_1, sentences_2: MODEL_CARD_SENTENCES_2 });
    assert.ok(JSON.parse(JSON.stringify(r)).figures.length === r.figures.length, 'plain JSON');
  });

  test('a reference made from golden.json passes within the fp32 tolerance', async () => {
    const r = await checkModel(enc, { reference: parseCheckReference(modelCardReference()) });
    assert.equal(r.ok, true, r.summary);
    assert.equal(r.applies, true);
    assert.equal(r.verified, true);
    assert.deepEqual(r.reference, { model: 'tiny-m3-A', source: modelCardReference().source, precision: 'fp32', basis: 'given' });
    assert.deepEqual(r.tolerance, checkTolerance('fp32', 'fp32'));
    assert.match(r.summary, /^model verified against the reference for tiny-m3-A: 15 figures within tolerance/);
    assert.equal(r.figures.length, 4 + 1 + 6 + 2 + 2);
    for (const f of r.figures) {
      assert.equal(f.ok, true, f.label);
      assert.ok(f.deviation! < 1e-5, `${f.label}: ${f.deviation}`);
    }
    assert.deepEqual(r.failures, []);
  });

  test("token strings follow convert_id_to_token on every short golden text (text order, colliding strings)", async () => {
    const reference = parseCheckReference(goldenReference(SHORT, [2, 3]));
    const r = await checkModel(enc, { reference });
    assert.equal(r.ok, true, r.summary);
    assert.ok(r.figures.filter((f) => f.output === 'lexical_weight').length > 150);
    assert.ok(r.figures.every((f) => f.deviation! < 1e-5 && f.note === undefined));
  });

  test('a damaged sparse head fails, naming the lexical output and the deviation; dense and ColBERT still pass', async () => {
    const damaged = copyFixture(join(dir, 'sparse-damaged'));
    const { before, after } = shiftSparseBias(damaged, 0.05);
    const e = await M3Encoder.load(damaged, { workers: 0 });
    try {
      const r = await checkModel(e, { reference: parseCheckReference(modelCardReference()) });
      assert.equal(r.ok, false);
      assert.equal(r.verified, false);
      assert.equal(r.applies, true);
      const worst = r.figures.filter((f) => f.ok === false).sort((a, b) => b.deviation! - a.deviation!)[0];
      assert.equal(worst.output, 'lexical_weight');
      assert.ok(Math.abs(worst.deviation! - (after - before)) < 1e-4, `deviation ${worst.deviation} for a bias shift of ${after - before}`);
      assert.match(r.summary, /^check failed: lexical weight sentences_1\[\d\] '[^']+' is off by 0\.05\d* \(/);
      assert.match(r.summary, /tolerance 0\.0002 for an fp32 model vs the fp32 reference/);
      assert.match(r.summary, /and \d+ more failures/);
      assert.ok(r.figures.filter((f) => f.output === 'dense_similarity' || f.output === 'colbert_score').every((f) => f.ok), 'the heads do not touch dense/ColBERT');
      assert.ok(r.universal.every((u) => u.status === 'pass'));
    } finally {
      await e.close();
    }
  });

  test('a perturbed ONNX initializer fails, naming the figure furthest off for its tolerance', async () => {
    const damaged = copyFixture(join(dir, 'onnx-damaged'));
    const W = g.input_ids[0][1]; // the first piece of "What is BGE M3?"
    // alternating signs: a constant shift or a scaling would be undone by the embedding LayerNorm
    editInitializerRow(damaged, 'word_embeddings', W, 32, (x, k) => x + (k % 2 ? 0.02 : -0.02));
    const e = await M3Encoder.load(damaged, { workers: 0 });
    try {
      const r = await checkModel(e, { reference: parseCheckReference(modelCardReference()) });
      assert.equal(r.ok, false);
      const off = r.figures.filter((f) => f.ok === false);
      assert.ok(off.length > 0 && off.every((f) => f.texts.includes('sentences_1[0]')), 'only figures of the text holding the changed token move');
      assert.ok(r.figures.filter((f) => !f.texts.includes('sentences_1[0]')).every((f) => f.ok));
      const line = /^check failed: (dense similarity|lexical weight|lexical matching score|ColBERT score) (\S+(?: '[^']*')?) is off by ([\d.e-]+) /.exec(r.summary);
      assert.ok(line, r.summary);
      const named = r.figures.find((f) => f.label === line[2] && f.ok === false)!;
      const ratio = (f: (typeof r.figures)[number]) => f.deviation! / f.tolerance!;
      assert.ok(off.every((f) => ratio(f) <= ratio(named)), 'the summary names the worst figure');
      assert.ok(Math.abs(Number(line[3]) - named.deviation!) <= named.deviation! * 1e-3 + 1e-6);
    } finally {
      await e.close();
    }
  });

  test('NaN weights are reported as a failed finite check, not thrown', async () => {
    const damaged = copyFixture(join(dir, 'nan'));
    editInitializerRow(damaged, 'word_embeddings', 0, 32, () => Number.NaN); // <s>: every text starts with it
    const e = await M3Encoder.load(damaged, { workers: 0 });
    try {
      const r = await checkModel(e, { reference: parseCheckReference(modelCardReference()) });
      assert.equal(r.ok, false);
      assert.equal(r.verified, false);
      assert.deepEqual(
        r.universal.map((u) => [u.name, u.status]),
        [['finite', 'fail']],
      );
      assert.match(r.summary, /^check failed: non-finite output: .*non-finite values/);
    } finally {
      await e.close();
    }
  });

  test('one forward pass: counted on a fresh text, so a warm encode cache and repeated checks still measure it', async () => {
    const cached = await M3Encoder.load(FIXTURE, { workers: 0, cache: true });
    try {
      for (let i = 0; i < 2; i++) {
        const before = cached.stats;
        const r = await checkModel(cached);
        const pass = r.universal.find((u) => u.name === 'one-forward-pass')!;
        assert.equal(pass.status, 'pass', pass.detail);
        assert.match(pass.detail, /exactly one forward pass/);
        // the probe plus one batch for the four inputs (the second time they come from the cache)
        assert.equal(cached.stats.forwardPasses - before.forwardPasses, i === 0 ? 2 : 1);
      }
    } finally {
      await cached.close();
    }
  });

  test('concurrent encodes on the same encoder never fail the pass check', async () => {
    const busy = Promise.all(Array.from({ length: 20 }, (_, i) => enc.encode([`background text ${i}`], { dense: true, sparse: true, colbert: true })));
    const r = await checkModel(enc);
    await busy;
    const pass = r.universal.find((u) => u.name === 'one-forward-pass')!;
    assert.notEqual(pass.status, 'fail', pass.detail);
    assert.equal(r.ok, true, r.summary);
  });

  test('q8: the fixture int8 backbone stays within the measured drift and passes the q8 tolerance', async () => {
    const q8 = await M3Encoder.load(FIXTURE, { workers: 0, dtype: 'q8' });
    try {
      const drift = await measureDrift(enc, q8, SHORT.map((i: number) => g.texts[i]));
      assert.ok(drift.denseSimilarity > 0 && drift.colbertScore > 0 && drift.lexicalWeight > 0, 'int8 changes the figures');
      assert.ok(drift.denseSimilarity <= Q8_MEASURED_DRIFT.dense, `dense ${drift.denseSimilarity}`);
      assert.ok(drift.colbertScore <= Q8_MEASURED_DRIFT.dense, `colbert ${drift.colbertScore}`);
      assert.ok(drift.lexicalWeight <= Q8_MEASURED_DRIFT.weights, `weights ${drift.lexicalWeight}`);

      const reference = parseCheckReference(modelCardReference());
      const strict = await checkModel(q8, { reference, dtype: 'fp32' });
      assert.equal(strict.ok, false, 'int8 drift exceeds the fp32 tolerance');
      const r = await checkModel(q8, { reference, dtype: 'q8' });
      assert.equal(r.ok, true, r.summary);
      assert.equal(r.dtype, 'q8');
      assert.deepEqual(r.tolerance, checkTolerance('q8', 'fp32'));
    } finally {
      await q8.close();
    }
  });

  test('options are validated', async () => {
    await assert.rejects(checkModel(enc, { reference: 'BAAI' as never }), /reference must be 'auto', 'none' or reference figures/);
    await assert.rejects(checkModel(enc, { dtype: 'fp16' as never }), /dtype must be 'fp32' or 'q8'/);
    await assert.rejects(checkModel(enc, { reference: { model: 'x' } as never }), /checkModel reference: "source" must be a non-empty string/);
    const none = await checkModel(enc, { reference: 'none' });
    assert.equal(none.applies, false);
    assert.match(none.summary, /^no reference compared; universal checks passed/);
  });

  test("loaded from the Hub repo BAAI/bge-m3 (here a fake Hub serving the fixture), BAAI's figures apply by repo and the deviation is reported", async () => {
    const hub = await FakeHub.start({ repos: fixtureRepos() });
    const cacheDir = join(dir, 'hf-cache');
    try {
      for (const dtype of [undefined, 'q8'] as const) {
        const e = await M3Encoder.load('BAAI/bge-m3', { workers: 0, ...(dtype ? { dtype } : {}), hub: { endpoint: hub.url, cacheDir } });
        try {
          const r = await checkModel(e);
          assert.equal(r.applies, true);
          assert.deepEqual(r.reference, { model: 'BAAI/bge-m3', source: BGE_M3_REFERENCE.source, precision: 'fp16', basis: 'hub-repo' });
          assert.equal(r.dtype, dtype ?? 'fp32', 'q8 is recognised from the preset graph in the model id');
          assert.deepEqual(r.tolerance, checkTolerance(dtype ?? 'fp32', 'fp16'));
          assert.match(r.reason, new RegExp(`loaded from the Hub repo ${dtype ? 'Xenova' : 'BAAI'}/bge-m3`));
          assert.equal(r.ok, false);
          assert.equal(r.verified, false);
          assert.match(r.summary, /^check failed: (dense similarity|lexical weight|lexical matching score|ColBERT score) \S+.* is off by /);
          const missing = r.figures.filter((f) => f.note === 'not produced by the model');
          assert.ok(missing.length >= 10 && missing.every((f) => f.value === 0 && f.published! > 0), "the fixture's tokenizer makes few of BAAI's tokens");
          assert.ok(r.universal.every((u) => u.status === 'pass'));
        } finally {
          await e.close();
        }
      }
    } finally {
      await hub.close();
    }
  });

  test("BAAI's published figures on the fixture fail honestly when forced (they are not its figures)", async () => {
    const r = await checkModel(enc, { reference: BGE_M3_REFERENCE });
    assert.equal(r.ok, false);
    assert.equal(r.reference?.basis, 'given');
    assert.match(r.summary, /^check failed: /);
    assert.ok(r.figures.some((f) => f.note === 'not produced by the model'));
  });
});
