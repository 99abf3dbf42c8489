/**
 * Output dtypes and shapes are checked at load (issue 17). Variants of the fixture's graphs are
 * made here with onnx-proto (a Cast, or a Flatten, inserted before the graph outputs):
 * - float16 outputs (a backbone's last_hidden_state, or all three outputs of a three-output export)
 *   are supported: converted to float32, they match the float32 graph within float16's precision,
 *   in-thread and in a worker, ColBERT included;
 * - any other element type (int32, float64), rank or hidden size is refused at load with
 *   MODEL_FILE_INVALID naming the graph file and the output.
 * config.json is validated too (bounds, clear messages), and a tokenizer larger than the model's
 * embedding table is refused at load naming tokenizer.json.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { M3Encoder, M3Error, type EncodeResult } from '@bgem3/core';
import { FIXTURE } from './helpers/fixture.ts';

const { onnx } = onnxProto;
const T = onnx.TensorProto.DataType;
const all = { dense: true, sparse: true, colbert: true } as const;
const TEXTS = ['What is BGE M3?', 'Defination of BM25', '北京是中国的首都。', 'a b c', '', 'emoji 😀 and more words to make it longer than the others in its batch'];

const root = mkdtempSync(join(tmpdir(), 'bgem3-outputs-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

type Edit = (graph: onnxProto.onnx.IGraphProto) => void;

/** Inserts `op` (with attributes) between every graph output named in `names` and its producer. */
function before(names: string[], op: string, attrs: Record<string, number>, elemType?: number): Edit {
  return (graph) => {
    for (const name of names) {
      const producer = (graph.node ?? []).find((x) => x.output?.includes(name));
      assert.ok(producer, `no producer of ${name}`);
      const inner = `${name}__inner`;
      producer.output = (producer.output ?? []).map((o) => (o === name ? inner : o));
      for (const x of graph.node ?? []) x.input = (x.input ?? []).map((i) => (i === name ? inner : i));
      graph.node = [
        ...(graph.node ?? []),
        onnx.NodeProto.create({
          name: `${op}_${name}`,
          opType: op,
          input: [inner],
          output: [name],
          attribute: Object.entries(attrs).map(([k, v]) => onnx.AttributeProto.create({ name: k, type: onnx.AttributeProto.AttributeType.INT, i: v })),
        }),
      ];
      const out = graph.output?.find((o) => o.name === name);
      if (out?.type?.tensorType) {
        if (elemType !== undefined) out.type.tensorType.elemType = elemType;
        if (op === 'Flatten') out.type.tensorType.shape = undefined; // rank changes
      }
    }
  };
}
const cast = (names: string[], to: number) => before(names, 'Cast', { to }, to);

/**
 * A copy of the fixture with its graph edited. `layout: 'backbone'` is BAAI's onnx/model.onnx with
 * heads; `'three-output'` is the yuniko-style bge_m3_model.onnx (tokenizer and config one level up).
 */
