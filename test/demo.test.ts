/**
 * The main demo (`pnpm demo`, examples/demo/demo.mjs) run as a user would, as a child process
 * against the fixture model: the table and its per-mode scores, the options, and the message a
 * machine with no network and no cached model gets instead of a stack trace.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/tiny-m3-A');
const DEMO = join(ROOT, 'examples/demo/demo.mjs');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment without anything that would change what the demo does (Hub, chat model). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(HF_|HUGGING_FACE_|TRANSFORMERS_OFFLINE|OPENAI_|CHAT_MODEL|BGEM3_DEBUG)/.test(k)) delete env[k];
  }
  return { ...env, ...extra };
}

/** Runs a command (async execFile) and resolves with its exit code and output, never rejecting. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = cleanEnv(), cwd = ROOT): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env, timeout: 60_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const HEADER = /^\s+#\s+id\s+lang\s+dense\s+sparse\s+colbert\s+fused\s+passage$/;
const ROW = /^\s+(\d+)\s+(\S+)\s+([a-z]{2})\s+(-?\d+\.\d{4})\s+(-?\d+\.\d{4})\s+(-?\d+\.\d{4})\s+(-?\d+\.\d{4})\s+(\S.*)$/;

/** Splits the demo's output into its query sections: the query line and the parsed rows. */
function sections(stdout: string) {
  const out: { query: string; header: boolean; rows: { rank: number; id: string; lang: string; dense: number; sparse: number; colbert: number; fused: number }[] }[] = [];
  for (const line of stdout.split('\n')) {
    const q = /^Query(?: \(([a-z]{2})\))?: (.+)$/.exec(line);
    if (q) {
      out.push({ query: q[2], header: false, rows: [] });
      continue;
    }
    const cur = out.at(-1);
    if (!cur) continue;
    if (HEADER.test(line)) cur.header = true;
    const r = ROW.exec(line);
    if (r) cur.rows.push({ rank: +r[1], id: r[2], lang: r[3], dense: +r[4], sparse: +r[5], colbert: +r[6], fused: +r[7] });
  }
  return out;
}

function assertNoStack(text: string) {
  assert.doesNotMatch(text, /^\s+at .+:\d+:\d+\)?$/m, `a stack trace was printed:\n${text}`);
  assert.doesNotMatch(text, /M3Error:|node:internal/);
}

