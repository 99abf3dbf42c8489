/**
 * Damaged model files through the public loader: a copy of the fixture with one file damaged at a
 * time must fail M3Encoder.load with an M3Error whose message and `file` name the damaged file,
 * in-thread and through a worker thread (whose load errors cross a message port), never hang, and
 * never run anything a file says (a hostile pickle in a head file).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { describe, test } from 'node:test';
import { M3Encoder, M3Error } from '@bgem3/core';
import { assertOneLineError, copyModel, runCli, storedZip } from './helpers.ts';

interface Damage {
  name: string;
  /** The file (relative to the model directory) the error must name. */
  file: string;
  code: string;
  damage: (dir: string) => void;
}

const truncate = (rel: string, keep: (size: number) => number) => (dir: string) => {
  const p = join(dir, rel);
  truncateSync(p, keep(statSync(p).size));
};

const DAMAGES: Damage[] = [
  { name: 'truncated external weights (onnx/model.onnx_data cut to 1 kB)', file: 'onnx/model.onnx_data', code: 'MODEL_FILE_INVALID', damage: truncate('onnx/model.onnx_data', () => 1000) },
  { name: 'external weights cut in half', file: 'onnx/model.onnx_data', code: 'MODEL_FILE_INVALID', damage: truncate('onnx/model.onnx_data', (s) => Math.floor(s / 2)) },
  {
    name: 'missing external weights (onnx/model.onnx_data deleted)',
    file: 'onnx/model.onnx_data',
    code: 'MODEL_FILE_INVALID',
    damage: (d) => rmSync(join(d, 'onnx/model.onnx_data')),
  },
  { name: 'garbage ONNX graph', file: 'onnx/model.onnx', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'onnx/model.onnx'), Buffer.from('not a protobuf '.repeat(64))) },
  { name: 'truncated ONNX graph', file: 'onnx/model.onnx', code: 'MODEL_FILE_INVALID', damage: truncate('onnx/model.onnx', (s) => Math.floor(s / 3)) },
  { name: 'empty ONNX graph', file: 'onnx/model.onnx', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'onnx/model.onnx'), '') },
  { name: 'truncated tokenizer.json', file: 'tokenizer.json', code: 'MODEL_FILE_INVALID', damage: truncate('tokenizer.json', (s) => Math.floor(s / 2)) },
  { name: 'tokenizer.json that is JSON but not a tokenizer', file: 'tokenizer.json', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'tokenizer.json'), '{"version":"1.0","model":{"type":"Nope"}}') },
  { name: 'missing tokenizer.json', file: 'tokenizer.json', code: 'MODEL_NOT_FOUND', damage: (d) => rmSync(join(d, 'tokenizer.json')) },
  { name: 'corrupt tokenizer_config.json', file: 'tokenizer_config.json', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'tokenizer_config.json'), '{"cls_token": ') },
  { name: 'corrupt config.json', file: 'config.json', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'config.json'), '{"hidden_size": 32,') },
  {
    name: 'corrupt colbert_linear.pt (bytes inside the pickle scrambled)',
    file: 'colbert_linear.pt',
    code: 'MODEL_FILE_INVALID',
    damage: (d) => {
      const p = join(d, 'colbert_linear.pt');
      const b = readFileSync(p);
      for (let i = 80; i < 400; i++) b[i] ^= 0x5a;
      writeFileSync(p, b);
    },
  },
  { name: 'truncated sparse_linear.pt', file: 'sparse_linear.pt', code: 'MODEL_FILE_INVALID', damage: truncate('sparse_linear.pt', (s) => Math.floor(s / 2)) },
  { name: 'random bytes as colbert_linear.pt', file: 'colbert_linear.pt', code: 'MODEL_FILE_INVALID', damage: (d) => writeFileSync(join(d, 'colbert_linear.pt'), Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 37) & 255))) },
  { name: 'missing colbert_linear.pt', file: 'colbert_linear.pt', code: 'MODEL_NOT_FOUND', damage: (d) => rmSync(join(d, 'colbert_linear.pt')) },
  { name: 'missing sparse_linear.pt', file: 'sparse_linear.pt', code: 'MODEL_NOT_FOUND', damage: (d) => rmSync(join(d, 'sparse_linear.pt')) },
];

