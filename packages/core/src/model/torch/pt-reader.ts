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
import { unzipSync } from 'fflate';
import { M3Error } from '../../errors.js';
import { halfTable } from '../float16.js';
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
/** torch writes a few dozen entries plus one per storage; more than this is not a state dict. */
const MAX_ZIP_ENTRIES = 1 << 20;
/** Deflate cannot expand more than ~1032:1; a larger declared size is a zip bomb. */
const MAX_DEFLATE_RATIO = 1032;

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
export function parseTorchStateDict(bytes: Uint8Array, fileName: string): Record<string, TorchTensor> {
  const archive = openArchive(bytes, fileName);
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
export async function readTorchStateDict(path: string): Promise<Record<string, TorchTensor>> {
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
  return parseTorchStateDict(bytes, path);
}

interface Archive {
  prefix: string;
  pickle: Uint8Array;
  /** Raw storage bytes by key. */
  storages: Map<string, Uint8Array>;
  littleEndian: boolean;
}

const ENTRY = /^([^/]+)\/(data\.pkl|byteorder|data\/([^/]+))$/;

function openArchive(bytes: Uint8Array, fileName: string): Archive {
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

  // Extract only the entries we use, refusing absurd declared sizes before fflate allocates them.
  const declared = new Map<string, number>();
  let seen = 0;
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes, {
      filter(file) {
        if (++seen > MAX_ZIP_ENTRIES) throw invalid(fileName, `more than ${MAX_ZIP_ENTRIES} zip entries`);
        if (!ENTRY.test(file.name)) return false;
        if (file.compression === 0) {
          if (file.size !== file.originalSize) throw invalid(fileName, `zip entry ${file.name} has inconsistent sizes`);
          if (file.size > bytes.length) throw invalid(fileName, `zip entry ${file.name} is larger than the file; truncated?`);
        } else if (file.compression === 8) {
          if (file.originalSize > file.size * MAX_DEFLATE_RATIO + 1024) {
            throw invalid(fileName, `zip entry ${file.name} declares ${file.originalSize} bytes from ${file.size} compressed bytes`);
          }
        } else {
          throw invalid(fileName, `zip entry ${file.name} uses unsupported compression method ${file.compression}`);
        }
        declared.set(file.name, file.originalSize);
        return true;
      },
    });
  } catch (cause) {
    if (cause instanceof M3Error) throw cause;
    throw new M3Error('MODEL_FILE_INVALID', `${fileName}: not a readable zip archive (${(cause as Error).message}); truncated or corrupt file?`, {
      file: fileName,
      cause,
    });
  }
  // fflate silently returns a short slice when an entry runs past the end of the data.
  for (const [name, data] of Object.entries(entries)) {
    if (data.length !== declared.get(name)) {
      throw invalid(fileName, `zip entry ${name} holds ${data.length} bytes but declares ${declared.get(name)}; truncated file?`);
    }
  }

  const pickles = Object.keys(entries).filter((n) => ENTRY.exec(n)?.[2] === 'data.pkl');
  if (pickles.length === 0) throw invalid(fileName, 'the zip has no <archive>/data.pkl entry; not a torch.save file');
  if (pickles.length > 1) throw invalid(fileName, `the zip has several data.pkl entries (${pickles.join(', ')})`);
  const prefix = pickles[0].slice(0, -'/data.pkl'.length);

  const storages = new Map<string, Uint8Array>();
  let littleEndian = true;
  for (const [name, data] of Object.entries(entries)) {
    const m = ENTRY.exec(name);
    if (!m || m[1] !== prefix) continue;
    if (m[3] !== undefined) storages.set(m[3], data);
    else if (m[2] === 'byteorder') {
      const order = new TextDecoder().decode(data).trim();
      if (order !== 'little' && order !== 'big') throw invalid(fileName, `unknown byteorder '${order.slice(0, 20)}'`);
      littleEndian = order === 'little';
    }
  }
  return { prefix, pickle: entries[pickles[0]], storages, littleEndian };
}

/** Copies one (possibly strided) tensor view out of its storage into a row-major Float32Array. */
function materialize(name: string, t: TensorRef, archive: Archive, fileName: string): TorchTensor {
  const { storage } = t;
  const itemSize = ITEM_SIZE[storage.dtype];
  const raw = archive.storages.get(storage.key);
  if (!raw) throw invalid(fileName, `tensor '${name}' uses storage '${storage.key}' but the zip has no ${archive.prefix}/data/${storage.key}`);
  if (BigInt(raw.length) !== BigInt(storage.numel) * BigInt(itemSize)) {
    throw invalid(
      fileName,
      `storage '${storage.key}' is declared as ${storage.numel} ${storage.dtype} values (${storage.numel * itemSize} bytes) but its zip entry has ${raw.length} bytes`,
    );
  }

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
