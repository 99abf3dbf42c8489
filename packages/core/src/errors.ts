/**
 * Error types thrown by @bgem3/core. Every message names what is wrong and, where it can,
 * what to do about it; `code` is stable for programmatic handling.
 */

/** Codes carried by {@link M3Error}. */
export type M3ErrorCode =
  | 'MODEL_NOT_FOUND' // a needed model file is missing
  | 'MODEL_FILE_INVALID' // a model file (ONNX, tokenizer, .pt, config) is unreadable or corrupt
  | 'UNSAFE_PICKLE' // a .pt pickle asks for something outside the allow-list
  | 'LAYOUT_UNSUPPORTED' // an ONNX graph whose inputs/outputs match no supported layout
  | 'INVALID_ARGUMENT' // a caller passed a value of the right type but an unusable value
  | 'INDEX_INVALID' // an index file is truncated, corrupt, from another version or model
  | 'INDEX_MISMATCH' // an index and a model (or two indexes) disagree on dimension/vocabulary
  | 'INDEX_LOCKED' // another writer (process or M3Index) holds an index's writer lock
  | 'HUB_ERROR' // the Hugging Face Hub (or a mirror) refused or failed a request
  | 'OFFLINE_MISS' // offline mode and the cache lacks a needed file
  | 'INTEGRITY' // a downloaded file's size or sha256 does not match
  | 'ABORTED' // the caller's AbortSignal fired
  | 'WORKER_FAILED' // an encoder worker thread died
  | 'REMOTE_FAILED'; // an M3 server (RemoteEncoder's endpoint) was unreachable, timed out or answered an error

/** The brand of every M3Error, shared by every copy of core (ESM and CJS builds, two installs). */
const M3_ERROR_BRAND = Symbol.for('@bgem3/core.M3Error');

/** Base error of @bgem3/core: a message a user can act on plus a stable {@link M3ErrorCode}. */
export class M3Error extends Error {
  /**
   * Whether `value` is an M3Error of any copy of @bgem3/core: the ESM and the CJS build are two
   * module graphs with two M3Error classes, so `instanceof` fails across them; this does not.
   */
  static isInstance(value: unknown): value is M3Error {
    return value !== null && typeof value === 'object' && (value as Record<symbol, unknown>)[M3_ERROR_BRAND] === true;
  }

  static {
    Object.defineProperty(M3Error.prototype, M3_ERROR_BRAND, { value: true });
  }

  readonly code: M3ErrorCode;
  /** The file the error is about, when there is one. */
  readonly file?: string;
  constructor(code: M3ErrorCode, message: string, options?: { file?: string; cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'M3Error';
    this.code = code;
    if (options?.file !== undefined) this.file = options.file;
  }
}

/** Throws a RangeError-style {@link M3Error} with code INVALID_ARGUMENT. */
export function invalidArgument(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}