async function loadError(dir: string, workers: number): Promise<M3Error> {
  const t0 = performance.now();
  try {
    const enc = await M3Encoder.load(dir, { workers, cache: false });
    await enc.close();
  } catch (e) {
    assert.ok(e instanceof M3Error, `an M3Error, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.ok(performance.now() - t0 < 60_000, 'fails promptly');
    return e;
  }
  assert.fail('the damaged model loaded');
}

function assertNamesFile(e: M3Error, d: Damage, dir: string): void {
  assert.equal(e.code, d.code, `${d.name}: ${e.message}`);
  assert.ok(e.message.includes(basename(d.file)), `${d.name}: the message names ${d.file}: ${e.message}`);
  assert.ok(e.file !== undefined && e.file.endsWith(basename(d.file)), `${d.name}: error.file names ${d.file}, got ${e.file}`);
  if (e.file.includes('/')) assert.equal(e.file, join(dir, d.file), `${d.name}: error.file is the damaged path`);
  assert.equal(e.message.split('\n').length, 1, `${d.name}: a one-line message`);
}

describe('damaged model files through M3Encoder.load', () => {
  for (const d of DAMAGES) {
    test(`in-thread (workers: 0): ${d.name} → ${d.code} naming ${d.file}`, async () => {
      const dir = copyModel();
      d.damage(dir);
      assertNamesFile(await loadError(dir, 0), d, dir);
    });
  }

  // The worker pool loads the model inside each worker thread; its errors are re-created from a
  // message, so check that code, message and file survive and that the pool does not respawn
  // forever (a load failure is final).
  for (const d of DAMAGES.filter((x) => ['truncated external weights (onnx/model.onnx_data cut to 1 kB)', 'garbage ONNX graph', 'corrupt colbert_linear.pt (bytes inside the pickle scrambled)', 'missing sparse_linear.pt'].includes(x.name))) {
    test(`worker thread (workers: 1): ${d.name} → ${d.code} naming ${d.file}`, async () => {
      const dir = copyModel();
      d.damage(dir);
      assertNamesFile(await loadError(dir, 1), d, dir);
    });
  }

  test('the intact copy loads (the damage, not the copy, is what fails)', async () => {
    const enc = await M3Encoder.load(copyModel(), { workers: 0, cache: false });
    const [r] = await enc.encode(['ok'], { dense: true, sparse: true, colbert: true });
    assert.equal(r.dense!.length, 32);
    await enc.close();
  });

  test('a head file holding a hostile pickle (os.system) is UNSAFE_PICKLE and runs nothing', async () => {
    const marker = join(tmpdir(), `bgem3-rel-pwned-${process.pid}-${Date.now()}`);
    const cmd = Buffer.from(`touch ${marker}`, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(cmd.length);
    // PROTO 2, GLOBAL 'os system', BINUNICODE cmd, TUPLE1, REDUCE, STOP: pickle.loads would run `touch`.
    const pickle = Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from('cos\nsystem\n', 'latin1'), Buffer.from([0x58]), len, cmd, Buffer.from([0x85, 0x52, 0x2e])]);
    for (const head of ['sparse_linear.pt', 'colbert_linear.pt']) {
      const dir = copyModel();
      writeFileSync(join(dir, head), storedZip({ 'archive/data.pkl': pickle, 'archive/byteorder': Buffer.from('little'), 'archive/version': Buffer.from('3\n') }));
      for (const workers of [0, 1]) {
        const e = await loadError(dir, workers);
        assert.equal(e.code, 'UNSAFE_PICKLE', e.message);
        assert.match(e.message, /os\.system/);
        assert.ok(e.message.includes(head) && e.file?.endsWith(head), `names ${head}: ${e.message} (${e.file})`);
      }
    }
    assert.equal(existsSync(marker), false, 'the pickle did not run');
  });

  test('CLI: a damaged model is one line on stderr naming the file, exit 1', async () => {
    const dir = copyModel();
    truncateSync(join(dir, 'onnx/model.onnx_data'), 1000);
    assertOneLineError(await runCli(['encode', '--model', dir], '{"text":"x"}\n'), /model\.onnx_data/, 'encode with truncated weights');
    const dir2 = copyModel();
    writeFileSync(join(dir2, 'tokenizer.json'), '{');
    assertOneLineError(await runCli(['encode', '--model', dir2], '{"text":"x"}\n'), /tokenizer\.json/, 'encode with a truncated tokenizer');
  });
});
