/**
 * A minimal, defensive zip reader for `torch.save` archives: it lists entries from the central
 * directory (zip64 included, as torch writes it) without inflating anything, and then reads only
 * the entries asked for, each checked against its CRC-32 and bounded by its declared size.
 *
 * Why not fflate's `unzipSync` (used before): it does not check CRC-32 (a bit flip inside a
 * stored entry loaded silently), and it inflates every entry its filter lets through before the
 * caller knows which ones it needs, so unreferenced entries with huge declared sizes cost RAM and
 * seconds. Inflation itself is node:zlib's, with `maxOutputLength` set to the declared size.
 */
import { crc32, inflateRawSync } from 'node:zlib';
import { M3Error } from '../../errors.js';

/** One file of the archive, as the central directory describes it. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  crc32: number;
  compressedSize: number;
  /** Uncompressed size. */
  size: number;
  /** Offset of the local file header. */
  localOffset: number;
}

/** torch writes a few dozen entries plus one per storage; more than this is not a state dict. */
export const MAX_ZIP_ENTRIES = 1 << 20;
/** Deflate cannot expand more than ~1032:1; a larger declared size is a zip bomb. */
const MAX_DEFLATE_RATIO = 1032;

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

function invalid(fileName: string, message: string): M3Error {
  return new M3Error('MODEL_FILE_INVALID', `${fileName}: ${message}`, { file: fileName });
}

/** Little-endian reads that fail (as a damaged archive) instead of reading past the end. */
class Reader {
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    private readonly fileName: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(at: number, n: number): void {
    if (!Number.isSafeInteger(at) || at < 0 || at + n > this.bytes.length) {
      throw invalid(this.fileName, 'not a readable zip archive (a record lies outside the file); truncated or corrupt file?');
    }
  }
  u16(at: number): number {
    this.need(at, 2);
    return this.view.getUint16(at, true);
  }
  u32(at: number): number {
    this.need(at, 4);
    return this.view.getUint32(at, true);
  }
  u64(at: number): number {
    this.need(at, 8);
    const v = this.view.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(this.fileName, `a zip64 field holds ${v}, beyond any real file`);
    return Number(v);
  }
  slice(at: number, n: number): Uint8Array {
    this.need(at, n);
    return this.bytes.subarray(at, at + n);
  }
}

/**
 * Lists the entries of a zip archive by name, from its central directory. Nothing is inflated.
 *
 * @throws {M3Error} MODEL_FILE_INVALID when there is no (valid) end-of-central-directory record,
 *   the directory lies outside the file, an entry is encrypted or uses a method other than
 *   stored/deflate, a name repeats, or there are more than {@link MAX_ZIP_ENTRIES} entries.
 */
