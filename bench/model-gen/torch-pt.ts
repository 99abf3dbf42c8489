/**
 * Writes `torch.save` archives of a `{weight, bias}` fp16 state dict, like BAAI/bge-m3's
 * `colbert_linear.pt` and `sparse_linear.pt`.
 *
 * Format (torch ≥ 1.6 zip serialisation, checked against the tiny-m3-A fixture's files):
 * - a zip archive, stored (no compression), every record's data aligned to 64 bytes with a
 *   `FB` padding extra field, records under `<archive name>/`: `data.pkl`, `.format_version`,
 *   `.storage_alignment`, `byteorder`, `data/0`, `data/1`, `version`, `.data/serialization_id`;
 * - `data.pkl`: pickle protocol 2 of `OrderedDict([('weight', T), ('bias', T)])` (FlagEmbedding
 *   saves `type(state_dict)({k: v.clone().cpu() ...})`, an OrderedDict without `_metadata`), each
 *   tensor `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with the
 *   storage given by persistent id `('storage', torch.HalfStorage, key, 'cpu', numel)`;
 * - `data/<key>`: the raw little-endian fp16 values.
 * The pickle is emitted with the same memo (BINPUT/BINGET) pattern as CPython's pickler.
 */
import { writeFileSync } from 'node:fs';

class Pickler {
  private readonly bytes: number[] = [];
  private readonly memo = new Map<string, number>();

