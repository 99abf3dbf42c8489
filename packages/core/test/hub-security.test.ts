/**
 * Nothing from a caller, a server header or a cache file may make us write outside the cache
 * directory or follow a non-HTTP redirect.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, beforeEach, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { downloadFiles } from '../src/hub/resolve-model.js';
import type { ModelFileSpec } from '../src/hub/types.js';
import { FakeHub, fixtureRepos } from './helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT']) delete process.env[k];

const BAAI = 'BAAI/bge-m3';
const DATA = 'onnx/model.onnx_data';

const tmpRoots: string[] = [];
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

describe('hostile input', () => {
  let hub: FakeHub;
  let root: string;
  let cacheDir: string;
  before(async () => {
    hub = await FakeHub.start({ repos: fixtureRepos() });
  });
  after(() => hub.close());
  beforeEach(() => {
    hub.requests.length = 0;
    hub.faults = {};
    root = mkdtempSync(join(tmpdir(), 'bgem3-hub-'));
    tmpRoots.push(root);
    cacheDir = join(root, 'cache');
  });
  const opts = () => ({ endpoint: hub.url, cacheDir, token: '' });
  /** Only the cache directory was created under the temp root. */
  const nothingOutside = () => assert.deepEqual(readdirSync(root).filter((n) => n !== 'cache'), []);

  test('caller paths that would escape the cache are refused before any request', async () => {
    const bad: ModelFileSpec[] = [
      { repo: BAAI, path: '../../../evil' },
      { repo: BAAI, path: 'onnx/../../x' },
      { repo: BAAI, path: '/etc/passwd' },
      { repo: BAAI, path: 'C:/Windows/x' },
      { repo: BAAI, path: 'onnx\\..\\..\\x' },
      { repo: BAAI, path: 'a\0b' },
      { repo: BAAI, path: '' },
      { repo: BAAI, path: 'onnx//model.onnx' },
      { repo: '../../evil', path: 'config.json' },
      { repo: 'a/b/c', path: 'config.json' },
      { repo: 'org/..', path: 'config.json' },
      { repo: 'org--x/name', path: 'config.json' },
      { repo: BAAI, path: 'config.json', revision: '..' },
      { repo: BAAI, path: 'config.json', revision: '../../evil' },
      { repo: BAAI, path: 'config.json', revision: 'a\\b' },
    ];
    for (const spec of bad) {
      const err = await rejectsWith(downloadFiles([spec], opts()), 'INVALID_ARGUMENT');
      assert.match(err.message, /invalid/);
    }
    await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { ...opts(), revision: '../x' }), 'INVALID_ARGUMENT');
    assert.equal(hub.requests.length, 0);
    nothingOutside();
  });

  test('a path listed twice from different repos is refused (results are keyed by path)', async () => {
    await rejectsWith(
      downloadFiles([{ repo: BAAI, path: 'config.json' }, { repo: 'Xenova/bge-m3', path: 'config.json' }], opts()),
      'INVALID_ARGUMENT',
    );
  });

  const hostileHeaders: Array<[string, string, Record<string, string>]> = [
    ['ETag with ..', 'config.json', { ETag: '"../../../../evil"' }],
    ['ETag with a slash', 'config.json', { ETag: '"abc/def"' }],
    ['X-Linked-Etag with ..', DATA, { 'X-Linked-Etag': '"../../../evil"' }],
    ['X-Linked-Etag absolute', DATA, { 'X-Linked-Etag': '"/tmp/evil"' }],
    ['X-Repo-Commit with ..', 'config.json', { 'X-Repo-Commit': '../../../../evil' }],
    ['X-Repo-Commit with a backslash', DATA, { 'X-Repo-Commit': '..\\..\\evil' }],
  ];
  for (const [name, file, headers] of hostileHeaders) {
    test(`server header refused: ${name}`, async () => {
      hub.faults.headers = { file, set: headers };
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: file }], opts()), 'HUB_ERROR');
      assert.match(err.message, /refusing (etag|commit)/);
      assert.equal(hub.requests.filter((r) => r.method === 'GET').length, 0, 'nothing fetched');
      nothingOutside();
    });
  }

  for (const location of ['file:///etc/passwd', 'javascript:alert(1)', 'ftp://127.0.0.1/x']) {
    test(`redirect refused: ${location}`, async () => {
      hub.faults.headers = { file: DATA, set: { Location: location } };
      const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: DATA }], opts()), 'HUB_ERROR');
      assert.match(err.message, /refusing redirect to a non-HTTP URL/);
      nothingOutside();
    });
  }

  test('a cache ref file holding a path is refused', async () => {
    const ref = join(cacheDir, 'models--BAAI--bge-m3', 'refs', 'main');
    mkdirSync(dirname(ref), { recursive: true });
    writeFileSync(ref, '../../../../evil');
    const err = await rejectsWith(downloadFiles([{ repo: BAAI, path: 'config.json' }], { ...opts(), offline: true }), 'HUB_ERROR');
    assert.match(err.message, /refusing commit/);
    assert.ok(!existsSync(join(root, 'evil')));
  });
});
