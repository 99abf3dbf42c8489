/**
 * Checks that a directory the CLI will write (an index's `--out`) can be written, before any
 * expensive work: loading the model and encoding a corpus only to fail at the save wastes
 * minutes. Nothing is left behind here (a probe directory is created and removed); the save
 * creates the directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rmdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { describeFsError } from '../util/fs-errors.js';
import { UserError } from './user-error.js';

/**
 * Throws a one-line UserError naming `flag` and the path when `dir` is a file, or when it (or
 * the nearest existing directory above it) cannot be written: read-only file system, no
 * permission, a file in the way.
 */
export async function assertWritableDirectory(dir: string, flag: string): Promise<void> {
  const target = resolve(dir);
  let p = target;
  for (;;) {
    const st = await stat(p).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined; // look further up
      throw new UserError(`cannot write ${flag} ${dir}: ${p}: ${describeFsError(err)}`);
    });
    if (st) {
      if (!st.isDirectory()) {
        throw new UserError(p === target ? `cannot write ${flag} ${dir}: it is a file, not a directory` : `cannot write ${flag} ${dir}: ${p} is a file, not a directory`);
      }
      // A real probe, not access(2): root passes access() on file systems that refuse new
      // entries (sysfs, procfs), and a read-only mount is only certain when a write is tried.
      const probe = join(p, `.bgem3-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
      try {
        await mkdir(probe);
      } catch (err) {
        throw new UserError(`cannot write ${flag} ${dir}: ${p === target ? 'the directory' : p}: ${describeFsError(err)}`);
      }
      await rmdir(probe).catch(() => undefined);
      return;
    }
    const parent = dirname(p);
    if (parent === p) return;
    p = parent;
  }
}
