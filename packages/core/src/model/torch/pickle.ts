/**
 * A restricted, data-only unpickler for the `data.pkl` inside PyTorch `torch.save` archives.
 *
 * Hand-written on purpose: no JavaScript library parses pickles *safely*. A pickle is a program
 * for a stack machine whose GLOBAL + REDUCE opcodes call arbitrary Python callables
 * (`os.system`, `builtins.eval`, ...), so a `.pt` file from the Hub is untrusted code. This
 * reader is narrower than torch's own `weights_only=True` loader:
 *
 * - Nothing from the file is ever executed, and there is no `eval`/dynamic lookup anywhere.
 *   GLOBAL / STACK_GLOBAL resolve names against a fixed allow-list ({@link ALLOWED_GLOBALS})
 *   into inert {@link PickleGlobal} markers; any other name throws `UNSAFE_PICKLE` at the very
 *   opcode that names it, so a refused global never even reaches the stack.
 * - REDUCE applies only allow-listed callables, each re-implemented here as a function that
 *   builds plain data (an empty ordered dict, a {@link TensorRef} descriptor).
 * - BUILD (`__setstate__`) is accepted only on an OrderedDict, whose state (torch's
 *   `_metadata` with module versions) is ignored. Opcodes that construct arbitrary objects
 *   (NEWOBJ, NEWOBJ_EX, OBJ, INST, EXT*) are refused outright.
 * - Every declared length is checked against the bytes that remain *before* anything is
 *   read or allocated, and the stack, MARK depth, memo and total element count are capped, so a
 *   hostile file cannot cause a huge allocation. The machine is a loop, not recursion, so deep
 *   nesting cannot overflow the JS call stack.
 * - Dicts are `Map`s, so keys such as `__proto__` cannot pollute prototypes.
 *
 * Only the binary opcodes that protocol 2–5 pickles of state dicts use are implemented; the
 * text opcodes of protocol 0/1 and out-of-band buffers are reported as unsupported.
 */
import { M3Error } from '../../errors.js';

/** Element types of the storages this reader accepts. */
export type TorchDtype = 'float16' | 'float32' | 'bfloat16' | 'float64';

/** A Python tuple (kept distinct from lists because torch's argument shapes depend on it). */
export class PickleTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

/** Keys a pickled dict may have here: hashable scalars only. */
export type PickleDictKey = string | number | bigint | boolean | null;

/** A Python dict or `collections.OrderedDict` (insertion order is kept either way). */
export class PickleDict {
  readonly entries = new Map<PickleDictKey, PickleValue>();
  /** True when built by `collections.OrderedDict()`: the only object BUILD may touch. */
  constructor(readonly ordered: boolean) {}
}

/** What an allow-listed global stands for; see {@link ALLOWED_GLOBALS}. */
export type GlobalRole =
  | { kind: 'ordered-dict' }
  | { kind: 'rebuild-tensor' }
  | { kind: 'rebuild-parameter' }
  | { kind: 'storage-type'; dtype: TorchDtype };

/** An inert stand-in for an allow-listed Python global: a name plus its role, never code. */
export class PickleGlobal {
  constructor(
    readonly qualifiedName: string,
    readonly role: GlobalRole,
  ) {}
}

/** A storage named by a persistent id `('storage', StorageType, key, location, numel)`. */
export class StorageRef {
  constructor(
    readonly dtype: TorchDtype,
    /** Entry name under `<archive>/data/`. */
    readonly key: string,
    /** Device the tensor was saved from (e.g. `cpu`, `cuda:0`); informational only. */
    readonly location: string,
    /** Element count the pickle declares; checked against the entry's byte size by the reader. */
    readonly numel: number,
  ) {}
}

/** The plain-data result of `torch._utils._rebuild_tensor_v2`: a strided view of a storage. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    /** Offset into the storage, in elements. */
    readonly offset: number,
    readonly size: readonly number[],
    /** Strides in elements, one per dimension. */
    readonly stride: readonly number[],
  ) {}
}

/** Every value the restricted unpickler can produce. Lists are plain arrays. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleTuple
  | PickleDict
  | PickleGlobal
  | StorageRef
  | TensorRef;

/**
 * The only globals a pickle may name. Narrower than torch's `weights_only` allow-list: just
 * what a state dict of dense fp16/bf16/fp32/fp64 tensors needs.
 */
