/**
 * The encoder source: how every adapter class gets its BGE-M3 encoder, once per process.
 *
 * Order (the first that applies):
 * 1. `encoder`: the given TextEncoder3 (an M3Encoder, a worker pool, a RemoteEncoder);
 * 2. `endpoint`: a `bgem3 serve` server, through core's RemoteEncoder (several processes share
 *    one loaded model);
 * 3. `model` (with `dtype`, `onnxFile`, `hub`, `encoderOptions`): loaded once per process through
 *    the shared registry (registry.ts);
 * 4. what the class is built on (its {@link ModelBase}): the store's encoder, the wrapped
 *    embeddings' source, or LlamaIndex's `Settings.embedModel` when it is a BGE-M3 embedding; a
 *    store without an encoder gives its saved model id, which is loaded again;
 * 5. `BAAI/bge-m3`.
 *
 * Nothing ever silently loads a different model: a given model that disagrees with what the
 * class is built on (a store made with another model, an embeddings object of another model) is
 * INDEX_MISMATCH or INVALID_ARGUMENT naming both.
 */
import {
  DEFAULT_MODEL,
  M3Error,
  RemoteEncoder,
  assertTextEncoder3,
  type EncodeOptions,
  type EncodeResult,
  type EncoderOptions,
  type HubOptions,
  type LoadOptions,
  type ModelDtype,
  type RemoteEncoderOptions,
  type TextEncoder3,
} from './core.js';
import { invalid } from './checks.js';
import { loadedEncoderOf, modelFromId, sharedEncoder } from './registry.js';

/** Which BGE-M3 model a class uses and how it is loaded: the same options in every adapter class. */
export interface M3ModelParams {
  /**
   * A local model directory or a Hugging Face repo id. Default: what the class is built on (a
   * store, an embeddings object, LlamaIndex `Settings.embedModel`), else `"BAAI/bge-m3"`.
   */
  model?: string;
  /** An encoder to use (an `M3Encoder`, a worker pool, a `RemoteEncoder`): no model is loaded. */
  encoder?: TextEncoder3;
  /**
   * The URL of a `bgem3 serve` server (e.g. `http://127.0.0.1:8080`): encoding runs there, so
   * several processes share one loaded model.
   */
  endpoint?: string;
  /** Options of the connection to `endpoint` (API key, timeouts, …). */
  endpointOptions?: RemoteEncoderOptions;
  /** `"fp32"` (default) or `"q8"` (the int8 backbone); with `model` (or the default) only. */
  dtype?: ModelDtype;
  /** The ONNX file inside the model directory or repo; with `model` only. */
  onnxFile?: string;
  /** Hugging Face Hub settings (endpoint, token, cache directory, offline, progress); with `model` only. */
  hub?: HubOptions;
  /** onnxruntime and encoder settings of the loaded model; with `model` only. */
  encoderOptions?: EncoderOptions;
  /** Max tokens per text, `<s>`/`</s>` included (default: the encoder's, 8192 for BGE-M3). */
  maxLength?: number;
}

/** The option names of {@link M3ModelParams} (for the adapters' unknown-option checks). */
export const MODEL_PARAM_KEYS: readonly string[] = Object.freeze(['model', 'encoder', 'endpoint', 'endpointOptions', 'dtype', 'onnxFile', 'hub', 'encoderOptions', 'maxLength']);

/** What a class is built on, for its model (see the file comment). */
export interface ModelBase {
  /** How to name it in messages, e.g. "the store" or "Settings.embedModel". */
  what: string;
  /** Its encoder (a store's). */
  encoder?: TextEncoder3 | undefined;
  /** Its encoder source (an embeddings object's). */
  source?: EncoderSource;
  /** Its model id (a store's): whatever encoder is used must have it. */
  modelId?: string;
  /** Its dimension and vocabulary size (a store's), checked likewise. */
  dim?: number;
  vocabSize?: number;
}

const LOAD_KEYS = ['dtype', 'onnxFile', 'hub', 'encoderOptions'] as const;

/** Lazily resolves a class's encoder (see the file comment). */
export class EncoderSource {
  /** Max tokens per text passed to the encoder (undefined: the encoder's). */
  readonly maxLength: number | undefined;
  private readonly given: TextEncoder3 | undefined;
  private readonly endpoint: string | undefined;
  private readonly endpointOptions: RemoteEncoderOptions;
  private readonly modelName: string | undefined;
  private readonly load: LoadOptions;
  private readonly loadGiven: readonly string[];
  private readonly base: ModelBase | (() => ModelBase | undefined) | undefined;
  private remote: Promise<TextEncoder3> | undefined;
  private current: TextEncoder3 | undefined;

