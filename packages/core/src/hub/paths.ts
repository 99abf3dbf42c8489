/**
 * Validation of every string that ends up in a cache path or a Hub URL.
 *
 * Why: repo ids, file paths and revisions come from callers, and etags and commits come from a
 * server (or a mirror, or a proxy) that we do not control. Each of them becomes a path segment
 * under the cache directory, so a `..`, an absolute path, a backslash (a separator on Windows)
 * or a NUL could write outside it. We refuse such strings up front instead of sanitising them,
 * so the cache layout stays exactly huggingface_hub's and nothing is silently renamed.
 */
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { M3Error } from '../errors.js';

/** huggingface_hub's repo id rule: optional `org/`, word chars, `-` and `.`, no `--` or `..`. */
const REPO_PART = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
/** What we accept from a server as an etag or commit: plain tokens only. */
const SAFE_TOKEN = /^[A-Za-z0-9_-]{1,128}$/;
/** A full git commit hash (sha1), as the Hub returns in `X-Repo-Commit`. */
const COMMIT_HASH = /^[0-9a-f]{40}$/;

function repoIdProblem(repo: string, requireOrg: boolean): string | undefined {
  if (typeof repo !== 'string' || repo.length === 0) return 'it is empty';
  if (repo.length > 96) return 'it is longer than 96 characters';
  const parts = repo.split('/');
  if (parts.length > 2) return 'it has more than one "/"';
  if (requireOrg && parts.length !== 2) return 'it is not of the form org/name';
  if (repo.includes('--') || repo.includes('..')) return 'it contains "--" or ".."';
  if (repo.endsWith('.git')) return 'it ends with .git';
  if (!parts.every((p) => REPO_PART.test(p))) return 'only letters, digits, "_", "-" and "." are allowed';
  return undefined;
}

/** True when `repo` is a syntactically valid `org/name` repo id (no file-system check). */
export function looksLikeRepoId(repo: string): boolean {
  return repoIdProblem(repo, true) === undefined;
}

/** Throws INVALID_ARGUMENT unless `repo` is a valid Hub repo id (`org/name` or `name`). */
export function assertRepoId(repo: string): void {
  const problem = repoIdProblem(repo, false);
  if (problem) throw new M3Error('INVALID_ARGUMENT', `invalid Hub repo id ${JSON.stringify(repo)}: ${problem}`);
}

/**
 * Why a relative POSIX path is unsafe as a path under a cache directory, or undefined when it is
 * safe. Rejects absolute paths, drive letters, backslashes, NUL and other control characters,
 * and empty, `.` or `..` segments.
 */
function relPathProblem(p: string): string | undefined {
  if (typeof p !== 'string' || p.length === 0) return 'it is empty';
  if (p.length > 1024) return 'it is too long';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) return 'it contains a control character';
  if (p.includes('\\')) return 'it contains a backslash';
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) return 'it is absolute';
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') return 'it has an empty, "." or ".." segment';
  }
  return undefined;
}

/** Throws INVALID_ARGUMENT unless `path` is a safe relative repo path (e.g. `onnx/model.onnx`). */
export function assertRepoFilePath(path: string): void {
  const problem = relPathProblem(path);
  if (problem) throw new M3Error('INVALID_ARGUMENT', `invalid file path in repo ${JSON.stringify(path)}: ${problem}`);
}

/** Throws INVALID_ARGUMENT unless `revision` is safe (it becomes `refs/<revision>`; `/` is allowed as in `refs/pr/1`). */
export function assertRevision(revision: string): void {
  const problem = relPathProblem(revision);
  if (problem) throw new M3Error('INVALID_ARGUMENT', `invalid revision ${JSON.stringify(revision)}: ${problem}`);
}

/**
 * Checks an etag or commit that came from a server or from a cache file before it is used as a
 * file name; throws HUB_ERROR naming where it came from. The value is quoted with JSON.stringify
 * and cut, so a hostile header cannot inject control characters into the message.
 */
export function assertSafeToken(kind: 'etag' | 'commit', value: string, where: string): void {
  if (!SAFE_TOKEN.test(value)) {
    const shown = JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
    throw new M3Error('HUB_ERROR', `refusing ${kind} ${shown} from ${where}: only letters, digits, "_" and "-" are allowed in a cache file name`);
  }
}

/** True for a full 40-hex commit hash (a revision that can be served from the cache alone). */
export function isCommitHash(s: string): boolean {
  return COMMIT_HASH.test(s);
}

/** huggingface_hub's folder name for a model repo: `models--{org}--{name}`. */
export function repoFolderName(repo: string): string {
  return `models--${repo.split('/').join('--')}`;
}

/**
 * Joins already-validated segments under `root` and checks the result is still inside it.
 * A second line of defence: validation above should make the check impossible to fail.
 */
export function joinInside(root: string, ...parts: string[]): string {
  const base = resolve(root);
  const full = resolve(base, ...parts);
  const rel = relative(base, full);
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) {
    throw new M3Error('INVALID_ARGUMENT', `path ${JSON.stringify(parts.join('/'))} would leave the cache directory ${base}`);
  }
  return full;
}

/** The resolve URL of a file: `{endpoint}/{repo}/resolve/{revision}/{path}`, each part percent-encoded. */
export function resolveUrl(endpoint: string, repo: string, revision: string, path: string): string {
  const enc = (s: string) => s.split('/').map(encodeURIComponent).join('/');
  // The revision is one URL segment even when it holds "/" (refs/pr/1), as in huggingface_hub.
  return `${endpoint}/${enc(repo)}/resolve/${encodeURIComponent(revision)}/${enc(path)}`;
}