export const ALLOWED_GLOBALS: ReadonlyMap<string, GlobalRole> = new Map<string, GlobalRole>([
  ['collections.OrderedDict', { kind: 'ordered-dict' }],
  ['torch._utils._rebuild_tensor_v2', { kind: 'rebuild-tensor' }],
  ['torch._utils._rebuild_parameter', { kind: 'rebuild-parameter' }],
  ['torch.HalfStorage', { kind: 'storage-type', dtype: 'float16' }],
  ['torch.FloatStorage', { kind: 'storage-type', dtype: 'float32' }],
  ['torch.BFloat16Storage', { kind: 'storage-type', dtype: 'bfloat16' }],
  ['torch.DoubleStorage', { kind: 'storage-type', dtype: 'float64' }],
]);

// Caps. A real state dict uses a few dozen stack slots and ~20 memo entries per tensor, so
// these leave orders of magnitude of headroom while bounding what a hostile file can make us hold.
const MAX_MARK_DEPTH = 1000;
const MAX_MEMO_ENTRIES = 1 << 20;
/** Total values pushed or stored in containers: bounds memory amplification (1 byte → 1 slot). */
const MAX_ELEMENTS = 1 << 25;
const MAX_GLOBAL_LINE = 256;
const MAX_LONG4_BYTES = 1 << 16;
const MAX_TENSOR_DIMS = 64; // torch's own limit

const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT',
  0x49: 'INT', 0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE',
  0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD',
  0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT',
  0x71: 'BINPUT', 0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE',
  0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2',
  0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE',
  0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE',
  0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** Opcodes that build arbitrary objects from a class; refused as unsafe, not just unsupported. */
const OBJECT_OPCODES = new Set([0x81, 0x92, 0x6f, 0x69, 0x82, 0x83, 0x84]);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Runs the restricted pickle machine over `data` and returns the unpickled root value.
 *
 * @param data the pickle bytes (e.g. `<archive>/data.pkl`)
 * @param fileName the file to name in errors
 * @throws {M3Error} `UNSAFE_PICKLE` for a global outside {@link ALLOWED_GLOBALS}, an
 *   object-constructing opcode or a BUILD on anything but an OrderedDict;
 *   `MODEL_FILE_INVALID` for truncated or malformed data, unsupported opcodes and exceeded caps.
 */
export function unpickle(data: Uint8Array, fileName: string): PickleValue {
  return new Unpickler(data, fileName).run();
}

/** Short Python-ish type name for error messages. */
export function describePickleValue(v: PickleValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PickleTuple) return 'tuple';
  if (v instanceof PickleDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof PickleGlobal) return `global ${v.qualifiedName}`;
  if (v instanceof StorageRef) return 'storage';
  if (v instanceof TensorRef) return 'tensor';
  return typeof v === 'bigint' ? 'int' : typeof v === 'number' ? (Number.isInteger(v) ? 'int' : 'float') : typeof v === 'boolean' ? 'bool' : 'str';
}

