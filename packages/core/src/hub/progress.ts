/**
 * Throttling of progress callbacks. A download delivers a chunk every few KB; calling the user
 * (who may redraw a terminal) for each would cost more than the download. We report at most
 * every `intervalMs` per file, plus always the first and the final state so that a bar starts at
 * the resumed offset and ends exactly at 100 %.
 */
import type { DownloadProgress } from './types.js';

/** A per-file reporter: `update` is throttled, `finish` always reports. */
export interface ProgressReporter {
  update(bytesDone: number): void;
  finish(bytesDone: number): void;
}

const NOOP: ProgressReporter = { update() {}, finish() {} };

/** Creates a throttled reporter for one file; a no-op when there is no callback. */
export function createReporter(
  callback: ((p: DownloadProgress) => void) | undefined,
  base: { file: string; repo: string; bytesTotal: number | undefined },
  intervalMs = 100,
  now: () => number = Date.now,
): ProgressReporter {
  if (!callback) return NOOP;
  let last = -Infinity;
  let lastBytes = -1;
  let finished = false;
  let broken = false;
  const emit = (bytesDone: number) => {
    last = now();
    lastBytes = bytesDone;
    if (broken) return;
    try {
      callback({ file: base.file, repo: base.repo, bytesDone, bytesTotal: base.bytesTotal });
    } catch {
      // A failing progress display must not fail (or, worse, retry) a multi-GB download:
      // the callback is dropped for the rest of this file.
      broken = true;
    }
  };
  return {
    update(bytesDone) {
      if (finished) return;
      if (now() - last >= intervalMs) emit(bytesDone);
    },
    finish(bytesDone) {
      if (finished) return;
      finished = true;
      if (bytesDone !== lastBytes || last === -Infinity) emit(bytesDone);
    },
  };
}
