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

/**
 * Which hash proves a file: sha256 for an LFS file (`X-Linked-Etag`), git's blob sha1 for a
 * regular file (`ETag`), or `'none'` when the etag is not a hash of that kind (a mirror or
 * proxy that invents its own etags). `'none'` is a case to handle, never a check to skip:
 * see {@link assertVerifiable}.
 */
export function hashKind(meta: Pick<FileMetadata, 'etag' | 'lfs'>): 'sha256' | 'git-sha1' | 'none' {
  if (meta.lfs) return /^[0-9a-f]{64}$/.test(meta.etag) ? 'sha256' : 'none';
  return /^[0-9a-f]{40}$/.test(meta.etag) ? 'git-sha1' : 'none';
}

/**
 * Refuses to download a file whose etag is not a content hash. Such a file could not be
 * verified (a corrupted body would be cached and returned as if it were good), and its blob
 * name would not identify its content (two files with the same made-up etag would share one
 * blob). The Hub and faithful mirrors always send hashes.
 */
export function assertVerifiable(meta: Pick<FileMetadata, 'etag' | 'lfs'>, f: FileRequest): void {
  if (hashKind(meta) !== 'none') return;
  const header = meta.lfs ? 'X-Linked-Etag' : 'ETag';
  const want = meta.lfs ? 'the sha256 of an LFS file' : "the git blob sha1 of a regular file";
  throw new M3Error(
    'INTEGRITY',
    `cannot verify ${f.repo}/${f.path} at ${f.revision}: the server's ${header} ${JSON.stringify(meta.etag.slice(0, 80))} is not ${want}, ` +
      'so a damaged download could not be detected; refusing to download it. HF_ENDPOINT may point at a mirror or proxy that rewrites ' +
      'the Hub\'s headers; use one that keeps them, or fetch the files another way and pass the local model directory.',
    { file: f.path },
  );
}

/** The INTEGRITY error for a file whose `what` (size, hash) is not the expected one. */
export function integrityError(f: FileRequest, what: string, expected: string | number, actual: string | number): M3Error {
  return new M3Error(
    'INTEGRITY',
    `integrity check failed for ${f.repo}/${f.path} at ${f.revision}: ${what} expected ${expected}, got ${actual}. ` +
      'The downloaded file was deleted; run the download again (if it keeps failing, a proxy or mirror may be altering files).',
    { file: f.path },
  );
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
    throw integrityError(f, what, expected, actual);
  };
  const size = (await stat(tmp)).size;
  if (meta.size !== undefined && size !== meta.size) await fail('size', meta.size, size);
  const kind = hashKind(meta);
  // assertVerifiable refused 'none' before the download; refuse it here too, never skip the check.
  if (kind === 'none') await fail('content hash', `a hash as ${meta.lfs ? 'X-Linked-Etag' : 'ETag'}`, JSON.stringify(meta.etag));
  else {
    const actual = await hashFile(tmp, kind);
    if (actual !== meta.etag) await fail(kind, meta.etag, actual);
  }
}
