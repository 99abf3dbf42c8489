/**
 * Hub downloads against a local fake Hub: both presets end up byte-identical in huggingface_hub's
 * cache layout; resume, redirects, integrity failures, HTTP errors, tokens and progress.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, beforeEach, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { presetFiles } from '../src/hub/presets.js';
import { downloadFiles, resolveModelFiles } from '../src/hub/resolve-model.js';
import type { DownloadProgress } from '../src/hub/types.js';
import { FakeHub, fixtureRepos, sha256 } from './helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT']) delete process.env[k];

const BAAI = 'BAAI/bge-m3';
const XENOVA = 'Xenova/bge-m3';
const FP32_FILES = ['onnx/model.onnx', 'onnx/model.onnx_data', 'colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json', 'config.json'];
const DATA = 'onnx/model.onnx_data';

const tmpRoots: string[] = [];
function tempCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-hub-'));
  tmpRoots.push(dir);
  return join(dir, 'cache');
}
after(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function rejectsWith(p: Promise<unknown>, code: string): Promise<M3Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof M3Error, `expected M3Error, got ${inspect(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

/** Every blob (not temp file) of a repo folder has the content its name promises. */
function assertBlobsSound(cacheDir: string, hub: FakeHub, repo: string) {
  const blobs = join(cacheDir, `models--${repo.replace('/', '--')}`, 'blobs');
  if (!existsSync(blobs)) return;
  for (const name of readdirSync(blobs)) {
    if (name.endsWith('.incomplete')) continue;
    const content = readFileSync(join(blobs, name));
    const f = hub.filesOf(repo).find((k) => k.etag === name);
    assert.ok(f, `unexpected blob ${name}`);
    assert.equal(f.lfs ? sha256(content) : f.gitSha1, name, `blob ${name} is corrupt`);
  }
}

