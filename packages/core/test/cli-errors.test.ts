/**
 * The `bgem3` CLI against bad paths, full and read-only file systems, malformed flag values,
 * byte order marks, library vocabulary, stdin for `index`, numeric ids, directories that are not
 * indexes, and `--append` keeping an index's options. Every error is one `bgem3: …` line, exit 1.
 *
 * Full and read-only file systems are real: a 64 KiB tmpfs and a read-only tmpfs when this
 * process may mount (root in a container), else `/dev/full` (ENOSPC for every write) and `/sys`
 * (refuses new entries) — the same code paths, reached with real system errors either way.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { toCliWords } from '../src/cli/vocabulary.js';
import { readIndexInfo } from '../src/cli/index-info.js';
import { ensureDirectory, FileSystemError } from '../src/util/fs-errors.js';
import { writeFileAtomic } from '../src/util/atomic-file.js';
import { FakeHub, fixtureRepos } from './helpers/fake-hub.js';
import { FIXTURE } from './helpers/fixture.ts';

const CLI = new URL('../dist/cli/main.js', import.meta.url).pathname;
const MODEL_FILES = ['onnx/model.onnx', 'onnx/model.onnx_data', 'tokenizer.json', 'tokenizer_config.json', 'config.json', 'colbert_linear.pt', 'sparse_linear.pt'];

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], input = '', env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT', 'BGEM3_DEBUG', 'HF_HUB_CACHE', 'HF_HOME']) delete base[k];
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, env: { ...base, ...env } }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(input);
  });
}

function oneLine(r: Run, pattern: RegExp, what: string): void {
  assert.equal(r.status, 1, `${what}: exit 1 (stderr: ${r.stderr})`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line, got ${r.stderr}`);
  assert.match(lines[0], /^bgem3: /, what);
  assert.match(lines[0], pattern, what);
  assert.doesNotMatch(r.stderr, /\n\s+at |Unhandled 'error' event/, what);
}

/** Mounts a tmpfs at `dir`; false when this process may not mount. */
function tryMount(dir: string, options: string): boolean {
  mkdirSync(dir, { recursive: true });
  if (process.env.BGEM3_TEST_NO_MOUNT) return false; // to check the fallback paths where mounting works
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const roots: string[] = [];
const mounts: string[] = [];
after(() => {
  for (const m of mounts) {
    try {
      execFileSync('umount', [m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});
function emptyDir(d: string): void {
  for (const n of readdirSync(d)) rmSync(join(d, n), { recursive: true, force: true });
}
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'bgem3-cli-err-'));
  roots.push(d);
  return d;
}

const DOCS = ['Paris is the capital of France.', 'Green tea is popular in Japan.', 'The Nile flows north.'].map((text, i) => JSON.stringify({ id: `d${i}`, text })).join('\n');

describe('bgem3 CLI: output paths and file systems', () => {
  let dir: string;
  let small: string | undefined; // a 64 KiB tmpfs
  let readOnly: string | undefined; // a read-only tmpfs
  before(() => {
    dir = tempDir();
    const s = join(dir, 'small');
    if (tryMount(s, 'size=64k')) {
      small = s;
      mounts.push(s);
    }
    const r = join(dir, 'ro');
    if (tryMount(r, 'ro,size=64k')) {
      readOnly = r;
      mounts.push(r);
    }
  });

  test('-o into a missing directory, or onto a directory, or onto the input; a missing input: one line naming it, before the model loads', async () => {
    // A model that does not exist: the output error must win, so it is checked first.
    const M = ['--model', join(dir, 'no-model')];
    const cases: [string[], RegExp][] = [
      [['encode', ...M, '-o', '/nonexistent/dir/x'], /cannot write --output \/nonexistent\/dir\/x: its directory does not exist/],
      [['encode', ...M, '-o', dir], /cannot write --output .*: it is a directory/],
      [['score', ...M, '-o', '/nonexistent/dir/x'], /cannot write --output \/nonexistent\/dir\/x: its directory does not exist/],
      [['score', ...M, '--output', dir], /it is a directory/],
      [['index', ...M, '--out', join(aFileIn(dir), 'ix')], /cannot write --out .*docs\.jsonl is a file, not a directory/],
    ];
    for (const [args, pattern] of cases) oneLine(await cli(args, '{"text":"a"}\n'), pattern, args.join(' '));
    // -o onto the input file would truncate the input before it is read.
    const input = aFileIn(dir);
    oneLine(await cli(['encode', ...M, '-i', input, '-o', input]), /--output .*docs\.jsonl is the input file/, 'encode -o = -i');
    oneLine(await cli(['score', ...M, '--pairs', input, '-o', join(dir, '.', 'docs.jsonl')]), /is the input file/, 'score -o = --pairs');
    assert.equal(readFileSync(input, 'utf8'), DOCS, 'the input is intact');
    // An input that is missing or a directory: one line naming it, also before the model loads.
    oneLine(await cli(['encode', ...M, '-i', dir]), /cannot read .*: it is a directory/, 'encode -i <dir>');
    oneLine(await cli(['score', ...M, '--pairs', join(dir, 'nope.jsonl')]), /cannot read .*nope\.jsonl: no such file/, 'score --pairs missing');
    oneLine(await cli(['index', ...M, '-i', join(dir, 'nope.jsonl'), '--out', join(dir, 'ix')]), /cannot read .*nope\.jsonl: no such file/, 'index -i missing');
  });

  test('ENOSPC while writing -o: one line naming the file and saying the device is full', async () => {
    if (small) emptyDir(small);
    const target = small ? join(small, 'out.jsonl') : '/dev/full';
    const many = Array.from({ length: small ? 120 : 2 }, (_, i) => JSON.stringify({ text: `text number ${i}` })).join('\n');
    const r = await cli(['encode', '--model', FIXTURE, '--outputs', 'dense', '-o', target], many);
    oneLine(r, new RegExp(`cannot write ${target.replace(/[/.]/g, '\\$&')}: no space left on the device \\(ENOSPC\\)`), 'encode -o full');
  });

  test('ENOSPC while saving an index: one line naming the index file and saying the device is full', async (t) => {
    if (!small) {
      // Without a mount, the same writer (util/atomic-file.ts) on /dev/full's error.
      t.diagnostic('no tmpfs: atomic-file write of /dev/full-like ENOSPC checked in the unit test below');
    }
    if (small) emptyDir(small);
    const docs = Array.from({ length: 60 }, (_, i) => JSON.stringify({ id: `d${i}`, text: `document ${i} `.repeat(40) })).join('\n');
    const out = small ? join(small, 'ix') : '/dev/full/ix';
    const r = await cli(['index', '--model', FIXTURE, '--out', out], docs);
    // The store names its file (SQLite says "database or disk is full" for ENOSPC).
    if (small) oneLine(r, new RegExp(`${small}/ix/.*(no space left on the device \\(ENOSPC\\)|disk is full)`), 'index --out full');
    else oneLine(r, /cannot write --out \/dev\/full\/ix: \/dev\/full is a file, not a directory/, 'index --out under a device');
    if (small) assert.deepEqual(readdirSync(small).filter((n) => n.endsWith('.tmp')), [], 'no temporary file is left');
  });

  test('a read-only file system: one line naming the path and saying it is read-only, before the model loads (never ENOENT)', async () => {
    const base = readOnly ?? '/sys';
    const M = ['--model', join(dir, 'no-model')];
    const words = readOnly ? /the file system is read-only \(EROFS\)/ : /(read-only|not permitted|permission denied)/;
    const ix = await cli(['index', ...M, '--out', join(base, 'new', 'ix')], DOCS);
    oneLine(ix, new RegExp(`cannot write --out ${base}/new/ix: ${base}: `), 'index --out read-only');
    assert.match(ix.stderr, words);
    assert.doesNotMatch(ix.stderr, /ENOENT/);
    const enc = await cli(['encode', ...M, '-o', join(base, 'out.jsonl')], '{"text":"a"}\n');
    oneLine(enc, new RegExp(`cannot write --output ${base}/out\\.jsonl: `), 'encode -o read-only');
  });

  test('a Hub cache on a full or read-only file system: one line naming the cache path and what happened', async () => {
    const hub = await FakeHub.start({ repos: fixtureRepos() });
    try {
      const ro = await cli(['download'], '', { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(readOnly ?? '/sys', 'hub') });
      oneLine(ro, new RegExp(`cannot (create the directory|write the cache file) ${readOnly ?? '/sys'}/hub`), 'download into a read-only cache');
      if (readOnly) assert.match(ro.stderr, /the file system is read-only \(EROFS\)/);
      if (small) {
        // The 1.5 MB graph data does not fit in 64 KiB.
        const full = await cli(['download'], '', { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(small, 'hub') });
        emptyDir(small);
        // Whichever write hits the full disk first (a download, a ref, a snapshot link) is named.
        oneLine(full, new RegExp(`cannot (write|create the directory|write the cache file) ${small}/hub/.*: no space left on the device \\(ENOSPC\\)`), 'download into a full cache');
      }
    } finally {
      await hub.close();
    }
  });

  test('util: ensureDirectory and writeFileAtomic name the path and say what happened (EROFS, ENOSPC), keeping the code', async () => {
    const base = readOnly ?? '/sys';
    await assert.rejects(ensureDirectory(join(base, 'a', 'b')), (err: unknown) => {
      assert.ok(err instanceof FileSystemError);
      assert.match(err.message, new RegExp(`^cannot create the directory ${base}/a: `));
      if (readOnly) assert.equal(err.code, 'EROFS');
      assert.notEqual(err.code, 'ENOENT', 'the real cause, not ENOENT');
      return true;
    });
    await assert.rejects(writeFileAtomic(join(base, 'f.bin'), 'x'), (err: unknown) => {
      assert.ok(err instanceof FileSystemError);
      assert.match(err.message, new RegExp(`^cannot write ${base}/f\\.bin: `));
      return true;
    });
    await assert.rejects(writeFileAtomic(join(dir, 'missing-dir', 'f.bin'), 'x'), /cannot write .*missing-dir\/f\.bin: the directory .*missing-dir does not exist \(ENOENT\)/);
    if (small) {
      await assert.rejects(writeFileAtomic(join(small, 'big.bin'), new Uint8Array(1 << 20)), (err: unknown) => {
        assert.ok(err instanceof FileSystemError);
        assert.equal(err.code, 'ENOSPC');
        assert.match(err.message, /cannot write .*big\.bin: no space left on the device \(ENOSPC\)/);
        return true;
      });
      assert.deepEqual(readdirSync(small).filter((n) => n.includes('big.bin')), [], 'the temporary file is removed');
    }
    await ensureDirectory(join(dir, 'made', 'deep'));
    assert.ok(existsSync(join(dir, 'made', 'deep')));
    writeFileSync(join(dir, 'a-file'), '');
    await assert.rejects(ensureDirectory(join(dir, 'a-file', 'sub')), /a-file is not a directory \(ENOTDIR\)/);
  });
});

/** A regular file inside `dir` (created), for "a file is in the way" cases. */
function aFileIn(dir: string): string {
  const p = join(dir, 'docs.jsonl');
  if (!existsSync(p)) writeFileSync(p, DOCS);
  return p;
}

describe('bgem3 CLI: flag values, input and vocabulary', () => {
  let dir: string;
  let built: string;
  before(async () => {
    dir = tempDir();
    built = join(dir, 'ix');
    const r = await cli(['index', '--model', FIXTURE, '--out', built], DOCS); // stdin: no --input
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).documents, 3, 'index reads stdin without --input');
  });

  test('malformed number lists and integers are refused, naming the entry', async () => {
    const M = ['--model', FIXTURE];
    const cases: [string[], RegExp][] = [
      [['score', ...M, '--weights', '1,,1'], /entry 2 of "1,,1" is empty/],
      [['score', ...M, '--weights', ',1,1'], /entry 1 of ",1,1" is empty/],
      [['score', ...M, '--weights', '1,1,'], /entry 3 of "1,1," is empty/],
      [['score', ...M, '--weights', '1,2'], /got 2 entries in "1,2"/],
      [['score', ...M, '--weights', '0x1,1,1'], /entry 1 of "0x1,1,1" is not a finite decimal number/],
      [['search', '--index', built, '-q', 'q', '--weights', '1,,1'], /entry 2 of "1,,1" is empty/],
      [['search', '--index', built, '-q', 'q', '--weights', 'Infinity,1,1'], /not a finite decimal number: "Infinity"/],
      [['search', '--index', built, '-q', 'q', '--k', '0x10'], /--k must be a positive integer, got "0x10"/],
      [['search', '--index', built, '-q', 'q', '--fetch-k', '1e3'], /--fetch-k must be a positive integer, got "1e3"/],
      [['encode', ...M, '--max-length', ''], /--max-length must be a positive integer, got ""/],
    ];
    for (const [args, pattern] of cases) oneLine(await cli(args, ''), pattern, args.join(' '));
  });

  test('a UTF-8 byte order mark at the start of a JSON Lines file or stdin is skipped', async () => {
    const file = join(dir, 'bom.jsonl');
    writeFileSync(file, '\ufeff{"text":"one"}\n{"text":"two"}\n');
    const fromFile = await cli(['encode', '--model', FIXTURE, '--outputs', 'dense', '--input', file]);
    assert.equal(fromFile.status, 0, fromFile.stderr);
    const fromStdin = await cli(['encode', '--model', FIXTURE, '--outputs', 'dense'], '\ufeff{"text":"one"}\n{"text":"two"}\n');
    assert.equal(fromStdin.status, 0, fromStdin.stderr);
    assert.equal(fromFile.stdout, fromStdin.stdout);
    assert.equal(fromFile.stdout.trim().split('\n').length, 2);
    const plain = await cli(['encode', '--model', FIXTURE, '--outputs', 'dense'], '{"text":"one"}\n{"text":"two"}\n');
    assert.equal(plain.stdout, fromFile.stdout, 'the same encodings as without the mark');
    // A mark anywhere else is data, and a JSON error names the line.
    oneLine(await cli(['encode', '--model', FIXTURE], '{"text":"one"}\n\ufeff{"text":"two"}\n'), /stdin line 2: invalid JSON/, 'BOM on line 2');
  });

  test('library option names become CLI flags in messages (offline, token, maxLength, onnxFile)', async () => {
    assert.equal(
      toCliWords('… set HF_HUB_OFFLINE=1 (or pass offline: true) to use only the cache at /c, or pass the path …'),
      '… set HF_HUB_OFFLINE=1 (or pass --offline) to use only the cache at /c, or pass the path …',
    );
    assert.equal(toCliWords('offline mode (HF_HUB_OFFLINE or offline: true) and x … (unset HF_HUB_OFFLINE, or pass offline: false), or …'), 'offline mode (HF_HUB_OFFLINE or --offline) and x … (unset HF_HUB_OFFLINE and drop --offline), or …');
    assert.equal(toCliWords('Set HF_TOKEN (or pass options.token) to a token'), 'Set HF_TOKEN to a token');
    assert.equal(toCliWords('maxLength must be an integer from 2 to 8192, got 9000; batchSize and intraOpNumThreads'), '--max-length must be an integer from 2 to 8192, got 9000; --batch-size and --threads');
    assert.equal(toCliWords('pass onnxFile / --onnx with the graph'), 'pass --onnx with the graph');
    for (const kept of ['options.maxLength and myMaxLength stay', '/data/maxLength/docs.jsonl', 'metadata key "maxLength"', 'maxLength-x']) {
      assert.equal(toCliWords(kept), kept, 'only bare option names');
    }

    const cache = join(dir, 'empty-cache');
    const offline = await cli(['encode', '--offline'], '{"text":"a"}\n', { HF_HUB_CACHE: cache });
    oneLine(offline, /offline mode \(HF_HUB_OFFLINE or --offline\) and .* not in the cache/, 'offline miss');
    assert.doesNotMatch(offline.stderr, /offline: (true|false)/);
    const down = await cli(['encode'], '{"text":"a"}\n', { HF_HUB_CACHE: cache, HF_ENDPOINT: 'http://127.0.0.1:1' });
    oneLine(down, /cannot reach .*\(or pass --offline\)/, 'unreachable Hub');
    assert.doesNotMatch(down.stderr, /offline: true/);
    const hub = await FakeHub.start({ repos: fixtureRepos(), token: 'secret-token' });
    try {
      const refused = await cli(['download'], '', { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url });
      oneLine(refused, /Set HF_TOKEN to a Hugging Face access token/, 'token advice');
      assert.doesNotMatch(refused.stderr, /options\.token/);
    } finally {
      await hub.close();
    }
  });

  test('numeric ids are refused with a message saying to quote them; two large ids never become one', async () => {
    const r = await cli(['index', '--model', FIXTURE, '--out', join(dir, 'num')], '{"id": 9007199254740993, "text": "a"}\n{"id": 9007199254740992, "text": "b"}\n');
    oneLine(r, /stdin line 1: "id" must be a string; quote numeric ids \("id": "42"\)/, 'numeric id');
    assert.ok(!existsSync(join(dir, 'num', 'CURRENT')), 'nothing was saved');
    const quoted = await cli(['index', '--model', FIXTURE, '--out', join(dir, 'num')], '{"id": "9007199254740993", "text": "a"}\n{"id": "9007199254740992", "text": "b"}\n');
    assert.equal(quoted.status, 0, quoted.stderr);
    assert.equal(JSON.parse(quoted.stdout).documents, 2);
  });

  test('search --index on something that is not an index: one line, and no model is fetched', async () => {
    const hub = await FakeHub.start({ repos: fixtureRepos() });
    try {
      const notIndex = join(dir, 'plain');
      mkdirSync(notIndex);
      writeFileSync(join(notIndex, 'notes.txt'), 'hello');
      const garbage = join(dir, 'garbage');
      mkdirSync(garbage);
      writeFileSync(join(garbage, 'CURRENT'), 'not json');
      const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(dir, 'hub-cache') };
      for (const [target, pattern] of [
        [notIndex, /not an M3Index directory/],
        [garbage, /CURRENT/],
        [join(dir, 'plain', 'notes.txt'), /not an M3Index directory|not a directory|ENOTDIR/],
      ] as const) {
        oneLine(await cli(['search', '--index', target, '-q', 'q'], '', env), pattern, `search --index ${target}`);
      }
      assert.equal(hub.requests.length, 0, 'the Hub was never asked for a model');
      assert.ok(!existsSync(join(dir, 'hub-cache')), 'nothing was downloaded');
    } finally {
      await hub.close();
    }
  });

  test('index --append keeps the saved maxLength, precision and model unless a flag is given', async () => {
    const out = join(dir, 'app');
    const first = await cli(['index', '--model', FIXTURE, '--out', out, '--max-length', '16', '--colbert-precision', 'int8'], DOCS);
    assert.equal(first.status, 0, first.stderr);
    // No -m: the model comes from the index, never the default repo (no network: offline, empty cache).
    const offline = { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(dir, 'no-cache') };
    const more = await cli(['index', '--append', '--out', out], '{"id":"x1","text":"one more"}\n', offline);
    assert.equal(more.status, 0, more.stderr);
    assert.equal(JSON.parse(more.stdout).documents, 4);
    let info = await readIndexInfo(out);
    assert.equal(info.maxLength, 16, 'the saved maxLength is kept');
    assert.equal(info.colbertPrecision, 'int8');
    oneLine(
      await cli(['index', '--append', '--out', out, '--colbert-precision', 'fp16'], '{"text":"x"}\n', offline),
      /--colbert-precision fp16 differs from the index .*, which stores ColBERT vectors as int8/,
      'precision change on append',
    );
    // An explicit flag applies to that run's documents (whether it becomes the saved default is the store's rule).
    const longer = await cli(['index', '--append', '--out', out, '--max-length', '32'], '{"id":"x2","text":"two more"}\n', offline);
    assert.equal(longer.status, 0, longer.stderr);
    assert.equal(JSON.parse(longer.stdout).documents, 5);
    info = await readIndexInfo(out);
    assert.equal(info.colbertPrecision, 'int8');
    const found = await cli(['search', '--index', out, '-q', 'one more', '-k', '1'], '', offline);
    assert.equal(found.status, 0, found.stderr);
    assert.equal(JSON.parse(found.stdout).results[0].id, 'x1');
  });

  test('an index opens with the same model at another path; a moved model without -m is one line saying to pass -m', async () => {
    const a = join(tempDir(), 'model-a');
    for (const f of MODEL_FILES) cpSync(join(FIXTURE, f), join(a, f));
    const out = join(dir, 'moved');
    const built2 = await cli(['index', '--model', a, '--out', out], DOCS);
    assert.equal(built2.status, 0, built2.stderr);
    const b = join(tempDir(), 'model-b');
    cpSync(a, b, { recursive: true });
    rmSync(a, { recursive: true, force: true });
    const offline = { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(dir, 'no-cache') };
    const found = await cli(['search', '--index', out, '-q', 'capital of France', '-m', b, '-k', '1'], '', offline);
    assert.equal(found.status, 0, found.stderr);
    assert.equal(JSON.parse(found.stdout).results[0].id, 'd0');
    oneLine(await cli(['search', '--index', out, '-q', 'q'], '', offline), /model-a.*Pass -m with its location/, 'moved model without -m');
  });
});
