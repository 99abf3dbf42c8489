/**
 * huggingface_hub's cache layout, so that models downloaded by Python tools are reused here and
 * the other way round:
 *
 *   <cache>/models--{org}--{name}/
 *     blobs/<etag>                     file contents, named by etag (sha256 for LFS, git sha1 otherwise)
 *     blobs/<etag>.incomplete          a download in progress (resumed from its size)
 *     snapshots/<commit>/<path>        relative symlink to ../../blobs/<etag> (a copy where symlinks fail)
 *     refs/<revision>                  the commit the revision last resolved to
 *     .no_exist/<commit>/<path>        empty marker: the repo has no such file at that commit
 *   <cache>/.locks/models--{org}--{name}/<etag>.bgem3.lock   our per-blob lock (a directory)
 *
 * The lock lives under `.locks` like huggingface_hub's, but with its own name: Python's lock is
 * a `filelock` file and ours a proper-lockfile directory; sharing a name would make each tool
 * misread the other's lock (proper-lockfile would even delete Python's file as "stale").
 */
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import { ensureDirectory, fsError } from '../util/fs-errors.js';
import { assertSafeToken, isCommitHash, joinInside, repoFolderName } from './paths.js';

/** True when `p` exists and is (or, through symlinks, points to) a regular file. */
export async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** Writes `data` to `path` through a temp file and a rename, so readers never see half a file. */
async function writeAtomic(path: string, data: string): Promise<void> {
  await ensureDirectory(dirname(path));
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    throw fsError(err, 'write the cache file', path);
  }
}

/** Paths and operations of one repo's folder in the cache. All names passed in must be validated. */
export class RepoCache {
  /** `<cache>/models--org--name`. */
  readonly root: string;
  /** `<cache>/.locks/models--org--name`. */
  readonly locksDir: string;

  constructor(
    readonly cacheDir: string,
    readonly repo: string,
  ) {
    this.root = joinInside(cacheDir, repoFolderName(repo));
    this.locksDir = joinInside(cacheDir, '.locks', repoFolderName(repo));
  }

  blobPath(etag: string): string {
    return joinInside(this.root, 'blobs', etag);
  }

  /** The temp file of a download; huggingface_hub's name, so either tool can resume the other's bytes. */
  incompletePath(etag: string): string {
    return `${this.blobPath(etag)}.incomplete`;
  }

  lockPath(etag: string): string {
    return joinInside(this.locksDir, `${etag}.bgem3.lock`);
  }

  snapshotDir(commit: string): string {
    return joinInside(this.root, 'snapshots', commit);
  }

  pointerPath(commit: string, path: string): string {
    return joinInside(this.root, 'snapshots', commit, ...path.split('/'));
  }

  /** The commit recorded for `revision`, or undefined. A malformed ref file is an error, not a miss. */
  async readRef(revision: string): Promise<string | undefined> {
    const refFile = joinInside(this.root, 'refs', ...revision.split('/'));
    let text: string;
    try {
      text = await readFile(refFile, 'utf8');
    } catch {
      return undefined;
    }
    const commit = text.trim();
    assertSafeToken('commit', commit, `cache file ${refFile}`);
    return commit;
  }

  /** Records `revision → commit` (skipped when unchanged, like huggingface_hub). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    if ((await this.readRef(revision).catch(() => undefined)) === commit) return;
    await writeAtomic(joinInside(this.root, 'refs', ...revision.split('/')), commit);
  }

  /**
   * Looks a file up without the network: the revision is taken as a commit when it is a full
   * hash, else resolved through `refs/<revision>`. Returns the snapshot path, or undefined.
   */
  async findCached(revision: string, path: string): Promise<{ path: string; commit: string } | undefined> {
    const commit = isCommitHash(revision) ? revision : await this.readRef(revision);
    if (commit === undefined) return undefined;
    const pointer = this.pointerPath(commit, path);
    return (await isFile(pointer)) ? { path: pointer, commit } : undefined;
  }

  /** Records that the repo has no `path` at `commit` (huggingface_hub's `.no_exist` marker). */
  async markMissing(commit: string, path: string): Promise<void> {
    const marker = joinInside(this.root, '.no_exist', commit, ...path.split('/'));
    await ensureDirectory(dirname(marker));
    await writeFile(marker, '').catch((err) => {
      throw fsError(err, 'write the cache file', marker);
    });
  }

  /**
   * Makes `snapshots/<commit>/<path>` point at the blob: a relative symlink (the snapshot folder
   * stays valid if the cache is moved), or a copy where the file system refuses symlinks
   * (Windows without developer mode, some network shares). Created under a temp name and
   * renamed, so a concurrent reader sees either no file or the full one.
   */
  async linkSnapshot(etag: string, commit: string, path: string, link: typeof symlink = symlink): Promise<string> {
    const blob = this.blobPath(etag);
    const pointer = this.pointerPath(commit, path);
    await ensureDirectory(dirname(pointer));
    const tmp = `${pointer}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await link(relative(dirname(pointer), blob), tmp, 'file');
    } catch {
      await rm(tmp, { force: true });
      await copyFile(blob, tmp).catch((err) => {
        throw fsError(err, 'write the cache file', pointer);
      });
    }
    try {
      await rename(tmp, pointer);
    } catch (err) {
      await rm(tmp, { force: true });
      // Another process may have won the race with an identical link: that is fine.
      if (!(await isFile(pointer))) throw fsError(err, 'write the cache file', pointer);
    }
    return pointer;
  }
}
