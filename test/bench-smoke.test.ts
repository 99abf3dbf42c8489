// CI's smoke run of `pnpm bench`: the whole benchmark pipeline on the tiny fixture model, so the
// script that produces BENCHMARKS.md keeps working. The figures of a quick run mean nothing.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = new URL('..', import.meta.url).pathname;

test('pnpm bench -- --quick writes a report with every figure', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-bench-'));
  const out = join(dir, 'BENCHMARKS.md');
  try {
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/run-all.ts'), '--quick', '--out', out], { cwd: ROOT, maxBuffer: 16 << 20 }, (err, _o, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(),
      ),
    );
    const md = readFileSync(out, 'utf8');
    for (const row of [
      'vs transformers.js',
      'cost of sparse + ColBERT over dense-only',
      'achieved FLOP/s',
      'int8 vs fp32',
      'event-loop lag p99',
      'peak RSS, one',
      'sparse query at',
      'ColBERT rerank 100 candidates',
      'time to first embedding',
    ]) {
      assert.ok(md.includes(row), `row "${row}" in the report`);
    }
    assert.doesNotMatch(md, /NaN|undefined/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
