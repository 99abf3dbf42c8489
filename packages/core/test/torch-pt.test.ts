/**
 * Tests for the safe torch.save reader: the fixture heads load with the right shapes and
 * values, every dtype/stride path decodes correctly, and hostile pickles/archives are refused
 * with the right M3Error code before anything could run or be allocated.
 *
 * Reference values are computed independently here (a separate DataView-based fp16 decode of
 * the raw zip entries), never hard-coded and never via Python.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import { M3Error } from '../src/errors.ts';
import { parseTorchStateDict, readTorchStateDict, type TorchTensor } from '../src/model/torch/pt-reader.ts';

const FIXTURES = join(import.meta.dirname, '../../../test/fixtures/tiny-m3-A');
const FILE = 'crafted.pt';

// --- a tiny pickle assembler, so hostile inputs are explicit byte sequences ---------------------

class Pickle {
  private readonly out: number[] = [];
  op(...bytes: number[]): this {
    this.out.push(...bytes);
    return this;
  }
  raw(bytes: Iterable<number>): this {
    for (const b of bytes) this.out.push(b);
    return this;
  }
  proto(n = 2): this { return this.op(0x80, n); }
  mark(): this { return this.op(0x28); }
  tuple(): this { return this.op(0x74); }
  emptyTuple(): this { return this.op(0x29); }
  emptyDict(): this { return this.op(0x7d); }
  emptyList(): this { return this.op(0x5d); }
  reduce(): this { return this.op(0x52); }
  build(): this { return this.op(0x62); }
  persid(): this { return this.op(0x51); }
  setitem(): this { return this.op(0x73); }
  setitems(): this { return this.op(0x75); }
  tuple1(): this { return this.op(0x85); }
  bool(v: boolean): this { return this.op(v ? 0x88 : 0x89); }
  none(): this { return this.op(0x4e); }
  stop(): this { return this.op(0x2e); }
  memoize(): this { return this.op(0x94); }
  put(i: number): this { return this.op(0x71, i); }
  get(i: number): this { return this.op(0x68, i); }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n);
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 0xff, n >> 8);
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.op(0x4a).raw(le32(n));
    // LONG1, little-endian two's complement
    const bytes: number[] = [];
    let v = BigInt(n);
    while (v !== 0n && v !== -1n) {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    }
    if (n > 0 && bytes[bytes.length - 1] & 0x80) bytes.push(0);
    return this.op(0x8a, bytes.length).raw(bytes);
  }
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    return this.op(0x58).raw(le32(b.length)).raw(b);
  }
  shortStr(s: string): this {
    const b = new TextEncoder().encode(s);
    return this.op(0x8c, b.length).raw(b);
  }
  global(module: string, name: string): this {
    return this.op(0x63).raw(new TextEncoder().encode(`${module}\n${name}\n`));
  }
  stackGlobal(module: string, name: string): this {
    return this.shortStr(module).memoize().shortStr(name).memoize().op(0x93);
  }
  ints(values: readonly number[]): this {
    this.mark();
    for (const v of values) this.int(v);
    return this.tuple();
  }
  /** `_rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`. */
  tensor(t: TensorSpec): this {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.mark().str('storage').global('torch', t.storageType ?? 'HalfStorage').str(t.key).str('cpu').int(t.numel).tuple().persid();
    this.int(t.offset ?? 0).ints(t.size).ints(t.stride ?? contiguousStride(t.size)).bool(false);
    this.global('collections', 'OrderedDict').emptyTuple().reduce();
    if (t.metadata) this.none();
    return this.tuple().reduce();
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

interface TensorSpec {
  storageType?: string;
  key: string;
  numel: number;
  offset?: number;
  size: number[];
  stride?: number[];
  metadata?: boolean;
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function contiguousStride(size: readonly number[]): number[] {
  const stride = new Array<number>(size.length);
  let s = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    stride[d] = s;
    s *= size[d];
  }
  return stride;
}

/** A protocol-2 plain-dict state dict, laid out like torch.save writes one. */
function stateDictPickle(entries: Record<string, TensorSpec>): Uint8Array {
  const p = new Pickle().proto(2).emptyDict().mark();
  for (const [name, spec] of Object.entries(entries)) p.str(name).tensor(spec);
  return p.setitems().stop().bytes();
}

/** A torch.save-style zip: `<prefix>/data.pkl`, `<prefix>/data/<key>`, `<prefix>/byteorder`. */
function makePt(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array> = {},
  opts: { prefix?: string; byteorder?: string; level?: 0 | 6 } = {},
): Uint8Array {
  const prefix = opts.prefix ?? 'archive';
  const files: Record<string, Uint8Array> = { [`${prefix}/data.pkl`]: pickle };
  files[`${prefix}/byteorder`] = new TextEncoder().encode(opts.byteorder ?? 'little');
  for (const [key, data] of Object.entries(storages)) files[`${prefix}/data/${key}`] = data;
  return zipSync(files, { level: opts.level ?? 0 });
}

function f16Bytes(bits: readonly number[], littleEndian = true): Uint8Array {
  const out = new Uint8Array(bits.length * 2);
  const dv = new DataView(out.buffer);
  bits.forEach((b, i) => dv.setUint16(2 * i, b, littleEndian));
  return out;
}

function typedBytes(values: readonly number[], width: 4 | 8, littleEndian = true): Uint8Array {
  const out = new Uint8Array(values.length * width);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => (width === 4 ? dv.setFloat32(4 * i, v, littleEndian) : dv.setFloat64(8 * i, v, littleEndian)));
  return out;
}

