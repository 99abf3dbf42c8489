/**
 * The server's Prometheus metrics (prom-client), on a registry of its own so that several servers
 * in one process, or an application's own metrics, never collide. `GET /metrics` serves them in
 * the Prometheus text format.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EncodeBatcher } from './batcher.js';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requestDuration: Histogram<'route' | 'method' | 'status'>;
  readonly errors: Counter<'code'>;
  readonly tokens: Counter;
  readonly texts: Counter;
  readonly batchTexts: Histogram;
  readonly batchTokens: Histogram;
  readonly batchDuration: Histogram;
  readonly queueWait: Histogram;

  constructor(batcher: () => EncodeBatcher) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'bgem3_' });
    this.requestDuration = new Histogram({
      name: 'bgem3_request_duration_seconds',
      help: 'HTTP request latency, from the request to the end of the response',
      labelNames: ['route', 'method', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.errors = new Counter({ name: 'bgem3_errors_total', help: 'Error responses by code', labelNames: ['code'], registers });
    this.tokens = new Counter({ name: 'bgem3_tokens_total', help: 'Tokens encoded (real tokens, <s> and </s> included)', registers });
    this.texts = new Counter({ name: 'bgem3_texts_total', help: 'Texts encoded', registers });
    this.batchTexts = new Histogram({ name: 'bgem3_batch_texts', help: 'Texts per batch', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers });
    this.batchTokens = new Histogram({
      name: 'bgem3_batch_padded_tokens',
      help: 'Padded tokens (texts × longest) per batch',
      buckets: [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768],
      registers,
    });
    this.batchDuration = new Histogram({ name: 'bgem3_batch_duration_seconds', help: 'Encoder time per batch', buckets: LATENCY_BUCKETS, registers });
    this.queueWait = new Histogram({ name: 'bgem3_queue_wait_seconds', help: 'Time a text waited in the queue before its batch ran', buckets: LATENCY_BUCKETS, registers });
    new Gauge({
      name: 'bgem3_queue_texts',
      help: 'Texts waiting in the queue',
      registers,
      collect() {
        this.set(batcher().queuedTexts);
      },
    });
    new Gauge({
      name: 'bgem3_queue_tokens',
      help: 'Tokens waiting in the queue',
      registers,
      collect() {
        this.set(batcher().queuedTokenCount);
      },
    });
    new Gauge({
      name: 'bgem3_batches_inflight',
      help: 'Batches running in the encoder',
      registers,
      collect() {
        this.set(batcher().inflightBatches);
      },
    });
    new Gauge({
      name: 'bgem3_tokens_per_second',
      help: 'Tokens encoded per second over the last 30 s',
      registers,
      collect() {
        this.set(batcher().tokensPerSecond());
      },
    });
  }

  /** Records one finished batch. */
  batch(texts: number, paddedTokens: number, realTokens: number, seconds: number): void {
    this.batchTexts.observe(texts);
    this.batchTokens.observe(paddedTokens);
    this.batchDuration.observe(seconds);
    this.tokens.inc(realTokens);
    this.texts.inc(texts);
  }
}
