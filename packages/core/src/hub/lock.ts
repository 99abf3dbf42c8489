/**
 * Cross-process lock around one blob's download, with proper-lockfile (an atomic `mkdir` whose
 * mtime the holder refreshes; a lock not refreshed for `staleMs` is taken over, so a crashed or
 * killed downloader does not block the cache forever).
 *
 * Why we poll instead of using proper-lockfile's retries: a waiter does not need the lock if the
 * holder finishes, it needs the blob. Between attempts we check whether the blob now exists and
 * return without ever locking; so a second process waits for the first one's download instead
 * of downloading the same gigabytes again. Polling also lets the caller's AbortSignal end the wait.
 */
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';
import { M3Error } from '../errors.js';
import { ensureDirectory } from '../util/fs-errors.js';

export interface BlobLockOptions {
  /** Ends the wait (the error is the signal's reason). */
  signal?: AbortSignal;
  /** True when the work is already done (the blob exists): then no lock is taken. */
  alreadyDone: () => Promise<boolean>;
  /** Delay between attempts while another process holds the lock, ms. */
  pollMs?: number;
  /** Age after which an unrefreshed lock is considered abandoned, ms (min 2000). */
  staleMs?: number;
}

/**
 * Runs `fn` while holding the lock at `lockPath`, unless `alreadyDone()` becomes true first (then
 * returns undefined). `fn` receives a signal that fires if the lock is lost (e.g. the event loop
 * was blocked past the stale time and another process took over): it must stop writing then.
 */
export async function withBlobLock<T>(
  lockPath: string,
  options: BlobLockOptions,
  fn: (lockLost: AbortSignal) => Promise<T>,
): Promise<T | undefined> {
  const { signal, alreadyDone, pollMs = 100, staleMs = 15_000 } = options;
  const lost = new AbortController();
  await ensureDirectory(dirname(lockPath));
  let release: (() => Promise<void>) | undefined;
  while (!release) {
    signal?.throwIfAborted();
    if (await alreadyDone()) return undefined;
    try {
      release = await lockfile.lock(lockPath, {
        // The lock directory is the path itself: no target file needs to exist, no realpath.
        lockfilePath: lockPath,
        realpath: false,
        stale: staleMs,
        update: Math.max(1000, Math.floor(staleMs / 5)),
        retries: 0,
        // proper-lockfile's default throws from a timer, which would crash the process.
        onCompromised: (err) => lost.abort(new M3Error('HUB_ERROR', `lost the download lock ${lockPath}: ${err.message}`, { cause: err })),
      });
    } catch (err) {
      if ((err as { code?: string }).code !== 'ELOCKED') {
        throw new M3Error('HUB_ERROR', `cannot take the download lock ${lockPath}: ${(err as Error).message}`, { cause: err });
      }
      await sleep(pollMs, undefined, { signal });
    }
  }
  try {
    // Re-check under the lock: the previous holder may have finished just before we got it.
    if (await alreadyDone()) return undefined;
    return await fn(lost.signal);
  } finally {
    await release().catch(() => {}); // ERELEASED after a compromise: nothing left to release
  }
}