describe('hub download', () => {
  let hub: FakeHub;
  let cacheDir: string;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos() });
  });
  after(() => hub.close());
  beforeEach(() => {
    hub.requests.length = 0;
    hub.faults = {};
    cacheDir = tempCache();
  });
  const opts = () => ({ endpoint: hub.url, cacheDir, token: '' });

  test('fp32 preset: files identical to the originals, huggingface_hub cache layout', async () => {
    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), opts());
    assert.deepEqual(Object.keys(files).sort(), [...FP32_FILES].sort(), 'the optional Constant_7 sidecar is absent from this repo');
    const commit = hub.commit(BAAI);
    const root = join(cacheDir, 'models--BAAI--bge-m3');
    assert.equal(readFileSync(join(root, 'refs', 'main'), 'utf8'), commit);
    for (const path of FP32_FILES) {
      const f = hub.file(BAAI, path);
      const local = files[path];
      assert.equal(local, join(root, 'snapshots', commit, ...path.split('/')));
      assert.ok(readFileSync(local).equals(f.content), `${path} differs`);
      assert.ok(lstatSync(local).isSymbolicLink(), `${path} is a symlink`);
      const depth = path.split('/').length - 1;
      assert.equal(readlinkSync(local), `${'../'.repeat(depth + 2)}blobs/${f.etag}`);
      assert.equal(realpathSync(local), realpathSync(join(root, 'blobs', f.etag)));
    }
    // LFS blobs are named by sha256, regular files by their git blob sha1.
    assert.equal(hub.file(BAAI, DATA).etag, sha256(hub.file(BAAI, DATA).content));
    assert.equal(hub.file(BAAI, 'config.json').lfs, false);
    assert.deepEqual(readdirSync(join(root, 'blobs')).sort(), FP32_FILES.map((p) => hub.file(BAAI, p).etag).sort());
    assert.ok(existsSync(join(root, '.no_exist', commit, 'onnx', 'Constant_7_attr__value')), '.no_exist marker as huggingface_hub');
    // Only listed files were requested; each content fetched once.
    assert.equal(hub.find({ file: 'sentencepiece.bpe.model' }).length, 0);
    assert.equal(hub.find({ file: 'README.md' }).length, 0);
    for (const path of FP32_FILES) assert.equal(hub.contentGets(path), 1, path);
    assert.ok(hub.find({ method: 'HEAD', file: DATA }).length === 1);
    // No lock or temp file left behind.
    assert.deepEqual(readdirSync(join(cacheDir, '.locks', 'models--BAAI--bge-m3')), []);

    // A second call: HEADs only, same paths, nothing downloaded again.
    hub.requests.length = 0;
    const again = await downloadFiles(presetFiles(BAAI, 'fp32'), opts());
    assert.deepEqual(again, files);
    assert.equal(hub.requests.filter((r) => r.method === 'GET').length, 0);
  });

  test('q8 preset: int8 graph from Xenova/bge-m3, heads/tokenizer/config from BAAI/bge-m3', async () => {
    const resolved = await resolveModelFiles(presetFiles('baai/BGE-M3', 'q8'), opts());
    assert.deepEqual(Object.keys(resolved.files).sort(), ['colbert_linear.pt', 'config.json', 'onnx/model_quantized.onnx', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json']);
    assert.equal(resolved.repo, XENOVA);
    assert.equal(resolved.commit, hub.commit(XENOVA));
    assert.equal(resolved.revision, 'main');
    assert.equal(resolved.dir, join(cacheDir, 'models--Xenova--bge-m3', 'snapshots', hub.commit(XENOVA)));
    assert.ok(readFileSync(resolved.files['onnx/model_quantized.onnx']).equals(hub.file(XENOVA, 'onnx/model_quantized.onnx').content));
    assert.ok(resolved.files['onnx/model_quantized.onnx'].startsWith(resolved.dir));
    for (const p of ['config.json', 'tokenizer_config.json', 'tokenizer.json', 'colbert_linear.pt']) {
      assert.ok(resolved.files[p].includes('models--BAAI--bge-m3'), p);
      assert.ok(readFileSync(resolved.files[p]).equals(hub.file(BAAI, p).content), p);
    }
    assert.equal(hub.find({ repo: XENOVA, file: 'config.json' }).length, 0);
    assert.equal(hub.find({ file: 'onnx/model.onnx' }).length, 0);
  });

  test('a dropped connection is resumed with Range and the file is intact', async () => {
    hub.faults.dropAfter = { file: DATA, bytes: 300_000 };
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], opts());
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    const gets = hub.requests.filter((r) => r.method === 'GET' && r.file === DATA && r.body);
    assert.equal(gets.length, 2);
    assert.equal(gets[0].range, undefined);
    // Resumed from the bytes that arrived (a reset socket may lose the last in-flight ones).
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1].range ?? '')?.[1]);
    assert.ok(resumedAt > 0 && resumedAt <= 300_000, `resumed at ${gets[1].range}`);
    assert.equal(gets[1].status, 206);
  });

  test('an aborted download keeps its temp file and the next call resumes it', async () => {
    const ac = new AbortController();
    let reached!: () => void;
    const stalled = new Promise<void>((r) => (reached = r));
    hub.faults.stall = { file: DATA, bytes: 500_000, reached };
    const pending = downloadFiles([{ repo: BAAI, path: DATA }], { ...opts(), signal: ac.signal });
    await stalled;
    await new Promise((r) => setTimeout(r, 100)); // let the client write what it received
    ac.abort();
    const err = await rejectsWith(pending, 'ABORTED');
    assert.match(err.message, /resumes/);
    const etag = hub.file(BAAI, DATA).etag;
    const tmp = join(cacheDir, 'models--BAAI--bge-m3', 'blobs', `${etag}.incomplete`);
    const kept = statSync(tmp).size;
    assert.ok(kept > 0 && kept <= 500_000, `kept ${kept} bytes`);
    assert.ok(!existsSync(join(cacheDir, 'models--BAAI--bge-m3', 'blobs', etag)));

    hub.requests.length = 0;
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], opts());
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    const [get] = hub.requests.filter((r) => r.method === 'GET' && r.body);
    assert.equal(get.range, `bytes=${kept}-`);
    assert.ok(!existsSync(tmp));
  });

  test('a server that ignores Range (200) makes the download start over, intact', async () => {
    hub.faults.dropAfter = { file: DATA, bytes: 100_000 };
    hub.faults.ignoreRange = true;
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], opts());
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    const gets = hub.requests.filter((r) => r.method === 'GET' && r.body);
    assert.match(gets[1].range ?? '', /^bytes=\d+-$/);
    assert.equal(gets[1].status, 200);
  });

  test('a corrupted LFS byte is rejected (INTEGRITY), nothing corrupt stays, a clean retry works', async () => {
    hub.faults.corrupt = { file: DATA, offset: 12_345 };
    const f = hub.file(BAAI, DATA);
    const err = await rejectsWith(downloadFiles(presetFiles(BAAI, 'fp32'), opts()), 'INTEGRITY');
    assert.match(err.message, /BAAI\/bge-m3\/onnx\/model\.onnx_data/);
    assert.ok(err.message.includes(`expected ${f.sha256}`), err.message);
    assert.match(err.message, /got [0-9a-f]{64}/);
    assert.equal(err.file, DATA);
    const blobs = join(cacheDir, 'models--BAAI--bge-m3', 'blobs');
    assert.ok(!existsSync(join(blobs, f.etag)));
    assert.ok(!existsSync(join(blobs, `${f.etag}.incomplete`)), 'the corrupt partial file is deleted');
    assertBlobsSound(cacheDir, hub, BAAI);

    const files = await downloadFiles(presetFiles(BAAI, 'fp32'), opts());
    for (const p of FP32_FILES) assert.ok(readFileSync(files[p]).equals(hub.file(BAAI, p).content), p);
    assertBlobsSound(cacheDir, hub, BAAI);
  });

  test('a corrupted regular file fails its git sha1 check', async () => {
    hub.faults.corrupt = { file: 'tokenizer.json', offset: 100 };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'tokenizer.json' }], opts()), 'INTEGRITY');
    assert.match(err.message, /git-sha1 expected [0-9a-f]{40}, got [0-9a-f]{40}/);
    assert.deepEqual(readdirSync(join(cacheDir, 'models--BAAI--bge-m3', 'blobs')), []);
  });

  test('a size that disagrees with X-Linked-Size is rejected', async () => {
    hub.faults.headers = { file: DATA, set: { 'X-Linked-Size': '1000' } };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts()), 'INTEGRITY');
    assert.match(err.message, /size expected 1000, got/);
  });

  test('404: repository or file not found, with repo, file and revision', async () => {
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'nope.bin' }], opts()), 'HUB_ERROR');
    assert.match(err.message, /^repository or file not found: BAAI\/bge-m3\/nope\.bin at main/);
    const err2 = await rejectsWith(downloadFiles([{ repo: 'nobody/nothing', path: 'config.json' }], opts()), 'HUB_ERROR');
    assert.match(err2.message, /repository or file not found: nobody\/nothing\/config\.json at main: the repository does not exist/);
    const err3 = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json', revision: 'v9' }], opts()), 'HUB_ERROR');
    assert.match(err3.message, /at v9: the repository has no revision "v9"/);
  });

  test('q8 preset pinned to a commit of BAAI/bge-m3 leaves Xenova on the default revision', async () => {
    const specs = presetFiles(BAAI, 'q8', hub.commit(BAAI));
    assert.equal(specs[0].revision, undefined);
    const files = await downloadFiles(specs, opts());
    assert.ok(files['config.json'].includes(hub.commit(BAAI)));
    assert.ok(!existsSync(join(cacheDir, 'models--BAAI--bge-m3', 'refs', hub.commit(BAAI))), 'no ref file for a commit');
  });

  test('redirects: relative Location on HEAD, and absolute then relative hops on GET', async () => {
    for (const mode of ['relative', 'chain'] as const) {
      const h = await FakeHub.start({ repos: fixtureRepos(), lfsRedirect: mode });
      try {
        const dir = tempCache();
        const files = await downloadFiles([{ repo: BAAI, path: DATA }], { endpoint: h.url, cacheDir: dir, token: '' });
        assert.ok(readFileSync(files[DATA]).equals(h.file(BAAI, DATA).content));
        if (mode === 'chain') assert.equal(h.requests.filter((r) => r.url.startsWith('/cdn-hop/')).length, 1);
      } finally {
        await h.close();
      }
    }
  });

  test('progress: monotonic, throttled, ends at the total', async () => {
    const events: DownloadProgress[] = [];
    await downloadFiles([{ repo: BAAI, path: DATA }], { ...opts(), onProgress: (p) => events.push(p) });
    const size = hub.file(BAAI, DATA).content.length;
    assert.ok(events.length >= 2 && events.length < 50, `${events.length} events`);
    for (let i = 1; i < events.length; i++) assert.ok(events[i].bytesDone >= events[i - 1].bytesDone);
    assert.deepEqual(events.at(-1), { file: DATA, repo: BAAI, bytesDone: size, bytesTotal: size });
    assert.equal(events[0].bytesDone, 0);
  });

  test('a throwing onProgress does not break or repeat the download', async () => {
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], {
      ...opts(),
      onProgress: () => {
        throw new Error('terminal gone');
      },
    });
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    assert.equal(hub.contentGets(DATA), 1);
  });
});

