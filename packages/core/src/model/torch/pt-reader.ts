/**
 * Reads PyTorch `torch.save` files (the zip format of torch >= 1.6) holding a plain state dict,
 * e.g. BGE-M3's `colbert_linear.pt` / `sparse_linear.pt`, without Python and without executing
 * anything from the file: the pickle goes through the restricted unpickler in `./pickle.ts`,
 * which yields only tensor *descriptors*; this module then copies the bytes out of the zip
 * entries itself, after checking that every view fits inside its storage.
 *
 * Archive layout: `<archive>/data.pkl` (the pickle), `<archive>/data/<key>` (one raw storage per
 * key, exactly `numel * itemsize` bytes), `<archive>/byteorder` (`little`/`big`, absent in old
 * files = little). `<archive>` is any single top-level folder name.
 */
import { readFile } from 'node:fs/promises';
import { M3Error } from '../../errors.js';
import { halfTable } from '../float16.js';
import { listZipEntries, readZipEntry, type ZipEntry } from './zip-archive.js';
import { PickleDict, StorageRef, TensorRef, describePickleValue, unpickle, type TorchDtype } from './pickle.js';

/** A tensor from a state dict, converted to float32 in row-major (C-contiguous) order. */
export interface TorchTensor {
  /** Element type of the stored data (before conversion to float32). */
  dtype: TorchDtype;
  shape: number[];
  /** `shape.reduce(*)` values, row-major; float16/bfloat16 convert exactly, float64 rounds. */
  data: Float32Array;
}

const ITEM_SIZE: Readonly<Record<TorchDtype, number>> = { float16: 2, float32: 4, bfloat16: 2, float64: 8 };
/** A state dict's pickle is a few hundred bytes per tensor; more than this is not one. */
const MAX_PICKLE_BYTES = 16 * 2 ** 20;
/** Default of {@link ReadOptions.maxBytes}. */
const DEFAULT_MAX_BYTES = 2 ** 30;

/** Limits of {@link parseTorchStateDict}. */
export interface ReadOptions {
  /**
   * Most bytes of tensor storage to read (inflate) in all (default 1 GiB). A caller that knows
   * what it expects (e.g. the M3 heads, from the hidden size) passes a tight bound, so that a small
   * file cannot make the reader inflate gigabytes.
   */
  maxBytes?: number;
}

/**
 * Parses a `torch.save` zip archive of a state dict (`{name: tensor}`).
 *
 * @param bytes the whole file
 * @param fileName the file to name in errors
 * @returns tensors by state-dict key (a normal object; a `__proto__` key is an own property)
 * @throws {M3Error} `UNSAFE_PICKLE` when the pickle names anything outside the allow-list;
 *   `MODEL_FILE_INVALID` when the file is not a zip-format torch archive, is truncated or
 *   corrupt, or a tensor does not fit its storage.
 */
