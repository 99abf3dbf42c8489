/**
 * The HTTP side of the Hub protocol, as huggingface_hub speaks it:
 *
 * - metadata: `HEAD {endpoint}/{repo}/resolve/{revision}/{path}` without following redirects,
 *   reading `X-Repo-Commit`, `X-Linked-Etag` (sha256 of an LFS file) or `ETag` (git sha1),
 *   `X-Linked-Size` or `Content-Length`, and `Location` (the CDN URL of an LFS file). A relative
 *   redirect that carries no metadata is followed (a renamed repo), as huggingface_hub does.
 * - content: `GET` of that location, redirects followed by hand so that the token goes to the
 *   endpoint's origin only (huggingface_hub strips it for another host: CDN URLs are signed,
 *   and a token must not leak to a third party).
 *
 * Every failure becomes an {@link M3Error} that names the repo, file and revision and says what
 * to do. Tokens never appear in messages, and `transient` tells the caller whether a retry (or
 * a fall back to the cache) makes sense.
 */
import { M3Error } from '../errors.js';
import { displayUrl, type HubSettings } from './config.js';
import { assertSafeToken, resolveUrl } from './paths.js';
import { anySignal } from './signals.js';

/** The file a request is about (for messages and the cache). */
export interface FileRequest {
  repo: string;
  revision: string;
  path: string;
}

/** What a HEAD on the resolve URL tells us. */
export interface FileMetadata {
  /** Commit the revision resolves to (`X-Repo-Commit`), validated. */
  commit: string;
  /** Blob name: sha256 for LFS files, git blob sha1 otherwise; unquoted, validated. */
  etag: string;
  /** Expected size in bytes, when known. */
  size: number | undefined;
  /** True when the server sent `X-Linked-Etag`, i.e. the file is stored in LFS. */
  lfs: boolean;
  /** Where to GET the content (the CDN location of an LFS file, else the resolve URL). */
  downloadUrl: string;
}

/** A failed Hub request: an M3Error('HUB_ERROR') plus what the retry and fall-back logic needs. */
export class HubRequestError extends M3Error {
  constructor(
    message: string,
    readonly info: { status?: number; hubErrorCode?: string; commit?: string; transient: boolean },
    options: { file: string; cause?: unknown },
  ) {
    super('HUB_ERROR', message, options);
  }
}

const USER_AGENT = `bgem3-js; node/${process.versions.node}`;
const MAX_REDIRECTS = 10;

function where(f: FileRequest): string {
  return `${f.repo}/${f.path} at ${f.revision}`;
}

/** Removes the token from a text, in case a server echoes it back in an error header. */
function redact(text: string, token: string | undefined): string {
  return token ? text.split(token).join('***') : text;
}

/** A server-provided message made safe to print: control characters dropped, length capped. */
function serverText(value: string | null, token: string | undefined): string {
  if (!value) return '';
  // eslint-disable-next-line no-control-regex
  const clean = redact(value, token).replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
  return clean ? ` (server said: ${clean.length > 200 ? `${clean.slice(0, 200)}…` : clean})` : '';
}

/** Headers of every request; the token only for the endpoint's own origin. */
function requestHeaders(settings: HubSettings, url: string, extra: Record<string, string> = {}): Record<string, string> {
  const headers: Record<string, string> = { 'User-Agent': USER_AGENT, 'Accept-Encoding': 'identity', ...extra };
  if (settings.token && new URL(url).origin === new URL(settings.endpoint).origin) {
    headers.Authorization = `Bearer ${settings.token}`;
  }
  return headers;
}

/** The advice given whenever the network fails. */
function offlineAdvice(settings: HubSettings): string {
  return (
    `To work without network, set HF_HUB_OFFLINE=1 (or pass offline: true) to use only the cache at ${settings.cacheDir}, ` +
    'or pass the path of a local model directory instead of a repo id.'
  );
}

