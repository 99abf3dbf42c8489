/**
 * Entry point of the Hub downloader: from a list of repo files to local paths, the way
 * huggingface_hub's `hf_hub_download` decides for each file:
 *
 * - revision is a commit hash and the snapshot has the file → no network at all;
 * - offline → the cache only (`refs/<revision>` → `snapshots/<commit>/<path>`), else OFFLINE_MISS;
 * - online → HEAD for commit and etag; snapshot file present → done; blob present → link it;
 *   otherwise download the blob (download.ts) and link it;
 * - network down (not an HTTP error) → fall back to the cached file when there is one.
 */
import { existsSync } from 'node:fs';
import { M3Error } from '../errors.js';
import { isFile, RepoCache } from './cache.js';
import { resolveSettings, type HubSettings } from './config.js';
import { ensureBlob } from './download.js';
import { fetchMetadata, HubRequestError, type FileRequest } from './hub-client.js';
import { assertRepoFilePath, assertRepoId, assertRevision, isCommitHash, looksLikeRepoId } from './paths.js';
import { anySignal } from './signals.js';
import { resolveTransferLimits, type TransferLimits } from './transfer-limits.js';
import type { HubOptions, ModelFileSpec, ResolvedModelFiles } from './types.js';

/** Files resolved at once per call; HEADs are latency-bound, and a few parallel downloads fill a link. */
const CONCURRENCY = 4;

interface ResolvedEntry {
  spec: ModelFileSpec;
  revision: string;
  path: string;
  commit: string;
  snapshotDir: string;
}

/**
 * True when `s` looks like a Hub repo id (`org/name`) and is not an existing local path, so
 * `BAAI/bge-m3` is a repo unless the current directory has a `BAAI/bge-m3` folder.
 */
export function isRepoId(s: string): boolean {
  return typeof s === 'string' && looksLikeRepoId(s) && !existsSync(s);
}

/** Offline, one or more required files are not cached: one error listing them all (in spec order). */
function offlineMiss(settings: HubSettings, missing: FileRequest[]): M3Error {
  const list = missing.map((f) => `${f.repo}/${f.path} at ${f.revision}`).join(', ');
  const what = missing.length === 1 ? `${list} is` : `${missing.length} files are`;
  return new M3Error(
    'OFFLINE_MISS',
    `offline mode (HF_HUB_OFFLINE or offline: true) and ${what} not in the cache at ${settings.cacheDir}` +
      `${missing.length === 1 ? '' : `: ${list}`}. Download ${missing.length === 1 ? 'it' : 'them'} once with network access ` +
      '(unset HF_HUB_OFFLINE, or pass offline: false), or pass the path of a local model directory instead of a repo id.',
    { file: missing[0].path },
  );
}

/** Thrown by resolveOne offline; collected by resolveAll into one {@link offlineMiss}. */
class CacheMiss extends Error {
  constructor(readonly request: FileRequest) {
    super('cache miss');
  }
}

/** One file → its snapshot path, or undefined for an optional file the repo does not have. */
async function resolveOne(spec: ModelFileSpec, settings: HubSettings, limits: TransferLimits, signal: AbortSignal): Promise<ResolvedEntry | undefined> {
  const f: FileRequest = { repo: spec.repo, revision: spec.revision ?? settings.revision, path: spec.path };
  const cache = new RepoCache(settings.cacheDir, f.repo);
  const entry = (path: string, commit: string): ResolvedEntry => ({ spec, revision: f.revision, path, commit, snapshotDir: cache.snapshotDir(commit) });

  // A commit never changes: a file already in its snapshot needs no request, online or not.
  if (isCommitHash(f.revision)) {
    const pointer = cache.pointerPath(f.revision, f.path);
    if (await isFile(pointer)) return entry(pointer, f.revision);
  }
  if (settings.offline) {
    const hit = await cache.findCached(f.revision, f.path);
    if (hit) return entry(hit.path, hit.commit);
    if (spec.optional) return undefined;
    throw new CacheMiss(f);
  }

  let meta;
  try {
    meta = await fetchMetadata(settings, f, signal);
  } catch (err) {
    if (err instanceof HubRequestError) {
      const { status, hubErrorCode, commit, transient } = err.info;
      if (spec.optional && status === 404 && hubErrorCode !== 'RepoNotFound' && hubErrorCode !== 'RevisionNotFound') {
        if (commit) await cache.markMissing(commit, f.path).catch(() => {}); // best effort, as huggingface_hub
        return undefined;
      }
      if (transient) {
        // Network down or Hub failing: a cached copy is better than an error (huggingface_hub does the same).
        const hit = await cache.findCached(f.revision, f.path);
        if (hit) return entry(hit.path, hit.commit);
      }
    }
    throw err;
  }

  await cache.writeRef(f.revision, meta.commit);
  const pointer = cache.pointerPath(meta.commit, f.path);
  if (await isFile(pointer)) return entry(pointer, meta.commit);
  await ensureBlob({ settings, cache, meta, file: f, signal, limits });
  return entry(await cache.linkSnapshot(meta.etag, meta.commit, f.path), meta.commit);
}