class Unpickler {
  private readonly view: DataView;
  private pos = 0;
  /** Start of the opcode being executed, for error messages. */
  private opStart = 0;
  private stack: PickleValue[] = [];
  /** Stacks saved by MARK (CPython's metastack): a MARK is never a value, so it cannot leak. */
  private readonly metastack: PickleValue[][] = [];
  private readonly memo = new Map<number, PickleValue>();
  private elements = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly fileName: string,
  ) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  run(): PickleValue {
    while (this.pos < this.data.length) {
      this.opStart = this.pos;
      const op = this.data[this.pos++];
      if (op === 0x2e /* STOP */) {
        if (this.stack.length === 0) throw this.invalid('STOP with an empty stack');
        return this.pop();
      }
      this.step(op);
    }
    throw this.invalid('the pickle ends without a STOP opcode (truncated file?)');
  }

  private step(op: number): void {
    switch (op) {
      // --- framing and protocol -------------------------------------------------------------
      case 0x80: {
        const proto = this.u8();
        if (proto > 5) throw this.invalid(`pickle protocol ${proto} is newer than 5`);
        return;
      }
      case 0x95: // FRAME: an advisory length prefix; only check that it is plausible
        this.checkLength(this.u64(), 'FRAME');
        return;

      // --- scalars --------------------------------------------------------------------------
      case 0x4e: return this.push(null);
      case 0x88: return this.push(true);
      case 0x89: return this.push(false);
      case 0x4a: return this.push(this.need(4) && this.view.getInt32(this.advance(4), true));
      case 0x4b: return this.push(this.u8());
      case 0x4d: return this.push(this.need(2) && this.view.getUint16(this.advance(2), true));
      case 0x8a: return this.push(this.long(this.u8(), 'LONG1'));
      case 0x8b: {
        const n = this.i32();
        if (n < 0 || n > MAX_LONG4_BYTES) throw this.invalid(`LONG4 declares ${n} bytes`);
        return this.push(this.long(n, 'LONG4'));
      }
      case 0x47: return this.push(this.need(8) && this.view.getFloat64(this.advance(8), false));

      // --- strings and bytes ------------------------------------------------------------------
      case 0x58: return this.push(this.text(this.u32(), 'BINUNICODE'));
      case 0x8c: return this.push(this.text(this.u8(), 'SHORT_BINUNICODE'));
      case 0x8d: return this.push(this.text(this.u64(), 'BINUNICODE8'));
      case 0x54: {
        const n = this.i32();
        if (n < 0) throw this.invalid(`BINSTRING declares a negative length ${n}`);
        return this.push(this.text(n, 'BINSTRING')); // torch.load decodes py2 str as utf-8
      }
      case 0x55: return this.push(this.text(this.u8(), 'SHORT_BINSTRING'));
      case 0x42: return this.push(this.bytes(this.u32(), 'BINBYTES'));
      case 0x43: return this.push(this.bytes(this.u8(), 'SHORT_BINBYTES'));
      case 0x8e: return this.push(this.bytes(this.u64(), 'BINBYTES8'));
      case 0x96: return this.push(this.bytes(this.u64(), 'BYTEARRAY8').slice());

      // --- containers -----------------------------------------------------------------------
      case 0x7d: return this.push(new PickleDict(false));
      case 0x5d: return this.push([]);
      case 0x29: return this.push(new PickleTuple([]));
      case 0x28: {
        if (this.metastack.length >= MAX_MARK_DEPTH) throw this.invalid(`MARKs nested deeper than ${MAX_MARK_DEPTH}`);
        this.metastack.push(this.stack);
        this.stack = [];
        return;
      }
      case 0x74: return this.push(this.tuple(this.popMark()));
      case 0x85: return this.push(this.tuple(this.popN(1)));
      case 0x86: return this.push(this.tuple(this.popN(2)));
      case 0x87: return this.push(this.tuple(this.popN(3)));
      case 0x6c: return this.push(this.countElements(this.popMark()));
      case 0x64: {
        const dict = new PickleDict(false);
        this.setItems(dict, this.popMark());
        return this.push(dict);
      }
      case 0x73: {
        const items = this.popN(2);
        return this.setItems(this.topDict('SETITEM'), items);
      }
      case 0x75: {
        const items = this.popMark();
        return this.setItems(this.topDict('SETITEMS'), items);
      }
      case 0x61: {
        const item = this.pop();
        this.topList('APPEND').push(item);
        this.charge(1);
        return;
      }
      case 0x65: {
        const items = this.popMark();
        const list = this.topList('APPENDS');
        for (const item of this.countElements(items)) list.push(item);
        return;
      }

      // --- stack manipulation -----------------------------------------------------------------
      case 0x30: // POP: like CPython, an empty stack means "discard the topmost MARK"
        if (this.stack.length > 0) this.stack.pop();
        else this.popMark();
        return;
      case 0x31: this.popMark(); return;
      case 0x32: return this.push(this.top('DUP'));

      // --- memo -------------------------------------------------------------------------------
      case 0x71: return this.put(this.u8());
      case 0x72: return this.put(this.u32());
      case 0x94: return this.put(this.memo.size);
      case 0x68: return this.get(this.u8());
      case 0x6a: return this.get(this.u32());

      // --- the only places code could be named or run: all restricted -------------------------
      case 0x63: {
        const module = this.line('GLOBAL module');
        const name = this.line('GLOBAL name');
        return this.push(this.resolveGlobal(module, name));
      }
      case 0x93: {
        const [module, name] = this.popN(2);
        if (typeof module !== 'string' || typeof name !== 'string') {
          throw this.invalid(`STACK_GLOBAL needs two strings, got ${describePickleValue(module)} and ${describePickleValue(name)}`);
        }
        return this.push(this.resolveGlobal(module, name));
      }
      case 0x52: {
        const [callable, args] = this.popN(2);
        return this.push(this.reduce(callable, args));
      }
      case 0x62: {
        this.pop(); // the state: only OrderedDict may be BUILT, and its state (`_metadata`) is ignored
        const target = this.top('BUILD');
        if (!(target instanceof PickleDict && target.ordered)) {
          throw this.unsafe(`BUILD (which would run __setstate__) on a ${describePickleValue(target)}; only an OrderedDict's metadata is accepted`);
        }
        return;
      }
      case 0x51: return this.push(this.persistentLoad(this.pop()));

      default: {
        const name = OPCODE_NAMES[op];
        const hex = `0x${op.toString(16).padStart(2, '0')}`;
        if (OBJECT_OPCODES.has(op)) {
          throw this.unsafe(`opcode ${name} (${hex}) constructs arbitrary Python objects and is never executed`);
        }
        throw this.invalid(
          name
            ? `unsupported opcode ${name} (${hex}); only binary protocol 2-5 state-dict pickles are supported`
            : `unknown opcode ${hex}`,
        );
      }
    }
  }

  // --- restricted semantics ------------------------------------------------------------------

  private resolveGlobal(module: string, name: string): PickleGlobal {
    const qualified = `${module}.${name}`;
    const role = ALLOWED_GLOBALS.get(qualified);
    if (!role) {
      throw this.unsafe(
        `the pickle asks for the global '${qualified}', which is not in the allow-list (${[...ALLOWED_GLOBALS.keys()].join(', ')}); ` +
          'the file may be malicious, and only plain state dicts of tensors can be loaded',
      );
    }
    return new PickleGlobal(qualified, role);
  }

  /** REDUCE = `callable(*args)`: only the allow-listed callables, re-implemented as data builders. */
  private reduce(callable: PickleValue, args: PickleValue): PickleValue {
    if (!(callable instanceof PickleGlobal)) {
      throw this.invalid(`REDUCE applied to a ${describePickleValue(callable)}, which is not callable`);
    }
    if (!(args instanceof PickleTuple)) throw this.invalid(`REDUCE arguments are a ${describePickleValue(args)}, not a tuple`);
    const a = args.items;
    const role = callable.role;
    switch (role.kind) {
      case 'ordered-dict':
        // Python 3 pickles OrderedDict as OrderedDict() followed by SETITEMS.
        if (a.length !== 0) throw this.invalid('collections.OrderedDict called with arguments; expected OrderedDict()');
        return new PickleDict(true);
      case 'rebuild-tensor':
        return this.rebuildTensor(a);
      case 'rebuild-parameter': {
        // _rebuild_parameter(data, requires_grad, backward_hooks): a Parameter is just its tensor here.
        if (a.length !== 3 || !(a[0] instanceof TensorRef)) {
          throw this.invalid('torch._utils._rebuild_parameter expects (tensor, requires_grad, backward_hooks)');
        }
        return a[0];
      }
      case 'storage-type':
        throw this.unsafe(`REDUCE calls ${callable.qualifiedName}; storage types may only appear inside a storage persistent id`);
    }
  }

  /** `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`. */
  private rebuildTensor(a: readonly PickleValue[]): TensorRef {
    const fn = 'torch._utils._rebuild_tensor_v2';
    if (a.length !== 6 && a.length !== 7) throw this.invalid(`${fn} called with ${a.length} arguments; expected 6 or 7`);
    const [storage, offset, size, stride, requiresGrad, hooks] = a;
    if (!(storage instanceof StorageRef)) throw this.invalid(`${fn}: first argument is a ${describePickleValue(storage)}, not a storage`);
    const dims = this.intTuple(size, `${fn} size`);
    const strides = this.intTuple(stride, `${fn} stride`);
    if (dims.length !== strides.length) {
      throw this.invalid(`${fn}: size has ${dims.length} dimensions but stride has ${strides.length}`);
    }
    if (typeof requiresGrad !== 'boolean') throw this.invalid(`${fn}: requires_grad is a ${describePickleValue(requiresGrad)}`);
    // Non-empty hooks would have needed refused globals anyway; any metadata (7th arg) is ignored.
    if (!(hooks instanceof PickleDict)) throw this.invalid(`${fn}: backward_hooks is a ${describePickleValue(hooks)}`);
    return new TensorRef(storage, this.index(offset, `${fn} storage_offset`), dims, strides);
  }

  /** Persistent id of a torch storage: `('storage', StorageType, key, location, numel)`. */
  private persistentLoad(pid: PickleValue): StorageRef {
    const bad = (why: string) => this.invalid(`unsupported persistent id (${why}); expected ('storage', StorageType, key, location, numel)`);
    if (!(pid instanceof PickleTuple)) throw bad(`a ${describePickleValue(pid)}`);
    const [tag, type, key, location, numel] = pid.items;
    if (pid.items.length !== 5 || tag !== 'storage') throw bad(`tag ${JSON.stringify(typeof tag === 'string' ? tag : describePickleValue(tag))}, ${pid.items.length} items`);
    if (!(type instanceof PickleGlobal) || type.role.kind !== 'storage-type') throw bad(`storage type is a ${describePickleValue(type)}`);
    if (typeof key !== 'string' || typeof location !== 'string') throw bad('key and location must be strings');
    return new StorageRef(type.role.dtype, key, location, this.index(numel, 'storage numel'));
  }

  // --- stack helpers -------------------------------------------------------------------------

  private push(v: PickleValue): void {
    this.charge(1);
    this.stack.push(v);
  }

  private pop(): PickleValue {
    if (this.stack.length === 0) throw this.invalid('stack underflow');
    return this.stack.pop() as PickleValue;
  }

  private popN(n: number): PickleValue[] {
    if (this.stack.length < n) throw this.invalid(`stack underflow (needs ${n} values, has ${this.stack.length})`);
    return this.stack.splice(this.stack.length - n, n);
  }

  private top(what: string): PickleValue {
    if (this.stack.length === 0) throw this.invalid(`${what} on an empty stack`);
    return this.stack[this.stack.length - 1];
  }

  private topDict(what: string): PickleDict {
    const d = this.top(what);
    if (!(d instanceof PickleDict)) throw this.invalid(`${what} on a ${describePickleValue(d)}, not a dict`);
    return d;
  }

  private topList(what: string): PickleValue[] {
    const l = this.top(what);
    if (!Array.isArray(l)) throw this.invalid(`${what} on a ${describePickleValue(l)}, not a list`);
    return l;
  }

  /** Values pushed since the last MARK, restoring the stack that MARK saved. */
  private popMark(): PickleValue[] {
    const saved = this.metastack.pop();
    if (!saved) throw this.invalid('no MARK to pop to');
    const items = this.stack;
    this.stack = saved;
    return items;
  }

  private tuple(items: PickleValue[]): PickleTuple {
    return new PickleTuple(this.countElements(items));
  }

  private setItems(dict: PickleDict, items: PickleValue[]): void {
    if (items.length % 2 !== 0) throw this.invalid('odd number of items for a dict');
    this.countElements(items);
    for (let i = 0; i < items.length; i += 2) {
      const key = items[i];
      if (key !== null && typeof key === 'object') throw this.invalid(`unsupported dict key type ${describePickleValue(key)}`);
      dict.entries.set(key, items[i + 1]);
    }
  }

  /** Charges `items` to the global element budget (stack slots + container slots). */
  private countElements<T extends PickleValue[]>(items: T): T {
    this.charge(items.length);
    return items;
  }

  private charge(n: number): void {
    this.elements += n;
    if (this.elements > MAX_ELEMENTS) throw this.invalid(`more than ${MAX_ELEMENTS} values; refusing to continue`);
  }

  private put(index: number): void {
    if (!this.memo.has(index) && this.memo.size >= MAX_MEMO_ENTRIES) throw this.invalid(`more than ${MAX_MEMO_ENTRIES} memo entries`);
    this.memo.set(index, this.top('memo put'));
  }

  private get(index: number): void {
    const v = this.memo.get(index);
    if (v === undefined) throw this.invalid(`memo entry ${index} is read before it is written`);
    this.push(v);
  }

  // --- byte readers: every read is bounds-checked before it happens ---------------------------

  /** Throws unless `n` more bytes remain; returns true so it can guard an expression. */
  private need(n: number): true {
    if (this.data.length - this.pos < n) throw this.invalid(`truncated: needs ${n} more bytes, ${this.data.length - this.pos} remain`);
    return true;
  }

  private advance(n: number): number {
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number {
    this.need(1);
    return this.data[this.pos++];
  }

  private u32(): number {
    this.need(4);
    return this.view.getUint32(this.advance(4), true);
  }

  private i32(): number {
    this.need(4);
    return this.view.getInt32(this.advance(4), true);
  }

  /** A 64-bit length, kept as bigint so 2^40 or 2^63 can be compared without loss. */
  private u64(): bigint {
    this.need(8);
    return this.view.getBigUint64(this.advance(8), true);
  }

  /** Checks a declared length against the remaining bytes *before* any allocation. */
  private checkLength(n: number | bigint, what: string): number {
    const remaining = this.data.length - this.pos;
    if (BigInt(n) > BigInt(remaining)) throw this.invalid(`${what} declares ${n} bytes but only ${remaining} remain`);
    return Number(n);
  }

  private bytes(n: number | bigint, what: string): Uint8Array {
    const len = this.checkLength(n, what);
    return this.data.subarray(this.advance(len), this.pos);
  }

  private text(n: number | bigint, what: string): string {
    const raw = this.bytes(n, what);
    try {
      return utf8.decode(raw);
    } catch {
      throw this.invalid(`${what} is not valid UTF-8`);
    }
  }

  /** Little-endian two's-complement integer (LONG1/LONG4); a number when it is a safe integer. */
  private long(n: number, what: string): number | bigint {
    const raw = this.bytes(n, what);
    if (raw.length === 0) return 0;
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]);
    if (raw[raw.length - 1] & 0x80) v -= 1n << BigInt(8 * raw.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** A newline-terminated ASCII line (GLOBAL operands), length-capped. */
  private line(what: string): string {
    const end = Math.min(this.data.length, this.pos + MAX_GLOBAL_LINE + 1);
    const nl = this.data.subarray(this.pos, end).indexOf(0x0a);
    if (nl < 0 && end === this.data.length) throw this.invalid(`truncated: ${what} has no terminating newline`);
    if (nl < 0) throw this.invalid(`${what} is longer than ${MAX_GLOBAL_LINE} bytes`);
    const raw = this.data.subarray(this.pos, this.pos + nl);
    this.pos += nl + 1;
    for (const b of raw) if (b < 0x20 || b > 0x7e) throw this.invalid(`${what} contains a non-printable byte`);
    return String.fromCharCode(...raw);
  }

  // --- value validation ----------------------------------------------------------------------

  private index(v: PickleValue, what: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw this.invalid(`${what} must be a non-negative integer, got ${typeof v === 'number' || typeof v === 'bigint' ? String(v) : describePickleValue(v)}`);
    }
    return v;
  }

  private intTuple(v: PickleValue, what: string): number[] {
    if (!(v instanceof PickleTuple)) throw this.invalid(`${what} is a ${describePickleValue(v)}, not a tuple`);
    if (v.items.length > MAX_TENSOR_DIMS) throw this.invalid(`${what} has ${v.items.length} dimensions (max ${MAX_TENSOR_DIMS})`);
    return v.items.map((x) => this.index(x, what));
  }

  // --- errors --------------------------------------------------------------------------------

  private invalid(message: string): M3Error {
    return new M3Error('MODEL_FILE_INVALID', `${this.fileName}: invalid pickle at byte ${this.opStart}: ${message}`, { file: this.fileName });
  }

  private unsafe(message: string): M3Error {
    return new M3Error('UNSAFE_PICKLE', `Refusing to load ${this.fileName}: ${message} (pickle byte ${this.opStart})`, { file: this.fileName });
  }
}