describe('pnpm demo (examples/demo) against the fixture model', () => {
  const temp: string[] = [];
  after(() => temp.forEach((d) => rmSync(d, { recursive: true, force: true })));

  test('indexes the corpus and prints a table per query with dense, sparse, ColBERT and fused scores', async () => {
    const r = await run(process.execPath, [DEMO, '--model', FIXTURE]);
    assert.equal(r.code, 0, r.stderr);
    assertNoStack(r.stderr);
    assert.match(r.stdout, /corpus: +31 passages in 8 languages \(en, zh, ja, ar, ru, de, es, fr\)/);
    assert.match(r.stdout, /fused = \(0\.4·dense \+ 0\.2·sparse \+ 0\.4·colbert\)/);
    const secs = sections(r.stdout);
    // six default queries in six languages, each with a header and the top 3
    assert.equal(secs.length, 6, r.stdout);
    assert.deepEqual(
      r.stdout.match(/^Query \(([a-z]{2})\)/gm)?.map((s) => s.slice(7, 9)),
      ['en', 'zh', 'ja', 'ar', 'de', 'es'],
    );
    for (const s of secs) {
      assert.ok(s.header, `no table header for ${s.query}`);
      assert.deepEqual(s.rows.map((x) => x.rank), [1, 2, 3], `rows of ${s.query}`);
      for (const row of s.rows) {
        // the fused column is FlagEmbedding's weighted combination of the three mode columns
        const fused = (0.4 * row.dense + 0.2 * row.sparse + 0.4 * row.colbert) / 1.0;
        assert.ok(Math.abs(fused - row.fused) < 2e-4, `${s.query} / ${row.id}: fused ${row.fused} ≠ ${fused}`);
        assert.ok(row.sparse >= 0, 'the lexical score is never negative');
        assert.match(row.id, /^(en|zh|ja|ar|ru|de|es|fr)-/);
        assert.equal(row.id.slice(0, 2), row.lang);
      }
      // ranked by the fused score
      for (let i = 1; i < s.rows.length; i++) assert.ok(s.rows[i - 1].fused >= s.rows[i].fused);
    }
    assert.match(r.stdout, /test model/, 'the 32-d fixture is flagged as a test model');
  });

  test('--query, --k and --dtype q8 (the int8 backbone of the fixture)', async () => {
    const r = await run(process.execPath, [DEMO, '--model', FIXTURE, '--dtype', 'q8', '--k', '2', '--query', 'Marie Curie', '--query', '富士山']);
    assert.equal(r.code, 0, r.stderr);
    // The header names the dtype; the model id (content-derived) is the int8 graph's, not fp32's.
    const header = /^model: .*\(q8\)\s+\[(.+)\]$/m.exec(r.stdout);
    assert.ok(header, r.stdout);
    const fp32 = await run(process.execPath, [DEMO, '--model', FIXTURE, '--k', '1', '--query', 'x']);
    const fp32Id = /^model: .*\[(.+)\]$/m.exec(fp32.stdout)?.[1];
    assert.ok(fp32Id && fp32Id !== header[1], `${fp32Id} vs ${header[1]}`);
    const secs = sections(r.stdout);
    assert.deepEqual(secs.map((s) => s.query), ['Marie Curie', '富士山']);
    for (const s of secs) assert.equal(s.rows.length, 2);
  });

  test('the root script: pnpm demo -- --model <relative dir>', async () => {
    const r = await run('pnpm', ['-s', 'demo', '--', '--model', 'test/fixtures/tiny-m3-A', '--k', '1', '--query', 'Волга']);
    assert.equal(r.code, 0, r.stderr);
    const secs = sections(r.stdout);
    assert.equal(secs.length, 1);
    assert.equal(secs[0].rows.length, 1);
  });

  test('no network and no cache: exit 1 with a short explanation, no stack trace', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'bgem3-demo-cache-'));
    temp.push(cache);
    // nothing listens on port 9, and the empty cache has no copy of BAAI/bge-m3
    const r = await run(process.execPath, [DEMO], cleanEnv({ HF_ENDPOINT: 'http://127.0.0.1:9', HF_HUB_CACHE: cache }));
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
    assertNoStack(r.stderr);
    assert.match(r.stderr, /cannot load the model: BAAI\/bge-m3 could not be downloaded from the Hugging Face Hub/);
    assert.match(r.stderr, /127\.0\.0\.1:9/, 'names the endpoint that failed');
    assert.match(r.stderr, /about 2\.3 GB/);
    assert.match(r.stderr, /--model test\/fixtures\/tiny-m3-A/);
    assert.match(r.stderr, /HF_ENDPOINT=/);
    assert.match(r.stderr, /HF_HUB_OFFLINE=1/);
    assert.ok(r.stderr.split('\n').length < 20, 'short');
    assert.doesNotMatch(r.stdout, /Query/);
  });

  test('offline mode (HF_HUB_OFFLINE=1) with an empty cache says so', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'bgem3-demo-cache-'));
    temp.push(cache);
    const r = await run(process.execPath, [DEMO, '--dtype', 'q8'], cleanEnv({ HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, HF_ENDPOINT: 'http://127.0.0.1:9' }));
    assert.equal(r.code, 1);
    assertNoStack(r.stderr);
    assert.match(r.stderr, /offline mode \(HF_HUB_OFFLINE\) is on and BAAI\/bge-m3 is not in the Hugging Face cache/);
    assert.match(r.stderr, /--model/);
  });

  test('a model directory that does not exist, and a bad option: exit 1, one clear line', async () => {
    const missing = await run(process.execPath, [DEMO, '--model', join(tmpdir(), 'no-such-bgem3-model')]);
    assert.equal(missing.code, 1);
    assertNoStack(missing.stderr);
    assert.match(missing.stderr, /cannot load the model .*no-such-bgem3-model/);
    const bad = await run(process.execPath, [DEMO, '--k', '0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--k must be a positive integer/);
    assert.match(bad.stderr, /Usage:/);
  });

  test("the root README opens with the demo command and CI's exact test command", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const commands = /```sh\n([\s\S]*?)```/.exec(readme)![1].split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
    assert.ok(readme.indexOf('```sh') < 20, 'the commands come first');
    assert.deepEqual(commands, ['pnpm install && pnpm demo -- --model test/fixtures/tiny-m3-A', 'pnpm install --frozen-lockfile && pnpm test']);
    const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
    assert.match(ci, /^pnpm install --frozen-lockfile$/m);
    assert.match(ci, /^pnpm test$/m);
    const scripts = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts;
    assert.match(scripts.demo, /node examples\/demo\/demo\.mjs$/);
  });
});
