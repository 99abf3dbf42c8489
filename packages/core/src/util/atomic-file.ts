/**
 * Crash-safe file replacement.
 *
 * Why: an index file that is overwritten in place is unreadable if the process dies (or the
 * machine loses power) half-way through. Writing a temporary file in the same directory,
 * flushing it, renaming it over the target and then flushing the directory means a reader
 * always finds either the complete old file or the complete new one: `rename(2)` within one
 * file system is atomic, and the two fsyncs order the data before the rename on disk.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { FileSystemError, fsError, isErrnoError } from './fs-errors.js';

/** What {@link writeFileAtomic} accepts as content: bytes, text (UTF-8), or (async) iterables of them. */
export type AtomicFileContent =
  | Uint8Array
  | string
  | Iterable<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>;

/** Options of {@link writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /** File mode of a newly created file (default 0o644, before the umask). */
  mode?: number;
  /**
   * Flush the data and the directory entry to stable storage (default true). Turning it off keeps
   * the atomic rename (no torn file after a process crash) but not durability after a power loss.
   */
  fsync?: boolean;
}

// Small chunks are gathered into one buffer of this size so that an index made of many small
// pieces (e.g. one posting list per term) costs a few large write(2) calls, not thousands.
const COALESCE_BYTES = 1 << 20;

const utf8 = new TextEncoder();

async function writeAll(fh: FileHandle, bytes: Uint8Array, target: string): Promise<void> {
  let off = 0;
  try {
    while (off < bytes.byteLength) {
      const { bytesWritten } = await fh.write(bytes, off, bytes.byteLength - off);
      off += bytesWritten;
    }
  } catch (err) {
    throw fsError(err, 'write', target);
  }
}

function isIterable(x: unknown): x is Iterable<Uint8Array | string> {
  return x != null && typeof (x as Iterable<unknown>)[Symbol.iterator] === 'function';
}

/**
 * Flushes a directory's entries (the result of a rename or create) to disk. Platforms that cannot
 * open or fsync a directory (Windows) are ignored: there the rename itself is the best available.
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EACCES' && code !== 'ENOTSUP') throw err;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Replaces `path` atomically with `content`: a reader (or a process restarted after a crash)
 * sees either the previous file or the complete new one, never a truncated mix.
 *
 * The content is written to `.<name>.<pid>.<random>.tmp` in the same directory (same file system,
 * so the rename is atomic), flushed with fsync, renamed over `path`, and the directory is then
 * flushed so the rename itself survives a power loss. On any error the temporary file is removed
 * and the error is rethrown; `path` is left untouched. A process killed mid-write leaves only the
 * temporary file behind (never a damaged `path`). File-system errors are {@link FileSystemError}s
 * naming `path` and saying what happened (`no space left on the device (ENOSPC)`); they keep
 * Node's `code`. Errors thrown by the content's iterator pass through unchanged.
 *
 * Chunks may be (async) iterated lazily, so a large index can be streamed without first being
 * copied into one buffer. Chunks must not be modified until the returned promise resolves.
 */
export async function writeFileAtomic(
  path: string,
  content: AtomicFileContent,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const target = resolve(path);
  const dir = dirname(target);
  const tmp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const doSync = options.fsync !== false;
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'wx', options.mode ?? 0o644);
  } catch (err) {
    if (isErrnoError(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) {
      throw new FileSystemError('write', target, err, `the directory ${dir} does not exist (${err.code})`);
    }
    throw fsError(err, 'write', target);
  }
  let closed = false;
  try {
    const buf = new Uint8Array(COALESCE_BYTES);
    let used = 0;
    const push = async (piece: Uint8Array | string): Promise<void> => {
      const bytes = typeof piece === 'string' ? utf8.encode(piece) : piece;
      if (bytes.byteLength >= COALESCE_BYTES / 4) {
        if (used > 0) {
          await writeAll(fh, buf.subarray(0, used), target);
          used = 0;
        }
        await writeAll(fh, bytes, target);
        return;
      }
      if (used + bytes.byteLength > COALESCE_BYTES) {
        await writeAll(fh, buf.subarray(0, used), target);
        used = 0;
      }
      buf.set(bytes, used);
      used += bytes.byteLength;
    };
    if (typeof content === 'string' || content instanceof Uint8Array) {
      await push(content);
    } else if (isIterable(content)) {
      for (const piece of content) await push(piece);
    } else {
      for await (const piece of content) await push(piece);
    }
    if (used > 0) await writeAll(fh, buf.subarray(0, used), target);
    try {
      if (doSync) await fh.sync();
      await fh.close();
      closed = true;
    } catch (err) {
      // Delayed write errors (ENOSPC on a network or copy-on-write file system) surface here.
      throw fsError(err, 'write', target);
    }
    try {
      await rename(tmp, target);
    } catch (err) {
      throw fsError(err, 'replace', target);
    }
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  if (doSync) {
    try {
      await fsyncDirectory(dir);
    } catch (err) {
      throw fsError(err, 'flush the directory', dir);
    }
  }
}
