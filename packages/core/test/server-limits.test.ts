// Bad requests, limits, a full queue, disconnecting clients and the API key, on a real server.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { M3Encoder } from '../src/inference/encoder.js';
import { RemoteEncoder } from '../src/remote/index.js';
import { readApiKeyFile } from '../src/server/auth.js';
import { golden } from './helpers/fixture.ts';
import { FIXTURE, GatedEncoder, request, start, until, type Running } from './server-helpers.ts';

const g = golden();

function near(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-6, `${what}[${i}]`);
}

function isOpenAiError(res: { status: number; json: any }, status: number, code?: string): void {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(typeof res.json?.error?.message, 'string');
  assert.equal(typeof res.json.error.type, 'string');
  if (code) assert.equal(res.json.error.code, code);
  assert.doesNotMatch(JSON.stringify(res.json), /\bat .*\.(ts|js):\d+/, 'no stack trace');
}

describe('bad requests get 4xx JSON and the server keeps serving', () => {
  let s: Running;
  before(async () => {
    const enc = await M3Encoder.load(FIXTURE, { workers: 0, cache: false, maxLength: 64 });
    const served = await start({ limits: { bodyLimit: 4096, maxTexts: 8, maxTokens: 200 } }, enc);
    s = { ...served, close: async () => (await served.close(), await enc.close()) };
  });
  after(() => s.close());

  test('malformed JSON, empty body, wrong content type', async () => {
    isOpenAiError(await request(s.url, '/v1/embeddings', { raw: '{"input": ["a",' }), 400, 'invalid_json');
    isOpenAiError(await request(s.url, '/v1/embeddings', { raw: '' }), 400);
    isOpenAiError(await request(s.url, '/v1/embeddings', { raw: 'input=a', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type');
    const tei = await request(s.url, '/embed', { raw: 'not json' });
    assert.equal(tei.status, 400);
    assert.equal(typeof tei.json.error, 'string', 'TEI routes answer in TEI shape');
    assert.equal(tei.json.error_type, 'Validation');
  });

  test('oversize bodies, too many texts, too many tokens, a text too long with truncate false', async () => {
    isOpenAiError(await request(s.url, '/v1/embeddings', { body: { input: ['x'.repeat(5000)] } }), 413, 'body_too_large');
    isOpenAiError(await request(s.url, '/v1/embeddings', { body: { input: Array(9).fill('a') } }), 413, 'too_many_texts');
    // Texts are cut to maxLength (64) first: four of them are 256 tokens, over the 200 allowed.
    isOpenAiError(await request(s.url, '/v1/embeddings', { body: { input: Array(4).fill('word '.repeat(100)) } }), 413, 'too_many_tokens');
    const cut = await request(s.url, '/v1/m3/encode', { body: { input: ['word '.repeat(100)] } });
    assert.equal(cut.status, 200);
    assert.equal(cut.json.data[0].truncated, true);
    assert.equal(cut.json.data[0].tokens, 64);
    // TEI's truncate: false refuses instead of cutting.
    const tei = await request(s.url, '/embed', { body: { inputs: 'word '.repeat(100), truncate: false } });
    assert.equal(tei.status, 413);
    assert.match(tei.json.error, /longer than 64 tokens and truncate is false/);
    assert.equal((await request(s.url, '/embed', { body: { inputs: 'word '.repeat(100), truncate: true } })).status, 200);
  });

  test('RemoteEncoder splits a call over the per-request token limit (413) into requests that fit', async () => {
    const remote = await RemoteEncoder.connect(s.url);
    const texts = Array.from({ length: 8 }, (_, i) => `${i} ${'word '.repeat(100)}`); // 8 × 64 tokens > 200
    const got = await remote.encode(texts, { dense: true, sparse: true });
    const local = await s.encoder.encode(texts, { dense: true, sparse: true });
    got.forEach((r, i) => {
      assert.equal(r.tokens, 64);
      near(r.dense!, local[i].dense!, `dense ${i}`);
      assert.deepEqual(r.sparse!.indices, local[i].sparse!.indices);
    });
  });

  test('wrong types and values name the field', async () => {
    const cases: Array<[string, unknown, RegExp]> = [
      ['/v1/embeddings', { input: 5 }, /input must be a string or an array of strings, got number/],
      ['/v1/embeddings', { input: ['ok', null] }, /input\[1\] must be a string, got null/],
      ['/v1/embeddings', { input: [] }, /must not be an empty array/],
      ['/v1/embeddings', { input: 'a', encoding_format: 'hex' }, /encoding_format must be one of "float", "base64"/],
      ['/v1/embeddings', [1, 2], /request body must be a JSON object, got array/],
      ['/v1/m3/encode', { input: 'a', outputs: ['dense', 'splade'] }, /unknown output "splade"/],
      ['/v1/m3/encode', { input: 'a', max_length: 1 }, /max_length must be an integer from 2/],
      ['/v1/m3/encode', { input: 'a', colour: 1 }, /unknown field "colour"/],
      ['/v1/m3/score', { pairs: [['q']] }, /pairs\[0\] must be \[query, passage\]/],
      ['/v1/m3/score', { pairs: [['q', 'p']], weights: [0, 0, 0] }, /all zero/],
      ['/v1/m3/score', { pairs: [['q', 'p']], weights: [1, Number.NaN, 1] }, /weights must be three finite numbers/],
    ];
    for (const [path, body, message] of cases) {
      const res = await request(s.url, path, { body });
      isOpenAiError(res, 400, 'invalid_argument');
      assert.match(res.json.error.message, message, `${path} ${JSON.stringify(body)}`);
    }
    for (const [body, message] of [
      [{ inputs: 'a', normalize: false }, /normalize: false is not supported/],
      [{ inputs: 'a', truncation_direction: 'Left' }, /"Left" is not supported/],
      [{ query: 1, texts: ['a'] }, /query must be a string/],
      [{ query: 'q', texts: 'a', mode: 'dense' }, /mode must be one of/],
    ] as const) {
      const res = await request(s.url, 'query' in body ? '/rerank' : '/embed', { body });
      assert.equal(res.status, 400);
      assert.match(res.json.error, message);
    }
  });

  test('unknown routes and methods are 404 JSON', async () => {
    isOpenAiError(await request(s.url, '/v2/nothing'), 404, 'not_found');
    isOpenAiError(await request(s.url, '/v1/embeddings', { method: 'GET' }), 404, 'not_found');
    isOpenAiError(await request(s.url, '/v1/indexes/none/search', { body: { query: 'q' } }), 404, 'index_not_found');
  });

  test('after all of that the server still serves correct vectors', async () => {
    const res = await request(s.url, '/v1/embeddings', { body: { input: g.queries } });
    assert.equal(res.status, 200);
    const local = await s.encoder.encode(g.queries);
    res.json.data.forEach((d: any, i: number) => near(d.embedding, local[i].dense!, `query ${i}`));
    const errors = await request(s.url, '/metrics');
    assert.match(errors.text, /bgem3_errors_total\{code="too_many_texts"\} 1/);
  });
});

describe('queueing and cancellation', () => {
  let enc: M3Encoder;
  before(async () => {
    enc = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
  });
  after(() => enc.close());

  // Sends one request per text while the encoder is held, opens the gate once all are queued,
  // checks every answer against in-process encoding, and returns the batches after the first.
  async function releaseAll(s: Running, gated: GatedEncoder, first: Promise<unknown>, texts: string[]): Promise<string[][]> {
    const all = texts.map((t) => request(s.url, '/v1/embeddings', { body: { input: t } }));
    for (let i = 0; i < 400 && (await request(s.url, '/health')).json.queue.texts < texts.length; i++) await new Promise((r) => setTimeout(r, 5));
    gated.open();
    await first;
    const answers = await Promise.all(all);
    const local = await enc.encode(texts);
    answers.forEach((a, i) => near(a.json.data[0].embedding, local[i].dense!, `text ${i}`));
    return gated.calls.slice(1);
  }

  // A server (one batch in flight, no wait) whose encoder is held at its gate with a first request
  // inside: what the next requests queue behind.
  async function heldServer(batching: NonNullable<Parameters<typeof start>[0]>['batching']) {
    const gated = new GatedEncoder(enc);
    const s = await start({ encoder: gated, batching: { maxInflight: 1, maxWaitMs: 0, ...batching } }, enc);
    try {
      gated.hold();
      const first = request(s.url, '/v1/embeddings', { body: { input: 'holds the encoder' } });
      await until(() => gated.calls.length === 1, 5000, 'the first batch');
      return { gated, s, first };
    } catch (err) {
      await s.server.close();
      throw err;
    }
  }

  test('concurrent requests are batched together, by similar length, within the text and token budgets', async () => {
    const { gated, s, first } = await heldServer({ maxBatchTexts: 8, maxBatchTokens: 400 });
    try {
      const short = Array.from({ length: 12 }, (_, i) => `short query ${i}`);
      const long = Array.from({ length: 4 }, (_, i) => `${i} ${'long passage words '.repeat(20)}`);
      const texts = [...short.slice(0, 6), ...long, ...short.slice(6)];
      const batches = await releaseAll(s, gated, first, texts);
      assert.ok(batches.length < texts.length / 2, `${texts.length} requests in ${batches.length} batches`);
      const tokens = new Map((await enc.tokenize(texts)).map((t, i) => [texts[i], t.ids.length]));
      for (const b of batches) {
        assert.ok(b.length <= 8, 'at most maxBatchTexts');
        assert.ok(b.length * Math.max(...b.map((t) => tokens.get(t)!)) <= 400 || b.length === 1, 'within the padded-token budget');
      }
      // A batch takes the oldest text and those closest to it in length: the four long passages
      // are not scattered among the short queries' batches.
      const withLong = batches.filter((b) => b.some((t) => long.includes(t)));
      assert.ok(withLong.length <= 2, `long passages in ${withLong.length} batches: ${JSON.stringify(batches.map((b) => b.map((t) => tokens.get(t))))}`);
    } finally {
      await s.server.close();
    }
  });

  test('a long text is not batched with short ones it would pad to its length (within the token budget all the same)', async () => {
    const { gated, s, first } = await heldServer({ maxBatchTexts: 8, maxBatchTokens: 16384 });
    try {
      const short = Array.from({ length: 6 }, (_, i) => `short query ${i}`);
      const long = `one ${'long passage words '.repeat(40)}`;
      const texts = [...short.slice(0, 3), long, ...short.slice(3)];
      const tokens = new Map((await enc.tokenize(texts)).map((t, i) => [texts[i], t.ids.length]));
      assert.ok(tokens.get(long)! > 100 && Math.max(...short.map((t) => tokens.get(t)!)) < 16, 'one long text, short queries');
      const batches = await releaseAll(s, gated, first, texts);
      assert.deepEqual(batches.filter((b) => b.includes(long)), [[long]], `batches: ${JSON.stringify(batches.map((b) => b.map((t) => tokens.get(t))))}`);
      assert.equal(batches.length, 2, 'the short queries in one batch, the long text in another');
    } finally {
      await s.server.close();
    }
  });

  test('a full queue answers 429 with Retry-After (in OpenAI shape), and serves again once drained', async () => {
    const gated = new GatedEncoder(enc);
    const s = await start({ encoder: gated, batching: { maxQueueTexts: 4, maxInflight: 1, maxWaitMs: 0 } }, enc);
    try {
      gated.hold();
      const running = request(s.url, '/v1/embeddings', { body: { input: ['runs first'] } });
      await until(() => gated.calls.length === 1, 5000, 'the first batch');
      const queued = request(s.url, '/v1/embeddings', { body: { input: ['a', 'b', 'c'] } });
      const health = async () => (await request(s.url, '/health')).json.queue.texts;
      for (let i = 0; i < 400 && (await health()) < 3; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(await health(), 3);
      const full = await request(s.url, '/v1/embeddings', { body: { input: ['d', 'e'] } });
      isOpenAiError(full, 429, 'queue_full');
      assert.ok(Number(full.headers.get('retry-after')) >= 1, 'Retry-After');
      const tei = await request(s.url, '/embed', { body: { inputs: ['d', 'e'] } });
      assert.equal(tei.status, 429);
      assert.equal(tei.json.error_type, 'Overloaded');
      const whole = await request(s.url, '/v1/embeddings', { body: { input: ['1', '2', '3', '4', '5'] } });
      isOpenAiError(whole, 413, 'request_too_large');
      gated.open();
      assert.equal((await running).status, 200);
      assert.equal((await queued).status, 200);
      assert.equal((await request(s.url, '/v1/embeddings', { body: { input: ['d', 'e'] } })).status, 200);
    } finally {
      await s.server.close();
    }
  });

  test('a client that disconnects mid-batch cancels only its own share; the others get correct results', async () => {
    const gated = new GatedEncoder(enc);
    const s = await start({ encoder: gated, batching: { maxInflight: 1, maxWaitMs: 0, maxBatchTexts: 4 } }, enc);
    try {
      gated.hold();
      // Batch 1 (held at the gate) gets B's first text; A and B then both queue more, so the next
      // batches mix A's and B's texts.
      const b1 = request(s.url, '/v1/embeddings', { body: { input: [g.texts[0]] } });
      await until(() => gated.calls.length === 1, 5000, 'batch 1');
      const a = new AbortController();
      const aTexts = g.texts.slice(1, 9);
      const bTexts = g.texts.slice(9, 13);
      const aReq = request(s.url, '/v1/m3/encode', { body: { input: aTexts, outputs: ['dense', 'sparse', 'colbert'] }, signal: a.signal }).catch((e) => e);
      const bReq = request(s.url, '/v1/m3/encode', { body: { input: bTexts, outputs: ['dense', 'sparse', 'colbert'] } });
      const queueTexts = async () => (await request(s.url, '/health')).json.queue.texts;
      for (let i = 0; i < 400 && (await queueTexts()) < aTexts.length + bTexts.length; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(await queueTexts(), aTexts.length + bTexts.length);
      a.abort();
      // A's queued texts leave the queue; B's stay.
      for (let i = 0; i < 400 && (await queueTexts()) !== bTexts.length; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(await queueTexts(), bTexts.length);
      gated.open();
      assert.equal((await b1).status, 200);
      const b = await bReq;
      assert.equal(b.status, 200);
      const local = await enc.encode(bTexts, { dense: true, sparse: true, colbert: true });
      b.json.data.forEach((d: any, i: number) => {
        near(d.dense, local[i].dense!, `B dense ${i}`);
        assert.deepEqual(d.sparse.indices, Array.from(local[i].sparse!.indices));
        assert.deepEqual(d.colbert.shape, [local[i].colbert!.count, local[i].colbert!.dim]);
      });
      assert.equal((await aReq).name, 'AbortError');
      // None of A's texts reached the model.
      const encoded = gated.calls.flat();
      for (const t of aTexts) if (!bTexts.includes(t) && t !== g.texts[0]) assert.ok(!encoded.includes(t), `A's ${JSON.stringify(t)} was not encoded`);
    } finally {
      await s.server.close();
    }
  });

  test("another caller's abort on a text shared with a server batch leaves that request correct (encode cache on)", async () => {
    // With the cache, concurrent calls for one text share a single pass: the case where one
    // caller's abort used to fail the others (issue 17). Here the application itself aborts an
    // encode of a text that a server batch is waiting for; the server queues that batch again
    // for its live request instead of failing it.
    const cached = await M3Encoder.load(FIXTURE, { workers: 0 });
    const gated = new GatedEncoder(cached);
    const s = await start({ encoder: gated, batching: { maxInflight: 1, maxWaitMs: 0 } }, cached);
    try {
      gated.hold();
      const shared = g.texts[5];
      const bReq = request(s.url, '/v1/embeddings', { body: { input: [shared, g.texts[7]] } });
      await until(() => gated.calls.length === 1, 5000, "B's batch");
      const app = new AbortController();
      gated.open();
      const mine = cached.encode([shared], { signal: app.signal }).catch((e) => e);
      app.abort();
      assert.equal((await mine).code, 'ABORTED');
      const b = await bReq;
      assert.equal(b.status, 200, JSON.stringify(b.json));
      const local = await enc.encode([shared, g.texts[7]]);
      b.json.data.forEach((d: any, i: number) => near(d.embedding, local[i].dense!, `B ${i}`));
      assert.equal((await request(s.url, '/v1/embeddings', { body: { input: shared } })).status, 200);
    } finally {
      await s.server.close();
      await cached.close();
    }
  });
});

describe('--api-key-file', () => {
  let s: Running;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bgem3-key-'));
    writeFileSync(join(dir, 'key'), 's3cret-key\n');
    s = await start({ apiKey: readApiKeyFile(join(dir, 'key')) });
  });
  after(async () => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('requests without the key (or with a wrong one) get 401; with it, 200; GET /health stays open', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 's3cret-key' }, { authorization: 'Bearer s3cret-key-and-more' }]) {
      isOpenAiError(await request(s.url, '/v1/embeddings', { body: { input: 'x' }, headers }), 401, 'invalid_api_key');
    }
    assert.equal((await request(s.url, '/metrics')).status, 401);
    assert.equal((await request(s.url, '/info')).status, 401);
    assert.equal((await request(s.url, '/v1/embeddings', { body: { input: 'x' }, headers: { authorization: 'Bearer s3cret-key' } })).status, 200);
    assert.equal((await request(s.url, '/health')).status, 200);
  });

  test('an unreadable or empty key file is a clear error', () => {
    assert.throws(() => readApiKeyFile(join(dir, 'missing')), /cannot read the API key file/);
    writeFileSync(join(dir, 'empty'), '\n');
    assert.throws(() => readApiKeyFile(join(dir, 'empty')), /is empty/);
  });
});

test('binds 127.0.0.1 by default', async () => {
  const enc = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
  const s = await start({}, enc);
  try {
    assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const addr = s.server.app.server.address();
    assert.equal(typeof addr === 'object' && addr?.address, '127.0.0.1');
    // Not a stub: a raw HTTP request with a body cut off mid-way does not break the server.
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${s.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '100' } });
      req.on('error', () => resolve());
      req.write('{"input": "par');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 50);
    });
    assert.equal((await request(s.url, '/v1/embeddings', { body: { input: 'x' } })).status, 200);
  } finally {
    await s.server.close();
    await enc.close();
  }
});