  op(...b: number[]): void {
    this.bytes.push(...b);
  }
  private u32(n: number): void {
    this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  private put(key: string): void {
    const i = this.memo.size;
    this.memo.set(key, i);
    if (i < 256) this.op(0x71, i); // BINPUT
    else {
      this.op(0x72); // LONG_BINPUT
      this.u32(i);
    }
  }
  /** Emits BINGET if `key` is memoised; returns whether it did. */
  private get(key: string): boolean {
    const i = this.memo.get(key);
    if (i === undefined) return false;
    if (i < 256) this.op(0x68, i); // BINGET
    else {
      this.op(0x6a); // LONG_BINGET
      this.u32(i);
    }
    return true;
  }
  proto(): void {
    this.op(0x80, 2);
  }
  str(s: string, shared = true): void {
    if (shared && this.get(`s:${s}`)) return;
    const b = new TextEncoder().encode(s);
    this.op(0x58); // BINUNICODE
    this.u32(b.length);
    this.op(...b);
    this.put(shared ? `s:${s}` : `s#${this.memo.size}:${s}`);
  }
  global(module: string, name: string): void {
    if (this.get(`g:${module}.${name}`)) return;
    this.op(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`)); // GLOBAL
    this.put(`g:${module}.${name}`);
  }
  int(n: number): void {
    if (n >= 0 && n < 256) this.op(0x4b, n); // BININT1
    else if (n >= 0 && n < 65536) this.op(0x4d, n & 0xff, n >>> 8); // BININT2
    else {
      this.op(0x4a); // BININT
      this.u32(n);
    }
  }
  bool(v: boolean): void {
    this.op(v ? 0x88 : 0x89);
  }
  tuple(items: Array<() => void>): void {
    if (items.length === 0) {
      this.op(0x29); // EMPTY_TUPLE (not memoised by CPython)
      return;
    }
    if (items.length <= 3) {
      items.forEach((f) => f());
      this.op([0x85, 0x86, 0x87][items.length - 1]); // TUPLE1..3
    } else {
      this.op(0x28); // MARK
      items.forEach((f) => f());
      this.op(0x74); // TUPLE
    }
    this.put(`t#${this.memo.size}`);
  }
  /** `func(*args)` through REDUCE, result memoised. */
  reduce(func: () => void, args: Array<() => void>): void {
    func();
    this.tuple(args);
    this.op(0x52); // REDUCE
    this.put(`r#${this.memo.size}`);
  }
  finish(): Uint8Array {
    this.op(0x2e); // STOP
    return Uint8Array.from(this.bytes);
  }
}

export interface HalfTensor {
  /** fp16 bit patterns, row-major. */
  data: Uint16Array;
  shape: number[];
}

function contiguousStride(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** The `data.pkl` bytes for an OrderedDict of fp16 tensors whose storages are keys '0', '1', … */
export function statePickle(entries: Array<[string, HalfTensor]>): Uint8Array {
  if (entries.length < 2) throw new Error('at least two entries expected');
  const p = new Pickler();
  p.proto();
  p.reduce(() => p.global('collections', 'OrderedDict'), []);
  p.op(0x28); // MARK
  entries.forEach(([key, t], i) => {
    p.str(key);
    const numel = t.data.length;
    p.reduce(
      () => p.global('torch._utils', '_rebuild_tensor_v2'),
      [
        () => {
          p.tuple([
            () => p.str('storage'),
            () => p.global('torch', 'HalfStorage'),
            () => p.str(String(i), false),
            () => p.str('cpu'),
            () => p.int(numel),
          ]);
          p.op(0x51); // BINPERSID
        },
        () => p.int(0),
        () => p.tuple(t.shape.map((d) => () => p.int(d))),
        () => p.tuple(contiguousStride(t.shape).map((d) => () => p.int(d))),
        () => p.bool(false),
        () => p.reduce(() => p.global('collections', 'OrderedDict'), []),
      ],
    );
  });
  p.op(0x75); // SETITEMS
  return p.finish();
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A stored (uncompressed) zip with each record's data aligned to `align` bytes, as torch writes. */
export function alignedZip(records: Array<[string, Uint8Array]>, align = 64): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  const enc = new TextEncoder();
  for (const [name, data] of records) {
    const nameBytes = enc.encode(name);
    const base = offset + 30 + nameBytes.length + 4;
    const pad = (align - (base % align)) % align;
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30 + nameBytes.length + 4 + pad));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 0, true); // version needed (torch writes 0)
    local.setUint16(6, 0, true); // flags
    local.setUint16(8, 0, true); // stored
    local.setUint16(10, 0, true); // time
    local.setUint16(12, 0, true); // date
    local.setUint32(14, crc, true);
    local.setUint32(18, data.length, true);
    local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    local.setUint16(28, 4 + pad, true);
    const localBytes = new Uint8Array(local.buffer);
    localBytes.set(nameBytes, 30);
    const ex = 30 + nameBytes.length;
    localBytes[ex] = 0x46; // 'F'
    localBytes[ex + 1] = 0x42; // 'B'
    localBytes[ex + 2] = pad & 0xff;
    localBytes[ex + 3] = pad >>> 8;
    const cd = new DataView(new ArrayBuffer(46 + nameBytes.length));
    cd.setUint32(0, 0x02014b50, true);
    cd.setUint16(4, 0, true);
    cd.setUint16(6, 0, true);
    cd.setUint16(8, 0, true);
    cd.setUint16(10, 0, true);
    cd.setUint16(12, 0, true);
    cd.setUint16(14, 0, true);
    cd.setUint32(16, crc, true);
    cd.setUint32(20, data.length, true);
    cd.setUint32(24, data.length, true);
    cd.setUint16(28, nameBytes.length, true);
    cd.setUint16(30, 0, true);
    cd.setUint16(32, 0, true);
    cd.setUint16(34, 0, true);
    cd.setUint16(36, 0, true);
    cd.setUint32(38, 0, true);
    cd.setUint32(42, offset, true);
    const cdBytes = new Uint8Array(cd.buffer);
    cdBytes.set(nameBytes, 46);
    parts.push(localBytes, data);
    central.push(cdBytes);
    offset += localBytes.length + data.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, records.length, true);
  end.setUint16(10, records.length, true);
  end.setUint32(12, cdSize, true);
  end.setUint32(16, offset, true);
  const all = [...parts, ...central, new Uint8Array(end.buffer)];
  const out = new Uint8Array(all.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of all) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/** Bytes of `torch.save({'weight': w, 'bias': b})` (fp16) for an archive named `archiveName`. */
export function torchSaveLinear(archiveName: string, weight: HalfTensor, bias: HalfTensor, serializationId: string): Uint8Array {
  const enc = new TextEncoder();
  const pkl = statePickle([
    ['weight', weight],
    ['bias', bias],
  ]);
  const bytes = (u: Uint16Array) => new Uint8Array(u.buffer, u.byteOffset, u.byteLength);
  return alignedZip([
    [`${archiveName}/data.pkl`, pkl],
    [`${archiveName}/.format_version`, enc.encode('1')],
    [`${archiveName}/.storage_alignment`, enc.encode('64')],
    [`${archiveName}/byteorder`, enc.encode('little')],
    [`${archiveName}/data/0`, bytes(weight.data)],
    [`${archiveName}/data/1`, bytes(bias.data)],
    [`${archiveName}/version`, enc.encode('3\n')],
    [`${archiveName}/.data/serialization_id`, enc.encode(serializationId)],
  ]);
}

export function writeTorchLinear(
  path: string,
  archiveName: string,
  weight: HalfTensor,
  bias: HalfTensor,
  serializationId: string,
): number {
  const b = torchSaveLinear(archiveName, weight, bias, serializationId);
  writeFileSync(path, b);
  return b.length;
}
