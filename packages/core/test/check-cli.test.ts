// `bgem3 check` end to end: the built CLI in a child process, on the fixture model and a damaged copy.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { copyFixture, modelCardReference, shiftSparseBias } from './helpers/check-reference.ts';
import { FIXTURE } from './helpers/fixture.ts';

const CLI = new URL('../dist/cli/main.js', import.meta.url).pathname;

function cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' } }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('bgem3 check', () => {
  let dir: string;
  let refFile: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bgem3-check-cli-'));
    refFile = join(dir, 'tiny-m3-A.reference.json');
    writeFileSync(refFile, JSON.stringify(modelCardReference(), null, 2));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('--model test/fixtures/tiny-m3-A: no published reference applies, universal checks pass, exit 0', async () => {
    const r = await cli(['check', '--model', FIXTURE]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines.at(-1)!, /^no published reference applies to this model .*; universal checks passed/);
    assert.match(r.stdout, /^reference: {2}none applies \(the published figures belong to BAAI\/bge-m3/m);
    assert.match(r.stdout, /^ {2}dense similarity {8}sentences_1\[0\]·sentences_2\[0\] +0\.993 +— +— +—$/m);
    assert.match(r.stdout, /^ {2}ColBERT score +sentences_1\[0\]·sentences_2\[1\] +0\.78723 /m);
    for (const name of ['finite', 'dense-unit-norm', 'colbert-unit-norm', 'sparse-positive', 'sparse-no-special-tokens', 'one-forward-pass']) {
      assert.match(r.stdout, new RegExp(`^ {2}pass {2}${name}: `, 'm'));
    }
    assert.doesNotMatch(r.stdout, /verified/);
  });

  test('--json: the library result as JSON', async () => {
    const r = await cli(['check', '--model', FIXTURE, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.ok, true);
    assert.equal(j.applies, false);
    assert.equal(j.verified, false);
    assert.equal(j.dtype, 'fp32');
    assert.equal(j.figures.length, 4 + 7 + 2 + 2);
    assert.ok(j.universal.every((u: { status: string }) => u.status === 'pass'));
  });

  test('an int8 graph is judged as q8: --dtype, --onnx naming it, or a directory that only has it', async () => {
    const onlyQ8 = join(dir, 'only-q8');
    mkdirSync(join(onlyQ8, 'onnx'), { recursive: true });
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'colbert_linear.pt', 'sparse_linear.pt']) cpSync(join(FIXTURE, f), join(onlyQ8, f));
    cpSync(join(FIXTURE, 'onnx/model_quantized.onnx'), join(onlyQ8, 'onnx/model_quantized.onnx'));
    for (const args of [['--dtype', 'q8'], ['--onnx', 'onnx/model_quantized.onnx']]) {
      const r = await cli(['check', '--model', FIXTURE, '--json', '--reference', refFile, ...args]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).dtype, 'q8', args.join(' '));
    }
    const r = await cli(['check', '--model', onlyQ8, '--json', '--reference', refFile]);
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.dtype, 'q8');
    assert.equal(j.verified, true, j.summary);
    // held to the fp32 tolerance, the same int8 graph fails
    const strict = await cli(['check', '--model', onlyQ8, '--onnx', 'onnx/model_quantized.onnx', '--dtype', 'fp32', '--reference', refFile]);
    assert.equal(strict.status, 1);
    assert.match(strict.stderr, /^bgem3: check failed: .* for an fp32 model vs the fp32 reference/);
  });

  test('--reference with figures from golden.json: verified, exit 0', async () => {
    const r = await cli(['check', '--model', FIXTURE, '--reference', refFile]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^model verified against the reference for tiny-m3-A: 15 figures within tolerance/m);
    assert.match(r.stdout, /^tolerance: {2}dense 0\.0001, weights 0\.0002 \(fp32 model vs fp32 reference\)$/m);
    assert.match(r.stdout, /^ {2}lexical weight +sentences_1\[1\] 'D' +1\.1138 +1\.1138 +\S+ +ok$/m);
  });

  test('a damaged copy fails: exit 1 and one line naming the output and by how much', async () => {
    const damaged = copyFixture(join(dir, 'damaged'));
    shiftSparseBias(damaged, 0.05);
    const r = await cli(['check', '--model', damaged, '--reference', refFile]);
    assert.equal(r.status, 1);
    const err = r.stderr.trimEnd().split('\n');
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0], /^bgem3: check failed: lexical weight sentences_1\[\d\] '[^']+' is off by 0\.05\d* \(.* vs published .*; tolerance 0\.0002 for an fp32 model vs the fp32 reference\)/);
    assert.match(r.stdout, / OFF /);
    const j = await cli(['check', '--model', damaged, '--reference', refFile, '--json']);
    assert.equal(j.status, 1);
    assert.equal(JSON.parse(j.stdout).ok, false);
  });

  test('a bad reference file: exit 1 with one clear line, before any model load', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ model: 'x', source: 'y', precision: 'fp32', dense_similarity: [[1, 2, 3]] }));
    const r = await cli(['check', '--model', join(dir, 'no-such-model'), '--reference', bad]);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^bgem3: reference file .*bad\.json: "dense_similarity" must be a 2 × 2 matrix .*\n$/);
    const missing = await cli(['check', '--model', FIXTURE, '--reference', join(dir, 'absent.json')]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^bgem3: reference file .*absent\.json: not found\n$/);
  });
});