  /**
   * @param params the class's model options (checked here: INVALID_ARGUMENT naming what is wrong)
   * @param base what the class is built on, or a function giving it when first needed (for
   *   LlamaIndex `Settings`, which may be set after the class is made)
   */
  constructor(params: M3ModelParams = {}, base?: ModelBase | (() => ModelBase | undefined)) {
    if (params === null || typeof params !== 'object') invalid('model options must be an object');
    const { model, encoder, endpoint, maxLength } = params;
    const chosen = (['model', 'encoder', 'endpoint'] as const).filter((k) => params[k] !== undefined);
    if (chosen.length > 1) invalid(`give one of model, encoder and endpoint, not ${chosen.join(' and ')}`);
    if (model !== undefined && (typeof model !== 'string' || model.length === 0)) invalid(`model must be a model directory or a Hugging Face repo id such as "${DEFAULT_MODEL}", got ${JSON.stringify(model)}`);
    if (encoder !== undefined) assertTextEncoder3(encoder, 'encoder');
    if (endpoint !== undefined && (typeof endpoint !== 'string' || !/^https?:\/\/[^/]+/i.test(endpoint))) invalid(`endpoint must be an http(s) URL such as http://127.0.0.1:8080, got ${JSON.stringify(endpoint)}`);
    if (params.endpointOptions !== undefined && endpoint === undefined) invalid('endpointOptions has no effect without endpoint');
    if (params.endpointOptions !== undefined && (params.endpointOptions === null || typeof params.endpointOptions !== 'object')) invalid('endpointOptions must be an object');
    if (maxLength !== undefined && (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 2)) invalid(`maxLength must be an integer ≥ 2, got ${String(maxLength)}`);
    if (params.encoderOptions !== undefined && (params.encoderOptions === null || typeof params.encoderOptions !== 'object')) invalid('encoderOptions must be an object');
    const loadGiven = LOAD_KEYS.filter((k) => params[k] !== undefined);
    if (loadGiven.length > 0 && (encoder !== undefined || endpoint !== undefined)) {
      invalid(`${loadGiven.join(', ')} ${loadGiven.length > 1 ? 'have' : 'has'} no effect with ${encoder !== undefined ? 'encoder' : 'endpoint'} (they are options of loading a model)`);
    }
    const load: LoadOptions = { ...(params.encoderOptions ?? {}) };
    if (params.dtype !== undefined) load.dtype = params.dtype;
    if (params.onnxFile !== undefined) load.onnxFile = params.onnxFile;
    if (params.hub !== undefined) load.hub = params.hub;
    this.given = encoder;
    this.endpoint = endpoint;
    this.endpointOptions = params.endpointOptions ?? {};
    this.modelName = model;
    this.load = load;
    this.loadGiven = loadGiven;
    this.maxLength = maxLength;
    this.base = base;
    this.current = encoder;
    if (base !== undefined && typeof base !== 'function') this.checkAgainst(base, true);
  }

  /**
   * The model this source uses, as far as it is known without loading: the given `model`, the
   * encoder's model id, the endpoint, or what the class is built on.
   */
  get model(): string {
    if (this.modelName !== undefined) return this.modelName;
    if (this.given) return this.given.modelId;
    if (this.endpoint !== undefined) return this.endpoint;
    const base = this.resolveBase();
    if (base?.encoder) return base.encoder.modelId;
    if (base?.source) return base.source.model;
    if (base?.modelId) return base.modelId;
    return DEFAULT_MODEL;
  }

  /** Whether the model was chosen for this class (model, encoder or endpoint given). */
  get explicit(): boolean {
    return this.modelName !== undefined || this.given !== undefined || this.endpoint !== undefined;
  }

  /** The given encoder, if one was given. */
  get givenEncoder(): TextEncoder3 | undefined {
    return this.given;
  }

  /** The encoder last resolved (or given), else undefined (nothing loaded yet). */
  get loaded(): TextEncoder3 | undefined {
    return this.current;
  }

  private resolveBase(): ModelBase | undefined {
    return typeof this.base === 'function' ? this.base() : this.base;
  }

  // A mismatch between what was chosen here and what the class is built on.
  private checkAgainst(base: ModelBase, eager: boolean): void {
    const given = this.given;
    if (given && base.encoder && given !== base.encoder && given.modelId !== base.encoder.modelId) {
      invalid(`encoder is model ${JSON.stringify(given.modelId)}, but ${base.what} uses ${JSON.stringify(base.encoder.modelId)}: give one of them`);
    }
    const theirs = base.source?.givenEncoder;
    if (given && theirs && given !== theirs && given.modelId !== theirs.modelId) {
      invalid(`encoder is model ${JSON.stringify(given.modelId)}, but ${base.what} uses ${JSON.stringify(theirs.modelId)}: give one of them`);
    }
    if (given) this.verify(given, base);
    if (this.modelName !== undefined && base.source?.explicit && base.source.modelName !== undefined && base.source.modelName !== this.modelName) {
      invalid(`model is ${JSON.stringify(this.modelName)}, but ${base.what} uses ${JSON.stringify(base.source.modelName)}: give one of them`);
    }
    if (eager && this.loadGiven.length > 0 && this.modelName === undefined && (base.encoder || base.source)) {
      invalid(`${this.loadGiven.join(', ')}: no model is loaded here (the model comes from ${base.what}); pass them where that model is made`);
    }
  }

