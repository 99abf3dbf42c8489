/**
 * Turns {@link HubOptions} plus the environment into concrete settings, with huggingface_hub's
 * variable names and precedence so that a machine configured for the Python tools (mirror
 * endpoint, shared cache, offline flag, token) behaves the same here.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { M3Error } from '../errors.js';
import { assertRevision } from './paths.js';
import type { DownloadProgress, HubOptions } from './types.js';

/** Options after defaults; what the rest of the hub modules work with. */
export interface HubSettings {
  /** Base URL without a trailing slash. */
  endpoint: string;
  /** The token, or undefined for anonymous requests. Never logged, never put in a message. */
  token: string | undefined;
  /** Absolute cache root. */
  cacheDir: string;
  offline: boolean;
  revision: string;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  signal: AbortSignal | undefined;
  fetch: typeof fetch;
  /** Timeout of the metadata (HEAD) request, ms (HF_HUB_ETAG_TIMEOUT, default 10 s). */
  metadataTimeoutMs: number;
  /** Longest wait for the next chunk of a download before retrying, ms (HF_HUB_DOWNLOAD_TIMEOUT, default 10 s). */
  idleTimeoutMs: number;
}

/** huggingface_hub's `_is_true`: 1, ON, YES, TRUE (any case). */
export function envFlag(value: string | undefined): boolean {
  return value !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(value.trim().toUpperCase());
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p;
}

/** The default cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `${XDG_CACHE_HOME:-~/.cache}/huggingface/hub`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const hubCache = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (hubCache) return resolve(expandHome(hubCache));
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
  return resolve(expandHome(hfHome), 'hub');
}

function envToken(env: NodeJS.ProcessEnv): string | undefined {
  // Same clean-up as huggingface_hub: tokens pasted with a trailing newline still work.
  const raw = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  const t = raw?.replace(/[\r\n]/g, '').trim();
  return t ? t : undefined;
}

function seconds(value: string | undefined, fallback: number): number {
  const n = value === undefined ? NaN : Number(value);
  return Number.isFinite(n) && n > 0 ? n * 1000 : fallback * 1000;
}

function normaliseEndpoint(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new M3Error('INVALID_ARGUMENT', `invalid Hub endpoint ${JSON.stringify(raw)}: expected an http(s) URL such as https://huggingface.co`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new M3Error('INVALID_ARGUMENT', `invalid Hub endpoint ${JSON.stringify(displayUrl(raw))}: only http and https are supported`);
  }
  return raw.replace(/\/+$/, '');
}

/** A URL for messages: user:password@ removed, query dropped (signed CDN URLs carry credentials there). */
export function displayUrl(raw: string): string {
  try {
    const u = new URL(raw);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '<invalid URL>';
  }
}

/** Applies the defaults of {@link HubOptions}. */
export function resolveSettings(options: HubOptions = {}, env: NodeJS.ProcessEnv = process.env): HubSettings {
  const revision = options.revision ?? 'main';
  assertRevision(revision);
  const fetchImpl = options.fetch ?? globalThis.fetch;
  if (typeof fetchImpl !== 'function') throw new M3Error('INVALID_ARGUMENT', 'no fetch implementation: Node 20 or later is required');
  return {
    endpoint: normaliseEndpoint(options.endpoint ?? (env.HF_ENDPOINT || 'https://huggingface.co')),
    // '' means "explicitly anonymous": it must not fall back to the environment.
    token: options.token !== undefined ? options.token.trim() || undefined : envToken(env),
    cacheDir: options.cacheDir !== undefined ? resolve(expandHome(options.cacheDir)) : defaultCacheDir(env),
    offline: options.offline ?? (envFlag(env.HF_HUB_OFFLINE) || envFlag(env.TRANSFORMERS_OFFLINE)),
    revision,
    onProgress: options.onProgress,
    signal: options.signal,
    fetch: fetchImpl,
    metadataTimeoutMs: seconds(env.HF_HUB_ETAG_TIMEOUT, 10),
    idleTimeoutMs: seconds(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
  };
}
