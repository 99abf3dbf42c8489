/**
 * scripts/soak.ts in reduced form inside the suite: 2,000 encodes from 4 independent callers on
 * the fixture model (1 worker thread, cache off) stay within the RSS-growth bound with correct
 * results; a simulated leak proves the bound actually trips; bad arguments exit 2. The full
 * 20,000-encode run and its figures are in docs/RELIABILITY.md.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT, tempDir } from './helpers.ts';

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

function soak(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/soak.ts'), ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('scripts/soak.ts', () => {
  test('reduced soak: 2,000 encodes, RSS growth of the last half within the bound, every result correct', async (t) => {
    const json = join(tempDir('bgem3-rel-soak-'), 'soak.json');
    const r = await soak(['--n', '2000', '--every', '100', '--json', json]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const { summary, samples } = JSON.parse(readFileSync(json, 'utf8'));
    assert.equal(summary.ok, true);
    assert.equal(summary.n, 2000);
    assert.equal(samples.length, 21, 'a sample before the first encode and every 100 encodes');
    assert.equal(summary.wrongResults, 0);
    assert.equal(summary.failedCalls, 0);
    assert.ok(summary.lastHalf.growthMb <= summary.maxGrowthMb);
    assert.equal(samples[samples.length - 1].encodes, 2000);
    assert.match(r.stdout, /RSS start .* min .* max .* final/);
    assert.match(r.stdout, /growth over the last half/);
    t.diagnostic(r.stdout.trim().split('\n').join(' | '));
  });

  test('the bound trips: a simulated leak of 1 MB per encode fails the soak with exit 1', async (t) => {
    const json = join(tempDir('bgem3-rel-soak-'), 'leak.json');
    const r = await soak(['--n', '200', '--every', '25', '--simulate-leak-kb', '1024', '--json', json]);
    assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /soak: FAIL \(RSS grew \d+\.\d MB > 32 MB\)/);
    const { summary } = JSON.parse(readFileSync(json, 'utf8'));
    assert.equal(summary.ok, false);
    assert.ok(summary.lastHalf.growthMb > 32, `the leak shows: +${summary.lastHalf.growthMb} MB`);
    t.diagnostic(r.stdout.trim().split('\n').join(' | '));
  });

  test('bad arguments exit 2 with a usage message', async () => {
    for (const args of [['--n', 'many'], ['--n', '10', '--every', '10'], ['--cache', 'lots'], ['--max-growth-mb=-1'], ['--frobnicate']]) {
      const r = await soak(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^soak: .*\nusage: /, args.join(' '));
    }
  });
});