describe('hub authentication', () => {
  const TOKEN = 'hf_TESTsecretTOKEN0123456789';
  let hub: FakeHub;
  let cdn: FakeHub;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos(), token: TOKEN });
    cdn = await FakeHub.start({ repos: fixtureRepos() }); // another host:port, like a real CDN
    hub.cdnBase = cdn.url;
  });
  after(async () => {
    await hub.close();
    await cdn.close();
  });

  test('401 without a token: gated/private, set HF_TOKEN', async () => {
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir: tempCache(), token: '' }), 'HUB_ERROR');
    assert.match(err.message, /HTTP 401/);
    assert.match(err.message, /gated or private/);
    assert.match(err.message, /HF_TOKEN/);
  });

  test('a refused token is never shown in errors', async () => {
    const wrong = 'hf_WRONGsecretVALUE987654321';
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { endpoint: hub.url, cacheDir: tempCache(), token: wrong }), 'HUB_ERROR');
    assert.match(err.message, /token that was sent was not accepted/);
    for (const text of [err.message, String(err), inspect(err, { depth: 10 }), JSON.stringify(err)]) assert.ok(!text.includes(wrong), text);
  });

  test('HF_TOKEN is sent as a bearer token to the Hub, never to the CDN host', async () => {
    process.env.HF_TOKEN = `${TOKEN}\n`;
    try {
      hub.requests.length = 0;
      cdn.requests.length = 0;
      const files = await downloadFiles(presetFiles(BAAI, 'fp32'), { endpoint: hub.url, cacheDir: tempCache() });
      for (const p of FP32_FILES) assert.ok(readFileSync(files[p]).equals(hub.file(BAAI, p).content), p);
      assert.ok(hub.requests.length > 0);
      for (const r of hub.requests) assert.equal(r.authorization, `Bearer ${TOKEN}`);
      assert.ok(cdn.requests.length >= 2, 'LFS content came from the CDN');
      for (const r of cdn.requests) assert.equal(r.authorization, undefined, `token leaked to ${r.url}`);
    } finally {
      delete process.env.HF_TOKEN;
    }
  });
});
