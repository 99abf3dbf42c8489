/**
 * RemoteEncoder: core's `TextEncoder3` over HTTP, against a `bgem3 serve` server. Several
 * application processes then share one loaded model (one 2.3 GB copy instead of one per process),
 * and everything that takes a `TextEncoder3` (M3Index, PgM3Store, the LangChain and LlamaIndex
 * classes) works unchanged with it.
 *
 * It calls `POST /v1/m3/encode` (dense as base64 float32, ColBERT as base64 float32, sparse as
 * `{indices, values}`: all exact, so results equal in-process encoding bit for bit) and takes its
 * `modelId`, `dim` and `vocabSize` from `GET /info`. Large calls are split to the server's
 * per-request limits and sent a few at a time; a 429/503 is retried after the server's
 * `Retry-After`; an AbortSignal cancels the HTTP requests (the server then drops that share of
 * its work and nothing else).
 */
import { M3Error, invalidArgument } from '../errors.js';
import { assertTexts } from '../inference/encoder.js';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '../types.js';
import { base64ToFloat32, colbertFromWire, sparseFromWire, type ColbertWire } from '../server/wire-format.js';

/** Options of {@link RemoteEncoder.connect}. */
export interface RemoteEncoderOptions {
  /** Bearer key, when the server was started with `--api-key-file`. */
  apiKey?: string;
  /** Timeout of each HTTP request in ms (default 300000: long texts on a CPU take a while). */
  timeoutMs?: number;
  /** Retries of a 429/503 answer, waiting for its Retry-After each time (default 5). */
  maxRetries?: number;
  /** Texts per HTTP request (default: the server's limit, at most 64). */
  batchSize?: number;
  /** HTTP requests of one `encode` call in flight at once (default 4). */
  concurrency?: number;
  /** Extra headers of every request. */
  headers?: Record<string, string>;
  /** The fetch implementation (default: the global fetch). */
  fetch?: typeof fetch;
}

/** What `GET /info` reports about the model (its `m3` field). */
interface InfoM3 {
  model_id: string;
  dim: number;
  colbert_dim?: number;
  vocab_size: number;
  max_length?: number;
}

interface EncodeItemWire {
  index: number;
  tokens: number;
  truncated: boolean;
  dense?: string;
  sparse?: { indices: number[]; values: number[] };
  colbert?: ColbertWire;
}

function positive(v: number | undefined, d: number, name: string): number {
  const x = v ?? d;
  if (!Number.isInteger(x) || x < 1) invalidArgument(`${name} must be a positive integer, got ${String(v)}`);
  return x;
}

/** A `TextEncoder3` whose model runs in a `bgem3 serve` server (see the file comment). */
export class RemoteEncoder implements TextEncoder3 {
  /** The server's base URL, without a trailing slash. */
  readonly endpoint: string;
  readonly modelId: string;
  readonly dim: number;
  readonly vocabSize: number;
  readonly colbertDim: number;
  readonly maxLength?: number;
  private readonly options: Required<Pick<RemoteEncoderOptions, 'timeoutMs' | 'maxRetries' | 'concurrency'>> & RemoteEncoderOptions;
  private readonly batchSize: number;
  private readonly fetchFn: typeof fetch;

  private constructor(endpoint: string, info: InfoM3, serverBatch: number | undefined, options: RemoteEncoderOptions) {
    this.endpoint = endpoint;
    this.modelId = info.model_id;
    this.dim = info.dim;
    this.vocabSize = info.vocab_size;
    this.colbertDim = info.colbert_dim ?? info.dim;
    if (info.max_length !== undefined) this.maxLength = info.max_length;
    this.options = {
      ...options,
      timeoutMs: positive(options.timeoutMs, 300_000, 'timeoutMs'),
      maxRetries: options.maxRetries ?? 5,
      concurrency: positive(options.concurrency, 4, 'concurrency'),
    };
    this.batchSize = positive(options.batchSize, Math.min(64, serverBatch ?? 64), 'batchSize');
    this.fetchFn = options.fetch ?? fetch;
  }

  /**
   * Connects to a server (`http://host:port`, as printed by `bgem3 serve`): reads `GET /info`
   * and returns an encoder for its model. REMOTE_FAILED when the server cannot be reached or is
   * not a bgem3 server.
   */
  static async connect(endpoint: string, options: RemoteEncoderOptions = {}): Promise<RemoteEncoder> {
    if (typeof endpoint !== 'string' || !/^https?:\/\/[^/]+/i.test(endpoint)) invalidArgument(`endpoint must be an http(s) URL such as http://127.0.0.1:8080, got ${JSON.stringify(endpoint)}`);
    const base = endpoint.replace(/\/+$/, '');
    const probe = new RemoteEncoder(base, { model_id: '', dim: 1, vocab_size: 1 }, undefined, options);
    const info = (await probe.request('GET', '/info', undefined, undefined)) as { m3?: InfoM3; max_client_batch_size?: number };
    const m3 = info?.m3;
    if (!m3 || typeof m3.model_id !== 'string' || !Number.isInteger(m3.dim) || !Number.isInteger(m3.vocab_size)) {
      throw new M3Error('REMOTE_FAILED', `${base}/info does not describe a bgem3 server (no m3 {model_id, dim, vocab_size}); is this a bgem3 serve endpoint?`);
    }
    return new RemoteEncoder(base, m3, info.max_client_batch_size, options);
  }