/** Reference fp16 decode, deliberately written differently from the implementation. */
function refHalf(h: number): number {
  const sign = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const f = h & 1023;
  if (e === 31) return f ? NaN : sign * Infinity;
  if (e === 0) return sign * Math.pow(2, -14) * (f / 1024);
  return sign * Math.pow(2, e - 15) * (1 + f / 1024);
}

function decodeHalfEntry(bytes: Uint8Array): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.length / 2 }, (_, i) => refHalf(dv.getUint16(2 * i, true)));
}

function assertSameValues(actual: Float32Array, expected: readonly number[]): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], Math.fround(expected[i]))) {
      assert.fail(`element ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Asserts that `fn` throws an M3Error with `code`, naming `file` and matching every pattern. */
function assertM3(fn: () => unknown, code: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof M3Error, `expected M3Error, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.file, FILE);
    assert.ok(err.message.includes(FILE), `message does not name the file: ${err.message}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

const parse = (bytes: Uint8Array) => parseTorchStateDict(bytes, FILE);
/** A pickle (not a state dict) in an otherwise valid archive. */
const parsePickle = (p: Pickle) => parse(makePt(p.bytes()));

// --- the fixture heads ----------------------------------------------------------------------------

for (const [file, expectedShapes] of [
  ['colbert_linear.pt', { weight: ['hidden', 'hidden'], bias: ['hidden'] }],
  ['sparse_linear.pt', { weight: [1, 'hidden'], bias: [1] }],
] as const) {
  test(`fixture ${file}: shapes and values match the raw storage entries`, async () => {
    const hidden = JSON.parse(readFileSync(join(FIXTURES, 'config.json'), 'utf8')).hidden_size as number;
    const dict = await readTorchStateDict(join(FIXTURES, file));
    assert.deepEqual(Object.keys(dict).sort(), ['bias', 'weight']);

    const entries = unzipSync(readFileSync(join(FIXTURES, file)));
    const storageEntries = Object.entries(entries).filter(([n]) => /^[^/]+\/data\/[^/]+$/.test(n));
    assert.equal(storageEntries.length, 2);
    for (const [name, dims] of Object.entries(expectedShapes)) {
      const t: TorchTensor = dict[name];
      assert.equal(t.dtype, 'float16');
      assert.deepEqual(t.shape, dims.map((d) => (d === 'hidden' ? hidden : d)));
      const numel = t.shape.reduce((a, b) => a * b, 1);
      assert.equal(t.data.length, numel);
      // The storage holding this tensor is the entry of exactly numel fp16 values.
      const matching = storageEntries.filter(([, bytes]) => bytes.length === numel * 2);
      assert.equal(matching.length, 1, `one storage entry of ${numel * 2} bytes`);
      assertSameValues(t.data, decodeHalfEntry(matching[0][1]));
      assert.ok(t.data.some((v) => v !== 0), 'weights are not all zero');
    }
    // parse and read agree
    const again = parseTorchStateDict(readFileSync(join(FIXTURES, file)), file);
    assert.deepEqual(again.weight.data, dict.weight.data);
  });
}

test('readTorchStateDict: a missing file is MODEL_NOT_FOUND naming the path', async () => {
  const path = join(tmpdir(), `no-such-${process.pid}.pt`);
  await assert.rejects(readTorchStateDict(path), (err: unknown) => {
    assert.ok(err instanceof M3Error);
    assert.equal(err.code, 'MODEL_NOT_FOUND');
    assert.ok(err.message.includes(path));
    return true;
  });
});

// --- dtype conversion -------------------------------------------------------------------------------

test('fp16 → fp32 is exact for all 65536 bit patterns (±0, subnormals, max, ±inf, NaN)', () => {
  const bits = Array.from({ length: 65536 }, (_, i) => i);
  const dict = parse(makePt(stateDictPickle({ all: { key: '0', numel: 65536, size: [65536] } }), { 0: f16Bytes(bits) }));
  assertSameValues(dict.all.data, bits.map(refHalf));

  const special: Array<[number, number]> = [
    [0x0000, 0], [0x8000, -0], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14],
    [0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0xfbff, -65504], [0x3555, 0.333251953125],
    [0x7c00, Infinity], [0xfc00, -Infinity], [0x7e00, NaN], [0x7c01, NaN], [0xffff, NaN],
  ];
  for (const [b, v] of special) assert.ok(Object.is(dict.all.data[b], v), `0x${b.toString(16)} → ${dict.all.data[b]}, want ${v}`);
});

test('bfloat16, float32 and float64 storages, little- and big-endian', () => {
  const values = [1, -2.5, 0.1, 3.4e38, -0, 1e-40];
  for (const littleEndian of [true, false]) {
    const bf16 = values.map((v) => new Uint32Array(new Float32Array([v]).buffer)[0] >>> 16);
    const pickle = stateDictPickle({
      b: { storageType: 'BFloat16Storage', key: 'b', numel: 6, size: [2, 3] },
      f: { storageType: 'FloatStorage', key: 'f', numel: 6, size: [6] },
      d: { storageType: 'DoubleStorage', key: 'd', numel: 6, size: [3, 2] },
    });
    const dict = parse(
      makePt(pickle, { b: f16Bytes(bf16, littleEndian), f: typedBytes(values, 4, littleEndian), d: typedBytes(values, 8, littleEndian) }, {
        byteorder: littleEndian ? 'little' : 'big',
      }),
    );
    assert.equal(dict.b.dtype, 'bfloat16');
    assert.equal(dict.f.dtype, 'float32');
    assert.equal(dict.d.dtype, 'float64');
    assert.deepEqual(dict.d.shape, [3, 2]);
    const truncated = bf16.map((b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]);
    assertSameValues(dict.b.data, truncated);
    assertSameValues(dict.f.data, values);
    assertSameValues(dict.d.data, values);
  }
});

// --- views: offsets, strides, shared storages -----------------------------------------------------------

test('storage offsets, transposed and general strided views, shared storages, 0-d and empty tensors', () => {
  const storage = Array.from({ length: 24 }, (_, i) => i); // fp32 0..23
  const pickle = stateDictPickle({
    whole: { storageType: 'FloatStorage', key: '0', numel: 24, size: [2, 3, 4] },
    tail: { storageType: 'FloatStorage', key: '0', numel: 24, offset: 20, size: [4] },
    transposed: { storageType: 'FloatStorage', key: '0', numel: 24, size: [4, 6], stride: [1, 4] },
    strided: { storageType: 'FloatStorage', key: '0', numel: 24, offset: 1, size: [2, 2, 2], stride: [12, 5, 2] },
    scalar: { storageType: 'FloatStorage', key: '0', numel: 24, offset: 7, size: [] },
    empty: { storageType: 'FloatStorage', key: '0', numel: 24, offset: 24, size: [0, 5] },
    withMetadata: { storageType: 'FloatStorage', key: '0', numel: 24, offset: 3, size: [2], metadata: true },
  });
  const dict = parse(makePt(pickle, { 0: typedBytes(storage, 4) }));
  assert.deepEqual(Array.from(dict.whole.data), storage);
  assert.deepEqual(Array.from(dict.tail.data), [20, 21, 22, 23]);
  // transposed[i][j] = storage[i + 4j]
  assert.deepEqual(Array.from(dict.transposed.data), [0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21, 2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23]);
  // strided[a][b][c] = storage[1 + 12a + 5b + 2c]
  assert.deepEqual(Array.from(dict.strided.data), [1, 3, 6, 8, 13, 15, 18, 20]);
  assert.deepEqual(dict.scalar.shape, []);
  assert.deepEqual(Array.from(dict.scalar.data), [7]);
  assert.deepEqual(dict.empty.shape, [0, 5]);
  assert.equal(dict.empty.data.length, 0);
  assert.deepEqual(Array.from(dict.withMetadata.data), [3, 4]);
});

test('a real state_dict() layout: OrderedDict + BUILD(_metadata), parameters, protocol 4 framing', () => {
  // OrderedDict() REDUCE, SETITEMS, then BUILD({'_metadata': OrderedDict({'': {'version': 1}})})
  const p = new Pickle().proto(4).op(0x95).raw([0, 0, 0, 0, 0, 0, 0, 0]); // FRAME 0 (advisory)
  p.stackGlobal('collections', 'OrderedDict').memoize().emptyTuple().reduce().memoize().mark();
  p.shortStr('weight').memoize();
  p.stackGlobal('torch._utils', '_rebuild_parameter').mark();
  p.tensor({ key: '0', numel: 2, size: [2] }).bool(true).get(2).emptyTuple().reduce().tuple().reduce();
  p.shortStr('bias').tensor({ key: '1', numel: 1, size: [1] });
  p.setitems();
  p.emptyDict().shortStr('_metadata').get(2).emptyTuple().reduce().shortStr('').emptyDict().shortStr('version').int(1).setitem().setitem().setitem();
  p.build().stop();
  const dict = parse(makePt(p.bytes(), { 0: f16Bytes([0x3c00, 0xc000]), 1: f16Bytes([0x3800]) }));
  assert.deepEqual(Object.keys(dict), ['weight', 'bias']);
  assert.deepEqual(Array.from(dict.weight.data), [1, -2]);
  assert.deepEqual(Array.from(dict.bias.data), [0.5]);
});

test('a deflate-compressed archive with another folder name also loads', () => {
  const pickle = stateDictPickle({ w: { key: '0', numel: 3, size: [3] } });
  const dict = parse(makePt(pickle, { 0: f16Bytes([0x3c00, 0x4000, 0x4200]) }, { prefix: 'my_model', level: 6 }));
  assert.deepEqual(Array.from(dict.w.data), [1, 2, 3]);
});

test('a __proto__ key is an own property and pollutes nothing', () => {
  const dict = parse(makePt(stateDictPickle({ ['__proto__']: { key: '0', numel: 1, size: [1] } }), { 0: f16Bytes([0x3c00]) }));
  assert.equal(Object.getPrototypeOf(dict), Object.prototype);
  assert.ok(Object.hasOwn(dict, '__proto__'));
  assert.deepEqual(Array.from(dict['__proto__'].data), [1]);
});

// --- hostile pickles: refused before anything runs ---------------------------------------------------------

test('GLOBAL os.system + REDUCE is refused at the GLOBAL and runs nothing', () => {
  const marker = join(tmpdir(), `bgem3-pwned-${process.pid}`);
  const p = new Pickle().proto(2).global('os', 'system').str(`touch ${marker}`).tuple1().reduce().stop();
  assertM3(() => parsePickle(p), 'UNSAFE_PICKLE', /'os\.system'/, /allow-list/, /pickle byte 2\b/);
  assert.equal(existsSync(marker), false);
});

test('builtins.eval, posix.system (STACK_GLOBAL), subprocess.Popen, nt.system are refused', () => {
  const code = "__import__('os').system('id')";
  assertM3(() => parsePickle(new Pickle().proto(2).global('builtins', 'eval').str(code).tuple1().reduce().stop()), 'UNSAFE_PICKLE', /'builtins\.eval'/);
  assertM3(() => parsePickle(new Pickle().proto(2).global('__builtin__', 'eval').str(code).tuple1().reduce().stop()), 'UNSAFE_PICKLE', /'__builtin__\.eval'/);
  assertM3(() => parsePickle(new Pickle().proto(4).stackGlobal('posix', 'system').str('id').tuple1().reduce().stop()), 'UNSAFE_PICKLE', /'posix\.system'/);
  assertM3(() => parsePickle(new Pickle().proto(4).stackGlobal('nt', 'system').str('id').tuple1().reduce().stop()), 'UNSAFE_PICKLE', /'nt\.system'/);
  const popen = new Pickle().proto(4).stackGlobal('subprocess', 'Popen').mark().str('sh').str('-c').str('id').op(0x6c).tuple1().reduce().stop();
  assertM3(() => parsePickle(popen), 'UNSAFE_PICKLE', /'subprocess\.Popen'/);
  // Allowed module, other name; and a look-alike of an allowed name.
  assertM3(() => parsePickle(new Pickle().proto(2).global('torch', 'load').stop()), 'UNSAFE_PICKLE', /'torch\.load'/);
  assertM3(() => parsePickle(new Pickle().proto(2).global('torch._utils', '_rebuild_tensor_v2 ').stop()), 'UNSAFE_PICKLE', /_rebuild_tensor_v2 '/);
});

test('a malicious value hidden inside an otherwise valid state dict is refused', () => {
  const p = new Pickle().proto(2).emptyDict().mark().str('weight').tensor({ key: '0', numel: 1, size: [1] });
  // 'evil': __main__.Evil() with BUILD({'cmd': 'id'}), nested in a tuple
  p.str('evil').global('__main__', 'Evil').emptyTuple().reduce().emptyDict().str('cmd').str('id').setitem().build().tuple1();
  p.setitems().stop();
  assertM3(() => parse(makePt(p.bytes(), { 0: f16Bytes([0]) })), 'UNSAFE_PICKLE', /'__main__\.Evil'/);
});

test('BUILD is refused on anything but an OrderedDict; REDUCE of a storage type and object opcodes are refused', () => {
  assertM3(() => parsePickle(new Pickle().proto(2).emptyDict().emptyDict().build().stop()), 'UNSAFE_PICKLE', /BUILD/, /dict/);
  assertM3(() => parsePickle(new Pickle().proto(2).emptyList().emptyDict().build().stop()), 'UNSAFE_PICKLE', /BUILD/, /list/);
  const onTensor = new Pickle().proto(2).tensor({ key: '0', numel: 1, size: [1] }).emptyDict().build().stop();
  assertM3(() => parse(makePt(onTensor.bytes(), { 0: f16Bytes([0]) })), 'UNSAFE_PICKLE', /BUILD/, /tensor/);
  assertM3(() => parsePickle(new Pickle().proto(2).global('torch', 'HalfStorage').emptyTuple().reduce().stop()), 'UNSAFE_PICKLE', /torch\.HalfStorage/);
  // NEWOBJ / INST / OBJ / EXT1 construct objects: refused even with an allowed class.
  assertM3(() => parsePickle(new Pickle().proto(2).global('collections', 'OrderedDict').emptyTuple().op(0x81).stop()), 'UNSAFE_PICKLE', /NEWOBJ/);
  const inst = new Pickle().proto(2).mark().op(0x69).raw(new TextEncoder().encode('os\nsystem\n')).stop();
  assertM3(() => parsePickle(inst), 'UNSAFE_PICKLE', /INST/);
  assertM3(() => parsePickle(new Pickle().proto(2).op(0x82, 1).stop()), 'UNSAFE_PICKLE', /EXT1/);
  // REDUCE on data that is not an allowed callable
  assertM3(() => parsePickle(new Pickle().proto(2).str('os.system').emptyTuple().reduce().stop()), 'MODEL_FILE_INVALID', /not callable/);
});

test('huge declared lengths are rejected without allocating', () => {
  const u64 = (n: bigint) => Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
  const huge = 1n << 40n;
  assertM3(() => parsePickle(new Pickle().proto(4).op(0x8d).raw(u64(huge)).raw([0x61, 0x62]).stop()), 'MODEL_FILE_INVALID', /BINUNICODE8 declares 1099511627776 bytes/);
  assertM3(() => parsePickle(new Pickle().proto(4).op(0x8e).raw(u64(huge)).stop()), 'MODEL_FILE_INVALID', /BINBYTES8 declares 1099511627776 bytes/);
  assertM3(() => parsePickle(new Pickle().proto(4).op(0x8e).raw(u64((1n << 64n) - 1n)).stop()), 'MODEL_FILE_INVALID', /BINBYTES8 declares 18446744073709551615 bytes/);
  assertM3(() => parsePickle(new Pickle().proto(2).op(0x58).raw(le32(0xffffffff)).stop()), 'MODEL_FILE_INVALID', /BINUNICODE declares 4294967295/);
  assertM3(() => parsePickle(new Pickle().proto(2).op(0x54).raw(le32(-5)).stop()), 'MODEL_FILE_INVALID', /negative length/);
  assertM3(() => parsePickle(new Pickle().proto(4).op(0x95).raw(u64(huge)).stop()), 'MODEL_FILE_INVALID', /FRAME declares/);
  assertM3(() => parsePickle(new Pickle().proto(2).op(0x8b).raw(le32(0x7fffffff)).stop()), 'MODEL_FILE_INVALID', /LONG4 declares/);
});

test('tensors that do not fit their storage are rejected', () => {
  const w = (spec: TensorSpec, storage: Uint8Array) => () => parse(makePt(stateDictPickle({ w: spec }), { 0: storage }));
  // pickle says 1024 elements, the entry holds 32
  assertM3(w({ key: '0', numel: 1024, size: [32] }, f16Bytes(new Array(32).fill(0))), 'MODEL_FILE_INVALID', /storage '0' is declared as 1024 float16 values/, /64 bytes/);
  // a [1e9, 1e9] tensor over 4 elements: exact bigint extent, no allocation
  assertM3(w({ key: '0', numel: 4, size: [1e9, 1e9] }, f16Bytes([0, 0, 0, 0])), 'MODEL_FILE_INVALID', /tensor 'w'/, /reaches element 999999999999999999 of storage '0', which holds only 4/);
  // the same with zero strides (a broadcast view) would amplify a tiny storage
  assertM3(w({ key: '0', numel: 4, size: [1e9, 1e9], stride: [0, 0] }, f16Bytes([0, 0, 0, 0])), 'MODEL_FILE_INVALID', /has 1000000000000000000 elements/);
  // offset past the end
  assertM3(w({ key: '0', numel: 4, offset: 3, size: [2] }, f16Bytes([0, 0, 0, 0])), 'MODEL_FILE_INVALID', /reaches element 4/);
  // size/stride rank mismatch
  assertM3(w({ key: '0', numel: 4, size: [2, 2], stride: [1] }, f16Bytes([0, 0, 0, 0])), 'MODEL_FILE_INVALID', /stride has 1/);
  // a storage entry that is missing from the zip
  assertM3(() => parse(makePt(stateDictPickle({ w: { key: '7', numel: 1, size: [1] } }))), 'MODEL_FILE_INVALID', /no archive\/data\/7/);
  // the same storage declared with two dtypes
  const twoTypes = stateDictPickle({ a: { key: '0', numel: 2, size: [2] }, b: { storageType: 'BFloat16Storage', key: '0', numel: 2, size: [2] } });
  assertM3(() => parse(makePt(twoTypes, { 0: f16Bytes([0, 0]) })), 'MODEL_FILE_INVALID', /two different/);
});

test('malformed pickles: unknown opcode, truncation, underflow, missing memo, deep MARKs, wrong root', () => {
  assertM3(() => parsePickle(new Pickle().proto(2).op(0xff).stop()), 'MODEL_FILE_INVALID', /unknown opcode 0xff/, /at byte 2\b/);
  assertM3(() => parsePickle(new Pickle().proto(2).op(0x49).stop()), 'MODEL_FILE_INVALID', /unsupported opcode INT \(0x49\)/);
  assertM3(() => parsePickle(new Pickle().proto(9).stop()), 'MODEL_FILE_INVALID', /protocol 9/);
  const full = stateDictPickle({ w: { key: '0', numel: 1, size: [1] } });
  for (const cut of [1, 10, 40, full.length - 1]) {
    assertM3(() => parse(makePt(full.subarray(0, cut), { 0: f16Bytes([0]) })), 'MODEL_FILE_INVALID', /truncated|without a STOP|underflow|MARK/);
  }
  assertM3(() => parsePickle(new Pickle().proto(2).reduce().stop()), 'MODEL_FILE_INVALID', /underflow/);
  assertM3(() => parsePickle(new Pickle().proto(2).get(9).stop()), 'MODEL_FILE_INVALID', /memo entry 9/);
  assertM3(() => parsePickle(new Pickle().proto(2).stop()), 'MODEL_FILE_INVALID', /empty stack/);
  const deep = new Pickle().proto(2);
  for (let i = 0; i < 5000; i++) deep.mark();
  assertM3(() => parsePickle(deep.stop()), 'MODEL_FILE_INVALID', /nested deeper than 1000/);
  assertM3(() => parsePickle(new Pickle().proto(2).global('os\u0001', 'x').stop()), 'MODEL_FILE_INVALID', /non-printable/);
  assertM3(() => parsePickle(new Pickle().proto(2).emptyList().stop()), 'MODEL_FILE_INVALID', /holds a list, not a state dict/);
  assertM3(() => parsePickle(new Pickle().proto(2).emptyDict().str('n').int(3).setitem().stop()), 'MODEL_FILE_INVALID', /entry 'n' is not a tensor \(got int\)/);
  // persistent ids other than torch storages
  assertM3(() => parsePickle(new Pickle().proto(2).str('x').persid().stop()), 'MODEL_FILE_INVALID', /persistent id/);
  const badPid = new Pickle().proto(2).mark().str('storage').str('torch.HalfStorage').str('0').str('cpu').int(1).tuple().persid().stop();
  assertM3(() => parsePickle(badPid), 'MODEL_FILE_INVALID', /persistent id/);
});

test('not a torch zip: empty, random bytes, truncated archive, legacy format, zip without data.pkl', () => {
  assertM3(() => parse(new Uint8Array(0)), 'MODEL_FILE_INVALID', /empty/);
  let seed = 12345;
  const random = Uint8Array.from({ length: 4096 }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 24));
  assertM3(() => parse(random), 'MODEL_FILE_INVALID', /not a zip/);
  const zipHeaded = random.slice();
  zipHeaded.set([0x50, 0x4b, 3, 4]);
  assertM3(() => parse(zipHeaded), 'MODEL_FILE_INVALID', /zip/);

  const real = readFileSync(join(FIXTURES, 'colbert_linear.pt'));
  for (const cut of [10, real.length >> 1, real.length - 30]) {
    assertM3(() => parse(real.subarray(0, cut)), 'MODEL_FILE_INVALID');
  }
  // legacy torch.save: the magic-number pickle 0x1950a86a20f9469cfc6c comes first
  const legacy = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
  assertM3(() => parse(legacy), 'MODEL_FILE_INVALID', /legacy/, /torch >= 1\.6/);

  assertM3(() => parse(zipSync({ 'archive/data/0': new Uint8Array(2) })), 'MODEL_FILE_INVALID', /data\.pkl/);
  assertM3(() => parse(zipSync({ 'data.pkl': new Pickle().proto(2).emptyDict().stop().bytes() })), 'MODEL_FILE_INVALID', /data\.pkl/);
  assertM3(() => parse(zipSync({})), 'MODEL_FILE_INVALID', /data\.pkl/);
  const twoArchives = zipSync({ 'a/data.pkl': new Uint8Array([0x2e]), 'b/data.pkl': new Uint8Array([0x2e]) });
  assertM3(() => parse(twoArchives), 'MODEL_FILE_INVALID', /several data\.pkl/);
  const badOrder = makePt(new Pickle().proto(2).emptyDict().stop().bytes(), {}, { byteorder: 'middle' });
  assertM3(() => parse(badOrder), 'MODEL_FILE_INVALID', /byteorder/);
});