/** Checks every spec before any request, and drops exact duplicates. */
function validateSpecs(specs: ModelFileSpec[]): ModelFileSpec[] {
  if (!Array.isArray(specs)) throw new M3Error('INVALID_ARGUMENT', 'expected an array of ModelFileSpec');
  const byPath = new Map<string, ModelFileSpec>();
  for (const spec of specs) {
    if (!spec || typeof spec !== 'object') throw new M3Error('INVALID_ARGUMENT', 'each file spec must be an object { repo, path }');
    assertRepoId(spec.repo);
    assertRepoFilePath(spec.path);
    if (spec.revision !== undefined) assertRevision(spec.revision);
    const seen = byPath.get(spec.path);
    if (seen && (seen.repo !== spec.repo || seen.revision !== spec.revision)) {
      // The result is keyed by path: two sources for one key would silently lose one.
      throw new M3Error('INVALID_ARGUMENT', `file ${JSON.stringify(spec.path)} is listed twice with different repos or revisions`);
    }
    if (!seen || (seen.optional && !spec.optional)) byPath.set(spec.path, spec);
  }
  return [...byPath.values()];
}

/** Resolves all specs with a small worker pool; the first failure stops the others (fail fast). */
async function resolveAll(specs: ModelFileSpec[], options: HubOptions): Promise<ResolvedEntry[]> {
  const unique = validateSpecs(specs);
  const settings = resolveSettings(options);
  const limits = resolveTransferLimits(settings, options);
  if (settings.signal?.aborted) throw new M3Error('ABORTED', 'download aborted before it started', { cause: settings.signal.reason });
  if (settings.offline) {
    // Local lookups only: cheap, so run them all and report every missing file at once.
    const results: ResolvedEntry[] = [];
    const missing: FileRequest[] = [];
    for (const spec of unique) {
      try {
        const r = await resolveOne(spec, settings, limits, settings.signal ?? new AbortController().signal);
        if (r) results.push(r);
      } catch (err) {
        if (!(err instanceof CacheMiss)) throw err;
        missing.push(err.request);
      }
    }
    if (missing.length) throw offlineMiss(settings, missing);
    return results;
  }
  const stop = new AbortController();
  const signal = anySignal([settings.signal, stop.signal]) ?? stop.signal;
  const results: (ResolvedEntry | undefined)[] = new Array(unique.length);
  let next = 0;
  let firstError: unknown;
  const worker = async () => {
    while (firstError === undefined && next < unique.length) {
      const i = next++;
      try {
        results[i] = await resolveOne(unique[i], settings, limits, signal);
      } catch (err) {
        if (firstError === undefined) {
          firstError = err;
          stop.abort(err); // partial downloads of the others are kept for resume
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, unique.length) }, worker));
  if (firstError !== undefined) throw firstError;
  return results.filter((r): r is ResolvedEntry => r !== undefined);
}

/**
 * Downloads (or finds in the cache) the listed files and returns logical path → absolute local
 * path (the path inside the snapshot directory, a symlink to the blob). Optional files the repo
 * lacks are left out. Files already in the cache are not downloaded again; an interrupted
 * download resumes; concurrent calls and processes download each file once.
 *
 * @throws M3Error HUB_ERROR (HTTP or network failure), OFFLINE_MISS, INTEGRITY, ABORTED, INVALID_ARGUMENT
 */
export async function downloadFiles(specs: ModelFileSpec[], options: HubOptions = {}): Promise<Record<string, string>> {
  const entries = await resolveAll(specs, options);
  return Object.fromEntries(entries.map((e) => [e.spec.path, e.path]));
}

/**
 * {@link downloadFiles} plus where the model is: `dir` is the snapshot directory of the first
 * spec's repo (the ONNX graph's, with the presets), `repo`, `revision` and `commit` are that repo's.
 */
export async function resolveModelFiles(specs: ModelFileSpec[], options: HubOptions = {}): Promise<ResolvedModelFiles> {
  const entries = await resolveAll(specs, options);
  const primary = entries.find((e) => e.spec.repo === specs[0]?.repo) ?? entries[0];
  if (!primary) throw new M3Error('MODEL_NOT_FOUND', 'none of the requested model files exist');
  return {
    dir: primary.snapshotDir,
    files: Object.fromEntries(entries.map((e) => [e.spec.path, e.path])),
    repo: primary.spec.repo,
    revision: primary.revision,
    commit: primary.commit,
  };
}
