/**
 * File-system errors that name the file and say what happened in words.
 *
 * Why: Node's errors read `ENOSPC: no space left on device, write` — no path for a write on a
 * file handle, and a code rather than a cause a user can act on. Worse, `mkdir(…, {recursive})`
 * on a read-only file system reports `ENOENT` for a directory it could not create. Everything the
 * library or the CLI writes goes through {@link ensureDirectory} and {@link FileSystemError}, so
 * the message always says which path, what was being done, and why, in words.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** The errno codes we describe in words (others are shown with Node's own text). */
const WORDS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exceeded',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'the operation is not permitted',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a parent of it is not a directory',
  EISDIR: 'it is a directory',
  EEXIST: 'it already exists',
  EMFILE: 'too many open files in this process',
  ENFILE: 'too many open files on the system',
  EFBIG: 'the file is too large for the file system',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links',
  EIO: 'an input/output error of the device',
  EBUSY: 'it is busy',
  EXDEV: 'it is on another file system',
};

/** A Node system error (`code` like `ENOSPC`). */
export function isErrnoError(err: unknown): err is NodeJS.ErrnoException & { code: string } {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((err as NodeJS.ErrnoException).code as string);
}

/** What happened, in words, with the code: `no space left on the device (ENOSPC)`. */
export function describeFsError(err: unknown): string {
  if (!isErrnoError(err)) return err instanceof Error ? err.message : String(err);
  const words = WORDS[err.code];
  if (words) return `${words} (${err.code})`;
  // Node's message starts with the code: "EXYZ: text, syscall 'path'".
  const text = err.message.replace(/^E[A-Z0-9]+: /, '').replace(/, \w+ '.*'$/, '');
  return `${text} (${err.code})`;
}

/**
 * A file-system error that names its path and says what was being done. Keeps Node's `code`,
 * `syscall` and `path`, so code that tests `err.code === 'ENOENT'` keeps working.
 */
export class FileSystemError extends Error {
  readonly code: string;
  readonly path: string;
  readonly syscall: string | undefined;
  constructor(action: string, path: string, cause: NodeJS.ErrnoException & { code: string }, words?: string) {
    super(`cannot ${action} ${path}: ${words ?? describeFsError(cause)}`, { cause });
    this.name = 'FileSystemError';
    this.code = cause.code;
    this.path = path;
    this.syscall = cause.syscall;
  }
}

/**
 * Rethrows `err` as a {@link FileSystemError} about `path` when it is a system error (already
 * described errors and non-system errors pass unchanged).
 */
export function fsError(err: unknown, action: string, path: string): unknown {
  if (err instanceof FileSystemError || !isErrnoError(err)) return err;
  return new FileSystemError(action, path, err);
}

/**
 * `mkdir -p` that reports the real cause: each missing level is created on its own, so a
 * read-only file system is `EROFS` on the first directory it could not create (Node's
 * recursive mkdir says `ENOENT` there), and a file in the way is `ENOTDIR` naming it.
 * @throws FileSystemError naming the directory that could not be created
 */
export async function ensureDirectory(dir: string): Promise<void> {
  const target = resolve(dir);
  const missing: string[] = [];
  let p = target;
  for (;;) {
    try {
      const st = await stat(p);
      if (!st.isDirectory()) {
        const cause = Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${target}'`), { code: 'ENOTDIR', path: p, syscall: 'mkdir' });
        throw new FileSystemError('create the directory', target, cause, `${p} is not a directory (ENOTDIR)`);
      }
      break;
    } catch (err) {
      if (err instanceof FileSystemError) throw err;
      // ENOTDIR: a file is in the way further up; walking up finds it and names it.
      if (!isErrnoError(err) || (err.code !== 'ENOENT' && err.code !== 'ENOTDIR')) throw fsError(err, 'create the directory', p);
      const parent = dirname(p);
      missing.push(p);
      if (parent === p) break;
      p = parent;
    }
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d);
    } catch (err) {
      if (isErrnoError(err) && err.code === 'EEXIST') continue; // created meanwhile (by another process)
      throw fsError(err, 'create the directory', d);
    }
  }
}