function variant(layout: 'backbone' | 'three-output', edit?: Edit, files: Record<string, string> = {}): string {
  const dir = join(root, `m${n++}`);
  const graphDir = layout === 'backbone' ? join(dir, 'onnx') : join(dir, 'm3');
  mkdirSync(graphDir, { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json', 'colbert_linear.pt', 'sparse_linear.pt']) cpSync(join(FIXTURE, f), join(dir, f));
  const [src, data] = layout === 'backbone' ? ['onnx/model.onnx', 'onnx/model.onnx_data'] : ['m3-onnx/bge_m3_model.onnx', 'm3-onnx/bge_m3_model.onnx_data'];
  cpSync(join(FIXTURE, data), join(graphDir, data.split('/')[1]));
  const model = onnx.ModelProto.decode(readFileSync(join(FIXTURE, src)));
  if (edit) edit(model.graph as onnxProto.onnx.IGraphProto);
  writeFileSync(join(graphDir, src.split('/')[1]), onnx.ModelProto.encode(model).finish());
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return layout === 'backbone' ? dir : graphDir;
}

function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

/** float16 keeps 11 significant bits: every output within a few float16 ulps of the float32 one. */
function closeToFp32(got: EncodeResult, want: EncodeResult, what: string): void {
  assert.ok(cosine(got.dense!, want.dense!) > 0.99999, `${what}: dense cosine ${cosine(got.dense!, want.dense!)}`);
  for (let i = 0; i < want.dense!.length; i++) assert.ok(Math.abs(got.dense![i] - want.dense![i]) < 2e-3, `${what}: dense[${i}]`);
  const w = new Map(Array.from(want.sparse!.indices, (id, i) => [id, want.sparse!.values[i]]));
  const g = new Map(Array.from(got.sparse!.indices, (id, i) => [id, got.sparse!.values[i]]));
  for (const [id, v] of w) assert.ok(Math.abs((g.get(id) ?? 0) - v) < 5e-3 + 2e-3 * v, `${what}: sparse weight of ${id}: ${g.get(id)} vs ${v}`);
  for (const [id, v] of g) assert.ok(Math.abs((w.get(id) ?? 0) - v) < 5e-3 + 2e-3 * v, `${what}: sparse weight of ${id} (only in fp16)`);
  assert.equal(got.colbert!.count, want.colbert!.count);
  const C = want.colbert!.dim;
  for (let r = 0; r < want.colbert!.count; r++) {
    const c = cosine(got.colbert!.data.subarray(r * C, (r + 1) * C), want.colbert!.data.subarray(r * C, (r + 1) * C));
    assert.ok(c > 0.9999, `${what}: ColBERT row ${r} cosine ${c}`);
  }
}

const refused = (file: RegExp, pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof M3Error, `expected an M3Error, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
  assert.equal(e.code, 'MODEL_FILE_INVALID', e.message);
  assert.match(String(e.file), file);
  assert.match(e.message, pattern);
  return true;
};

describe('float16 outputs are converted to float32', () => {
  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: a backbone whose last_hidden_state is float16 matches the float32 graph (dense, sparse, ColBERT)`, async () => {
      const ref = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
      const enc = await M3Encoder.load(variant('backbone', cast(['last_hidden_state'], T.FLOAT16)), { workers, cache: false });
      try {
        const want = await ref.encode(TEXTS, all);
        const got = await enc.encode(TEXTS, all);
        got.forEach((r, i) => closeToFp32(r, want[i], `text ${i}`));
      } finally {
        await Promise.all([ref.close(), enc.close()]);
      }
    });
    test(`${workers ? 'worker' : 'in-thread'}: a three-output graph with float16 dense, sparse and ColBERT outputs matches the float32 one`, async () => {
      const names = ['dense_embeddings', 'sparse_weights', 'colbert_vectors'];
      const ref = await M3Encoder.load(variant('three-output'), { workers: 0, cache: false });
      const enc = await M3Encoder.load(variant('three-output', cast(names, T.FLOAT16)), { workers, cache: false });
      try {
        const want = await ref.encode(TEXTS, all);
        const got = await enc.encode(TEXTS, all);
        got.forEach((r, i) => closeToFp32(r, want[i], `text ${i}`));
        // One output alone is fetched and converted alone.
        const [only] = await enc.encode([TEXTS[0]], { dense: false, colbert: true });
        assert.equal(only.dense, undefined);
        assert.equal(only.colbert!.count, want[0].colbert!.count);
      } finally {
        await Promise.all([ref.close(), enc.close()]);
      }
    });
  }
});