export function parseTorchStateDict(bytes: Uint8Array, fileName: string, options: ReadOptions = {}): Record<string, TorchTensor> {
  const archive = openArchive(bytes, fileName, options.maxBytes ?? DEFAULT_MAX_BYTES);
  const root = unpickle(archive.pickle, fileName);
  if (!(root instanceof PickleDict)) {
    throw invalid(fileName, `the pickle holds a ${describePickleValue(root)}, not a state dict`);
  }
  const storages = new Map<string, StorageRef>();
  const out: Record<string, TorchTensor> = {};
  for (const [key, value] of root.entries) {
    if (typeof key !== 'string') throw invalid(fileName, `state-dict key ${String(key)} is not a string`);
    if (!(value instanceof TensorRef)) {
      throw invalid(fileName, `state-dict entry '${key}' is not a tensor (got ${describePickleValue(value)})`);
    }
    // Several tensors may share a storage; they must agree on what it is.
    const seen = storages.get(value.storage.key);
    if (seen && (seen.dtype !== value.storage.dtype || seen.numel !== value.storage.numel)) {
      throw invalid(fileName, `storage '${value.storage.key}' is declared with two different types or sizes`);
    }
    storages.set(value.storage.key, value.storage);
    // defineProperty, not assignment: a key named `__proto__` must not replace the prototype.
    Object.defineProperty(out, key, {
      value: materialize(key, value, archive, fileName),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/**
 * Reads and parses a `torch.save` state-dict file; see {@link parseTorchStateDict}.
 *
 * @throws {M3Error} `MODEL_NOT_FOUND` when the file does not exist, otherwise as
 *   {@link parseTorchStateDict}.
 */
export async function readTorchStateDict(path: string, options: ReadOptions = {}): Promise<Record<string, TorchTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    const missing = (cause as NodeJS.ErrnoException).code === 'ENOENT';
    throw new M3Error(
      missing ? 'MODEL_NOT_FOUND' : 'MODEL_FILE_INVALID',
      missing ? `${path}: file not found` : `${path}: cannot read file: ${(cause as Error).message}`,
      { file: path, cause },
    );
  }
  return parseTorchStateDict(bytes, path, options);
}

interface Archive {
  bytes: Uint8Array;
  prefix: string;
  pickle: Uint8Array;
  /** Storage entries by key; read only when a tensor references them ({@link storageBytes}). */
  storageEntries: Map<string, ZipEntry>;
  /** Storages read so far. */
  storages: Map<string, Uint8Array>;
  littleEndian: boolean;
  /** Storage bytes that may still be read. */
  budget: number;
}

const ENTRY = /^([^/]+)\/(data\.pkl|byteorder|data\/([^/]+))$/;

function openArchive(bytes: Uint8Array, fileName: string, maxBytes: number): Archive {
  if (bytes.length === 0) throw invalid(fileName, 'the file is empty');
  const isZip = bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5);
  if (!isZip) {
    // The legacy format (torch < 1.6 or _use_new_zipfile_serialization=False) is a bare
    // sequence of pickles starting with PROTO (0x80); old-old ones are tar files.
    const legacy = bytes[0] === 0x80;
    throw invalid(
      fileName,
      legacy
        ? 'this is the legacy (non-zip) torch.save format; only zip-format files (torch >= 1.6) are supported. Re-save it with a current torch: torch.save(torch.load(f), f)'
        : 'not a zip archive; only zip-format torch.save files (torch >= 1.6) are supported',
    );
  }
  // The directory only: entries are inflated when (and if) the state dict references them.
  const entries = listZipEntries(bytes, fileName);
  const pickles = [...entries.keys()].filter((n) => ENTRY.exec(n)?.[2] === 'data.pkl');
  if (pickles.length === 0) throw invalid(fileName, 'the zip has no <archive>/data.pkl entry; not a torch.save file');
  if (pickles.length > 1) throw invalid(fileName, `the zip has several data.pkl entries (${pickles.join(', ')})`);
  const prefix = pickles[0].slice(0, -'/data.pkl'.length);
  const pickle = readZipEntry(bytes, entries.get(pickles[0]) as ZipEntry, fileName, MAX_PICKLE_BYTES);

  const storageEntries = new Map<string, ZipEntry>();
  let littleEndian = true;
  for (const [name, entry] of entries) {
    const m = ENTRY.exec(name);
    if (!m || m[1] !== prefix) continue;
    if (m[3] !== undefined) storageEntries.set(m[3], entry);
    else if (m[2] === 'byteorder') {
      const order = new TextDecoder().decode(readZipEntry(bytes, entry, fileName, 16)).trim();
      if (order !== 'little' && order !== 'big') throw invalid(fileName, `unknown byteorder '${order.slice(0, 20)}'`);
      littleEndian = order === 'little';
    }
  }
  return { bytes, prefix, pickle, storageEntries, storages: new Map(), littleEndian, budget: maxBytes };
}

/** The bytes of one storage, read (and CRC-checked) the first time a tensor needs it. */
function storageBytes(storage: StorageRef, tensorName: string, archive: Archive, fileName: string): Uint8Array {
  const done = archive.storages.get(storage.key);
  if (done) return done;
  const entry = archive.storageEntries.get(storage.key);
  if (!entry) throw invalid(fileName, `tensor '${tensorName}' uses storage '${storage.key}' but the zip has no ${archive.prefix}/data/${storage.key}`);
  const itemSize = ITEM_SIZE[storage.dtype];
  // Checked against the entry's declared size before anything is inflated.
  if (BigInt(entry.size) !== BigInt(storage.numel) * BigInt(itemSize)) {
    throw invalid(
      fileName,
      `storage '${storage.key}' is declared as ${storage.numel} ${storage.dtype} values (${storage.numel * itemSize} bytes) but its zip entry has ${entry.size} bytes`,
    );
  }
  if (entry.size > archive.budget) {
    throw invalid(fileName, `storage '${storage.key}' holds ${entry.size} bytes, more than the file may hold for what it is read for (${archive.budget} bytes left)`);
  }
  archive.budget -= entry.size;
  const data = readZipEntry(archive.bytes, entry, fileName, entry.size);
  archive.storages.set(storage.key, data);
  return data;
}

/** Copies one (possibly strided) tensor view out of its storage into a row-major Float32Array. */
function materialize(name: string, t: TensorRef, archive: Archive, fileName: string): TorchTensor {
  const { storage } = t;

  const shape = [...t.size];
  const describe = `tensor '${name}' (shape [${shape.join(', ')}], stride [${t.stride.join(', ')}], offset ${t.offset})`;
  // Exact bigint arithmetic: sizes like [1e9, 1e9] overflow 2^53 in doubles.
  const numel = shape.reduce((n, d) => n * BigInt(d), 1n);
  if (numel > 0n) {
    // Last element the view touches; it must lie inside the storage.
    const last = shape.reduce((end, d, i) => end + BigInt(d - 1) * BigInt(t.stride[i]), BigInt(t.offset));
    if (last >= BigInt(storage.numel)) {
      throw invalid(fileName, `${describe} reaches element ${last} of storage '${storage.key}', which holds only ${storage.numel}`);
    }
    // Broadcast views (stride 0) could turn a tiny storage into a huge array; state dicts never need that.
    if (numel > BigInt(storage.numel)) {
      throw invalid(fileName, `${describe} has ${numel} elements but its storage holds only ${storage.numel}`);
    }
  }

  const raw = storageBytes(storage, name, archive, fileName); // after the view checks, which need no bytes
  const out = new Float32Array(Number(numel));
  const read = elementReader(storage.dtype, raw, archive.littleEndian);
  const rank = shape.length;
  if (out.length === 0) return { dtype: storage.dtype, shape, data: out };

  if (isContiguous(shape, t.stride)) {
    for (let i = 0; i < out.length; i++) out[i] = read(t.offset + i);
    return { dtype: storage.dtype, shape, data: out };
  }
  // General strided copy: odometer over the multi-index, tracking the storage position.
  const idx = new Array<number>(rank).fill(0);
  let pos = t.offset;
  for (let i = 0; i < out.length; i++) {
    out[i] = read(pos);
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) {
        pos += t.stride[d];
        break;
      }
      pos -= (shape[d] - 1) * t.stride[d];
      idx[d] = 0;
    }
  }
  return { dtype: storage.dtype, shape, data: out };
}

/** Row-major contiguity; dimensions of size 1 may carry any stride. */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Returns `(elementIndex) => value` over a storage; the caller has bounds-checked indices. */
function elementReader(dtype: TorchDtype, raw: Uint8Array, le: boolean): (i: number) => number {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case 'float16': {
      const table = halfTable();
      return (i) => table[view.getUint16(2 * i, le)];
    }
    case 'bfloat16': {
      // bfloat16 is the top half of a float32: shift its bits into place.
      const bits = new Uint32Array(1);
      const f = new Float32Array(bits.buffer);
      return (i) => {
        bits[0] = view.getUint16(2 * i, le) << 16;
        return f[0];
      };
    }
    case 'float32':
      return (i) => view.getFloat32(4 * i, le);
    case 'float64':
      return (i) => view.getFloat64(8 * i, le);
  }
}

function invalid(fileName: string, message: string): M3Error {
  return new M3Error('MODEL_FILE_INVALID', `${fileName}: ${message}`, { file: fileName });
}
