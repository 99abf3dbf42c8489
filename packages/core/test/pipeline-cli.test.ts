// The recommended pipeline on the real encoder (parity with FlagEmbedding's compute_score), and the CLI end to end.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder, M3Index } from '@bgem3/core';
import { FIXTURE, golden } from './helpers/fixture.ts';

const g = golden();
const CLI = new URL('../dist/cli/main.js', import.meta.url).pathname;

function cli(args: string[], input = ''): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.end(input);
  });
}

describe('M3Index pipeline on the fixture model', () => {
  let enc: M3Encoder;
  let index: M3Index;
  before(async () => {
    enc = await M3Encoder.load(FIXTURE);
    index = await M3Index.create({ encoder: enc, colbertPrecision: 'fp32' });
    await index.add(g.passages.map((text: string, i: number) => ({ id: `p${i}`, text, metadata: { i } })));
  });
  after(() => enc.close());

  test('fused scores equal FlagEmbedding compute_score "colbert+sparse+dense" (weights 0.4, 0.2, 0.4)', async () => {
    const table = g['compute_score_weights_0.4_0.2_0.4'];
    for (let q = 0; q < g.queries.length; q++) {
      const results = await index.search(g.queries[q], { k: g.passages.length, fetchK: g.passages.length, weights: [0.4, 0.2, 0.4] });
      assert.equal(results.length, g.passages.length);
      for (const r of results) {
        const p = Number(r.id.slice(1));
        const pair = q * g.passages.length + p;
        assert.deepEqual(g.pairs[pair], [g.queries[q], g.passages[p]]);
        assert.ok(Math.abs(r.scores.dense - table.dense[pair]) <= 1e-5, `dense q${q} p${p}`);
        assert.ok(Math.abs(r.scores.sparse - table.sparse[pair]) <= 1e-5, `sparse q${q} p${p}`);
        assert.ok(Math.abs(r.scores.colbert - g.encode_scores.colbert[q][p]) <= 1e-5, `colbert q${q} p${p}`);
        assert.ok(Math.abs(r.score - table['colbert+sparse+dense'][pair]) <= 1e-5, `fused q${q} p${p}: ${r.score} vs ${table['colbert+sparse+dense'][pair]}`);
      }
      for (let i = 1; i < results.length; i++) assert.ok(results[i - 1].score >= results[i].score, 'sorted');
    }
  });

  test('indexing encodes each document once (one pass for all three outputs)', async () => {
    const e2 = await M3Encoder.load(FIXTURE, { workers: 0 });
    try {
      const ix = await M3Index.create({ encoder: e2 });
      await ix.add(g.texts.slice(0, 20).map((text: string) => ({ text })));
      assert.equal(e2.stats.textsEncoded, 20);
      await ix.search('a query no document contains verbatim');
      assert.equal(e2.stats.textsEncoded, 21, 'the query is encoded once for dense, sparse and ColBERT');
    } finally {
      await e2.close();
    }
  });
});

describe('bgem3 CLI', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bgem3-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('encode: one JSON line per input with dense, sparse and colbert equal to golden', async () => {
    const input = g.texts.slice(0, 3).map((text: string) => JSON.stringify({ text })).join('\n');
    const r = await cli(['encode', '--model', FIXTURE], `${input}\n`);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 3);
    lines.forEach((l, i) => {
      assert.ok(l.dense.every((v: number, k: number) => Math.abs(v - g.dense[i][k]) <= 1e-5));
      assert.deepEqual(Object.keys(l.sparse).sort(), Object.keys(g.lexical_weights[i]).sort());
      assert.equal(l.colbert.length, g.colbert[i].length);
    });
  });

  test('score: the five compute_score keys per pair', async () => {
    const input = g.pairs.slice(0, 4).map(([query, passage]: string[]) => JSON.stringify({ query, passage })).join('\n');
    const r = await cli(['score', '--model', FIXTURE, '--weights', '0.4,0.2,0.4'], input);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    lines.forEach((l, i) => {
      for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense']) {
        assert.ok(Math.abs(l[key] - g['compute_score_weights_0.4_0.2_0.4'][key][i]) <= 1e-5, `${key} ${i}`);
      }
    });
  });

  test('index then search: JSON results with per-mode scores; the model comes from the index', async () => {
    const docs = join(dir, 'docs.jsonl');
    writeFileSync(docs, g.passages.map((text: string, i: number) => JSON.stringify({ id: `doc-${i}`, text, metadata: { n: i } })).join('\n'));
    const out = join(dir, 'ix');
    const built = await cli(['index', '--model', FIXTURE, '--input', docs, '--out', out]);
    assert.equal(built.status, 0, built.stderr);
    assert.equal(JSON.parse(built.stdout).documents, g.passages.length);
    const found = await cli(['search', '--index', out, '--query', g.queries[0], '--k', '3']);
    assert.equal(found.status, 0, found.stderr);
    const res = JSON.parse(found.stdout);
    assert.equal(res.results.length, 3);
    for (const hit of res.results) {
      assert.match(hit.id, /^doc-\d$/);
      assert.equal(typeof hit.scores.dense, 'number');
      assert.equal(typeof hit.scores.sparse, 'number');
      assert.equal(typeof hit.scores.colbert, 'number');
      assert.equal(hit.metadata.n, Number(hit.id.slice(4)));
    }
  });

  test('user errors: one line on stderr, exit 1, no stack trace; malformed JSON Lines name the line', async () => {
    const cases: Array<[string[], string, RegExp]> = [
      [['encode', '--model', FIXTURE], '{"text":"ok"}\n{oops\n', /line 2: invalid JSON/],
      [['encode', '--model', FIXTURE], '{"text":"ok"}\n\n{"text": 5}\n', /line 3: "text" must be a string/],
      [['encode', '--model', join(dir, 'missing')], '', /not found/],
      [['encode', '--model', FIXTURE, '--max-length', '0'], '', /max-length must be a positive integer/],
      [['encode', '--model', FIXTURE, '--max-length', '9000'], '{"text":"x"}\n', /--max-length must be an integer from 2 to 8192/],
      [['score', '--model', FIXTURE, '--weights', '1,-1,1'], '', /three non-negative numbers/],
      [['score', '--model', FIXTURE], '{"query":"q"}\n', /line 1: "passage" must be a string/],
      [['index', '--model', FIXTURE, '--input', join(dir, 'nope.jsonl'), '--out', join(dir, 'x')], '', /cannot read .*nope\.jsonl: no such file/],
      [['search', '--index', join(dir, 'no-index'), '--query', 'q'], '', /index directory not found/],
      [['encode', '--model', FIXTURE, '--onnx', 'nothing.onnx'], '', /ONNX file not found/],
    ];
    for (const [args, input, pattern] of cases) {
      const r = await cli(args, input);
      assert.equal(r.status, 1, `${args.join(' ')}: exit status (stderr: ${r.stderr})`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${r.stderr}`);
      assert.match(lines[0], pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });
});
