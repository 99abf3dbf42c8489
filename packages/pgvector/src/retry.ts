/**
 * Retries of the failures that are not the statement's fault, each bounded:
 *
 * - the connection failed (server restart, failover, dropped socket): retried with exponential
 *   backoff (100 ms, 200 ms, … capped at 5 s, each with ±50% jitter) until the server answers or
 *   `reconnect.maxWaitMs` (default 30 s) has passed, so a restart of tens of seconds is ridden
 *   out. Every operation of the store is safe to repeat after an unknown outcome: writes are
 *   upserts and deletes by id, and a transaction that failed on its connection either committed
 *   whole or not at all;
 * - the transaction lost a conflict (SQLSTATE 40001 serialization failure, 40P01 deadlock
 *   detected): retried up to `conflictRetries` times (default 8) after a random pause, so two
 *   writers that collide do not collide again in lockstep.
 */
import { invalidArgument } from './options.js';
import { isConnectionError } from './sql-client.js';

/** How long a store keeps trying to reach a server that went away. */
export interface ReconnectOptions {
  /** Total wait before giving up on an operation that keeps failing on its connection (default 30,000 ms; 0: never retry). */
  maxWaitMs?: number;
  /** First pause (default 100 ms); doubles after each failure, capped at 5 s. */
  initialDelayMs?: number;
}

/** The checked retry settings of a store. */
export interface RetryPolicy {
  maxWaitMs: number;
  initialDelayMs: number;
  conflictRetries: number;
}

export const DEFAULT_RECONNECT_MAX_WAIT_MS = 30_000;
export const DEFAULT_CONFLICT_RETRIES = 8;
const MAX_DELAY_MS = 5_000;

/** Checks `reconnect` (an object, or false for no reconnect) and `conflictRetries`. */
export function checkRetryPolicy(reconnect: unknown, conflictRetries: unknown): RetryPolicy {
  const policy: RetryPolicy = { maxWaitMs: DEFAULT_RECONNECT_MAX_WAIT_MS, initialDelayMs: 100, conflictRetries: DEFAULT_CONFLICT_RETRIES };
  if (reconnect === false) policy.maxWaitMs = 0;
  else if (reconnect !== undefined) {
    if (reconnect === null || typeof reconnect !== 'object') invalidArgument('reconnect must be an object { maxWaitMs?, initialDelayMs? } or false');
    const r = reconnect as ReconnectOptions;
    for (const key of ['maxWaitMs', 'initialDelayMs'] as const) {
      const v = r[key];
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 3_600_000)) invalidArgument(`reconnect.${key} must be a number of milliseconds from 0 to 3600000, got ${String(v)}`);
    }
    if (r.maxWaitMs !== undefined) policy.maxWaitMs = r.maxWaitMs;
    if (r.initialDelayMs !== undefined) policy.initialDelayMs = Math.max(1, r.initialDelayMs);
  }
  if (conflictRetries !== undefined) {
    if (typeof conflictRetries !== 'number' || !Number.isSafeInteger(conflictRetries) || conflictRetries < 0 || conflictRetries > 100) {
      invalidArgument(`conflictRetries must be an integer from 0 to 100, got ${String(conflictRetries)}`);
    }
    policy.conflictRetries = conflictRetries as number;
  }
  return policy;
}

/** SQLSTATE of an error from either driver (undefined for non-database errors). */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** True for a lost conflict: serialization failure (40001) or deadlock (40P01). */
export function isConflictError(err: unknown): boolean {
  const s = sqlState(err);
  return s === '40001' || s === '40P01';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn`, again after connection failures and lost conflicts, as the policy allows (see the file comment). */
export async function withRetries<T>(policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  let reconnects = 0;
  let conflicts = 0;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (isConflictError(err) && conflicts < policy.conflictRetries) {
        conflicts++;
        await sleep(Math.random() * 10 * 2 ** Math.min(conflicts, 6));
        continue;
      }
      if (isConnectionError(err)) {
        const delay = Math.min(MAX_DELAY_MS, policy.initialDelayMs * 2 ** reconnects) * (0.5 + Math.random());
        if (Date.now() - start + delay <= policy.maxWaitMs) {
          reconnects++;
          await sleep(delay);
          continue;
        }
      }
      throw err;
    }
  }
}

/**
 * The server's own words for a database error: its message, then its DETAIL and HINT when it
 * gave them (e.g. "Must be superuser to create this extension."), which drivers keep in
 * separate fields and `String(err)` drops.
 */
export function serverMessage(err: unknown): string {
  const e = err as { message?: unknown; detail?: unknown; hint?: unknown } | null;
  let text = typeof e?.message === 'string' ? e.message : String(err);
  if (typeof e?.detail === 'string' && e.detail) text += ` (DETAIL: ${e.detail})`;
  if (typeof e?.hint === 'string' && e.hint) text += ` (HINT: ${e.hint})`;
  return text;
}
