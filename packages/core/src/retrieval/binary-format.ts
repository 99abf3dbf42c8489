/**
 * The binary container shared by the retrieval engine's index files (sparse, dense, ColBERT).
 *
 * Layout (little-endian):
 *
 * | offset     | size | field                                                            |
 * |------------|------|------------------------------------------------------------------|
 * | 0          | 8    | magic (ASCII, one per file kind, e.g. `BGM3SPRS`)                |
 * | 8          | 4    | u32 format version                                               |
 * | 12         | 4    | u32 section count S (1..32)                                      |
 * | 16         | 4    | u32 meta length in bytes (≤ 1 MiB)                               |
 * | 20         | 4    | u32 CRC-32 of every byte from offset 24 to the end of the file   |
 * | 24         | 8·S  | u64 byte length of each section                                  |
 * | 24 + 8·S   | …    | meta: UTF-8 JSON object (model id, vocab size, counts), 0-padded to 8 |
 * | …          | …    | sections in order, each 0-padded to a multiple of 8              |
 *
 * Why this shape: every size a reader must trust is in the header and the section table, and
 * their sum must equal the real file size before anything is allocated, so a crafted or damaged
 * header can never make the reader allocate more than the file actually holds. The kind-specific
 * readers then check the meta counts against the section lengths (again before allocating), and
 * the CRC catches bit rot and torn copies. Sections are 8-byte aligned so a future reader can map
 * them as typed-array views without copying.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import * as zlib from 'node:zlib';
import { M3Error } from '../errors.js';

const HEADER_FIXED = 24;
const MAX_SECTIONS = 32;
const MAX_META = 1 << 20;
/** Largest section length accepted (2^48 bytes): keeps every offset an exact JS number. */
const MAX_SECTION = 2 ** 48;
const READ_CHUNK = 1 << 26;

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE, the zlib one). node:zlib gained `crc32` in Node 20.15 / 22.2; older 20.x lines use
// the table-driven fallback below, which gives identical values.

let crcTable: Int32Array | undefined;
function crc32Fallback(data: Uint8Array, value = 0): number {
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let c = ~value;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const nativeCrc = (zlib as unknown as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;

/** CRC-32 of `data`, continuing from `value` (the CRC of the bytes before it). */
export function crc32(data: Uint8Array, value = 0): number {
  // node:zlib returns 0 (not `value`) for an empty view over a zero-length ArrayBuffer.
  if (data.byteLength === 0) return value >>> 0;
  return nativeCrc ? nativeCrc(data, value) : crc32Fallback(data, value);
}

/** The table-driven CRC-32 (exported for tests that compare it with node:zlib). */
export const crc32Portable = crc32Fallback;

// ---------------------------------------------------------------------------------------------
// Helpers shared by the writers and readers.

/** Raw bytes of a typed array (a view, no copy). */
export function bytesView(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Rounds up to a multiple of 8. */
export function pad8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

const ZERO8 = new Uint8Array(8);

/** Throws INDEX_INVALID naming the file. */
export function corrupt(file: string, what: string): never {
  throw new M3Error('INDEX_INVALID', `${file}: ${what}`, { file });
}

function assertLittleEndian(file: string): void {
  // Sections are raw little-endian typed arrays; big-endian hosts would need byte swapping.
  if (endianness() !== 'LE') corrupt(file, 'index files can only be read on little-endian hosts');
}

/** One section to write: its exact length and a (re-iterable) producer of its bytes. */
export interface SectionWriter {
  byteLength: number;
  chunks(): Iterable<Uint8Array>;
}

/** A section made of fixed chunks. */
export function sectionOf(...chunks: Uint8Array[]): SectionWriter {
  let n = 0;
  for (const c of chunks) n += c.byteLength;
  return { byteLength: n, chunks: () => chunks };
}

/**
 * Serialises a container. Returns the chunks to write in order (lazy: section producers are
 * iterated twice, once for the CRC and once to write, so they must be re-iterable and the data
 * must not change in between).
 */
export function encodeContainer(
  magic: string,
  version: number,
  meta: Record<string, unknown>,
  sections: SectionWriter[],
): { byteLength: number; chunks: () => Iterable<Uint8Array> } {
  if (magic.length !== 8) throw new Error(`magic must be 8 ASCII characters: ${magic}`);
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta));
  if (metaBytes.byteLength > MAX_META) throw new Error('index meta too large');
  const head = new Uint8Array(HEADER_FIXED + 8 * sections.length);
  const dv = new DataView(head.buffer);
  for (let i = 0; i < 8; i++) head[i] = magic.charCodeAt(i);
  dv.setUint32(8, version, true);
  dv.setUint32(12, sections.length, true);
  dv.setUint32(16, metaBytes.byteLength, true);
  sections.forEach((s, i) => dv.setBigUint64(HEADER_FIXED + 8 * i, BigInt(s.byteLength), true));

  function* body(): Generator<Uint8Array> {
    yield head.subarray(HEADER_FIXED);
    yield metaBytes;
    if (pad8(metaBytes.byteLength) > metaBytes.byteLength) yield ZERO8.subarray(0, pad8(metaBytes.byteLength) - metaBytes.byteLength);
    for (const s of sections) {
      let n = 0;
      for (const c of s.chunks()) {
        n += c.byteLength;
        if (c.byteLength > 0) yield c;
      }
      if (n !== s.byteLength) throw new Error(`section produced ${n} bytes, declared ${s.byteLength}`);
      if (pad8(n) > n) yield ZERO8.subarray(0, pad8(n) - n);
    }
  }
  let crc = 0;
  let total = HEADER_FIXED;
  for (const c of body()) {
    crc = crc32(c, crc);
    total += c.byteLength;
  }
  dv.setUint32(20, crc, true);
  return {
    byteLength: total,
    chunks: function* () {
      yield head.subarray(0, HEADER_FIXED);
      yield* body();
    },
  };
}

/** Concatenates chunks into one buffer (for `toBytes()` APIs). */
export function concatChunks(total: number, chunks: Iterable<Uint8Array>): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading.

/** Random-access bytes: an in-memory buffer or an open file. */
export interface ByteSource {
  /** Name used in error messages (the file path, or a description). */
  readonly name: string;
  readonly size: number;
  /** Fills `dst` with the bytes at `position`; throws if fewer are available. */
  read(dst: Uint8Array, position: number): void;
  close(): void;
}

/** A {@link ByteSource} over bytes already in memory. */
export function bufferSource(bytes: Uint8Array, name = '<bytes>'): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    read(dst, position) {
      if (position + dst.byteLength > bytes.byteLength) corrupt(name, 'truncated');
      dst.set(bytes.subarray(position, position + dst.byteLength));
    },
    close() {},
  };
}

