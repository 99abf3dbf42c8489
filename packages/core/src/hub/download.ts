/**
 * Getting one blob into the cache, safely and once:
 *
 * 1. in-process dedupe: concurrent calls for the same blob share one download;
 * 2. cross-process lock (lock.ts): another process downloading it makes us wait for its blob;
 * 3. download into `blobs/<etag>.incomplete`, resuming from its size with `Range: bytes=N-`
 *    (also after a crash or an abort: the temp file is kept), retrying dropped connections;
 * 4. size + hash check (integrity.ts), then an atomic rename to `blobs/<etag>`.
 *
 * A blob therefore only ever appears complete and verified; readers never see partial content.
 */
import { mkdir, open, rename, stat, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { M3Error } from '../errors.js';
import { isFile, type RepoCache } from './cache.js';
import type { HubSettings } from './config.js';
import { abortedError, HubRequestError, networkReason, openContent, type FileMetadata, type FileRequest } from './hub-client.js';
import { verifyDownload } from './integrity.js';
import { withBlobLock } from './lock.js';
import { createReporter, type ProgressReporter } from './progress.js';
import { anySignal } from './signals.js';

/** Everything needed to fetch one blob. */
export interface BlobJob {
  settings: HubSettings;
  cache: RepoCache;
  meta: FileMetadata;
  file: FileRequest;
  /** The caller's signal (combined with the batch's fail-fast signal). */
  signal: AbortSignal | undefined;
}

/** Attempts per download after the first, for dropped connections, timeouts and 5xx (huggingface_hub: 5). */
const MAX_RETRIES = 5;
const backoffMs = (failures: number) => Math.min(200 * 2 ** (failures - 1), 5000);

/** Downloads in progress in this process, by absolute blob path. */
const inflight = new Map<string, Promise<void>>();

/** Waits for `p`, or throws as soon as `signal` fires (without cancelling `p`: others may wait on it). */
function waitFor(p: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return p;
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Makes sure `blobs/<etag>` exists and is verified, downloading it at most once across callers. */
export async function ensureBlob(job: BlobJob): Promise<void> {
  const blob = job.cache.blobPath(job.meta.etag);
  for (;;) {
    if (await isFile(blob)) return;
    if (job.signal?.aborted) throw abortedError(job.file, '', job.signal.reason);
    const running = inflight.get(blob);
    if (!running) break;
    try {
      await waitFor(running, job.signal);
      return;
    } catch (err) {
      if (job.signal?.aborted) throw abortedError(job.file, '', job.signal.reason);
      // The owner gave up (its own signal fired): take over, resuming from its temp file.
      if (err instanceof M3Error && err.code === 'ABORTED') {
        if (inflight.get(blob) === running) inflight.delete(blob);
        continue;
      }
      throw err;
    }
  }
  const own = lockedDownload(job, blob);
  inflight.set(blob, own);
  try {
    await own;
  } finally {
    if (inflight.get(blob) === own) inflight.delete(blob);
  }
}

async function lockedDownload(job: BlobJob, blob: string): Promise<void> {
  const tmp = job.cache.incompletePath(job.meta.etag);
  try {
    await withBlobLock(job.cache.lockPath(job.meta.etag), { signal: job.signal, alreadyDone: () => isFile(blob) }, async (lockLost) => {
      const signal = anySignal([job.signal, lockLost]) ?? lockLost;
      await fetchToTemp(job, tmp, signal);
      await verifyDownload(tmp, job.meta, job.file);
      await rename(tmp, blob);
    });
  } catch (err) {
    if (job.signal?.aborted) {
      throw abortedError(job.file, `; the partial file ${tmp} is kept and the next download resumes from it`, job.signal.reason);
    }
    if (err instanceof M3Error) throw err;
    // A lost lock surfaces as its reason (an M3Error); anything else is a file-system error.
    throw new M3Error('HUB_ERROR', `cannot store ${job.file.repo}/${job.file.path} in the cache ${job.settings.cacheDir}: ${(err as Error).message}`, {
      file: job.file.path,
      cause: err,
    });
  }
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size;
  } catch {
    return 0;
  }
}

/** Fills `tmp` up to the expected size, resuming and retrying. Returns when the server sent everything. */
async function fetchToTemp(job: BlobJob, tmp: string, signal: AbortSignal): Promise<void> {
  const { meta, file, settings } = job;
  await mkdir(dirname(tmp), { recursive: true });
  await (await open(tmp, 'a')).close(); // exists even for an empty file, which needs no GET
  const reporter = createReporter(settings.onProgress, { file: file.path, repo: file.repo, bytesTotal: meta.size });
  let failures = 0;
  for (;;) {
    let offset = await fileSize(tmp);
    if (meta.size !== undefined && offset > meta.size) {
      await truncate(tmp, 0); // longer than the file can be: not a prefix of it
      offset = 0;
    }
    if (meta.size !== undefined && offset === meta.size) {
      reporter.finish(offset);
      return;
    }
    try {
      const done = await fetchOnce(job, tmp, offset, signal, reporter);
      if (meta.size === undefined || done >= meta.size) {
        reporter.finish(done);
        return;
      }
      throw new HubRequestError(`the connection closed after ${done} of ${meta.size} bytes of ${file.repo}/${file.path}`, { transient: true }, { file: file.path });
    } catch (err) {
      if (signal.aborted) throw signal.reason ?? err;
      const transient = err instanceof HubRequestError && err.info.transient;
      if (!transient) throw err;
      if (++failures > MAX_RETRIES) {
        throw new M3Error(
          'HUB_ERROR',
          `download of ${file.repo}/${file.path} failed after ${failures} attempts: ${(err as Error).message}. ` +
            `The partial file ${tmp} is kept; the next download resumes from it.`,
          { file: file.path, cause: err },
        );
      }
      await sleep(backoffMs(failures), undefined, { signal }).catch(() => {});
    }
  }
}

function interrupted(file: FileRequest, reason: string, cause: unknown): HubRequestError {
  return new HubRequestError(`the download of ${file.repo}/${file.path} was interrupted (${reason})`, { transient: true }, { file: file.path, cause });
}

/** Parses `Content-Range: bytes START-END/TOTAL` and returns START. */
function rangeStart(header: string | null): number | undefined {
  const m = header ? /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header.trim()) : null;
  return m ? Number(m[1]) : undefined;
}

