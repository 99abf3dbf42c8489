/**
 * Damaged and hostile `.pt` head files (issue 17):
 * - every zip entry that is read is checked against its CRC-32 (a bit flip used to load silently);
 * - entries the state dict does not reference are never inflated, and those it does are bounded
 *   by their declared size and by what the tensors need (a 2 MB file used to push RSS to 2.1 GB);
 * - a fuzz test: random mutations of the fixture's head files under a fixed seed either load the
 *   very same tensors or fail with an M3Error: never another exception, a hang or a huge allocation.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { crc32, deflateRawSync } from 'node:zlib';
import { M3Encoder } from '@bgem3/core';
import { M3Error } from '../src/errors.ts';
import { parseTorchStateDict, type TorchTensor } from '../src/model/torch/pt-reader.ts';
import { listZipEntries, readZipEntry } from '../src/model/torch/zip-archive.ts';
import { FIXTURE } from './helpers/fixture.ts';

const HEADS = ['colbert_linear.pt', 'sparse_linear.pt'] as const;
const original = Object.fromEntries(HEADS.map((f) => [f, readFileSync(join(FIXTURE, f))])) as Record<(typeof HEADS)[number], Buffer>;
const root = mkdtempSync(join(tmpdir(), 'bgem3-pt-'));
after(() => rmSync(root, { recursive: true, force: true }));

function sameTensors(a: Record<string, TorchTensor>, b: Record<string, TorchTensor>): boolean {
  const ka = Object.keys(a);
  if (ka.join() !== Object.keys(b).join()) return false;
  return ka.every((k) => a[k].dtype === b[k].dtype && a[k].shape.join() === b[k].shape.join() && a[k].data.every((v, i) => Object.is(v, b[k].data[i])));
}

/** A zip written by hand (so entries can lie): [name, stored or deflated bytes, declared size?]. */
function writeZip(files: Array<{ name: string; data: Uint8Array; deflate?: boolean; size?: number; crc?: number }>): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const body = f.deflate ? deflateRawSync(f.data) : f.data;
    const name = Buffer.from(f.name);
    const size = f.size ?? f.data.length;
    const crc = f.crc ?? crc32(f.data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(f.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(f.deflate ? 8 : 0, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(body.length, 20);
    cd.writeUInt32LE(size, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    parts.push(local, name, body);
    central.push(cd, name);
    offset += 30 + name.length + body.length;
  }
  const cdBytes = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(files.length, 8);
  eocd.writeUInt16LE(files.length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, cdBytes, eocd]);
}

/** The fixture head's entries, as (name, bytes). */
function fixtureEntries(file: (typeof HEADS)[number]): Array<{ name: string; data: Uint8Array }> {
  const bytes = original[file];
  return [...listZipEntries(bytes, file).values()].map((e) => ({ name: e.name, data: readZipEntry(bytes, e, file) }));
}

const invalidNaming = (file: string, pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof M3Error, `expected an M3Error, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
  assert.equal(e.code, 'MODEL_FILE_INVALID', e.message);
  assert.equal(e.file, file);
  assert.match(e.message, pattern);
  return true;
};

describe('.pt zip entries are CRC-checked and read only when referenced', () => {
  test('a bit flip in any byte of a referenced entry (tensor data, pickle, byteorder) is refused naming the file', () => {
    for (const file of HEADS) {
      const bytes = original[file];
      const entries = listZipEntries(bytes, file);
      for (const suffix of ['/data/0', '/data/1', '/data.pkl', '/byteorder']) {
        const e = [...entries.values()].find((x) => x.name.endsWith(suffix));
        assert.ok(e && e.method === 0, `${file} stores ${suffix}`);
        const start = e.localOffset + 30 + bytes.readUInt16LE(e.localOffset + 26) + bytes.readUInt16LE(e.localOffset + 28);
        for (const at of [0, e.size >> 1, e.size - 1]) {
          const damaged = Buffer.from(bytes);
          damaged[start + at] ^= 0x10;
          assert.throws(() => parseTorchStateDict(damaged, file), invalidNaming(file, /CRC-32|byteorder|pickle|opcode|truncated/), `${suffix} byte ${at}`);
          if (suffix.startsWith('/data/')) assert.throws(() => parseTorchStateDict(damaged, file), /fails its CRC-32 check/);
        }
      }
    }
  });

  test('a deflated entry whose data or CRC was changed is refused', () => {
    const entries = fixtureEntries('colbert_linear.pt').map((e) => ({ ...e, deflate: e.name.includes('/data/') }));
    const ok = writeZip(entries);
    assert.ok(sameTensors(parseTorchStateDict(ok, 'x.pt'), parseTorchStateDict(original['colbert_linear.pt'], 'x.pt')), 'a deflated copy loads the same tensors');
    const badCrc = writeZip(entries.map((e) => (e.name.endsWith('/data/0') ? { ...e, crc: 12345 } : e)));
    assert.throws(() => parseTorchStateDict(badCrc, 'x.pt'), invalidNaming('x.pt', /data\/0 fails its CRC-32 check/));
    const lies = writeZip(entries.map((e) => (e.name.endsWith('/data/0') ? { ...e, size: e.data.length + 4 } : e)));
    assert.throws(() => parseTorchStateDict(lies, 'x.pt'), invalidNaming('x.pt', /declared as .* but its zip entry has/));
  });

  test('unreferenced entries are never inflated: 64 entries declaring 64 MB each cost nothing', () => {
    const bomb = deflateRawSync(Buffer.alloc(64 * 2 ** 20)); // ~64 KB that inflate to 64 MB
    const extra = Array.from({ length: 64 }, (_, i) => ({ name: `colbert_linear/data/9${i}`, data: bomb, size: 64 * 2 ** 20, crc: 0 }));
    // Written as "stored" bytes with a deflate header by hand: patch method to 8 below.
    const entries = [...fixtureEntries('colbert_linear.pt'), ...extra.map((e) => ({ ...e }))];
    const zip = Buffer.from(writeZip(entries));
    // Mark the bomb entries as deflated (method 8) in both headers.
    for (const e of listZipEntries(zip, 'b.pt').values()) {
      if (!/data\/9\d+$/.test(e.name)) continue;
      zip.writeUInt16LE(8, e.localOffset + 8);
    }
    const cdStart = zip.readUInt32LE(zip.length - 6);
    for (let p = cdStart; p < zip.length - 22; ) {
      const nameLen = zip.readUInt16LE(p + 28);
      if (/data\/9\d+$/.test(zip.subarray(p + 46, p + 46 + nameLen).toString())) zip.writeUInt16LE(8, p + 10);
      p += 46 + nameLen;
    }
    assert.ok(zip.length < 6 * 2 ** 20, `${zip.length} bytes of file`);
    const before = process.memoryUsage().arrayBuffers;
    const got = parseTorchStateDict(zip, 'b.pt');
    const growth = process.memoryUsage().arrayBuffers - before;
    assert.ok(sameTensors(got, parseTorchStateDict(original['colbert_linear.pt'], 'b.pt')));
    assert.ok(growth < 16 * 2 ** 20, `array buffers grew by ${(growth / 2 ** 20).toFixed(1)} MB`);
  });

  test('a referenced storage larger than the caller allows is refused before it is inflated', () => {
    assert.throws(() => parseTorchStateDict(original['colbert_linear.pt'], 'c.pt', { maxBytes: 1000 }), invalidNaming('c.pt', /storage '0' holds 2048 bytes, more than the file may hold/));
    assert.ok(parseTorchStateDict(original['colbert_linear.pt'], 'c.pt', { maxBytes: 2048 + 64 }).weight);
  });

  for (const workers of [0, 1]) {
    test(`${workers ? 'worker' : 'in-thread'}: M3Encoder.load of a model whose colbert_linear.pt has one flipped bit is MODEL_FILE_INVALID naming it`, async () => {
      const dir = join(root, `flip${workers}`);
      cpSync(FIXTURE, dir, { recursive: true, filter: (s) => !/golden|m3-onnx|onnx-st/.test(s) });
      const bytes = Buffer.from(original['colbert_linear.pt']);
      const e = [...listZipEntries(bytes, 'x').values()].find((x) => x.name.endsWith('/data/0'))!;
      bytes[e.localOffset + 30 + bytes.readUInt16LE(e.localOffset + 26) + bytes.readUInt16LE(e.localOffset + 28) + 100] ^= 1;
      writeFileSync(join(dir, 'colbert_linear.pt'), bytes);
      await assert.rejects(M3Encoder.load(dir, { workers }), (err: any) => {
        assert.equal(err.code, 'MODEL_FILE_INVALID', err.message);
        assert.equal(err.file, join(dir, 'colbert_linear.pt'));
        assert.match(err.message, /CRC-32/);
        return true;
      });
    });
  }
});

/** mulberry32: a small seeded PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One random damage: bit flips, random bytes, 0x00/0xFF runs, 32-bit fields set to extremes, cuts, splices. */
function mutate(src: Uint8Array, r: () => number): Uint8Array {
  const int = (n: number) => Math.floor(r() * n);
  let b = Buffer.from(src);
  const rounds = 1 + int(3);
  for (let k = 0; k < rounds; k++) {
    const at = int(b.length);
    switch (int(8)) {
      case 0:
        b[at] ^= 1 << int(8);
        break;
      case 1:
        b[at] = int(256);
        break;
      case 2:
        b.fill(r() < 0.5 ? 0 : 0xff, at, Math.min(b.length, at + 1 + int(16)));
        break;
      case 3:
        if (at + 4 <= b.length) b.writeUInt32LE([0xffffffff, 0x7fffffff, 0, 1, b.length, int(2 ** 32)][int(6)] >>> 0, at);
        break;
      case 4:
        if (at + 2 <= b.length) b.writeUInt16LE([0xffff, 0, 8, 1][int(4)], at);
        break;
      case 5:
        b = b.subarray(0, at); // truncation
        break;
      case 6: {
        const from = int(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + int(64)), b.subarray(at)]); // splice in a copy
        break;
      }
      default:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(32)))]); // deletion
    }
  }
  return b;
}

test('fuzz: 3 s of seeded random mutations of both fixture head files: identical tensors or an M3Error, never another exception, a hang or a huge allocation', (t) => {
  const r = rng(20260317);
  const reference = Object.fromEntries(HEADS.map((f) => [f, parseTorchStateDict(original[f], f)]));
  const outcomes = { identical: 0, refused: 0 };
  const codes = new Map<string, number>();
  let slowest = 0;
  let maxGrowth = 0;
  const base = process.memoryUsage().arrayBuffers;
  const deadline = performance.now() + 3000;
  let n = 0;
  while (performance.now() < deadline || n < 200) {
    const file = HEADS[n % 2];
    const bytes = mutate(original[file], r);
    const t0 = performance.now();
    try {
      const got = parseTorchStateDict(bytes, file);
      assert.ok(sameTensors(got, reference[file]), `mutation ${n} of ${file} loaded different tensors`);
      outcomes.identical++;
    } catch (e) {
      if (!(e instanceof M3Error)) assert.fail(`mutation ${n} of ${file} threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
      assert.equal(e.file, file, `mutation ${n}: the error names the file`);
      outcomes.refused++;
      codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
    }
    slowest = Math.max(slowest, performance.now() - t0);
    if (n % 50 === 0) maxGrowth = Math.max(maxGrowth, process.memoryUsage().arrayBuffers - base);
    n++;
  }
  t.diagnostic(`${n} mutations: ${outcomes.identical} identical, ${outcomes.refused} refused (${[...codes].map(([c, k]) => `${c} ${k}`).join(', ')}); slowest ${slowest.toFixed(1)} ms; array buffers +${(maxGrowth / 2 ** 20).toFixed(1)} MB`);
  assert.ok(n >= 200, `${n} mutations`);
  assert.ok(outcomes.refused > n / 4 && outcomes.identical > 0, JSON.stringify(outcomes));
  assert.ok(slowest < 1000, `the slowest mutation took ${slowest.toFixed(0)} ms`);
  assert.ok(maxGrowth < 64 * 2 ** 20, `array buffers grew by ${(maxGrowth / 2 ** 20).toFixed(1)} MB`);
  for (const code of codes.keys()) assert.ok(['MODEL_FILE_INVALID', 'UNSAFE_PICKLE'].includes(code), code);
});
