/**
 * Internal: how every class of this package gets its BGE-M3 encoder, plus small argument checks.
 *
 * All classes built for the same model (and the same load options) resolve to ONE process-wide
 * encoder through core's `M3Encoder.shared`, so they also share its encode cache: whichever class
 * sees a text first runs the forward pass (computing dense, sparse and ColBERT at once), the
 * others hit the cache.
 */
import {
  DEFAULT_MODEL,
  M3Encoder,
  M3Error,
  type EncodeOptions,
  type EncodeResult,
  type EncoderOptions,
  type HubOptions,
  type LoadOptions,
  type ModelDtype,
  type TextEncoder3,
} from '@bgem3/core';

/**
 * Which BGE-M3 model to use and how to load it. Shared by every class of this package.
 *
 * Classes given the same `model` and load options share one encoder (and its encode cache) in the
 * process: an embeddings object, a sparse retriever and a reranker over the same texts then run
 * one forward pass per text in total.
 */
export interface BGEM3ModelParams {
  /**
   * A local model directory (any layout `@bgem3/core` detects) or a Hugging Face repo id.
   * Default `"BAAI/bge-m3"` (downloaded once into the Hugging Face cache).
   */
  model?: string;
  /**
   * An encoder to use instead of loading `model` (e.g. an `M3Encoder` you created, or any
   * `TextEncoder3` such as a worker pool). When given, `model`, `dtype`, `onnxFile`, `hub` and
   * `encoderOptions` are ignored.
   */
  encoder?: TextEncoder3;
  /** `"fp32"` (default) or `"q8"` (the int8 backbone). */
  dtype?: ModelDtype;
  /** The ONNX file inside the model directory or repo (default: detected). */
  onnxFile?: string;
  /** Hugging Face Hub settings (endpoint, token, cache directory, offline mode, progress). */
  hub?: HubOptions;
  /**
   * onnxruntime and encoder settings passed to `M3Encoder.shared` (threads, memory arena,
   * forward-pass batch size, encode-cache budget). Classes that should share one encoder must
   * pass the same values.
   */
  encoderOptions?: EncoderOptions;
  /**
   * Max tokens per text, `<s>`/`</s>` included (default: the encoder's, 8192 for BGE-M3). The
   * encode cache is keyed by it: classes that should share encodings must use the same value.
   */
  maxLength?: number;
}

/** Lazily resolves the encoder of a {@link BGEM3ModelParams}; a failed load is retried next time. */
export class EncoderSource {
  /** The model asked for: `model`, else the given encoder's `modelId`, else `BAAI/bge-m3`. */
  readonly model: string;
  readonly maxLength: number | undefined;
  private readonly given: TextEncoder3 | undefined;
  private readonly loadOptions: LoadOptions;
  private pending: Promise<TextEncoder3> | undefined;
  private current: TextEncoder3 | undefined;

  constructor(params: BGEM3ModelParams = {}) {
    const model = params.model ?? (params.encoder && typeof params.encoder.modelId === 'string' ? params.encoder.modelId : DEFAULT_MODEL);
    if (typeof model !== 'string' || model.length === 0) {
      throw new TypeError(`model must be a model directory or a Hugging Face repo id such as "${DEFAULT_MODEL}", got ${JSON.stringify(model)}`);
    }
    if (params.encoder !== undefined && !isEncoder(params.encoder)) {
      throw new TypeError('encoder must be an M3Encoder (or a TextEncoder3: {modelId, dim, vocabSize, encode()})');
    }
    if (params.maxLength !== undefined) checkPositiveInteger(params.maxLength, 'maxLength');
    this.model = model;
    this.maxLength = params.maxLength;
    this.given = params.encoder;
    this.current = params.encoder;
    // Only defined keys: M3Encoder.shared keys its map by the JSON of the options, so `{}` and
    // `{dtype: undefined}` must not differ.
    const opts: LoadOptions = { ...(params.encoderOptions ?? {}) };
    if (params.dtype !== undefined) opts.dtype = params.dtype;
    if (params.onnxFile !== undefined) opts.onnxFile = params.onnxFile;
    if (params.hub !== undefined) opts.hub = params.hub;
    this.loadOptions = opts;
  }

  /** The encoder once loaded (or the one given), else undefined. */
  get loaded(): TextEncoder3 | undefined {
    return this.current;
  }

  /** The encoder, loading it on first use. Concurrent callers share one load. */
  get(): Promise<TextEncoder3> {
    if (this.given) return Promise.resolve(this.given);
    if (!this.pending) {
      const p = M3Encoder.shared(this.model, this.loadOptions).then((enc) => {
        this.current = enc;
        return enc as TextEncoder3;
      });
      this.pending = p;
      p.catch(() => {
        if (this.pending === p) this.pending = undefined;
      });
    }
    return this.pending;
  }

  /** Encodes with this source's `maxLength`. */
  async encode(texts: readonly string[], options: Omit<EncodeOptions, 'maxLength'>): Promise<EncodeResult[]> {
    const enc = await this.get();
    return enc.encode(texts, this.maxLength === undefined ? options : { ...options, maxLength: this.maxLength });
  }

  /** The parameters this source was built from (to build a sibling sharing the same encoder). */
  params(): BGEM3ModelParams {
    const p: BGEM3ModelParams = { model: this.model, ...this.loadOptionsAsParams() };
    if (this.given) p.encoder = this.given;
    if (this.maxLength !== undefined) p.maxLength = this.maxLength;
    return p;
  }

  private loadOptionsAsParams(): BGEM3ModelParams {
    const { dtype, onnxFile, hub, ...encoderOptions } = this.loadOptions;
    const p: BGEM3ModelParams = {};
    if (dtype !== undefined) p.dtype = dtype;
    if (onnxFile !== undefined) p.onnxFile = onnxFile;
    if (hub !== undefined) p.hub = hub;
    if (Object.keys(encoderOptions).length > 0) p.encoderOptions = encoderOptions;
    return p;
  }
}

function isEncoder(x: unknown): x is TextEncoder3 {
  const e = x as TextEncoder3;
  return e !== null && typeof e === 'object' && typeof e.encode === 'function' && typeof e.modelId === 'string' && typeof e.dim === 'number';
}

/** The ColBERT dimension of an encoder (`M3Encoder.colbertDim`, else `dim`). */
export function colbertDimOf(enc: TextEncoder3): number {
  const d = (enc as Partial<M3Encoder>).colbertDim;
  return typeof d === 'number' ? d : enc.dim;
}

/** Throws M3Error INVALID_ARGUMENT unless `v` is a positive integer. Returns `v`. */
export function checkPositiveInteger(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new M3Error('INVALID_ARGUMENT', `${name} must be a positive integer, got ${typeof v === 'number' ? v : JSON.stringify(v) ?? String(v)}`);
  }
  return v;
}

/** Throws a TypeError unless the query is a string. */
export function checkQuery(query: unknown, what = 'query'): asserts query is string {
  if (typeof query !== 'string') {
    throw new TypeError(`${what} must be a string, got ${query === null ? 'null' : Array.isArray(query) ? 'array' : typeof query}`);
  }
}