  // The encoder must be the model of what the class is built on.
  private verify(enc: TextEncoder3, base: ModelBase | undefined): TextEncoder3 {
    if (!base) return enc;
    const diffs: string[] = [];
    if (base.modelId !== undefined && enc.modelId !== base.modelId) diffs.push(`model id ${JSON.stringify(base.modelId)} (${base.what}) vs ${JSON.stringify(enc.modelId)} (the encoder)`);
    if (base.dim !== undefined && enc.dim !== base.dim) diffs.push(`dimension ${base.dim} vs ${enc.dim}`);
    if (base.vocabSize !== undefined && enc.vocabSize !== base.vocabSize) diffs.push(`vocabulary size ${base.vocabSize} vs ${enc.vocabSize}`);
    if (diffs.length > 0) throw new M3Error('INDEX_MISMATCH', `${base.what} was made with another model than this encoder: ${diffs.join('; ')}`);
    return enc;
  }

  /** The encoder, loading (or connecting) on first use. Concurrent callers share one load. */
  async get(): Promise<TextEncoder3> {
    const enc = await this.resolve();
    this.current = enc;
    return enc;
  }

  private async resolve(): Promise<TextEncoder3> {
    const base = typeof this.base === 'function' ? this.base() : this.base;
    if (typeof this.base === 'function' && base) this.checkAgainst(base, false);
    const own = await this.resolveOwn(base);
    // A model chosen here must be the one of what the class is built on (an embeddings object, a retriever).
    if (own && base?.source && this.explicit) {
      const theirs = await base.source.get();
      if (theirs.modelId !== own.modelId) {
        throw new M3Error('INDEX_MISMATCH', `this class uses model ${JSON.stringify(own.modelId)}, but ${base.what} is ${JSON.stringify(theirs.modelId)}: give one model (or none, to use theirs)`);
      }
    }
    if (own) return own;
    if (base?.encoder) return this.verify(base.encoder, base);
    if (base?.source) return this.verify(await base.source.get(), base);
    if (base?.modelId !== undefined) return this.reload(base as ModelBase & { modelId: string });
    return sharedEncoder(DEFAULT_MODEL, this.load);
  }

  // The encoder chosen for this class itself (encoder, endpoint or model), if any.
  private async resolveOwn(base: ModelBase | undefined): Promise<TextEncoder3 | undefined> {
    if (this.given) return this.given;
    if (this.endpoint !== undefined) {
      if (!this.remote) {
        const p = RemoteEncoder.connect(this.endpoint, this.endpointOptions) as Promise<TextEncoder3>;
        this.remote = p;
        p.catch(() => {
          if (this.remote === p) this.remote = undefined;
        });
      }
      return this.verify(await this.remote, base);
    }
    if (this.modelName !== undefined) return this.verify(await sharedEncoder(this.modelName, this.load), base);
    return undefined;
  }

  // A store saved without its encoder: its model, named by its model id, loaded again.
  private async reload(base: ModelBase & { modelId: string }): Promise<TextEncoder3> {
    const loaded = loadedEncoderOf(base.modelId);
    if (loaded) return this.verify(loaded, base);
    {
      const saved = modelFromId(base.modelId);
      if (!saved) {
        invalid(`${base.what} was made with model ${JSON.stringify(base.modelId)} (a local directory, known by its content) and has no encoder: pass { model: <that directory> } (or { encoder }) where the store is used, or open the store with its encoder`);
      }
      try {
        return this.verify(await sharedEncoder(saved.model, { ...saved.options, ...this.load }), base);
      } catch (err) {
        if (M3Error.isInstance(err) && err.code === 'INDEX_MISMATCH') {
          err.message += ` (the model was loaded again from ${JSON.stringify(saved.model)}, named by the store's model id; pass { model } or { encoder } of the store's model)`;
        }
        throw err;
      }
    }
  }

  /** Encodes with this source's `maxLength`. */
  async encode(texts: readonly string[], options: Omit<EncodeOptions, 'maxLength'> = {}): Promise<EncodeResult[]> {
    const enc = await this.get();
    return enc.encode(texts, this.maxLength === undefined ? options : { ...options, maxLength: this.maxLength });
  }
}