/** Short reason of a fetch failure: the system error code (ECONNREFUSED, ENOTFOUND…) when there is one. */
export function networkReason(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (cause && typeof cause.code === 'string') return cause.code;
  if (cause && typeof cause.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

/** The ABORTED error for a file. */
export function abortedError(f: FileRequest, detail: string, cause?: unknown): M3Error {
  return new M3Error('ABORTED', `download of ${f.repo}/${f.path} was aborted${detail}`, { file: f.path, cause });
}

/**
 * fetch with our error mapping: the caller's abort → ABORTED; a timeout or a network failure →
 * transient HUB_ERROR naming the host and the offline alternatives.
 */
async function send(
  settings: HubSettings,
  f: FileRequest,
  url: string,
  init: RequestInit,
  userSignal: AbortSignal | undefined,
  timeoutMs?: number,
): Promise<Response> {
  const signal = anySignal([userSignal, timeoutMs !== undefined ? AbortSignal.timeout(timeoutMs) : undefined]);
  try {
    return await settings.fetch(url, { ...init, signal });
  } catch (err) {
    if (userSignal?.aborted) throw abortedError(f, '', userSignal.reason);
    const host = new URL(url).origin === new URL(settings.endpoint).origin ? `the Hugging Face Hub at ${displayUrl(settings.endpoint)}` : displayUrl(url);
    const reason = (err as Error)?.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : networkReason(err);
    throw new HubRequestError(
      `cannot reach ${host} (${reason}) to fetch ${where(f)}. Check the network connection, proxy and HF_ENDPOINT. ${offlineAdvice(settings)}`,
      { transient: true },
      { file: f.path, cause: err },
    );
  }
}

/** Maps an HTTP error status to an actionable error. */
export function statusError(settings: HubSettings, f: FileRequest, res: Response): HubRequestError {
  const status = res.status;
  const hubErrorCode = res.headers.get('x-error-code') ?? undefined;
  const commit = res.headers.get('x-repo-commit') ?? undefined;
  const said = serverText(res.headers.get('x-error-message'), settings.token);
  let message: string;
  let transient = false;
  if (status === 404) {
    const hint =
      hubErrorCode === 'RepoNotFound'
        ? ': the repository does not exist, or it is private (set HF_TOKEN to a token that can read it)'
        : hubErrorCode === 'RevisionNotFound'
          ? `: the repository has no revision ${JSON.stringify(f.revision)}`
          : hubErrorCode === 'EntryNotFound'
            ? ': the repository has no such file at this revision'
            : '';
    message = `repository or file not found: ${where(f)}${hint}${said}`;
  } else if (status === 401 || status === 403) {
    const tokenAdvice = settings.token
      ? 'The token that was sent was not accepted for this repo: check that it is valid and has read access (for a gated repo, accept its terms on the Hub page first).'
      : 'Set HF_TOKEN (or pass options.token) to a Hugging Face access token with read access; for a gated repo, accept its terms on the Hub page first.';
    message = `access to ${where(f)} was refused (HTTP ${status}): the repository may be gated or private, or may not exist${said}. ${tokenAdvice}`;
  } else if (status === 429 || status >= 500) {
    transient = true;
    message = `the Hub at ${displayUrl(settings.endpoint)} failed to serve ${where(f)} (HTTP ${status}${status === 429 ? ', rate limited' : ''})${said}. Retry later. ${offlineAdvice(settings)}`;
  } else {
    message = `unexpected HTTP ${status} from ${displayUrl(res.url || settings.endpoint)} for ${where(f)}${said}`;
  }
  return new HubRequestError(redact(message, settings.token), { status, hubErrorCode, commit, transient }, { file: f.path });
}

function isRelativeLocation(location: string): boolean {
  return !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(location) && !location.startsWith('//');
}

/** Resolves a `Location` against the current URL; only http(s) targets are followed. */
function redirectTarget(f: FileRequest, location: string | null, base: string): string {
  if (!location) throw new HubRequestError(`redirect without a Location header while fetching ${where(f)}`, { transient: false }, { file: f.path });
  let target: URL;
  try {
    target = new URL(location, base);
  } catch {
    throw new HubRequestError(`invalid redirect Location ${JSON.stringify(location.slice(0, 100))} while fetching ${where(f)}`, { transient: false }, { file: f.path });
  }
  if (target.protocol !== 'https:' && target.protocol !== 'http:') {
    throw new HubRequestError(
      `refusing redirect to a non-HTTP URL (${JSON.stringify(target.protocol)}) while fetching ${where(f)}`,
      { transient: false },
      { file: f.path },
    );
  }
  return target.href;
}

/** Strips `W/` and quotes from an ETag, as huggingface_hub's `_normalize_etag`. */
function normaliseEtag(value: string | null): string | undefined {
  if (value === null) return undefined;
  return value.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function parseSize(value: string | null): number | undefined {
  return value !== null && /^\d{1,15}$/.test(value.trim()) ? Number(value.trim()) : undefined;
}

/** HEAD on the resolve URL: commit, etag, size and download location of one file. */
export async function fetchMetadata(settings: HubSettings, f: FileRequest, signal: AbortSignal | undefined): Promise<FileMetadata> {
  let url = resolveUrl(settings.endpoint, f.repo, f.revision, f.path);
  for (let hop = 0; ; hop++) {
    const res = await send(settings, f, url, { method: 'HEAD', redirect: 'manual', headers: requestHeaders(settings, url) }, signal, settings.metadataTimeoutMs);
    await res.body?.cancel().catch(() => {});
    const commit = res.headers.get('x-repo-commit');
    const linkedEtag = normaliseEtag(res.headers.get('x-linked-etag'));
    const etag = linkedEtag ?? normaliseEtag(res.headers.get('etag'));
    const isRedirect = res.status >= 300 && res.status < 400;
    if (isRedirect && commit === null) {
      // A relative redirect without metadata: the repo was renamed; the new URL answers instead.
      const location = res.headers.get('location');
      if (location && isRelativeLocation(location) && hop < MAX_REDIRECTS) {
        url = redirectTarget(f, location, url);
        continue;
      }
    }
    if (!isRedirect && !res.ok) throw statusError(settings, f, res);
    if (commit === null || !etag) {
      throw new HubRequestError(
        `the server at ${displayUrl(settings.endpoint)} did not send ${commit === null ? 'X-Repo-Commit' : 'an ETag'} for ${where(f)} (HTTP ${res.status}): ` +
          'is HF_ENDPOINT a Hugging Face Hub or mirror? A proxy or firewall may be rewriting the responses.',
        { transient: false },
        { file: f.path },
      );
    }
    const origin = `${displayUrl(url)} (${where(f)})`;
    assertSafeToken('commit', commit.trim(), `X-Repo-Commit of ${origin}`);
    assertSafeToken('etag', etag, `${linkedEtag ? 'X-Linked-Etag' : 'ETag'} of ${origin}`);
    return {
      commit: commit.trim(),
      etag,
      // For a redirect, Content-Length is the redirect page's, not the file's.
      size: parseSize(res.headers.get('x-linked-size')) ?? (isRedirect ? undefined : parseSize(res.headers.get('content-length'))),
      lfs: linkedEtag !== undefined,
      downloadUrl: isRedirect ? redirectTarget(f, res.headers.get('location'), url) : url,
    };
  }
}

/**
 * GET of the content from byte `offset`, following redirects by hand. Returns a response with
 * status 200, 206 or 416 (the caller handles resume semantics); other statuses throw.
 */
export async function openContent(
  settings: HubSettings,
  f: FileRequest,
  url: string,
  offset: number,
  signal: AbortSignal | undefined,
): Promise<Response> {
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const headers = requestHeaders(settings, current, offset > 0 ? { Range: `bytes=${offset}-` } : {});
    const res = await send(settings, f, current, { method: 'GET', redirect: 'manual', headers }, signal);
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel().catch(() => {});
      current = redirectTarget(f, res.headers.get('location'), current);
      continue;
    }
    if (res.status === 200 || res.status === 206 || res.status === 416) return res;
    await res.body?.cancel().catch(() => {});
    throw statusError(settings, f, res);
  }
  throw new HubRequestError(`more than ${MAX_REDIRECTS} redirects while downloading ${where(f)}`, { transient: false }, { file: f.path });
}
