/**
 * What the four LlamaIndex.TS classes share: the model options, the lazily loaded encoder and
 * argument checks. All model logic lives in @bgem3/core; this file only wires it up.
 */
import { DEFAULT_MODEL, M3Encoder, M3Error, type EncoderOptions, type HubOptions, type LoadOptions, type ModelDtype, type TextEncoder3 } from '@bgem3/core';
import { extractText, type MessageContent, type QueryBundle } from 'llamaindex';

/**
 * How a class gets its BGE-M3 encoder. By default every class built for the same `model` (and
 * `dtype`/`onnxFile`/`hub`) uses core's process-wide {@link M3Encoder.shared} encoder, so an
 * embedding, a sparse retriever, a ColBERT reranker and an ensemble retriever load the model once
 * and share one encode cache: each text goes through the model once, whichever class asks first.
 */
export interface BGEM3ModelOptions {
  /** Model directory (any layout core supports) or Hugging Face repo id. Default `'BAAI/bge-m3'`. */
  model?: string;
  /**
   * An encoder to use instead of the shared one (e.g. `await M3Encoder.load(dir, { intraOpNumThreads: 4 })`
   * or a worker pool). Pass the same encoder to every class to keep one pass per text.
   * `model`, `dtype`, `onnxFile`, `hub` and `encoderOptions` are ignored when it is given.
   */
  encoder?: TextEncoder3;
  /** `'fp32'` (default) or `'q8'` (int8 backbone). */
  dtype?: ModelDtype;
  /** The ONNX file inside the model directory/repo (default: detected). */
  onnxFile?: string;
  /** Max tokens per text, `<s>`/`</s>` included (default: the encoder's, 8192 for BGE-M3). Longer texts are cut. */
  maxLength?: number;
  /** Hugging Face Hub settings (endpoint, token, cache dir, offline, progress) for repo ids. */
  hub?: HubOptions;
  /**
   * onnxruntime and encoder settings for `M3Encoder.shared` (threads, forward-pass batch size,
   * encode-cache budget). Classes that should share one encoder must pass the same values.
   * (`maxLength` here is the encoder's default; prefer the top-level `maxLength`.)
   */
  encoderOptions?: EncoderOptions;
}

/** Throws core's INVALID_ARGUMENT error. */
export function invalid(message: string): never {
  throw new M3Error('INVALID_ARGUMENT', message);
}

/** A positive integer option, or its default. */
export function positiveInt(value: unknown, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) invalid(`${name} must be a positive integer, got ${String(value)}`);
  return value;
}

/**
 * Resolves the encoder of a class lazily. The load itself is core's single shared promise per
 * model: concurrent first calls load once, and a failed load is not kept (the next call retries).
 * The encoder is looked up on every call, so an encoder that was closed is replaced by a new one.
 */
export class EncoderSource {
  readonly model: string;
  readonly maxLength: number | undefined;
  private readonly options: BGEM3ModelOptions;

  constructor(options: BGEM3ModelOptions = {}) {
    if (options === null || typeof options !== 'object') invalid('options must be an object');
    const { model, encoder, maxLength } = options;
    if (model !== undefined && (typeof model !== 'string' || model.length === 0)) invalid(`model must be a model directory or a Hugging Face repo id, got ${JSON.stringify(model)}`);
    if (encoder !== undefined && (encoder === null || typeof encoder.encode !== 'function')) invalid('encoder must be a TextEncoder3 (e.g. an M3Encoder)');
    if (options.encoderOptions !== undefined && (options.encoderOptions === null || typeof options.encoderOptions !== 'object')) invalid('encoderOptions must be an object');
    if (maxLength !== undefined && (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 2)) invalid(`maxLength must be an integer ≥ 2, got ${String(maxLength)}`);
    this.options = options;
    this.model = model ?? (typeof encoder?.modelId === 'string' ? encoder.modelId : DEFAULT_MODEL);
    this.maxLength = maxLength;
  }

  /** The explicitly given encoder, if any. */
  get explicit(): TextEncoder3 | undefined {
    return this.options.encoder;
  }

  /** The encoder (loading it on first use). */
  get(): Promise<TextEncoder3> {
    const { encoder, dtype, onnxFile, hub, encoderOptions } = this.options;
    if (encoder) return Promise.resolve(encoder);
    // Only defined keys: M3Encoder.shared keys its map by the options' JSON.
    const load: LoadOptions = { ...(encoderOptions ?? {}) };
    if (dtype !== undefined) load.dtype = dtype;
    if (onnxFile !== undefined) load.onnxFile = onnxFile;
    if (hub !== undefined) load.hub = hub;
    return M3Encoder.shared(this.model, load);
  }

  /** Per-call encode options (the configured `maxLength`). */
  get encodeOptions(): { maxLength?: number } {
    return this.maxLength !== undefined ? { maxLength: this.maxLength } : {};
  }
}

/**
 * The text of a query as LlamaIndex passes it (a string, multimodal content parts, or a
 * QueryBundle). A missing query, or one with no text part, throws INVALID_ARGUMENT.
 */
export function queryText(query: MessageContent | QueryBundle | null | undefined, who: string): string {
  if (query === undefined || query === null) invalid(`${who} needs a query, got ${String(query)}`);
  if (typeof query === 'object' && !Array.isArray(query)) {
    if ((query as QueryBundle).query === undefined || (query as QueryBundle).query === null) invalid(`${who} needs a query: the QueryBundle has no \`query\``);
    return queryText((query as QueryBundle).query, who);
  }
  if (typeof query !== 'string' && !Array.isArray(query)) invalid(`${who}: the query must be a string or message content parts, got ${typeof query}`);
  if (Array.isArray(query) && !query.some((p) => p?.type === 'text')) invalid(`${who}: the query has no text part (BGE-M3 encodes text only)`);
  return extractText(query);
}
