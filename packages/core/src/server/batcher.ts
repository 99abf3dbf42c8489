/**
 * Dynamic batching across concurrent requests. Each request's texts (already tokenised, so their
 * lengths are known) join one bounded queue; a batch is cut when it is full (a text count and a
 * padded-token budget, as the encoder's own batches) or, when the encoder is idle, once its oldest
 * text has waited `maxWaitMs`. At most `maxInflight` batches are handed to the encoder at once:
 * two keep a single worker busy while the next batch is formed, and the second goes in only full.
 *
 * Cancellation stays per request: a request whose signal aborts has its queued texts removed and
 * nothing else; a batch already running is cancelled only when every request with a text in it
 * has aborted. A batch that fails with ABORTED while some of its requests are still live (which
 * only another caller's abort could cause) is queued again for those requests, so one client's
 * disconnect never fails another's request.
 */
import { M3Error } from '../errors.js';
import { paddingAcceptable } from '../inference/batching.js';
import type { TokenizedText } from '../tokenizer/m3-tokenizer.js';
import type { EncodeResult, OutputSelection } from '../types.js';
import { ApiError, m3ErrorCode } from './http-error.js';
import type { ServerEncoder } from './options.js';

/** Batching and queue settings (see {@link ServingOptions} for the defaults). */
export interface BatcherOptions {
  /** Most texts per batch. */
  maxBatchTexts: number;
  /** Most padded tokens (texts × longest) per batch; a longer single text runs alone. */
  maxBatchTokens: number;
  /** Texts longer than this run alone (the encoder's own rule: long texts gain nothing from batching). */
  aloneAbove: number;
  /** Longest time a text waits for companions before its batch is cut, in ms. */
  maxWaitMs: number;
  /** Batches handed to the encoder at once. */
  maxInflight: number;
  /** Most tokens waiting in the queue (not yet in a batch); beyond it requests get 429. */
  maxQueueTokens: number;
  /** Most texts waiting in the queue. */
  maxQueueTexts: number;
}

/** What the batcher reports to the metrics. */
export interface BatcherEvents {
  batch?(texts: number, paddedTokens: number, realTokens: number, seconds: number): void;
  queueWait?(seconds: number): void;
}

interface Job {
  results: EncodeResult[];
  remaining: number;
  resolve(r: EncodeResult[]): void;
  reject(e: unknown): void;
  aborted: boolean;
  settled: boolean;
  queued: Set<Item>;
  /** Called when the job aborts, by each running batch it has texts in. */
  onAbort: Set<() => void>;
}

interface Item {
  text: string;
  tokens: number;
  /** The encoder's tokenisation of `text`, when the submitter has it (passed on, not redone). */
  tokenized: TokenizedText | undefined;
  maxLength: number;
  want: Required<OutputSelection>;
  job: Job;
  slot: number;
  enqueuedAt: number;
  retries: number;
}

/** A text submitted with its token count (from the encoder's own tokenizer). */
export interface SubmittedText {
  text: string;
  tokens: number;
  /** What the encoder's `tokenize` returned for `text` at the request's maxLength: the encoder then skips tokenising it again. */
  tokenized?: TokenizedText;
}

const MAX_RETRIES = 2;


export class EncodeBatcher {
  private queue: Item[] = [];
  private queuedTokens = 0;
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  private closing = false;
  private idleWaiters: Array<() => void> = [];
  /** Tokens encoded per second, over the last completed batches (for Retry-After). */
  private recent: Array<{ at: number; tokens: number }> = [];

  constructor(
    private readonly encoder: Pick<ServerEncoder, 'encode'>,
    private readonly opts: BatcherOptions,
    private readonly events: BatcherEvents = {},
  ) {}

  /** Texts waiting in the queue. */
  get queuedTexts(): number {
    return this.queue.length;
  }
  /** Tokens waiting in the queue. */
  get queuedTokenCount(): number {
    return this.queuedTokens;
  }
  /** Batches running in the encoder. */
  get inflightBatches(): number {
    return this.inflight;
  }

  /** Tokens per second over the last 30 s of completed batches (0 when idle). */
  tokensPerSecond(now = Date.now()): number {
    this.recent = this.recent.filter((r) => now - r.at <= 30_000);
    if (this.recent.length === 0) return 0;
    const span = Math.max(1, now - this.recent[0].at) / 1000;
    return this.recent.reduce((s, r) => s + r.tokens, 0) / Math.max(span, 1);
  }