describe('any other output type or shape is refused at load, naming the graph and the output', () => {
  const cases: Array<[string, () => string, RegExp, RegExp]> = [
    ['backbone last_hidden_state int32', () => variant('backbone', cast(['last_hidden_state'], T.INT32)), /onnx[/\\]model\.onnx$/, /'last_hidden_state' has element type int32/],
    ['backbone last_hidden_state float64', () => variant('backbone', cast(['last_hidden_state'], T.DOUBLE)), /onnx[/\\]model\.onnx$/, /'last_hidden_state' has element type float64/],
    ['backbone last_hidden_state of rank 2 (flattened)', () => variant('backbone', before(['last_hidden_state'], 'Flatten', { axis: 2 })), /model\.onnx$/, /'last_hidden_state' has rank 2/],
    ['backbone hidden size 32 while config.json says 48', () => variant('backbone', undefined, { 'config.json': JSON.stringify({ ...JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8')), hidden_size: 48 }) }), /model\.onnx$/, /'last_hidden_state' has shape \[.*32\]; expected token states \[batch, length, 48\]/],
    ['three-output dense int32', () => variant('three-output', cast(['dense_embeddings'], T.INT32)), /bge_m3_model\.onnx$/, /'dense_embeddings' has element type int32/],
    ['three-output ColBERT float64', () => variant('three-output', cast(['colbert_vectors'], T.DOUBLE)), /bge_m3_model\.onnx$/, /'colbert_vectors' has element type float64/],
    ['three-output ColBERT vectors of rank 2 (flattened)', () => variant('three-output', before(['colbert_vectors'], 'Flatten', { axis: 2 })), /bge_m3_model\.onnx$/, /'colbert_vectors' has rank 2/],
  ];
  for (const [name, make, file, pattern] of cases) {
    for (const workers of [0, 1]) {
      test(`${workers ? 'worker' : 'in-thread'}: ${name}`, async () => {
        await assert.rejects(M3Encoder.load(make(), { workers }), refused(file, pattern));
      });
    }
  }
});

describe('config.json values are validated', () => {
  const base = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8'));
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['vocab_size 2^30', { vocab_size: 2 ** 30 }, /vocab_size must be an integer from 1 to 4194304, got 1073741824/],
    ['vocab_size that disagrees with the embedding table', { vocab_size: 5000 }, /vocab_size is 5000 but the word-embedding table of .*model\.onnx has 3002 rows/],
    ['max_position_embeddings -1', { max_position_embeddings: -1 }, /max_position_embeddings must be an integer from 4 to 1048578 \(the longest input is this minus 2\), got -1/],
    ['max_position_embeddings 1e12', { max_position_embeddings: 1e12 }, /max_position_embeddings must be an integer from 4/],
    ['hidden_size as a string', { hidden_size: '32' }, /hidden_size must be an integer from 1 to 65536, got "32"/],
    ['num_attention_heads 0', { num_attention_heads: 0 }, /num_attention_heads must be an integer from 1 to 1024, got 0/],
    ['num_attention_heads that does not divide hidden_size', { num_attention_heads: 5 }, /hidden_size 32 is not a multiple of num_attention_heads 5/],
    ['a JSON array', [] as unknown as Record<string, unknown>, /must hold a JSON object/],
  ];
  for (const [name, patch, pattern] of cases) {
    test(`${name}: MODEL_FILE_INVALID naming config.json`, async () => {
      const cfg = Array.isArray(patch) ? '[]' : JSON.stringify({ ...base, ...patch });
      const dir = variant('backbone', undefined, { 'config.json': cfg });
      await assert.rejects(M3Encoder.load(dir, { workers: 0 }), refused(/config\.json$/, pattern));
    });
  }
  test('a valid config.json still loads and gives the fixture dimensions', async () => {
    const enc = await M3Encoder.load(variant('backbone'), { workers: 0 });
    assert.deepEqual([enc.dim, enc.vocabSize, enc.maxPositions], [32, 3002, 8192]);
    await enc.close();
  });
});

describe('a tokenizer larger than the model’s vocabulary is refused at load, naming tokenizer.json', () => {
  const tok = JSON.parse(readFileSync(join(FIXTURE, 'tokenizer.json'), 'utf8'));
  // Ten extra pieces: ids 3002–3011, beyond the 3002-row embedding table.
  tok.model.vocab.push(...Array.from({ length: 10 }, (_, i) => [`▁extra${i}`, -1]));
  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: tokenizer.json with 3012 tokens, embedding table of 3002 rows`, async () => {
      const dir = variant('backbone', undefined, { 'tokenizer.json': JSON.stringify(tok) });
      await assert.rejects(M3Encoder.load(dir, { workers }), refused(/tokenizer\.json$/, /has 3012 tokens but the word-embedding table of .*model\.onnx has only 3002/));
    });
    test(`${workers ? 'worker' : 'in-thread'}: the same with a three-output graph`, async () => {
      const dir = variant('three-output', undefined, { 'tokenizer.json': JSON.stringify(tok) });
      await assert.rejects(M3Encoder.load(dir, { workers }), refused(/tokenizer\.json$/, /has 3012 tokens/));
    });
  }
});

describe('a token id beyond the embedding table when the graph does not tell the table size', () => {
  const tok = JSON.parse(readFileSync(join(FIXTURE, 'tokenizer.json'), 'utf8'));
  tok.model.vocab.push(...Array.from({ length: 10 }, (_, i) => [`▁extra${i}`, -1]));
  const cfg = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8'));
  delete cfg.vocab_size;
  // The table reaches its Gather through Mul(·, 1): exact, but not a structure the load check follows.
  const hide: Edit = (graph) => {
    const gather = (graph.node ?? []).find((x) => x.opType === 'Gather' && x.input?.[1] === 'input_ids');
    assert.ok(gather);
    const table = gather.input![0];
    graph.initializer!.push(onnx.TensorProto.create({ name: 'one', dataType: T.FLOAT, dims: [], floatData: [1] }));
    graph.node!.unshift(onnx.NodeProto.create({ name: 'hide_table', opType: 'Mul', input: [table, 'one'], output: ['hidden_table'] }));
    gather.input![0] = 'hidden_table';
  };
  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: encoding a text with such a token is MODEL_FILE_INVALID naming tokenizer.json; other texts still encode`, async () => {
      const dir = variant('backbone', hide, { 'tokenizer.json': JSON.stringify(tok), 'config.json': JSON.stringify(cfg) });
      const enc = await M3Encoder.load(dir, { workers, cache: false });
      try {
        const [ok] = await enc.encode(['a plain text'], all);
        assert.equal(ok.dense!.length, 32);
        await assert.rejects(enc.encode(['the word extra3 is not in the model'], all), refused(/tokenizer\.json$/, /token id 300\d, but the model .* has only 3002 token embeddings/));
        const [still] = await enc.encode(['a plain text'], all);
        assert.deepEqual(Array.from(still.dense!), Array.from(ok.dense!));
      } finally {
        await enc.close();
      }
    });
  }
});

describe('id inputs in the element type the graph declares', () => {
  /** Makes `names` graph inputs of element type `type`, cast back to int64 inside the graph. */
  const inputsAs = (names: string[], type: number): Edit => (graph) => {
    for (const name of names) {
      const inner = `${name}__int64`;
      for (const x of graph.node ?? []) x.input = (x.input ?? []).map((i) => (i === name ? inner : i));
      graph.node!.unshift(
        onnx.NodeProto.create({ name: `Cast_${name}`, opType: 'Cast', input: [name], output: [inner], attribute: [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: T.INT64 })] }),
      );
      graph.input!.find((v) => v.name === name)!.type!.tensorType!.elemType = type;
    }
  };
  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: int32 input_ids and attention_mask are fed as int32, with the very same outputs`, async () => {
      const ref = await M3Encoder.load(FIXTURE, { workers: 0, cache: false });
      const enc = await M3Encoder.load(variant('backbone', inputsAs(['input_ids', 'attention_mask'], T.INT32)), { workers, cache: false });
      try {
        const want = await ref.encode(TEXTS, all);
        const got = await enc.encode(TEXTS, all);
        got.forEach((r, i) => {
          assert.deepEqual(Array.from(r.dense!), Array.from(want[i].dense!), `text ${i}`);
          assert.deepEqual(Array.from(r.colbert!.data), Array.from(want[i].colbert!.data), `text ${i}`);
        });
        assert.equal(enc.vocabSize, 3002, 'the embedding table is still found through the Cast');
      } finally {
        await Promise.all([ref.close(), enc.close()]);
      }
    });
    test(`${workers ? 'worker' : 'in-thread'}: a float input_ids is refused at load naming the graph and the input`, async () => {
      await assert.rejects(M3Encoder.load(variant('backbone', inputsAs(['input_ids'], T.FLOAT)), { workers }), refused(/model\.onnx$/, /input 'input_ids' has element type float32; expected int64 \(or int32\)/));
    });
  }
});
