/**
 * Bounds on one download, so that a slow, stalled or hostile server cannot hold a caller (or a
 * disk) forever:
 *
 * - **idle**: no byte for `idleTimeoutMs` (HF_HUB_DOWNLOAD_TIMEOUT, as huggingface_hub) → retry;
 * - **minimum rate**: fewer than `minBytesPerSecond` on average over a window of `rateWindowMs`
 *   → retry (curl's `--speed-limit`/`--speed-time`). The idle timer alone resets on every byte,
 *   so a server trickling 1 byte a second would otherwise never time out;
 * - **deadline**: one file's transfer (all its attempts) takes longer than `deadlineMs` → fail,
 *   keeping the partial file so that the next call resumes it;
 * - **size**: a body longer than the expected size is cut off there (and fails its check); when
 *   neither the HEAD nor the GET says how long the file is, more than `maxUnknownSizeBytes` is
 *   refused and the partial file deleted.
 *
 * Defaults are generous for a real link (BGE-M3's largest file is 2.27 GB) and come from the
 * environment, so a deployment can tighten them without code; {@link HubOptions.limits} wins.
 */
import { M3Error } from '../errors.js';
import type { HubSettings } from './config.js';
import type { HubOptions } from './types.js';

/** The bounds of one download (all in ms or bytes; `Infinity` means no bound). */
export interface TransferLimits {
  idleTimeoutMs: number;
  minBytesPerSecond: number;
  rateWindowMs: number;
  deadlineMs: number;
  maxUnknownSizeBytes: number;
}

/** Defaults: 1 KiB/s over 30 s, 3 hours per file, 4 GiB when the size is unknown. */
export const DEFAULT_TRANSFER_LIMITS = {
  minBytesPerSecond: 1024,
  rateWindowMs: 30_000,
  deadlineMs: 3 * 3600_000,
  maxUnknownSizeBytes: 4 * 1024 ** 3,
} as const;

/** The environment variables read by {@link resolveTransferLimits} (units: bytes/s, s, s, bytes). */
export const TRANSFER_LIMIT_ENV = {
  minBytesPerSecond: 'BGEM3_HUB_MIN_RATE',
  rateWindowMs: 'BGEM3_HUB_RATE_WINDOW',
  deadlineMs: 'BGEM3_HUB_DEADLINE',
  maxUnknownSizeBytes: 'BGEM3_HUB_MAX_UNKNOWN_SIZE',
} as const;

type LimitName = keyof typeof DEFAULT_TRANSFER_LIMITS;

/** A non-negative number, `0` meaning "no bound" for the rate and the deadline. */
function checkLimit(name: string, value: unknown, from: string): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new M3Error('INVALID_ARGUMENT', `${from} must be a number ≥ 0 (0: no bound), got ${String(value)}`);
  }
  return value;
}

function fromEnv(name: LimitName, env: NodeJS.ProcessEnv): number | undefined {
  const variable = TRANSFER_LIMIT_ENV[name];
  const raw = env[variable];
  if (raw === undefined || raw.trim() === '') return undefined;
  if (!/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(raw)) {
    throw new M3Error('INVALID_ARGUMENT', `${variable} must be a number ≥ 0 (0: no bound), got ${JSON.stringify(raw)}`);
  }
  const n = Number(raw);
  return name === 'rateWindowMs' || name === 'deadlineMs' ? n * 1000 : n;
}

/** The limits of a download: {@link HubOptions.limits}, else the environment, else the defaults. */
export function resolveTransferLimits(settings: HubSettings, options: HubOptions = {}, env: NodeJS.ProcessEnv = process.env): TransferLimits {
  const given = options.limits ?? {};
  if (given === null || typeof given !== 'object') throw new M3Error('INVALID_ARGUMENT', 'limits must be an object');
  const pick = (name: LimitName): number => {
    const v = given[name] !== undefined ? checkLimit(name, given[name], `limits.${name}`) : (fromEnv(name, env) ?? DEFAULT_TRANSFER_LIMITS[name]);
    // 0 disables a bound; a zero window or size would make no sense as a bound.
    return v === 0 && name !== 'minBytesPerSecond' ? Infinity : v;
  };
  const idle = given.idleTimeoutMs !== undefined ? checkLimit('idleTimeoutMs', given.idleTimeoutMs, 'limits.idleTimeoutMs') : settings.idleTimeoutMs;
  return {
    idleTimeoutMs: idle === 0 ? Infinity : idle,
    minBytesPerSecond: pick('minBytesPerSecond'),
    rateWindowMs: pick('rateWindowMs'),
    deadlineMs: pick('deadlineMs'),
    maxUnknownSizeBytes: pick('maxUnknownSizeBytes'),
  };
}

/** setTimeout that accepts Infinity (never fires) and does not keep the process alive. */
function timer(ms: number, fn: () => void): NodeJS.Timeout | undefined {
  if (!Number.isFinite(ms)) return undefined;
  // Node clamps delays above 2^31-1 ms to 1 ms: cap instead (24.8 days is "never" here).
  const t = setTimeout(fn, Math.min(ms, 2 ** 31 - 1));
  t.unref();
  return t;
}

/**
 * Watches one HTTP attempt: aborts `signal` when no byte came for the idle timeout, or when a
 * rate window ends with fewer bytes than the minimum rate asks for. `reason()` says which.
 */
export class TransferWatch {
  private readonly ctrl = new AbortController();
  private idleTimer: NodeJS.Timeout | undefined;
  private rateTimer: NodeJS.Timeout | undefined;
  private windowBytes = 0;
  private why: string | undefined;

  constructor(private readonly limits: TransferLimits) {
    this.armIdle();
    this.armRate();
  }

  /** Aborted when the transfer is too slow. */
  get signal(): AbortSignal {
    return this.ctrl.signal;
  }

  /** Why the watch fired (for messages), or undefined. */
  reason(): string | undefined {
    return this.why;
  }

  /** Call for every chunk received. */
  bytes(n: number): void {
    this.windowBytes += n;
    this.armIdle();
  }

  stop(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.rateTimer);
  }

  private fire(why: string): void {
    if (this.why) return;
    this.why = why;
    this.stop();
    this.ctrl.abort(new Error(why));
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = timer(this.limits.idleTimeoutMs, () => this.fire(`no data for ${this.limits.idleTimeoutMs} ms`));
  }

  private armRate(): void {
    const { minBytesPerSecond, rateWindowMs } = this.limits;
    if (!(minBytesPerSecond > 0)) return;
    this.rateTimer = timer(rateWindowMs, () => {
      const need = (minBytesPerSecond * rateWindowMs) / 1000;
      if (this.windowBytes < need) {
        this.fire(`${this.windowBytes} bytes in ${rateWindowMs} ms, below the minimum rate of ${minBytesPerSecond} bytes/s`);
        return;
      }
      this.windowBytes = 0;
      this.armRate();
    });
  }
}

/** A deadline of `ms` for one file's whole transfer: `signal` aborts with `makeError()` as its reason. */
export function transferDeadline(ms: number, makeError: () => Error): { signal: AbortSignal; clear: () => void } {
  const ctrl = new AbortController();
  const t = timer(ms, () => ctrl.abort(makeError()));
  return { signal: ctrl.signal, clear: () => clearTimeout(t) };
}