/**
 * A {@link ByteSource} over a file, read synchronously in bounded chunks. Synchronous on purpose:
 * it keeps the parser one straight-line function, and a load is dominated by the copy anyway.
 */
export function fileSource(path: string): ByteSource {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new M3Error('INDEX_INVALID', `${path}: cannot open index file (${code ?? String(err)})`, { file: path, cause: err });
  }
  const size = fstatSync(fd).size;
  return {
    name: path,
    size,
    read(dst, position) {
      let off = 0;
      while (off < dst.byteLength) {
        let n: number;
        try {
          n = readSync(fd, dst, off, Math.min(READ_CHUNK, dst.byteLength - off), position + off);
        } catch (err) {
          throw new M3Error('INDEX_INVALID', `${path}: cannot read index file (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file: path, cause: err });
        }
        if (n <= 0) corrupt(path, 'truncated (file shrank while being read)');
        off += n;
      }
    },
    close() {
      closeSync(fd);
    },
  };
}

/** An opened container whose sizes have been validated against the real size of the source. */
export interface ContainerReader {
  readonly version: number;
  readonly meta: Record<string, unknown>;
  readonly sectionLengths: readonly number[];
  /**
   * Reads section `i` into `dst` (whose byte length must equal the section length). Sections
   * must be read in order, each exactly once; {@link finish} then verifies the CRC.
   */
  readSection(i: number, dst: Uint8Array): void;
  /** Checks the CRC after every section was read. */
  finish(): void;
}

/**
 * Opens a container: checks magic, version, section table and meta, and that the sizes add up to
 * exactly the size of the source, all before any section-sized allocation.
 */
export function openContainer(src: ByteSource, magic: string, versions: readonly number[], kind: string): ContainerReader {
  assertLittleEndian(src.name);
  const file = src.name;
  if (src.size < HEADER_FIXED) corrupt(file, `truncated: ${src.size} bytes is shorter than the ${kind} header`);
  const head = new Uint8Array(HEADER_FIXED);
  src.read(head, 0);
  const dv = new DataView(head.buffer);
  const gotMagic = String.fromCharCode(...head.subarray(0, 8));
  if (gotMagic !== magic) corrupt(file, `not a ${kind} file (magic ${JSON.stringify(gotMagic)}, expected ${JSON.stringify(magic)})`);
  const version = dv.getUint32(8, true);
  if (!versions.includes(version)) corrupt(file, `unsupported ${kind} format version ${version} (this build reads ${versions.join(', ')})`);
  const nSections = dv.getUint32(12, true);
  if (nSections < 1 || nSections > MAX_SECTIONS) corrupt(file, `invalid section count ${nSections}`);
  const metaLen = dv.getUint32(16, true);
  if (metaLen > MAX_META) corrupt(file, `invalid meta length ${metaLen}`);
  const expectedCrc = dv.getUint32(20, true);
  const tableLen = 8 * nSections;
  if (src.size < HEADER_FIXED + tableLen) corrupt(file, 'truncated inside the section table');
  const table = new Uint8Array(tableLen);
  src.read(table, HEADER_FIXED);
  const tdv = new DataView(table.buffer);
  const lengths: number[] = [];
  let total = HEADER_FIXED + tableLen + pad8(metaLen);
  for (let i = 0; i < nSections; i++) {
    const big = tdv.getBigUint64(8 * i, true);
    if (big > BigInt(MAX_SECTION)) corrupt(file, `section ${i} length ${big} is implausible`);
    const len = Number(big);
    lengths.push(len);
    total += pad8(len);
  }
  if (total > src.size) corrupt(file, `truncated: header promises ${total} bytes, file has ${src.size}`);
  if (total < src.size) corrupt(file, `${src.size - total} unexpected trailing bytes (header promises ${total})`);
  let crc = crc32(table);
  const metaBytes = new Uint8Array(pad8(metaLen));
  src.read(metaBytes, HEADER_FIXED + tableLen);
  crc = crc32(metaBytes, crc);
  let meta: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(metaBytes.subarray(0, metaLen)));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    meta = parsed as Record<string, unknown>;
  } catch (err) {
    corrupt(file, `corrupt ${kind} header (meta is not a JSON object: ${(err as Error).message})`);
  }
  let pos = HEADER_FIXED + tableLen + pad8(metaLen);
  let next = 0;
  return {
    version,
    meta,
    sectionLengths: lengths,
    readSection(i, dst) {
      if (i !== next) throw new Error(`sections must be read in order (expected ${next}, got ${i})`);
      if (dst.byteLength !== lengths[i]) throw new Error(`section ${i}: buffer of ${dst.byteLength} bytes for ${lengths[i]}`);
      src.read(dst, pos);
      crc = crc32(dst, crc);
      const padLen = pad8(lengths[i]) - lengths[i];
      if (padLen > 0) {
        const padding = new Uint8Array(padLen);
        src.read(padding, pos + lengths[i]);
        crc = crc32(padding, crc);
      }
      pos += pad8(lengths[i]);
      next++;
    },
    finish() {
      if (next !== nSections) throw new Error('not every section was read');
      if (crc !== expectedCrc) corrupt(file, `checksum mismatch (CRC-32 ${crc.toString(16)}, header says ${expectedCrc.toString(16)}): the file is corrupt`);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Meta validation helpers: every field is checked for type and range before it sizes anything.

/** Reads a non-negative integer field of the meta (≤ `max`). */
export function metaInt(file: string, meta: Record<string, unknown>, key: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = meta[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) {
    corrupt(file, `invalid header field ${key}: ${JSON.stringify(v)}`);
  }
  return v;
}

/** Reads a string field of the meta (≤ 4096 characters). */
export function metaString(file: string, meta: Record<string, unknown>, key: string): string {
  const v = meta[key];
  if (typeof v !== 'string' || v.length > 4096) corrupt(file, `invalid header field ${key}: ${JSON.stringify(v)}`);
  return v;
}

/** Checks that section `i` has exactly the length implied by the meta counts. */
export function expectSection(file: string, lengths: readonly number[], i: number, expected: number, what: string): void {
  if (lengths[i] !== expected) corrupt(file, `section ${i} (${what}) has ${lengths[i]} bytes, the header counts imply ${expected}`);
}

// ---------------------------------------------------------------------------------------------
// String ids: u32 byte lengths + concatenated UTF-8. Shared by all index kinds.

const enc = new TextEncoder();

/** Encodes ids as two sections: u32 UTF-8 byte lengths, then the concatenated bytes. */
export function encodeIds(ids: readonly string[]): [SectionWriter, SectionWriter] {
  const lens = new Uint32Array(ids.length);
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let i = 0; i < ids.length; i++) {
    const b = enc.encode(ids[i]);
    lens[i] = b.byteLength;
    total += b.byteLength;
    parts.push(b);
  }
  return [sectionOf(bytesView(lens)), { byteLength: total, chunks: () => parts }];
}

/** Decodes ids written by {@link encodeIds}; rejects invalid UTF-8, bad lengths and duplicates. */
export function decodeIds(file: string, lens: Uint32Array, bytes: Uint8Array): string[] {
  const dec = new TextDecoder('utf-8', { fatal: true });
  const out = new Array<string>(lens.length);
  const seen = new Set<string>();
  let off = 0;
  for (let i = 0; i < lens.length; i++) {
    const end = off + lens[i];
    if (end > bytes.byteLength) corrupt(file, `id ${i} runs past the id section`);
    let id: string;
    try {
      id = dec.decode(bytes.subarray(off, end));
    } catch {
      corrupt(file, `id ${i} is not valid UTF-8`);
    }
    if (seen.has(id)) corrupt(file, `duplicate id ${JSON.stringify(id)}`);
    seen.add(id);
    out[i] = id;
    off = end;
  }
  if (off !== bytes.byteLength) corrupt(file, 'id lengths do not add up to the id section');
  return out;
}

/** Validates a user-supplied document id. */
export function checkId(id: unknown, what = 'id'): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new M3Error('INVALID_ARGUMENT', `${what} must be a non-empty string, got ${typeof id === 'string' ? '""' : typeof id}`);
  }
}

/** Validates k of a top-k search: a positive safe integer. */
export function checkK(k: unknown, name = 'k'): asserts k is number {
  if (typeof k !== 'number' || !Number.isSafeInteger(k) || k <= 0) {
    throw new M3Error('INVALID_ARGUMENT', `${name} must be a positive integer, got ${String(k)}`);
  }
}
