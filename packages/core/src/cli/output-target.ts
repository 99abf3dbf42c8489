/**
 * Checks that a directory the CLI will write (an index's `--out`) can be written, before any
 * expensive work: loading the model and encoding a corpus only to fail at the save wastes
 * minutes. Nothing is created here; the save creates the directory.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
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
      try {
        await access(p, constants.W_OK);
      } catch (err) {
        throw new UserError(`cannot write ${flag} ${dir}: ${p === target ? 'the directory' : p}: ${describeFsError(err)}`);
      }
      return;
    }
    const parent = dirname(p);
    if (parent === p) return;
    p = parent;
  }
}
