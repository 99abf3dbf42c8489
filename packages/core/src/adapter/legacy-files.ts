/**
 * The private single-file sparse retriever format of the 0.1 adapters is gone: persistence is the
 * store's. A file of that format is recognised by its magic and refused with how to rebuild.
 * Only the first bytes are read, so a file of any size (or a hostile one) costs nothing.
 */
import { open } from 'node:fs/promises';
import { M3Error } from './core.js';

const MAGIC_BYTES = 8;

/**
 * Throws INDEX_INVALID for `path`: "a `what` 0.1" when it starts with `magic`, else "not
 * a saved retriever"; either way followed by `howToRebuild`. Unreadable paths name the error.
 */
export async function refuseLegacyFile(path: string, magic: string, what: string, howToRebuild: string): Promise<never> {
  let head = '';
  try {
    const handle = await open(path, 'r');
    try {
      const buf = Buffer.alloc(MAGIC_BYTES);
      const { bytesRead } = await handle.read(buf, 0, MAGIC_BYTES, 0);
      head = buf.subarray(0, bytesRead).toString('latin1');
    } finally {
      await handle.close();
    }
  } catch (cause) {
    throw new M3Error('INDEX_INVALID', `${path}: cannot read it (${(cause as NodeJS.ErrnoException).code ?? String(cause)})`, { file: path, cause });
  }
  if (head === magic) throw new M3Error('INDEX_INVALID', `${path} is a ${what} 0.1, which this version no longer reads: ${howToRebuild}`, { file: path });
  throw new M3Error('INDEX_INVALID', `${path} is not a saved retriever: ${howToRebuild}`, { file: path });
}
