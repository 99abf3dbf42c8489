/** Options of {@link createServer} and their defaults. */
import type { LoadOptions } from '../inference/encoder.js';
import type { TokenizedText } from '../tokenizer/m3-tokenizer.js';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '../types.js';
import type { BatcherOptions } from './batcher.js';

/**
 * What the server needs from its encoder: `TextEncoder3` plus the encoder's own tokenizer (token
 * counts for the batch budgets, the limits and `usage`). `M3Encoder` is one.
 */
export interface ServerEncoder extends TextEncoder3 {
  readonly maxLength: number;
  tokenize(texts: readonly string[], maxLength?: number): Promise<TokenizedText[]>;
  /**
   * The batcher passes `tokenized`, what {@link tokenize} returned for these texts (M3Encoder then
   * does not tokenise them again; an encoder that does not know the option ignores it).
   */
  encode(texts: readonly string[], options?: EncodeOptions & { tokenized?: readonly (TokenizedText | undefined)[] }): Promise<EncodeResult[]>;
  close?(): Promise<void>;
}

/** Per-request limits; a request over any of them gets a 413 JSON error before any encoding. */
export interface RequestLimits {
  /** Most request-body bytes (default 16 MiB). */
  bodyLimit?: number;
  /** Most texts per request (default 2048, OpenAI's limit). */
  maxTexts?: number;
  /** Most tokens per request, after truncation, `<s>`/`</s>` included (default 131072). */
  maxTokens?: number;
}

/** Dynamic batching and the bounded queue. */
export type BatchingOptions = Partial<BatcherOptions>;

export interface ServerOptions {
  /** The encoder to serve (the server does not close it). Give this or `model`. */
  encoder?: ServerEncoder;
  /** A model directory or Hub repo id to load (closed with the server). */
  model?: string;
  /** Options of `M3Encoder.load` when `model` is given. */
  load?: LoadOptions;
  /** Indexes served under `/v1/indexes/NAME`: name → directory (created when missing or empty). */
  indexes?: Record<string, string>;
  /** Address to bind (default 127.0.0.1: only this machine). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** A bearer key every request except `GET /health` must carry (`Authorization: Bearer KEY`). */
  apiKey?: string;
  /** The model name the OpenAI and TEI routes report (default: the encoder's `modelId`). */
  modelName?: string;
  /** The weights' dtype `GET /info` reports as TEI's `model_dtype` (default `float32`; `int8` for a q8 model). */
  modelDtype?: string;
  /** Per-request limits. */
  limits?: RequestLimits;
  /** Dynamic batching and queue bounds. */
  batching?: BatchingOptions;
  /**
   * TEI's `truncate` default: with `true` (default) texts over `maxLength` tokens are cut, as
   * everywhere in this package; with `false` TEI requests without `truncate: true` that are too
   * long get a 413 (TEI's own default).
   */
  autoTruncate?: boolean;
  /**
   * Run the model check (`checkModel`) once at start-up and report it in `GET /health`, which
   * answers 503 when it failed (default true; needs an encoder with a tokenizer, as M3Encoder).
   */
  modelCheck?: boolean;
  /** How long {@link M3Server.close} waits for requests in flight before cutting connections, ms (default 30000). */
  drainTimeoutMs?: number;
  /** Where the server writes one-line logs (unexpected errors, start, drain). Default: nowhere. */
  log?: (line: string) => void;
}

export const DEFAULT_LIMITS: Required<RequestLimits> = {
  bodyLimit: 16 * 2 ** 20,
  maxTexts: 2048,
  maxTokens: 131072,
};

/**
 * Batch budgets match the encoder's defaults (16 texts, 16384 padded tokens, alone above 1024
 * tokens), so a server batch is one forward pass; two batches in flight keep one worker busy
 * while the next is formed.
 */
export const DEFAULT_BATCHING: BatcherOptions = {
  maxBatchTexts: 16,
  maxBatchTokens: 16384,
  aloneAbove: 1024,
  maxWaitMs: 2,
  maxInflight: 2,
  maxQueueTokens: 262144,
  maxQueueTexts: 8192,
};
