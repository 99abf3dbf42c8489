/**
 * Integrity checks of a finished download, before it becomes a blob.
 *
 * The blob's name is the server's etag, which *is* a content hash: sha256 for LFS files
 * (`X-Linked-Etag`), and git's blob sha1, `sha1("blob <len>\0" + content)`, for regular files.
 * Checking the hash therefore proves the file is the one the cache name promises. huggingface_hub
 * only checks the size; we hash too because a corrupt blob would be reused forever and the cost
 * (one sequential read of the file, from the page cache) is small next to the download.
 *
 * The hash is computed from the file on disk rather than while streaming: it then covers bytes
 * kept from an interrupted earlier download (possibly by another process) the same way.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { M3Error } from '../errors.js';
import type { FileMetadata, FileRequest } from './hub-client.js';

/** Which hash proves a file, or undefined when the etag is not a hash we know (a mirror's own etag). */
export function hashKind(meta: Pick<FileMetadata, 'etag' | 'lfs'>): 'sha256' | 'git-sha1' | undefined {
  if (meta.lfs) return /^[0-9a-f]{64}$/.test(meta.etag) ? 'sha256' : undefined;
  return /^[0-9a-f]{40}$/.test(meta.etag) ? 'git-sha1' : undefined;
}

/** Hex digest of a file: plain sha256, or git's blob sha1 (with its `blob <size>\0` header). */
export async function hashFile(path: string, kind: 'sha256' | 'git-sha1'): Promise<string> {
  const hash = createHash(kind === 'sha256' ? 'sha256' : 'sha1');
  if (kind === 'git-sha1') hash.update(`blob ${(await stat(path)).size}\0`);
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Checks size then hash of the finished temp file. On a mismatch the file is deleted (resuming
 * from corrupt bytes would only fail again) and INTEGRITY is thrown naming file, expected and actual.
 */
export async function verifyDownload(tmp: string, meta: FileMetadata, f: FileRequest): Promise<void> {
  const fail = async (what: string, expected: string | number, actual: string | number): Promise<never> => {
    await rm(tmp, { force: true });
    throw new M3Error(
      'INTEGRITY',
      `integrity check failed for ${f.repo}/${f.path} at ${f.revision}: ${what} expected ${expected}, got ${actual}. ` +
        'The downloaded file was deleted; run the download again (if it keeps failing, a proxy or mirror may be altering files).',
      { file: f.path },
    );
  };
  const size = (await stat(tmp)).size;
  if (meta.size !== undefined && size !== meta.size) await fail('size', meta.size, size);
  const kind = hashKind(meta);
  if (kind) {
    const actual = await hashFile(tmp, kind);
    if (actual !== meta.etag) await fail(kind, meta.etag, actual);
  }
}