/**
 * One GET from `offset`, appended to `tmp`. Handles a server that ignores Range (200: start
 * over), one that answers another range (restart), and 416 (our prefix is not valid: restart).
 * A stall longer than the idle timeout aborts the request as a transient error.
 */
async function fetchOnce(job: BlobJob, tmp: string, offset: number, signal: AbortSignal, reporter: ProgressReporter): Promise<number> {
  const { meta, file, settings } = job;
  const idle = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(), settings.idleTimeoutMs);
  };
  const restart = async (why: string): Promise<never> => {
    await truncate(tmp, 0);
    throw new HubRequestError(`${why}; restarting ${file.repo}/${file.path} from the beginning`, { transient: true }, { file: file.path });
  };
  arm();
  try {
    const res = await openContent(settings, file, meta.downloadUrl, offset, anySignal([signal, idle.signal]));
    let start = offset;
    if (res.status === 416) {
      await res.body?.cancel().catch(() => {});
      return await restart(`the server refused to resume at byte ${offset}`);
    }
    if (res.status === 206) {
      if (rangeStart(res.headers.get('content-range')) !== offset) {
        await res.body?.cancel().catch(() => {});
        return await restart(`the server answered another range than bytes=${offset}-`);
      }
    } else if (offset > 0) {
      await truncate(tmp, 0); // 200: the server ignored Range and sends the whole file
      start = 0;
    }
    return await appendBody(res, tmp, start, { job, reporter, arm });
  } catch (err) {
    if (signal.aborted) throw err;
    // A stall: check before M3Error, since fetch reports our idle abort as an abort.
    if (idle.signal.aborted) throw interrupted(file, `no data for ${settings.idleTimeoutMs} ms`, err);
    if (err instanceof M3Error) throw err;
    // undici reports a dropped connection as TypeError('terminated') (cause: 'other side closed').
    throw interrupted(file, networkReason(err), err);
  } finally {
    clearTimeout(timer);
  }
}

/** Streams the body to the end of `tmp`; stops early if the server sends more than expected. */
async function appendBody(
  res: Response,
  tmp: string,
  start: number,
  ctx: { job: BlobJob; reporter: ProgressReporter; arm: () => void },
): Promise<number> {
  const { meta, file } = ctx.job;
  if (!res.body) return start;
  const reader = res.body.getReader();
  const fh = await open(tmp, 'a');
  let done = start;
  let complete = false;
  try {
    ctx.reporter.update(done);
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      ctx.arm();
      try {
        await fh.write(value);
      } catch (err) {
        throw new M3Error('HUB_ERROR', `cannot write ${tmp} (${(err as Error).message}) while downloading ${file.repo}/${file.path}`, { file: file.path, cause: err });
      }
      done += value.byteLength;
      ctx.reporter.update(done);
      if (meta.size !== undefined && done > meta.size) {
        await reader.cancel().catch(() => {}); // too long: the integrity check will reject it
        break;
      }
    }
    complete = true;
    await fh.datasync(); // the rename that publishes the blob must not outrun its content
    return done;
  } finally {
    if (!complete) await reader.cancel().catch(() => {});
    await fh.close();
  }
}
