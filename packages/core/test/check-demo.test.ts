// `pnpm demo` runs the check: once, right after BAAI/bge-m3's first download (here from a local fake Hub
// serving the fixture under that name, so the published figures are compared and must not match), and on
// every run of any other model, against the universal properties only.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FakeHub, fixtureRepos } from './helpers/fake-hub.ts';
import { FIXTURE } from './helpers/fixture.ts';

const DEMO = fileURLToPath(new URL('../../../examples/demo/demo.mjs', import.meta.url));

function demo(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(HF_|HUGGING_FACE_|TRANSFORMERS_OFFLINE|BGEM3_DEBUG)/.test(k)));
  return new Promise((resolve) => {
    execFile(process.execPath, [DEMO, ...args], { env: { ...clean, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const checkLines = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('check:'));

describe('pnpm demo and the model check', () => {
  let hub: FakeHub;
  let home: string;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos() });
    home = mkdtempSync(join(tmpdir(), 'bgem3-demo-check-'));
  });
  after(async () => {
    await hub.close();
    rmSync(home, { recursive: true, force: true });
  });

  test('another model: the universal-check line on every run', async () => {
    const r = await demo(['--model', FIXTURE, '--query', 'Marie Curie'], {});
    assert.equal(r.code, 0, r.stderr);
    const lines = checkLines(r.stdout);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^check: {3}no published reference applies to this model .*universal checks passed/);
  });

  test('BAAI/bge-m3: checked once after the first download, not on later (cached) runs', async () => {
    const env = { HF_ENDPOINT: hub.url, HF_HOME: home };
    const first = await demo(['--query', 'Marie Curie'], env);
    assert.equal(first.code, 0, first.stderr);
    const lines = checkLines(first.stdout);
    assert.equal(lines.length, 1, first.stdout);
    // The fake Hub serves the tiny fixture as BAAI/bge-m3: the published figures apply by repo, and the
    // honest outcome is the deviation, never "verified".
    assert.match(lines[0], /^check: {3}check failed: (dense similarity|lexical weight|lexical matching score|ColBERT score) .* is off by /);
    assert.doesNotMatch(first.stdout, /verified/);

    const second = await demo(['--query', 'Marie Curie'], env);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(checkLines(second.stdout), []);
    assert.match(second.stdout, /^Query: Marie Curie$/m);
  });
});