export function listZipEntries(bytes: Uint8Array, fileName: string): Map<string, ZipEntry> {
  const r = new Reader(bytes, fileName);
  // The end record is 22 bytes plus a comment of at most 65535.
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (bytes[i] === 0x50 && bytes[i + 1] === 0x4b && r.u32(i) === SIG_EOCD && i + 22 + r.u16(i + 20) === bytes.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw invalid(fileName, 'not a readable zip archive (no end-of-central-directory record); truncated or corrupt file?');
  let count = r.u16(eocd + 10);
  let cdSize = r.u32(eocd + 12);
  let cdOffset = r.u32(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || r.u32(loc) !== SIG_ZIP64_LOCATOR) throw invalid(fileName, 'zip64 sizes without a zip64 end-of-central-directory locator');
    const z = r.u64(loc + 8);
    if (r.u32(z) !== SIG_ZIP64_EOCD) throw invalid(fileName, 'the zip64 end-of-central-directory record is missing');
    count = r.u64(z + 32);
    cdSize = r.u64(z + 40);
    cdOffset = r.u64(z + 48);
  }
  if (count > MAX_ZIP_ENTRIES) throw invalid(fileName, `more than ${MAX_ZIP_ENTRIES} zip entries`);
  if (cdOffset + cdSize > bytes.length || count * 46 > cdSize) {
    throw invalid(fileName, 'not a readable zip archive (the central directory lies outside the file); truncated or corrupt file?');
  }
  const entries = new Map<string, ZipEntry>();
  const decoder = new TextDecoder('utf-8', { fatal: false });
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    if (r.u32(p) !== SIG_CENTRAL) throw invalid(fileName, `zip central directory entry ${k} is damaged`);
    const flags = r.u16(p + 8);
    const method = r.u16(p + 10);
    const crc = r.u32(p + 16);
    let compressedSize = r.u32(p + 20);
    let size = r.u32(p + 24);
    const nameLen = r.u16(p + 28);
    const extraLen = r.u16(p + 30);
    const commentLen = r.u16(p + 32);
    let localOffset = r.u32(p + 42);
    const name = decoder.decode(r.slice(p + 46, nameLen));
    // zip64 extended information: the fields whose 32-bit value is 0xFFFFFFFF, in this order.
    const extra = r.slice(p + 46 + nameLen, extraLen);
    for (let e = 0; e + 4 <= extra.length; ) {
      const id = extra[e] | (extra[e + 1] << 8);
      const len = extra[e + 2] | (extra[e + 3] << 8);
      if (id === 0x0001) {
        let q = p + 46 + nameLen + e + 4;
        const end = q + len;
        const next = () => {
          if (q + 8 > end) throw invalid(fileName, `zip entry ${name} has a short zip64 field`);
          const v = r.u64(q);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      e += 4 + len;
    }
    if (flags & 1) throw invalid(fileName, `zip entry ${name} is encrypted`);
    if (method !== 0 && method !== 8) throw invalid(fileName, `zip entry ${name} uses unsupported compression method ${method}`);
    if (entries.has(name)) throw invalid(fileName, `the zip lists ${name} twice`);
    entries.set(name, { name, method, crc32: crc, compressedSize, size, localOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/**
 * Reads one entry: its bytes, inflated when deflated, checked against the declared size and the
 * CRC-32. `maxSize` refuses, before anything is inflated or copied, an entry declaring more.
 *
 * @throws {M3Error} MODEL_FILE_INVALID naming the entry when it is damaged in any way.
 */
export function readZipEntry(bytes: Uint8Array, entry: ZipEntry, fileName: string, maxSize = Number.MAX_SAFE_INTEGER): Uint8Array {
  const r = new Reader(bytes, fileName);
  const { name } = entry;
  if (entry.size > maxSize) throw invalid(fileName, `zip entry ${name} declares ${entry.size} bytes, more than the ${maxSize} it may hold`);
  if (r.u32(entry.localOffset) !== SIG_LOCAL) throw invalid(fileName, `zip entry ${name}: no local header at offset ${entry.localOffset}; truncated or corrupt file?`);
  const start = entry.localOffset + 30 + r.u16(entry.localOffset + 26) + r.u16(entry.localOffset + 28);
  if (start + entry.compressedSize > bytes.length) throw invalid(fileName, `zip entry ${name} is larger than the file; truncated?`);
  const raw = bytes.subarray(start, start + entry.compressedSize);
  let data: Uint8Array;
  if (entry.method === 0) {
    if (entry.compressedSize !== entry.size) throw invalid(fileName, `zip entry ${name} has inconsistent sizes`);
    data = raw;
  } else {
    if (entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + 1024) {
      throw invalid(fileName, `zip entry ${name} declares ${entry.size} bytes from ${entry.compressedSize} compressed bytes`);
    }
    try {
      data = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
    } catch (cause) {
      throw new M3Error('MODEL_FILE_INVALID', `${fileName}: zip entry ${name} does not inflate to its declared ${entry.size} bytes (${(cause as Error).message}); corrupt file?`, {
        file: fileName,
        cause,
      });
    }
  }
  if (data.length !== entry.size) throw invalid(fileName, `zip entry ${name} holds ${data.length} bytes but declares ${entry.size}; truncated file?`);
  if ((crc32(data) >>> 0) !== entry.crc32 >>> 0) {
    throw invalid(fileName, `zip entry ${name} fails its CRC-32 check (the file is damaged); re-download it`);
  }
  return data;
}
