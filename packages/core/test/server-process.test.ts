// `bgem3 serve` as a real child process: SIGTERM drains the requests in flight, and kill -9 while
// an index is being written leaves it loadable with every acknowledged write.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { M3Encoder } from '../src/inference/encoder.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { golden } from './helpers/fixture.ts';
import { CLI, FIXTURE, request } from './server-helpers.ts';

const g = golden();

interface Child {
  proc: ChildProcess;
  url: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `bgem3 serve` on a free port and waits for the address it prints. */
async function serve(args: string[]): Promise<Child> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--model', FIXTURE, '--port', '0', '--no-model-check', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8');
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${err}`)), 60_000);
    proc.stderr!.on('data', (d: string) => {
      err += d;
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${err}`));
    });
  });
  return { proc, url, stderr: () => err, exited };
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('bgem3 serve in a child process', () => {
  test('SIGTERM stops accepting, drains the requests in flight (all answered in full), then exits 0', async () => {
    const child = await serve(['--max-wait-ms', '0']);
    // Long texts, many of them: the requests are still queued or running when SIGTERM arrives.
    const long = g.texts.slice(0, 10).join(' '); // ~340 tokens
    const bodies = Array.from({ length: 6 }, (_, r) => ({ input: Array.from({ length: 64 }, (_, i) => `${r}-${i} ${long}`) }));
    const inflight = bodies.map((body) => request(child.url, '/v1/embeddings', { body }));
    // Every request accepted (the health request itself is the 7th) before SIGTERM.
    let h = await request(child.url, '/health');
    for (let i = 0; i < 4000 && h.json.requests_inflight < bodies.length + 1; i++) h = await request(child.url, '/health');
    assert.equal(h.json.requests_inflight, bodies.length + 1, 'all requests accepted');
    child.proc.kill('SIGTERM');
    const answers = await Promise.all(inflight);
    for (const a of answers) {
      assert.equal(a.status, 200, a.text.slice(0, 200));
      assert.equal(a.json.data.length, 64);
      for (const d of a.json.data) assert.equal(d.embedding.length, 32);
    }
    const { code } = await child.exited;
    assert.equal(code, 0, child.stderr());
    assert.match(child.stderr(), /SIGTERM: shutting down/);
    assert.match(child.stderr(), /stopped/);
    await assert.rejects(fetch(`${child.url}/health`), 'no longer accepting');
  });

  test('--api-key-file: requests without the key get 401, with it 200; a missing file fails at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bgem3-serve-key-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'key'), 'k-123\n');
    const child = await serve(['--api-key-file', join(dir, 'key')]);
    try {
      const none = await request(child.url, '/v1/embeddings', { body: { input: 'x' } });
      assert.equal(none.status, 401);
      assert.equal(none.json.error.code, 'invalid_api_key');
      assert.equal((await request(child.url, '/v1/embeddings', { body: { input: 'x' }, headers: { authorization: 'Bearer nope' } })).status, 401);
      assert.equal((await request(child.url, '/v1/embeddings', { body: { input: 'x' }, headers: { authorization: 'Bearer k-123' } })).status, 200);
    } finally {
      child.proc.kill('SIGTERM');
      await child.exited;
    }
    await assert.rejects(serve(['--api-key-file', join(dir, 'missing')]), /cannot read the API key file/);
  });

  test('kill -9 while an index is being written leaves it loadable, with every acknowledged document', async () => {
    const encoder = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
    try {
      for (let trial = 0; trial < 3; trial++) {
        const dir = mkdtempSync(join(tmpdir(), 'bgem3-serve-index-'));
        dirs.push(dir);
        const indexDir = join(dir, 'docs');
        const child = await serve(['--index', `docs=${indexDir}`]);
        const acknowledged: string[] = [];
        let stop = false;
        // Four writers adding batches back to back: a save is almost always under way.
        const writer = async (w: number) => {
          for (let b = 0; !stop; b++) {
            const documents = Array.from({ length: 10 }, (_, i) => ({ id: `w${w}-b${b}-d${i}`, text: `${g.texts[(b + i) % g.texts.length]} ${w} ${b}`, metadata: { w, b, i } }));
            try {
              const res = await request(child.url, '/v1/indexes/docs/documents', { body: { documents } });
              if (res.status === 200) acknowledged.push(...res.json.ids);
            } catch {
              return; // the server was killed
            }
          }
        };
        const writers = [0, 1, 2, 3].map(writer);
        while (acknowledged.length < 40 * (trial + 1)) await new Promise((r) => setTimeout(r, 2));
        await new Promise((r) => setTimeout(r, trial * 7));
        child.proc.kill('SIGKILL');
        stop = true;
        await child.exited;
        await Promise.all(writers);
        const index = await M3Index.load(indexDir, { encoder });
        for (const id of acknowledged) assert.ok(await index.has(id), `acknowledged ${id} survived (trial ${trial})`);
        const hits = await index.search(g.texts[0], { k: 3 });
        assert.ok(hits.length > 0);
        await index.close();
      }
    } finally {
      await encoder.close();
    }
  });

  test('index routes: add, get, search (hybrid, per-mode scores), delete; durable across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bgem3-serve-index-'));
    dirs.push(dir);
    const indexDir = join(dir, 'docs');
    // --max-tokens applies to a request's texts, not to the store's batches of its documents:
    // the golden passages (two of 3-4k tokens) are added whole.
    let child = await serve(['--index', `docs=${indexDir}`, '--max-tokens', '200']);
    const docs = g.passages.map((text: string, i: number) => ({ id: `p${i}`, text, metadata: { i } }));
    const added = await request(child.url, '/v1/indexes/docs/documents', { body: { documents: docs } });
    assert.equal(added.status, 200);
    assert.deepEqual(added.json.ids, docs.map((d: { id: string }) => d.id));
    const list = await request(child.url, '/v1/indexes');
    assert.deepEqual(list.json.data.map((x: { name: string; documents: number }) => [x.name, x.documents]), [['docs', docs.length]]);
    const got = await request(child.url, '/v1/indexes/docs/documents/p1');
    assert.deepEqual(got.json, { id: 'p1', text: g.passages[1], metadata: { i: 1 } });
    assert.equal((await request(child.url, '/v1/indexes/docs/documents/none')).status, 404);
    const longId = `é/${'x'.repeat(300)} ?#`;
    assert.equal((await request(child.url, '/v1/indexes/docs/documents', { body: { documents: [{ id: longId, text: 'an id with odd characters' }] } })).status, 200);
    const byLongId = await request(child.url, `/v1/indexes/docs/documents/${encodeURIComponent(longId)}`);
    assert.equal(byLongId.status, 200, byLongId.text);
    assert.equal(byLongId.json.id, longId);
    assert.deepEqual((await request(child.url, `/v1/indexes/docs/documents/${encodeURIComponent(longId)}`, { method: 'DELETE' })).json, { deleted: 1 });
    const search = await request(child.url, '/v1/indexes/docs/search', { body: { query: g.queries[0], k: docs.length, fetch_k: docs.length, weights: [0.4, 0.2, 0.4] } });
    assert.equal(search.status, 200);
    const table = g['compute_score_weights_0.4_0.2_0.4'];
    for (const r of search.json.data) {
      const pair = Number(r.id.slice(1));
      // The index stores ColBERT vectors as fp16 (its default): MaxSim within 1e-3 of fp32.
      assert.ok(Math.abs(r.score - table['colbert+sparse+dense'][pair]) < 1e-3, `fused ${r.id}`);
      assert.ok(Math.abs(r.scores.dense - table.dense[pair]) < 1e-5, `dense ${r.id}`);
      assert.ok(Math.abs(r.scores.sparse - table.sparse[pair]) < 1e-5, `sparse ${r.id}`);
      assert.equal(typeof r.scores.colbert, 'number');
    }
    // rerank_depth 1 with k 1: only the best candidate by dense + sparse gets ColBERT, and it is the hit.
    const partial = (r: { scores: { dense: number; sparse: number } }) => 0.4 * r.scores.dense + 0.2 * r.scores.sparse;
    const bestPartial = [...search.json.data].sort((a, b) => partial(b) - partial(a) || (a.id < b.id ? -1 : 1))[0];
    const shallow = await request(child.url, '/v1/indexes/docs/search', { body: { query: g.queries[0], k: 1, fetch_k: docs.length, rerank_depth: 1 } });
    assert.equal(shallow.status, 200, shallow.text);
    assert.deepEqual(shallow.json.data.map((r: { id: string }) => r.id), [bestPartial.id]);
    assert.equal((await request(child.url, '/v1/indexes/docs/search', { body: { query: 'q', rerank_depth: 0 } })).status, 400);
    const bad = await request(child.url, '/v1/indexes/docs/documents', { body: { documents: [{ text: 5 }] } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /documents\[0\]\.text must be a string/);
    assert.deepEqual((await request(child.url, '/v1/indexes/docs/delete', { body: { ids: ['p0', 'p2', 'nope'] } })).json, { deleted: 2 });
    assert.deepEqual((await request(child.url, '/v1/indexes/docs/documents/p3', { method: 'DELETE' })).json, { deleted: 1 });
    // One writer per directory: a second server on the same index is refused at start.
    await assert.rejects(serve(['--index', `docs=${indexDir}`]), /INDEX_LOCKED|locked|writer/i);
    child.proc.kill('SIGTERM');
    assert.equal((await child.exited).code, 0);
    child = await serve(['--index', `docs=${indexDir}`]);
    try {
      const after = await request(child.url, '/v1/indexes');
      assert.equal(after.json.data[0].documents, docs.length - 3);
      const hits = await request(child.url, '/v1/indexes/docs/search', { body: { query: g.queries[0] } });
      assert.ok(hits.json.data.every((h: { id: string }) => !['p0', 'p2', 'p3'].includes(h.id)));
    } finally {
      child.proc.kill('SIGTERM');
      await child.exited;
    }
  });
});
