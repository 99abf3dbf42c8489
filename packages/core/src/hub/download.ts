/**
 * Getting one blob into the cache, safely and once:
 *
 * 1. in-process dedupe: concurrent calls for the same blob share one download;
 * 2. cross-process lock (lock.ts): another process downloading it makes us wait for its blob;
 * 3. download into `blobs/<etag>.incomplete`, resuming from its size with `Range: bytes=N-`
 *    (also after a crash or an abort: the temp file is kept), retrying dropped connections,
 *    within the bounds of transfer-limits.ts (idle time, minimum rate, deadline, size); sizes
 *    announced by the GET (Content-Length, Content-Range, a 416) must agree with the HEAD;
 * 4. size + hash check (integrity.ts), then an atomic rename to `blobs/<etag>`.
 *
 * A blob therefore only ever appears complete and verified; readers never see partial content.
 * A file whose etag is not a content hash is refused before step 1: it could not be verified.
 */
import { open, rename, rm, stat, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { M3Error } from '../errors.js';
import { isFile, type RepoCache } from './cache.js';
import type { HubSettings } from './config.js';
import { abortedError, HubRequestError, networkReason, openContent, type FileMetadata, type FileRequest } from './hub-client.js';
import { assertVerifiable, integrityError, verifyDownload } from './integrity.js';
import { withBlobLock } from './lock.js';
import { createReporter, type ProgressReporter } from './progress.js';
import { anySignal } from './signals.js';
import { TRANSFER_LIMIT_ENV, transferDeadline, TransferWatch, type TransferLimits } from './transfer-limits.js';
import { describeFsError, ensureDirectory } from '../util/fs-errors.js';

/** Everything needed to fetch one blob. */
export interface BlobJob {
  settings: HubSettings;
  cache: RepoCache;
  meta: FileMetadata;
  file: FileRequest;
  /** The caller's signal (combined with the batch's fail-fast signal). */
  signal: AbortSignal | undefined;
  /** Bounds of the transfer (rate, deadline, size). */
  limits: TransferLimits;
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
  // A blob is named by its content hash; without one, neither the download nor a blob found
  // under that name could be checked.
  assertVerifiable(job.meta, job.file);
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

/** What is known of the file's length: from the HEAD, else learnt from a GET's headers. */
interface ExpectedSize {
  bytes: number | undefined;
  /** Where `bytes` came from, for messages. */
  source: string;
}

/**
 * Fills `tmp` up to the expected size, resuming and retrying. Returns when the server sent
 * everything. The whole transfer (all attempts) runs under the deadline of {@link TransferLimits}.
 */
async function fetchToTemp(job: BlobJob, tmp: string, signal: AbortSignal): Promise<void> {
  const { meta, file, settings, limits } = job;
  await ensureDirectory(dirname(tmp));
  await (await open(tmp, 'a')).close(); // exists even for an empty file, which needs no GET
  const reporter = createReporter(settings.onProgress, { file: file.path, repo: file.repo, bytesTotal: meta.size });
  const expected: ExpectedSize = { bytes: meta.size, source: meta.size === undefined ? '' : 'the metadata (HEAD)' };
  const deadline = transferDeadline(
    limits.deadlineMs,
    () =>
      new M3Error(
        'HUB_ERROR',
        `the download of ${file.repo}/${file.path} took longer than the deadline of ${limits.deadlineMs / 1000} s ` +
          `(set ${TRANSFER_LIMIT_ENV.deadlineMs} in seconds to change it). The partial file ${tmp} is kept; the next download resumes from it.`,
        { file: file.path },
      ),
  );
  const all = anySignal([signal, deadline.signal]) ?? signal;
  let failures = 0;
  try {
    for (;;) {
      let offset = await fileSize(tmp);
      if (expected.bytes !== undefined && offset > expected.bytes) {
        await truncate(tmp, 0); // longer than the file can be: not a prefix of it
        offset = 0;
      }
      if (expected.bytes !== undefined && offset === expected.bytes) {
        reporter.finish(offset);
        return;
      }
      try {
        const done = await fetchOnce(job, tmp, offset, all, reporter, expected);
        if (expected.bytes === undefined || done >= expected.bytes) {
          reporter.finish(done);
          return;
        }
        throw new HubRequestError(`the connection closed after ${done} of ${expected.bytes} bytes of ${file.repo}/${file.path}`, { transient: true }, { file: file.path });
      } catch (err) {
        if (all.aborted) throw all.reason ?? err;
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
        await sleep(backoffMs(failures), undefined, { signal: all }).catch(() => {});
      }
    }
  } finally {
    deadline.clear();
  }
}

function interrupted(file: FileRequest, reason: string, cause: unknown): HubRequestError {
  return new HubRequestError(`the download of ${file.repo}/${file.path} was interrupted (${reason})`, { transient: true }, { file: file.path, cause });
}

/** Parses `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`). */
function contentRange(header: string | null): { start: number; total: number | undefined } | undefined {
  const m = header ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header.trim()) : null;
  return m ? { start: Number(m[1]), total: m[2] === '*' ? undefined : Number(m[2]) } : undefined;
}

/** `Content-Range: bytes * /TOTAL` of a 416. */
function unsatisfiedTotal(header: string | null): number | undefined {
  const m = header ? /^bytes \*\/(\d+)$/.exec(header.trim()) : null;
  return m ? Number(m[1]) : undefined;
}

function headerSize(res: Response, name: string): number | undefined {
  const v = res.headers.get(name);
  return v !== null && /^\s*\d{1,15}\s*$/.test(v) ? Number(v) : undefined;
}

/**
 * A size the GET announced: checked against what is known (HEAD, an earlier GET), or learnt
 * when nothing was. A disagreement means the server (or a proxy) is inconsistent about the file:
 * INTEGRITY, the partial file deleted, no retry (it would only disagree again).
 */
async function checkAnnouncedSize(job: BlobJob, tmp: string, expected: ExpectedSize, announced: number, what: string): Promise<void> {
  if (expected.bytes === undefined) {
    expected.bytes = announced;
    expected.source = what;
    return;
  }
  if (announced !== expected.bytes) {
    await rm(tmp, { force: true });
    throw integrityError(job.file, 'size', expected.bytes, `${announced} (${what} disagrees with ${expected.source})`);
  }
}

/**
 * One GET from `offset`, appended to `tmp`. Handles a server that ignores Range (200: start
 * over), one that answers another range (restart), 416 (our prefix is not valid: restart), and
 * a content-encoded partial response (its bytes are not the file's: restart without Range).
 * Sizes the response announces are checked against the expected size. A stall or a rate below
 * the minimum aborts the request as a transient error.
 */
async function fetchOnce(
  job: BlobJob,
  tmp: string,
  offset: number,
  signal: AbortSignal,
  reporter: ProgressReporter,
  expected: ExpectedSize,
): Promise<number> {
  const { meta, file, settings, limits } = job;
  const watch = new TransferWatch(limits);
  const restart = async (res: Response, why: string): Promise<never> => {
    await res.body?.cancel().catch(() => {});
    await truncate(tmp, 0);
    throw new HubRequestError(`${why}; restarting ${file.repo}/${file.path} from the beginning`, { transient: true }, { file: file.path });
  };
  const announced = async (res: Response, size: number, what: string): Promise<void> => {
    try {
      await checkAnnouncedSize(job, tmp, expected, size, what);
    } catch (err) {
      await res.body?.cancel().catch(() => {});
      throw err;
    }
  };
  try {
    const res = await openContent(settings, file, meta.downloadUrl, offset, anySignal([signal, watch.signal]));
    let start = offset;
    const encoding = res.headers.get('content-encoding')?.trim().toLowerCase();
    const encoded = encoding !== undefined && encoding !== '' && encoding !== 'identity';
    if (res.status === 416) {
      const total = unsatisfiedTotal(res.headers.get('content-range'));
      if (total !== undefined) await announced(res, total, 'the size in the 416 response');
      return await restart(res, `the server refused to resume at byte ${offset}`);
    }
    if (res.status === 206) {
      const range = contentRange(res.headers.get('content-range'));
      if (range?.start !== offset) return await restart(res, `the server answered another range than bytes=${offset}-`);
      // A range of a compressed representation is not a range of the file.
      if (encoded) return await restart(res, `the server sent a resumed part with Content-Encoding ${JSON.stringify(encoding)}`);
      if (range.total !== undefined) await announced(res, range.total, "the total of the GET's Content-Range");
    } else {
      if (offset > 0) {
        await truncate(tmp, 0); // 200: the server ignored Range and sends the whole file
        start = 0;
      }
      const length = encoded ? undefined : headerSize(res, 'content-length');
      if (length !== undefined) await announced(res, length, "the GET's Content-Length");
    }
    return await appendBody(res, tmp, start, { job, reporter, watch, expected });
  } catch (err) {
    if (signal.aborted) throw err;
    // Too slow: check before M3Error, since fetch reports our abort as an abort.
    const slow = watch.reason();
    if (slow !== undefined) throw interrupted(file, slow, err);
    if (err instanceof M3Error) throw err;
    // undici reports a dropped connection as TypeError('terminated') (cause: 'other side closed').
    throw interrupted(file, networkReason(err), err);
  } finally {
    watch.stop();
  }
}

/**
 * Streams the body to the end of `tmp`. Stops at the expected size (the integrity check then
 * rejects the file); with no size known at all, refuses more than the size bound and deletes
 * the partial file.
 */
async function appendBody(
  res: Response,
  tmp: string,
  start: number,
  ctx: { job: BlobJob; reporter: ProgressReporter; watch: TransferWatch; expected: ExpectedSize },
): Promise<number> {
  const { file, limits } = ctx.job;
  if (!res.body) return start;
  const reader = res.body.getReader();
  const fh = await open(tmp, 'a');
  let done = start;
  let complete = false;
  let tooLong = false;
  try {
    ctx.reporter.update(done);
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      ctx.watch.bytes(value.byteLength);
      const bound = ctx.expected.bytes ?? limits.maxUnknownSizeBytes;
      // Never write past the bound: a body may be endless.
      const room = Math.max(0, bound + 1 - done);
      const piece = value.byteLength > room ? value.subarray(0, room) : value;
      try {
        await fh.write(piece);
      } catch (err) {
        throw new M3Error('HUB_ERROR', `cannot write ${tmp} while downloading ${file.repo}/${file.path}: ${describeFsError(err)}`, { file: file.path, cause: err });
      }
      done += piece.byteLength;
      ctx.reporter.update(done);
      if (done > bound) {
        tooLong = ctx.expected.bytes === undefined;
        await reader.cancel().catch(() => {}); // too long: the integrity check rejects it
        break;
      }
    }
    if (tooLong) {
      throw new M3Error(
        'HUB_ERROR',
        `the server sent more than ${limits.maxUnknownSizeBytes} bytes for ${file.repo}/${file.path} without saying its size; ` +
          `refusing it (set ${TRANSFER_LIMIT_ENV.maxUnknownSizeBytes} to allow larger files). The partial file was deleted.`,
        { file: file.path },
      );
    }
    complete = true;
    await fh.datasync(); // the rename that publishes the blob must not outrun its content
    return done;
  } finally {
    if (!complete) await reader.cancel().catch(() => {});
    await fh.close();
    if (tooLong) await rm(tmp, { force: true });
  }
}
