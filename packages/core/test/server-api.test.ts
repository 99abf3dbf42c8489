// The server's routes against in-process encoding, over real HTTP on 127.0.0.1 with real clients.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { RemoteEncoder } from '../src/remote/index.js';
import { m3Rerank, type M3Encoded } from '../src/retrieval/m3-rerank.js';
import { computeScore } from '../src/scoring/compute-score.js';
import { decodeFloat16 } from '../src/retrieval/float16.js';
import type { EncodeResult } from '../src/types.js';
import { golden } from './helpers/fixture.ts';
import { M3Encoder } from '../src/inference/encoder.js';
import { FIXTURE, request, start, type Running } from './server-helpers.ts';

const g = golden();

/**
 * Batches differ between the server (texts of several requests together) and one in-process call,
 * and batched and alone encodings differ in the last bits (masked vs mask-free attention kernels,
 * see the encoder tests): vectors are compared within 1e-6.
 */
function near(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-6): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
}
const texts: string[] = g.texts.slice(0, 12);
const all = { dense: true, sparse: true, colbert: true };

describe('bgem3 serve routes (fixture model, 127.0.0.1)', () => {
  let s: Running;
  let local: EncodeResult[];
  before(async () => {
    // Cache off: every answer below is computed by the server, never a copy of `local`.
    s = await start();
    local = await s.encoder.encode(texts, all);
  });
  after(() => s.close());

  test('encode(texts, { tokenized }) skips tokenising exactly what tokenize issued for those texts, with the same results', async () => {
    const enc = s.encoder;
    const tokenized = await enc.tokenize(texts);
    let before = enc.tokenizer.charsTokenized;
    const reused = await enc.encode(texts, { ...all, tokenized });
    assert.equal(enc.tokenizer.charsTokenized - before, 0, 'nothing tokenised again');
    assert.deepEqual(reused, local);
    // Anything else is ignored, never trusted: ids made up by the caller, another text's, another maxLength's.
    const forged = tokenized.map((t) => ({ ids: t.ids.slice(), truncated: t.truncated }));
    const shifted = [...tokenized.slice(1), tokenized[0]];
    const short = await enc.tokenize(texts, 8);
    for (const [what, pre] of [['forged', forged], ['another text\'s', shifted], ['another maxLength\'s', short]] as const) {
      before = enc.tokenizer.charsTokenized;
      assert.deepEqual(await enc.encode(texts, { ...all, tokenized: pre }), local, what);
      assert.equal(enc.tokenizer.charsTokenized - before, texts.reduce((n, t) => n + t.length, 0), `${what}: tokenised as usual`);
    }
    await assert.rejects(enc.encode(texts, { tokenized: 'x' as never }), /tokenized must be an array/);
  });

  test('the openai client (base64 by default, and float) gets the in-process dense vectors and usage', async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const b64 = await client.embeddings.create({ model: 'bge-m3', input: texts });
    const float = await client.embeddings.create({ model: 'bge-m3', input: texts, encoding_format: 'float' });
    for (const res of [b64, float]) {
      assert.equal(res.data.length, texts.length);
      res.data.forEach((d, i) => {
        assert.equal(d.index, i);
        near(d.embedding, local[i].dense!, `text ${i}`);
      });
      const tokens = local.reduce((n, r) => n + r.tokens, 0);
      assert.deepEqual(res.usage, { prompt_tokens: tokens, total_tokens: tokens });
      assert.equal(res.model, s.encoder.modelId);
    }
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [s.encoder.modelId]);
    const one = await client.embeddings.create({ model: 'bge-m3', input: texts[3] });
    near(one.data[0].embedding, local[3].dense!, 'single input');
  });

  test('the openai client sees errors in OpenAI shape', async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    await assert.rejects(
      client.embeddings.create({ model: 'bge-m3', input: [[1, 2, 3]] as never }),
      (e: any) => e.status === 400 && /input\[0\] must be a string/.test(e.message) && e.code === 'invalid_argument' && e.param === 'input',
    );
    await assert.rejects(client.embeddings.create({ model: 'bge-m3', input: 'x', dimensions: 7 }), (e: any) => e.status === 400 && /dimensions must be 32/.test(e.message));
  });

  test('TEI /embed and /embed_sparse equal core outputs', async () => {
    const dense = await request(s.url, '/embed', { body: { inputs: texts } });
    assert.equal(dense.status, 200);
    dense.json.forEach((v: number[], i: number) => near(v, local[i].dense!, `/embed ${i}`));
    const single = await request(s.url, '/embed', { body: { inputs: texts[0], truncate: true } });
    near(single.json[0], local[0].dense!, '/embed single');
    const sparse = await request(s.url, '/embed_sparse', { body: { inputs: texts } });
    assert.equal(sparse.status, 200);
    sparse.json.forEach((entries: Array<{ index: number; value: number }>, i: number) => {
      assert.deepEqual(Uint32Array.from(entries, (e) => e.index), local[i].sparse!.indices);
      near(entries.map((e) => e.value), local[i].sparse!.values, `/embed_sparse ${i}`);
    });
    // The fixture's golden lexical weights (FlagEmbedding) come out of the route too.
    const lw = g.lexical_weights[0] as Record<string, number>;
    const first = Object.fromEntries(sparse.json[0].map((e: { index: number; value: number }) => [String(e.index), e.value]));
    for (const [id, w] of Object.entries(lw)) assert.ok(Math.abs(first[id] - w) < 1e-5, `golden weight of ${id}`);
  });

  test('TEI /rerank: ColBERT MaxSim by default, the M3 All score with mode "all", sorted, return_text', async () => {
    const query = g.queries[0];
    const passages: string[] = g.passages.slice(0, 4); // the short ones (the last two are 3-4k tokens)
    const [q] = await s.encoder.encode([query], all);
    const enc = await s.encoder.encode(passages, all);
    for (const [mode, weights] of [
      ['colbert', [0, 0, 1]],
      ['all', [0.4, 0.2, 0.4]],
    ] as const) {
      const res = await request(s.url, '/rerank', { body: { query, texts: passages, return_text: true, ...(mode === 'all' ? { mode } : {}) } });
      assert.equal(res.status, 200);
      const expected = await m3Rerank(q as M3Encoded, enc as M3Encoded[], { weights: [...weights] as [number, number, number] });
      assert.deepEqual(res.json.map((h: { index: number }) => h.index), expected.map((h) => h.index), mode);
      res.json.forEach((h: { index: number; score: number; text: string }, i: number) => {
        assert.ok(Math.abs(h.score - expected[i].score) < 1e-6, `${mode} score`);
        assert.equal(h.text, passages[h.index]);
      });
    }
    const colbert = await request(s.url, '/rerank', { body: { query: g.queries[0], texts: passages } });
    for (const h of colbert.json) assert.ok(Math.abs(h.score - g.encode_scores.colbert[0][h.index]) < 1e-5, 'FlagEmbedding colbert_score');
  });

  test('/v1/m3/encode: all three outputs from one pass; sparse {indices, values}; ColBERT base64 float32 (exact) or float16 with its shape', async () => {
    const res = await request(s.url, '/v1/m3/encode', { body: { input: texts, outputs: ['dense', 'sparse', 'colbert'] } });
    assert.equal(res.status, 200);
    res.json.data.forEach((d: any, i: number) => {
      assert.equal(d.index, i);
      assert.equal(d.tokens, local[i].tokens);
      near(d.dense, local[i].dense!, `dense ${i}`);
      assert.deepEqual(d.sparse.indices, Array.from(local[i].sparse!.indices));
      near(d.sparse.values, local[i].sparse!.values, `sparse ${i}`);
      assert.deepEqual(d.colbert.shape, [local[i].colbert!.count, local[i].colbert!.dim]);
      assert.equal(d.colbert.dtype, 'float32');
      const buf = Buffer.from(d.colbert.data, 'base64');
      near(new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)), local[i].colbert!.data, `colbert ${i}`);
    });
    assert.deepEqual(g.colbert_shape[0], [local[0].colbert!.count, local[0].colbert!.dim]);
    const half = await request(s.url, '/v1/m3/encode', { body: { input: texts[2], outputs: ['colbert'], colbert_dtype: 'float16' } });
    const c = half.json.data[0];
    assert.equal(c.dtype === undefined && c.colbert.dtype, 'float16');
    assert.equal(c.dense, undefined);
    const buf = Buffer.from(c.colbert.data, 'base64');
    const bits = new Uint16Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    assert.equal(bits.length, local[2].colbert!.data.length);
    near(decodeFloat16(bits), local[2].colbert!.data, 'float16 ColBERT', 1e-3);
    const b64 = await request(s.url, '/v1/m3/encode', { body: { input: [texts[1]], dense_format: 'base64', max_length: 12 } });
    const [short] = await s.encoder.encode([texts[1]], { maxLength: 12 });
    const db = Buffer.from(b64.json.data[0].dense, 'base64');
    near(new Float32Array(db.buffer.slice(db.byteOffset, db.byteOffset + db.byteLength)), short.dense!, 'base64 dense');
  });

  test('/v1/m3/score gives compute_score\'s five keys, equal to core computeScore (and FlagEmbedding\'s golden table)', async () => {
    const pairs: Array<[string, string]> = g.pairs;
    const res = await request(s.url, '/v1/m3/score', { body: { pairs } });
    assert.equal(res.status, 200);
    // In-process computeScore on its own encoder (cache on: the golden pairs repeat long passages).
    const own = await M3Encoder.load(FIXTURE, { workers: 0 });
    const expected = await computeScore(own, pairs, { maxPassageLength: own.maxLength });
    await own.close();
    const table = g.compute_score_weights_1_1_1;
    res.json.data.forEach((row: any, i: number) => {
      for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense'] as const) {
        assert.ok(Math.abs(row[key] - (expected[i] as any)[key]) < 1e-6, `${key} of pair ${i}`);
        assert.ok(Math.abs(row[key] - table[key][i]) < 1e-5, `golden ${key} of pair ${i}`);
      }
    });
    const weighted = await request(s.url, '/v1/m3/score', { body: { pairs: pairs.map(([query, passage]) => ({ query, passage })), weights: [0.4, 0.2, 0.4] } });
    weighted.json.data.forEach((row: any, i: number) => assert.ok(Math.abs(row['colbert+sparse+dense'] - g['compute_score_weights_0.4_0.2_0.4']['colbert+sparse+dense'][i]) < 1e-5));
  });

  test('RemoteEncoder equals in-process encoding exactly and reads modelId/dim/vocabSize from /info', async () => {
    const remote = await RemoteEncoder.connect(s.url, { batchSize: 5 });
    assert.equal(remote.modelId, s.encoder.modelId);
    assert.equal(remote.dim, s.encoder.dim);
    assert.equal(remote.vocabSize, s.encoder.vocabSize);
    // One text per HTTP request: each runs alone on the server, as each does here, so the
    // results are bit-identical (the wire formats are exact).
    const one = await RemoteEncoder.connect(s.url, { batchSize: 1, concurrency: 1 });
    const alone = await Promise.all(texts.map(async (t) => (await s.encoder.encode([t], all))[0]));
    (await one.encode(texts, all)).forEach((x, i) => {
      assert.deepEqual(x.dense, alone[i].dense);
      assert.deepEqual(x.sparse, alone[i].sparse);
      assert.deepEqual(x.colbert, alone[i].colbert);
      assert.equal(x.tokens, alone[i].tokens);
    });
    const r = await remote.encode(texts, all);
    r.forEach((x, i) => {
      near(x.dense!, local[i].dense!, `remote dense ${i}`);
      assert.deepEqual(x.sparse!.indices, local[i].sparse!.indices);
      near(x.sparse!.values, local[i].sparse!.values, `remote sparse ${i}`);
      assert.equal(x.colbert!.count, local[i].colbert!.count);
      near(x.colbert!.data, local[i].colbert!.data, `remote colbert ${i}`);
      assert.equal(x.tokens, local[i].tokens);
    });
    await assert.rejects(remote.encode(['x'], { maxLength: 1 }), (e: any) => e.code === 'INVALID_ARGUMENT' && /max_length/.test(e.message));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(remote.encode(['x'], { signal: ac.signal }), (e: any) => e.code === 'ABORTED');
    await assert.rejects(RemoteEncoder.connect('http://127.0.0.1:1'), (e: any) => e.code === 'REMOTE_FAILED');
  });

  test('GET /info, /health and /metrics (Prometheus text: queue, batches, tokens, latency, errors)', async () => {
    const info = await request(s.url, '/info');
    assert.equal(info.status, 200);
    assert.equal(info.json.model_id, s.encoder.modelId);
    assert.equal(info.json.m3.dim, s.encoder.dim);
    assert.equal(info.json.m3.vocab_size, s.encoder.vocabSize);
    assert.equal(info.json.max_input_length, s.encoder.maxLength);
    const health = await request(s.url, '/health');
    assert.equal(health.status, 200);
    assert.equal(health.json.status, 'ok');
    assert.deepEqual(health.json.queue, { texts: 0, tokens: 0, batches_inflight: 0 });
    // checkModel ran once at start-up: universal checks only on the fixture (no published reference).
    assert.equal(health.json.model_check.ok, true, health.json.model_check.summary);
    assert.equal(health.json.model_check.applies, false);
    await request(s.url, '/v1/embeddings', { raw: '{bad' });
    assert.equal((await request(s.url, '/v1/embeddings', { body: { input: texts[0] } })).status, 200);
    const metrics = await request(s.url, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/);
    for (const name of [
      'bgem3_queue_texts',
      'bgem3_queue_tokens',
      'bgem3_batch_texts_bucket',
      'bgem3_batch_padded_tokens_bucket',
      'bgem3_tokens_total',
      'bgem3_tokens_per_second',
      'bgem3_request_duration_seconds_bucket',
      'bgem3_queue_wait_seconds_bucket',
      'bgem3_errors_total{code="invalid_json"}',
      'bgem3_process_resident_memory_bytes',
    ]) {
      assert.ok(metrics.text.includes(name), `metrics has ${name}`);
    }
    const tokens = Number(/^bgem3_tokens_total (\d+)/m.exec(metrics.text)?.[1]);
    assert.ok(tokens > 0);
  });

  test('each text is tokenised once: the encoder reuses the tokenisation the server counted tokens with', async () => {
    const tok = s.encoder.tokenizer;
    const chars = texts.reduce((n, t) => n + t.length, 0);
    const before = tok.charsTokenized;
    const res = await request(s.url, '/v1/embeddings', { body: { input: texts, encoding_format: 'float' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(tok.charsTokenized - before, chars, 'characters handed to the tokenizer: once per text');
    res.json.data.forEach((d: any, i: number) => near(d.embedding, local[i].dense!, `text ${i}`));
  });
});
