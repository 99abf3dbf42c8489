/**
 * A hostile or broken Hub (test/helpers/fake-hub.ts's hostile modes, real HTTP on 127.0.0.1):
 * a trickle that never stalls, an endless body, lying sizes, etags that are not hashes, a gzip
 * range on resume, a redirect to a slow CDN. Every case ends within its bound, with a clear
 * error or an intact file; nothing unverified or corrupt is ever cached or returned. Limits are
 * set short (HubOptions.limits) so the file runs in seconds.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, beforeEach, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { resolveSettings } from '../src/hub/config.js';
import { downloadFiles } from '../src/hub/resolve-model.js';
import { DEFAULT_TRANSFER_LIMITS, resolveTransferLimits } from '../src/hub/transfer-limits.js';
import type { HubTransferLimits } from '../src/hub/types.js';
import { FakeHub, fixtureRepos, sha256 } from './helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT', 'HF_HUB_DOWNLOAD_TIMEOUT']) delete process.env[k];

const BAAI = 'BAAI/bge-m3';
const DATA = 'onnx/model.onnx_data'; // LFS: 302 to the CDN, 1.5 MB
const CONFIG = 'config.json'; // a regular file, served by the resolve URL

const tmpRoots: string[] = [];
function tempCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-hostile-'));
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

const blobsDir = (cacheDir: string) => join(cacheDir, 'models--BAAI--bge-m3', 'blobs');
/** Blobs (not temp files) in the cache. */
const blobs = (cacheDir: string) => (existsSync(blobsDir(cacheDir)) ? readdirSync(blobsDir(cacheDir)).filter((n) => !n.endsWith('.incomplete')) : []);
const incomplete = (cacheDir: string) => (existsSync(blobsDir(cacheDir)) ? readdirSync(blobsDir(cacheDir)).filter((n) => n.endsWith('.incomplete')) : []);
const snapshotHas = (cacheDir: string, hub: FakeHub, path: string) => existsSync(join(cacheDir, 'models--BAAI--bge-m3', 'snapshots', hub.commit(BAAI), path));

/** Short bounds: the idle timer is not what these tests are about unless they say so. */
const FAST: HubTransferLimits = { idleTimeoutMs: 5000, minBytesPerSecond: 2000, rateWindowMs: 250, deadlineMs: 1500, maxUnknownSizeBytes: 1 << 20 };
// Tests that are not about the rate or the deadline turn both off: on a loaded machine a 250 ms
// window can pass with no byte served, which would add attempts the test does not expect.
const RELAXED: HubTransferLimits = { ...FAST, minBytesPerSecond: 0, deadlineMs: 0 };