  /** Seconds a client should wait before retrying, from the queue and the recent throughput. */
  retryAfterSeconds(): number {
    const tps = this.tokensPerSecond();
    if (tps <= 0) return 1;
    return Math.min(60, Math.max(1, Math.ceil(this.queuedTokens / tps)));
  }

  /**
   * Queues texts and resolves with their encodings in order. Rejects with a 429 {@link ApiError}
   * when the queue cannot take them, 503 once draining, and M3Error ABORTED when `signal` aborts.
   */
  submit(texts: readonly SubmittedText[], options: { maxLength: number; want: Required<OutputSelection>; signal?: AbortSignal }): Promise<EncodeResult[]> {
    if (this.closing) return Promise.reject(new ApiError(503, 'shutting_down', 'the server is shutting down; retry on another instance', { retryAfter: 1 }));
    if (texts.length === 0) return Promise.resolve([]);
    const tokens = texts.reduce((s, t) => s + t.tokens, 0);
    if (texts.length > this.opts.maxQueueTexts || tokens > this.opts.maxQueueTokens) {
      // Could never be queued: not a "retry later" but a request to split.
      return Promise.reject(
        new ApiError(413, 'request_too_large', `this request (${texts.length} texts, ${tokens} tokens) exceeds the server's whole queue (${this.opts.maxQueueTexts} texts, ${this.opts.maxQueueTokens} tokens): split it`),
      );
    }
    if (this.queue.length + texts.length > this.opts.maxQueueTexts || this.queuedTokens + tokens > this.opts.maxQueueTokens) {
      return Promise.reject(
        new ApiError(429, 'queue_full', `the server's queue is full (${this.queue.length} texts, ${this.queuedTokens} tokens waiting); retry later`, {
          retryAfter: this.retryAfterSeconds(),
        }),
      );
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(abortError());
    return new Promise<EncodeResult[]>((resolve, reject) => {
      const job: Job = { results: new Array(texts.length), remaining: texts.length, resolve, reject, aborted: false, settled: false, queued: new Set(), onAbort: new Set() };
      const now = performance.now();
      texts.forEach((t, slot) => {
        const item: Item = { text: t.text, tokens: t.tokens, tokenized: t.tokenized, maxLength: options.maxLength, want: options.want, job, slot, enqueuedAt: now, retries: 0 };
        this.queue.push(item);
        job.queued.add(item);
      });
      this.queuedTokens += tokens;
      if (signal) {
        const onAbort = () => this.abortJob(job);
        signal.addEventListener('abort', onAbort, { once: true });
        const clean = () => signal.removeEventListener('abort', onAbort);
        job.resolve = (r) => (clean(), resolve(r));
        job.reject = (e) => (clean(), reject(e));
      }
      this.schedule();
    });
  }

  /**
   * Stops taking new texts (submit answers 503) and resolves once every queued and running text
   * is done.
   */
  drain(): Promise<void> {
    this.closing = true;
    this.schedule();
    if (this.queue.length === 0 && this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private abortJob(job: Job): void {
    if (job.settled) return;
    job.aborted = true;
    this.unqueueAll(job.queued);
    job.queued.clear();
    this.settle(job, abortError());
    for (const f of job.onAbort) f();
    this.checkIdle();
  }

  /** Removes `items` from the queue in one pass (a request may have thousands of texts queued). */
  private unqueueAll(items: ReadonlySet<Item>): void {
    if (items.size === 0) return;
    this.queue = this.queue.filter((it) => {
      if (!items.has(it)) return true;
      this.queuedTokens -= it.tokens;
      return false;
    });
  }

  private settle(job: Job, error?: unknown): void {
    if (job.settled) return;
    job.settled = true;
    if (error !== undefined) job.reject(error);
    else job.resolve(job.results);
  }

  private schedule(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.inflight < this.opts.maxInflight && this.queue.length > 0) {
      const { items, full } = this.pick();
      const waited = performance.now() - this.queue[0].enqueuedAt;
      if (!full && !this.closing) {
        // A batch that is not full waits: while another batch keeps the encoder busy there is no
        // hurry (more texts will come and make it fuller, and it is cut when that batch ends);
        // with the encoder idle, for at most maxWaitMs.
        if (this.inflight > 0) return;
        if (waited < this.opts.maxWaitMs) {
          this.timer = setTimeout(() => this.schedule(), Math.max(1, Math.ceil(this.opts.maxWaitMs - waited)));
          return;
        }
      }
      this.unqueueAll(new Set(items));
      for (const item of items) item.job.queued.delete(item);
      void this.run(items);
    }
    this.checkIdle();
  }

  /**
   * The next batch: the oldest text (so every text is served in time) and the queued texts of the
   * same max length closest to it in length (little padding), within the text and token budgets
   * and the padding bound (paddingAcceptable, shared with the encoder's own batch planning).
   * `full` says whether waiting longer could not make it larger.
   */
  private pick(): { items: Item[]; full: boolean } {
    const head = this.queue[0];
    const { maxBatchTexts, maxBatchTokens, aloneAbove } = this.opts;
    if (head.tokens > aloneAbove) return { items: [head], full: true };
    const window = this.queue.slice(1, 1 + 8 * maxBatchTexts).filter((it) => it.maxLength === head.maxLength && it.tokens <= aloneAbove);
    window.sort((a, b) => Math.abs(a.tokens - head.tokens) - Math.abs(b.tokens - head.tokens));
    const items = [head];
    let longest = head.tokens;
    let real = head.tokens;
    let blocked = false;
    for (const it of window) {
      if (items.length >= maxBatchTexts) break;
      const l = Math.max(longest, it.tokens);
      const padded = l * (items.length + 1);
      if (padded > maxBatchTokens) {
        blocked = true;
        continue;
      }
      if (!paddingAcceptable(l, items.length + 1, real + it.tokens)) continue; // its own batch, later
      items.push(it);
      longest = l;
      real += it.tokens;
    }
    return { items, full: blocked || items.length >= maxBatchTexts || longest * (items.length + 1) > maxBatchTokens };
  }

  private async run(items: Item[]): Promise<void> {
    this.inflight++;
    const started = performance.now();
    for (const it of items) this.events.queueWait?.((started - it.enqueuedAt) / 1000);
    // The batch's own signal: aborted only once every request with a text in it has aborted.
    const controller = new AbortController();
    const jobs = new Set(items.map((it) => it.job));
    const check = () => {
      if ([...jobs].every((j) => j.aborted)) controller.abort(new Error('every request of this batch was cancelled'));
    };
    for (const j of jobs) j.onAbort.add(check);
    const want = { dense: false, sparse: false, colbert: false };
    for (const it of items) {
      want.dense ||= it.want.dense;
      want.sparse ||= it.want.sparse;
      want.colbert ||= it.want.colbert;
    }
    try {
      const results = await this.encoder.encode(
        items.map((it) => it.text),
        { ...want, maxLength: items[0].maxLength, signal: controller.signal, tokenized: items.map((it) => it.tokenized) },
      );
      const real = results.reduce((s, r) => s + r.tokens, 0);
      const seconds = (performance.now() - started) / 1000;
      this.recent.push({ at: Date.now(), tokens: real });
      this.events.batch?.(items.length, items.length * Math.max(...items.map((it) => it.tokens)), real, seconds);
      items.forEach((it, i) => {
        const job = it.job;
        if (job.settled) return;
        job.results[it.slot] = select(results[i], it.want);
        if (--job.remaining === 0) this.settle(job);
      });
    } catch (err) {
      const retry = m3ErrorCode(err) === 'ABORTED' ? items.filter((it) => !it.job.settled && it.retries < MAX_RETRIES) : [];
      for (const it of items) {
        if (retry.includes(it) || it.job.settled) continue;
        this.settle(it.job, err);
        this.unqueueAll(it.job.queued);
        it.job.queued.clear();
      }
      // Another caller's abort reached this batch: the live requests' texts go again, first.
      for (const it of retry.reverse()) {
        it.retries++;
        this.queue.unshift(it);
        this.queuedTokens += it.tokens;
        it.job.queued.add(it);
      }
    } finally {
      for (const j of jobs) j.onAbort.delete(check);
      this.inflight--;
      this.schedule();
    }
  }

  private checkIdle(): void {
    if (this.queue.length === 0 && this.inflight === 0 && this.idleWaiters.length > 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }
}

function abortError(): M3Error {
  return new M3Error('ABORTED', 'the request was cancelled by its client');
}

function select(r: EncodeResult, want: Required<OutputSelection>): EncodeResult {
  const o: EncodeResult = { tokens: r.tokens, truncated: r.truncated };
  if (want.dense && r.dense) o.dense = r.dense;
  if (want.sparse && r.sparse) o.sparse = r.sparse;
  if (want.colbert && r.colbert) o.colbert = r.colbert;
  return o;
}
