/**
 * Terminal progress bars for downloads (cli-progress MultiBar: one bar per file, with size,
 * speed and ETA). Draws only when the stream is a TTY: in CI logs or when stderr is redirected,
 * redrawn bars would be thousands of lines of noise, so nothing is printed at all.
 */
import cliProgress from 'cli-progress';
import type { DownloadProgress } from './types.js';

/** What {@link createCliProgress} returns. */
export interface CliProgress {
  /** Pass as `HubOptions.onProgress`. */
  onProgress: (p: DownloadProgress) => void;
  /** Stops redrawing and leaves the final bars on screen; call when the download ends or fails. */
  stop: () => void;
}

/** Options of {@link createCliProgress}. */
export interface CliProgressOptions {
  /** Where to draw; default `process.stderr` (stdout stays clean for program output). */
  stream?: NodeJS.WriteStream;
}

/** Bytes in binary units, e.g. `1.5 GiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Per-file state: the bar and a smoothed transfer rate. */
interface Track {
  bar: cliProgress.SingleBar;
  lastTime: number;
  lastBytes: number;
  rate: number | undefined; // bytes per second, exponentially smoothed
}

/**
 * Creates terminal progress bars for `HubOptions.onProgress`. On a non-TTY stream both functions
 * are no-ops. Speed is smoothed over recent reports, so resumed bytes do not inflate it.
 */
export function createCliProgress(options: CliProgressOptions = {}): CliProgress {
  const stream = options.stream ?? process.stderr;
  if (!stream.isTTY) return { onProgress: () => {}, stop: () => {} };
  const multi = new cliProgress.MultiBar(
    {
      stream,
      format: '{label} |{bar}| {percentage}% | {done}/{size} | {speed} | ETA {etaText}',
      barsize: 25,
      // No cursor hiding and no SIGINT handler of our own: the caller decides what Ctrl-C does
      // (typically abort, keeping the partial file), and the cursor is never left hidden.
      hideCursor: false,
      gracefulExit: false,
      clearOnComplete: false,
      autopadding: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  const tracks = new Map<string, Track>();
  let stopped = false;

  const onProgress = (p: DownloadProgress) => {
    if (stopped) return;
    const key = `${p.repo}/${p.file}`;
    const now = Date.now();
    // An unknown size draws an empty bar that still shows bytes and speed.
    const total = p.bytesTotal && p.bytesTotal > 0 ? p.bytesTotal : Math.max(p.bytesDone, 1) * 2;
    let t = tracks.get(key);
    const label = key.length > 36 ? `…${key.slice(-35)}` : key.padEnd(36);
    if (!t) {
      t = { bar: multi.create(total, p.bytesDone, { label, done: '', size: '', speed: '', etaText: '' }), lastTime: now, lastBytes: p.bytesDone, rate: undefined };
      tracks.set(key, t);
    } else if (now > t.lastTime) {
      const instant = ((p.bytesDone - t.lastBytes) * 1000) / (now - t.lastTime);
      t.rate = t.rate === undefined ? instant : 0.8 * t.rate + 0.2 * instant;
      t.lastTime = now;
      t.lastBytes = p.bytesDone;
    }
    const remaining = p.bytesTotal !== undefined ? p.bytesTotal - p.bytesDone : NaN;
    t.bar.setTotal(total);
    t.bar.update(p.bytesDone, {
      label,
      done: formatBytes(p.bytesDone),
      size: p.bytesTotal !== undefined ? formatBytes(p.bytesTotal) : '?',
      speed: t.rate !== undefined ? `${formatBytes(t.rate)}/s` : '…',
      etaText: remaining === 0 ? 'done' : t.rate ? formatEta(remaining / t.rate) : '--',
    });
  };

  return {
    onProgress,
    stop: () => {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