describe('hostile Hub', () => {
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
  const opts = (limits: HubTransferLimits = RELAXED) => ({ endpoint: hub.url, cacheDir, token: '', limits });

  test('slow: a trickle of 1 byte per 10 ms (below the minimum rate) is cut and resumed each window, then ends at the deadline', async () => {
    hub.faults.slow = { file: DATA, intervalMs: 10, bytes: 1 };
    const started = Date.now();
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts(FAST)), 'HUB_ERROR');
    const took = Date.now() - started;
    assert.match(err.message, /BAAI\/bge-m3\/onnx\/model\.onnx_data took longer than the deadline of 1\.5 s/);
    assert.match(err.message, /BGEM3_HUB_DEADLINE/);
    assert.match(err.message, /partial file .*\.incomplete is kept/);
    assert.ok(took < 4000, `ended after ${took} ms`);
    // The rate bound, not the deadline, ended each attempt: several GETs, each resuming.
    const gets = hub.find({ method: 'GET', file: DATA }).filter((r) => r.body);
    assert.ok(gets.length >= 2, `${gets.length} content GETs`);
    assert.ok(gets.slice(1).every((r) => /^bytes=[1-9]\d*-$/.test(r.range ?? '')), `later GETs resume: ${gets.map((r) => r.range).join(', ')}`);
    assert.deepEqual(blobs(cacheDir), [], 'nothing unfinished is a blob');
    assert.equal(incomplete(cacheDir).length, 1, 'the partial file is kept for the next call');
  });

  test('slow but above the minimum rate: the deadline ends it; the partial file is kept and the next call resumes it', async () => {
    hub.faults.slow = { file: DATA, intervalMs: 5, bytes: 2048 };
    // The rate bound off: this is about the deadline alone (a loaded machine could stall a window).
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts({ ...FAST, minBytesPerSecond: 0, deadlineMs: 600 })), 'HUB_ERROR');
    assert.match(err.message, /deadline of 0\.6 s/);
    assert.equal(hub.find({ method: 'GET', file: DATA }).filter((r) => r.body).length, 1, 'one attempt: nothing else cut it');
    const [tmp] = incomplete(cacheDir);
    const kept = statSync(join(blobsDir(cacheDir), tmp)).size;
    assert.ok(kept > 0, 'bytes were kept');
    hub.faults = {};
    hub.requests.length = 0;
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], opts());
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    assert.equal(hub.find({ method: 'GET', file: DATA })[0]?.range, `bytes=${kept}-`);
  });

  test('a redirect to a slow CDN host is bounded the same way', async () => {
    const cdn = await FakeHub.start({ repos: fixtureRepos() });
    try {
      hub.cdnBase = cdn.url;
      cdn.faults.slow = { file: DATA, intervalMs: 20, bytes: 1 };
      const started = Date.now();
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts(FAST)), 'HUB_ERROR');
      assert.match(err.message, /deadline/);
      assert.ok(Date.now() - started < 4000);
      assert.ok(cdn.find({ method: 'GET', file: DATA }).filter((r) => r.body).length >= 2, 'the CDN attempts were cut by the rate bound');
      assert.deepEqual(blobs(cacheDir), []);
    } finally {
      hub.cdnBase = undefined;
      await cdn.close();
    }
  });

  test('endless body, no size in HEAD nor GET: refused past maxUnknownSizeBytes, the partial file deleted', async () => {
    hub.faults.sizes = { file: CONFIG, head: null };
    hub.faults.endless = { file: CONFIG };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: CONFIG }], opts()), 'HUB_ERROR');
    assert.match(err.message, /more than 1048576 bytes for BAAI\/bge-m3\/config\.json without saying its size/);
    assert.match(err.message, /BGEM3_HUB_MAX_UNKNOWN_SIZE/);
    assert.deepEqual(blobs(cacheDir), []);
    assert.deepEqual(incomplete(cacheDir), [], 'the partial file is deleted');
    assert.ok(!snapshotHas(cacheDir, hub, CONFIG));
    assert.equal(hub.find({ method: 'GET', file: CONFIG }).length, 1, 'not retried');
  });

  test('endless body for a file of known size: at most size + 1 bytes are written, then INTEGRITY; nothing stays', async () => {
    hub.faults.endless = { file: DATA };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts({ ...FAST, deadlineMs: 0 })), 'INTEGRITY');
    const size = hub.file(BAAI, DATA).content.length;
    assert.match(err.message, new RegExp(`size expected ${size}, got ${size + 1}`));
    assert.deepEqual(blobs(cacheDir), []);
    assert.deepEqual(incomplete(cacheDir), []);
  });

  test('the default bound for an unknown size is documented and applies', () => {
    const limits = resolveTransferLimits(resolveSettings({}), {}, {});
    assert.deepEqual(
      { minBytesPerSecond: limits.minBytesPerSecond, rateWindowMs: limits.rateWindowMs, deadlineMs: limits.deadlineMs, maxUnknownSizeBytes: limits.maxUnknownSizeBytes },
      { ...DEFAULT_TRANSFER_LIMITS },
    );
    assert.equal(limits.maxUnknownSizeBytes, 4 * 1024 ** 3);
    const env = resolveTransferLimits(resolveSettings({}), {}, { BGEM3_HUB_MIN_RATE: '10', BGEM3_HUB_RATE_WINDOW: '2', BGEM3_HUB_DEADLINE: '0', BGEM3_HUB_MAX_UNKNOWN_SIZE: '5' });
    assert.deepEqual([env.minBytesPerSecond, env.rateWindowMs, env.deadlineMs, env.maxUnknownSizeBytes], [10, 2000, Infinity, 5]);
    assert.throws(() => resolveTransferLimits(resolveSettings({}), {}, { BGEM3_HUB_DEADLINE: '1h' }), /BGEM3_HUB_DEADLINE must be a number ≥ 0/);
    assert.throws(() => resolveTransferLimits(resolveSettings({}), { limits: { minBytesPerSecond: -1 } }, {}), /limits\.minBytesPerSecond must be a number ≥ 0/);
  });

  test('lying sizes: a GET Content-Length that disagrees with the HEAD size is INTEGRITY at once, with no retry', async () => {
    const size = hub.file(BAAI, DATA).content.length;
    for (const head of [1000, size + 1000]) {
      hub.requests.length = 0;
      hub.faults.sizes = { file: DATA, head };
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts()), 'INTEGRITY');
      assert.match(err.message, new RegExp(`size expected ${head}, got ${size} \\(the GET's Content-Length disagrees with the metadata \\(HEAD\\)\\)`));
      assert.equal(hub.find({ method: 'GET', file: DATA }).length, 1);
      assert.deepEqual(blobs(cacheDir), []);
      assert.deepEqual(incomplete(cacheDir), []);
    }
  });

  test('lying sizes: a resumed part whose Content-Range total disagrees is INTEGRITY; the partial file is deleted', async () => {
    const size = hub.file(BAAI, DATA).content.length;
    hub.faults.dropAfter = { file: DATA, bytes: 300_000 };
    hub.faults.sizes = { file: DATA, rangeTotal: size + 7 };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts()), 'INTEGRITY');
    assert.match(err.message, new RegExp(`size expected ${size}, got ${size + 7} \\(the total of the GET's Content-Range`));
    assert.deepEqual(incomplete(cacheDir), []);
  });

  test('lying sizes: a 416 whose total (bytes */N) disagrees with the HEAD size is INTEGRITY; the partial file is deleted', async () => {
    const f = hub.file(BAAI, DATA);
    const size = f.content.length;
    // A partial file past the real end, and a HEAD claiming more: the resume asks beyond the end.
    mkdirSync(blobsDir(cacheDir), { recursive: true });
    writeFileSync(join(blobsDir(cacheDir), `${f.etag}.incomplete`), Buffer.concat([f.content, Buffer.alloc(10, 0x78)]));
    hub.faults.sizes = { file: DATA, head: size + 20 };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts()), 'INTEGRITY');
    assert.match(err.message, new RegExp(`size expected ${size + 20}, got ${size} \\(the size in the 416 response`));
    assert.equal(hub.find({ method: 'GET', file: DATA })[0]?.range, `bytes=${size + 10}-`);
    assert.deepEqual(incomplete(cacheDir), []);
    assert.deepEqual(blobs(cacheDir), []);
  });

  test('lying sizes: a body shorter than its Content-Length stalls, then resumes from what arrived; the file is intact', async () => {
    const f = hub.file(BAAI, CONFIG);
    hub.faults.sizes = { file: CONFIG, body: f.content.length - 100 };
    const files = await downloadFiles([{ repo: BAAI, path: CONFIG }], opts({ ...FAST, idleTimeoutMs: 300, minBytesPerSecond: 0 }));
    assert.ok(readFileSync(files[CONFIG]).equals(f.content));
    const gets = hub.find({ method: 'GET', file: CONFIG });
    assert.deepEqual(gets.map((r) => r.range), [undefined, `bytes=${f.content.length - 100}-`]);
  });

  test('lying sizes: a body longer than its Content-Length is cut at the announced size; a HEAD and GET with no size still verify by hash', async () => {
    const f = hub.file(BAAI, CONFIG);
    hub.faults.sizes = { file: CONFIG, body: f.content.length + 500 };
    const a = await downloadFiles([{ repo: BAAI, path: CONFIG }], opts());
    assert.ok(readFileSync(a[CONFIG]).equals(f.content));
    cacheDir = tempCache();
    hub.faults.sizes = { file: CONFIG, head: null, contentLength: null };
    const b = await downloadFiles([{ repo: BAAI, path: CONFIG }], opts());
    assert.ok(readFileSync(b[CONFIG]).equals(f.content));
    cacheDir = tempCache();
    hub.faults.sizes = { file: CONFIG, head: null, contentLength: null, body: f.content.length + 3 };
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: CONFIG }], opts()), 'INTEGRITY');
    assert.match(err.message, /git-sha1 expected/);
    assert.deepEqual(blobs(cacheDir), []);
  });

  test('non-hash etags: refused before any content is fetched; a corrupted body is never cached or returned', async () => {
    for (const [path, value, header] of [
      [DATA, 'mirror-etag-1', 'X-Linked-Etag'],
      [DATA, 'd41d8cd98f00b204e9800998ecf8427e', 'X-Linked-Etag'], // an md5, not a sha256
      [CONFIG, 'W-5-abc', 'ETag'],
    ] as const) {
      cacheDir = tempCache();
      hub.requests.length = 0;
      hub.faults = { etag: { file: path, value }, corrupt: { file: path, offset: 10 } };
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path }], opts()), 'INTEGRITY');
      assert.match(err.message, new RegExp(`cannot verify BAAI/bge-m3/${path.replace('.', '\\.')} at main: the server's ${header} "${value}" is not`));
      assert.equal(hub.contentGets(path), 0, 'no content was fetched');
      assert.deepEqual(blobs(cacheDir), []);
      assert.ok(!snapshotHas(cacheDir, hub, path));
    }
  });

  test('a file already in the snapshot is served from the cache even if the server now sends a non-hash etag', async () => {
    const first = await downloadFiles([{ repo: BAAI, path: CONFIG }], opts());
    hub.requests.length = 0;
    hub.faults = { etag: { file: CONFIG, value: 'mirror' } };
    const again = await downloadFiles([{ repo: BAAI, path: CONFIG }], opts());
    assert.equal(again[CONFIG], first[CONFIG]);
    assert.equal(hub.contentGets(CONFIG), 0);
    assert.equal(sha256(readFileSync(again[CONFIG])), hub.file(BAAI, CONFIG).sha256);
  });

  test('gzip on a byte-range resume: the compressed part is discarded and the file restarts without Range; intact', async () => {
    hub.faults.dropAfter = { file: DATA, bytes: 300_000 };
    hub.faults.gzipRange = { file: DATA };
    const files = await downloadFiles([{ repo: BAAI, path: DATA }], opts({ ...FAST, deadlineMs: 0 }));
    assert.ok(readFileSync(files[DATA]).equals(hub.file(BAAI, DATA).content));
    const ranges = hub.find({ method: 'GET', file: DATA }).map((r) => r.range);
    assert.equal(ranges.length, 3, String(ranges));
    assert.equal(ranges[0], undefined);
    assert.match(ranges[1] ?? '', /^bytes=[1-9]\d*-$/, 'resumed after the drop');
    assert.equal(ranges[2], undefined, 'then restarted without Range');
  });
});