  /** Encodes texts on the server; results in input order, equal to the server's in-process encoding. */
  async encode(texts: readonly string[], options: EncodeOptions = {}): Promise<EncodeResult[]> {
    assertTexts(texts);
    const signal = options.signal;
    if (signal?.aborted) throw abortError(signal);
    const outputs = (['dense', 'sparse', 'colbert'] as const).filter((o) => (o === 'dense' ? options.dense ?? true : options[o] ?? false));
    if (outputs.length === 0) return texts.map(() => ({ tokens: 0, truncated: false }));
    const out: EncodeResult[] = new Array(texts.length);
    const chunks: number[] = [];
    for (let s = 0; s < texts.length; s += this.batchSize) chunks.push(s);
    let next = 0;
    const inner = new AbortController();
    const onAbort = () => inner.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const worker = async () => {
      while (next < chunks.length) {
        const start = chunks[next++];
        await this.encodeSlice(texts, start, start + this.batchSize, outputs, options.maxLength, inner.signal, out);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.options.concurrency, chunks.length) }, worker));
    } catch (e) {
      inner.abort();
      if (signal?.aborted) throw abortError(signal);
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return out;
  }

  /**
   * Encodes `texts[start, end)` in one request; a slice over the server's per-request token limit
   * (413) is split in halves, down to single texts.
   */
  private async encodeSlice(
    texts: readonly string[],
    start: number,
    end: number,
    outputs: string[],
    maxLength: number | undefined,
    signal: AbortSignal,
    out: EncodeResult[],
  ): Promise<void> {
    end = Math.min(end, texts.length);
    const slice = texts.slice(start, end);
    const body = { input: slice, outputs, dense_format: 'base64', colbert_dtype: 'float32', ...(maxLength !== undefined ? { max_length: maxLength } : {}) };
    let res: { data?: EncodeItemWire[] };
    try {
      res = (await this.request('POST', '/v1/m3/encode', body, signal)) as { data?: EncodeItemWire[] };
    } catch (e) {
      if (e instanceof RemoteHttpError && e.status === 413 && slice.length > 1) {
        const mid = start + Math.ceil(slice.length / 2);
        await this.encodeSlice(texts, start, mid, outputs, maxLength, signal, out);
        await this.encodeSlice(texts, mid, end, outputs, maxLength, signal, out);
        return;
      }
      throw e;
    }
    if (!Array.isArray(res?.data) || res.data.length !== slice.length) {
      throw new M3Error('REMOTE_FAILED', `${this.endpoint}/v1/m3/encode answered ${Array.isArray(res?.data) ? res.data.length : 'no'} encodings for ${slice.length} texts`);
    }
    for (const item of res.data) out[start + item.index] = this.decode(item);
  }

  /** Nothing to release (the model lives in the server); kept so callers can treat encoders alike. */
  async close(): Promise<void> {}

  private decode(w: EncodeItemWire): EncodeResult {
    try {
      const r: EncodeResult = { tokens: w.tokens, truncated: w.truncated };
      if (w.dense !== undefined) r.dense = base64ToFloat32(w.dense, this.dim);
      if (w.sparse !== undefined) r.sparse = sparseFromWire(w.sparse);
      if (w.colbert !== undefined) r.colbert = colbertFromWire(w.colbert);
      return r;
    } catch (e) {
      throw new M3Error('REMOTE_FAILED', `${this.endpoint}/v1/m3/encode answered a malformed encoding: ${(e as Error).message}`, { cause: e });
    }
  }

  /** One JSON request with timeout, Retry-After retries and the server's errors as M3Error. */
  private async request(method: 'GET' | 'POST', path: string, body: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    const url = `${this.endpoint}${path}`;
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(this.options.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
      let res: Response;
      try {
        res = await this.fetchFn(url, {
          method,
          headers: {
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}),
            ...this.options.headers,
          },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal: combined,
        });
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        if (timeout.aborted) throw new M3Error('REMOTE_FAILED', `${method} ${url} timed out after ${this.options.timeoutMs} ms`, { cause: e });
        throw new M3Error('REMOTE_FAILED', `${method} ${url} failed: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`, { cause: e });
      }
      const text = await res.text().catch((e: unknown) => {
        if (signal?.aborted) throw abortError(signal);
        throw new M3Error('REMOTE_FAILED', `${method} ${url}: the response was cut off (${(e as Error).message})`, { cause: e });
      });
      if ((res.status === 429 || res.status === 503) && attempt < this.options.maxRetries) {
        const wait = Math.min(60, Math.max(0.1, Number(res.headers.get('retry-after')) || 1));
        await sleep(wait * 1000, signal);
        continue;
      }
      let json: unknown;
      try {
        json = text.length ? JSON.parse(text) : undefined;
      } catch {
        throw new M3Error('REMOTE_FAILED', `${method} ${url} answered ${res.status} with a body that is not JSON`);
      }
      if (!res.ok) {
        const err = (json as { error?: { message?: unknown; code?: unknown } | string } | undefined)?.error;
        const message = typeof err === 'string' ? err : typeof err?.message === 'string' ? err.message : `HTTP ${res.status}`;
        const code = typeof err === 'object' && typeof err?.code === 'string' ? err.code : '';
        if (res.status === 400 && code === 'invalid_argument') throw new M3Error('INVALID_ARGUMENT', `${message} (from ${this.endpoint})`);
        throw new RemoteHttpError(res.status, `${method} ${url} answered ${res.status}: ${message}`);
      }
      return json;
    }
  }
}

/** A REMOTE_FAILED error carrying the HTTP status (used to split requests over the server's limits). */
class RemoteHttpError extends M3Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super('REMOTE_FAILED', message);
    this.status = status;
  }
}

function abortError(signal: AbortSignal): M3Error {
  const r = signal.reason;
  return new M3Error('ABORTED', `encode aborted${r instanceof Error ? `: ${r.message}` : ''}`, { cause: r });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
