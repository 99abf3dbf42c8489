/**
 * M3Encoder: the public encoder. Validates input, tokenises, plans length-sorted batches, runs
 * them on an engine (in this thread or a worker pool) and restores input order. With the cache on,
 * every text is encoded with all three outputs once and later calls for any output reuse it.
 */
import { M3Error, invalidArgument } from '../errors.js';
import { M3Tokenizer, type TokenizedText } from '../tokenizer/m3-tokenizer.js';
import type { EncodeOptions, EncodeResult, FullEncodeResult, OutputSelection, SparseVector, TextEncoder3 } from '../types.js';
import { planBatches, type BatchLimits } from './batching.js';
import { EncodeCache } from './encode-cache.js';
import { EncoderEngine, type AttentionMode, type RawOutputs, type SessionSettings } from './engine.js';
import type { ModelDtype, ModelPaths } from '../model/layout.js';
import { DEFAULT_MODEL, resolveModel } from '../model/resolve.js';
import { localModelId } from '../model/identity.js';
import type { HubOptions } from '../hub/types.js';
import { availableParallelism } from 'node:os';
import { WorkerPoolRunner, type WorkerFaults } from './worker-pool.js';

/** Texts tokenised and encoded per step: bounds memory for very large calls (batches stream). */
const CHUNK_TEXTS = 1024;

/** Runs batches of token ids. The in-thread engine and the worker pool both implement it. */
export interface BatchRunner {
  /**
   * Runs one batch. `wanted`, when given, is asked right before the batch starts (it may wait in
   * a queue): when it returns false the batch is not run and the call rejects with ABORTED.
   */
  run(batch: readonly Int32Array[], want: OutputSelection, wanted?: () => boolean): Promise<RawOutputs[]>;
  /** Forward passes run so far. */
  readonly forwardPasses: number;
  close(): Promise<void>;
}

/** Options of {@link M3Encoder.encode}. */
export interface M3EncodeOptions extends EncodeOptions {
  /**
   * The texts' tokenisation, aligned with `texts`, as {@link M3Encoder.tokenize} of this encoder
   * returned it for the same text and `maxLength` (entries may be undefined): those texts are not
   * tokenised a second time (a server that counts tokens for its limits first). Any other entry is
   * ignored and its text tokenised as usual, so the results are the same either way. The ids must
   * not have been changed since.
   */
  tokenized?: readonly (TokenizedText | undefined)[];
}

/** Options shared by every way of creating an encoder. */
export interface EncoderOptions extends SessionSettings {
  /** Default max tokens per text, `<s>`/`</s>` included (default 8192, the model's limit). */
  maxLength?: number;
  /** Most texts per forward pass (default 16). */
  batchSize?: number;
  /** Most padded tokens per forward pass (default 16384); a longer single text runs alone. */
  maxBatchTokens?: number;
  /**
   * Encode cache: `true` (default, 512 MB), `false`, or a budget in bytes (keys and bookkeeping
   * included). Lets several components share one forward pass per text; every caller gets its own
   * copy of the vectors, so changing them changes nothing for later callers.
   */
  cache?: boolean | { maxBytes: number };
}

export interface EncoderStats {
  /** Forward passes (batches) run through the model. */
  forwardPasses: number;
  /** Texts that went through the model (cache misses). */
  textsEncoded: number;
  /** Calls' texts answered from the encode cache. */
  cacheHits: number;
  /** Bytes the encode cache holds now (bounded by its `maxBytes`; 0 with the cache off). */
  cacheBytes: number;
}

function selection(o: OutputSelection | undefined): Required<OutputSelection> {
  return { dense: o?.dense ?? true, sparse: o?.sparse ?? false, colbert: o?.colbert ?? false };
}

/** Checks `texts` is an array of strings; the error names the first bad index. */
export function assertTexts(texts: unknown, what = 'texts'): asserts texts is string[] {
  if (!Array.isArray(texts)) {
    throw new TypeError(`${what} must be an array of strings, got ${texts === null ? 'null' : typeof texts}`);
  }
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') {
      const v = texts[i];
      throw new TypeError(`${what}[${i}] must be a string, got ${v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v}`);
    }
  }
}

function checkSignal(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/** Options of {@link M3Encoder.load}. */
export interface LoadOptions extends EncoderOptions {
  /** The ONNX file inside the model directory (default: detected; see the README's layouts). */
  onnxFile?: string;
  /** `fp32` (default) or `q8` (the int8 backbone `onnx/model_quantized.onnx`). */
  dtype?: ModelDtype;
  /** Hugging Face Hub settings, used when `model` is a repo id (endpoint, token, cache, offline, progress). */
  hub?: HubOptions;
  /**
   * Worker threads running the model (default 1; each loads its own copy of the model). `0` runs
   * onnxruntime on the calling thread, which blocks its event loop for the length of each batch.
   * `intraOpNumThreads` defaults to the cores divided among the workers.
   */
  workers?: number;
  /**
   * Linux: how much lower the worker threads' scheduling priority is than the caller's (a nice
   * increment, default 5; 0 keeps it equal). When encoding keeps every core busy, the scheduler
   * then runs your event loop first, so timers and requests are not delayed behind onnxruntime's
   * threads; on an otherwise idle machine throughput is unchanged. Ignored on other platforms,
   * where the priority is per process.
   */
  workerNice?: number;
  /**
   * Overrides {@link M3Encoder.modelId}. Use it to keep searching an index saved before model ids
   * of local directories were content hashes: such an index records `local:<path of the graph>`
   * (its INDEX_MISMATCH message shows it); pass that string here for the same model files.
   */
  modelId?: string;
  /** @internal Fault injection for tests (see WorkerFaults). */
  workerFaults?: WorkerFaults;
}

/** Runs batches on an engine in this thread. */
class InThreadRunner implements BatchRunner {
  constructor(private readonly engine: EncoderEngine) {}
  run(batch: readonly Int32Array[], want: OutputSelection, wanted?: () => boolean): Promise<RawOutputs[]> {
    if (wanted && !wanted()) return Promise.reject(new M3Error('ABORTED', 'encode aborted before the batch ran'));
    return this.engine.run(batch, want);
  }
  get forwardPasses(): number {
    return this.engine.forwardPasses;
  }
  close(): Promise<void> {
    return this.engine.release();
  }
}

const sharedEncoders = new Map<string, Promise<M3Encoder>>();

export class M3Encoder implements TextEncoder3 {
  /**
   * Loads a model from a local directory in any supported layout (backbone ONNX + head files,
   * three-output exports, int8 backbone; detected from the graph's inputs/outputs), or from a
   * Hugging Face repo id (default `BAAI/bge-m3`), downloaded once into the shared HF cache.
   */
  static async load(model: string | ModelPaths = DEFAULT_MODEL, options: LoadOptions = {}): Promise<M3Encoder> {
    if (options.modelId !== undefined && (typeof options.modelId !== 'string' || options.modelId.length === 0 || options.modelId.length > 4096)) {
      invalidArgument(`modelId must be a non-empty string of at most 4096 characters, got ${JSON.stringify(options.modelId)}`);
    }
    const resolved = typeof model === 'string' ? await resolveModel(model, options) : { paths: model, modelId: localModelId(model) };
    const { paths } = resolved;
    const modelId = options.modelId ?? resolved.modelId;
    const tokenizer = M3Tokenizer.load(paths.tokenizer);
    const workers = options.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 0) invalidArgument(`workers must be an integer ≥ 0, got ${options.workers}`);
    const session: SessionSettings = {
      intraOpNumThreads: options.intraOpNumThreads ?? Math.max(1, Math.floor(availableParallelism() / Math.max(1, workers))),
      ...(options.enableCpuMemArena !== undefined ? { enableCpuMemArena: options.enableCpuMemArena } : {}),
      ...(options.fuseAttention !== undefined ? { fuseAttention: options.fuseAttention } : {}),
    };
    const nice = options.workerNice ?? 5;
    if (!Number.isInteger(nice) || nice < 0 || nice > 19) invalidArgument(`workerNice must be an integer from 0 to 19, got ${options.workerNice}`);
    const spec = { paths, special: tokenizer.special, session, workerNice: nice };
    if (workers === 0) {
      const engine = await EncoderEngine.create(spec);
      return M3Encoder.checked({ modelId, tokenizer, runner: new InThreadRunner(engine), engineInfo: engine, options }, paths);
    }
    const { pool, info } = await WorkerPoolRunner.create(spec, workers, options.workerFaults);
    return M3Encoder.checked({ modelId, tokenizer, runner: pool, engineInfo: info, options }, paths);
  }

  /**
   * Builds the encoder once the tokenizer is known to fit the model: a tokenizer with more tokens
   * than the embedding table has rows (or than config.json's vocab_size) is refused naming
   * tokenizer.json, instead of failing inside onnxruntime on the first text that uses such a token.
   */
  private static async checked(args: ConstructorParameters<typeof M3Encoder>[0], paths: ModelPaths): Promise<M3Encoder> {
    const { engineInfo: info, tokenizer } = args;
    const limit = info.vocabRows ?? info.configVocabSize;
    const where = info.vocabRows !== undefined ? `the word-embedding table of ${paths.onnx} has` : `${paths.config} (vocab_size) says`;
    try {
      if (limit !== undefined && tokenizer.vocabSize > limit) {
        throw new M3Error(
          'MODEL_FILE_INVALID',
          `${paths.tokenizer} has ${tokenizer.vocabSize} tokens but ${where} only ${limit}: tokenizer.json belongs to another model`,
          { file: paths.tokenizer },
        );
      }
      return new M3Encoder(args);
    } catch (e) {
      await args.runner.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * A process-wide encoder per (model, options): the LangChain/LlamaIndex classes use it so that
   * an embeddings object, a sparse retriever and a reranker built for the same model share one
   * model load and one encode cache. A failed load is not kept (the next call retries).
   */
  static shared(model: string = DEFAULT_MODEL, options: LoadOptions = {}): Promise<M3Encoder> {
    const { hub, ...rest } = options;
    const key = JSON.stringify([model, rest, hub ? { ...hub, onProgress: undefined, signal: undefined, fetch: undefined } : null]);
    let p = sharedEncoders.get(key);
    if (!p) {
      p = M3Encoder.load(model, options).then((enc) => {
        enc.onClose = () => sharedEncoders.delete(key);
        return enc;
      });
      p.catch(() => sharedEncoders.delete(key));
      sharedEncoders.set(key, p);
    }
    return p;
  }

  /** Called once when the encoder closes (used by {@link M3Encoder.shared}). */
  private onClose: (() => void) | undefined;

  /**
   * The model's identity, recorded by indexes to refuse being searched with another model:
   * - a Hub model: `hub:<repo>@<commit>:<graph file>` (the revision resolved to a commit; `dtype`
   *   picks another graph file, hence another id);
   * - a local directory (or {@link ModelPaths}): `local:sha256-<24 hex>`, a hash of config.json,
   *   tokenizer.json, tokenizer_config.json, the graph, its external weights (size and samples
   *   when large) and both head files. It depends on the files' content only: the same model
   *   copied to another path has the same id; another model (weights, heads, tokenizer, config)
   *   has another.
   * Before this, a local model's id was `local:<absolute path of the graph>`; {@link LoadOptions.modelId}
   * can set that form to keep using an index saved with it.
   */
  readonly modelId: string;
  readonly dim: number;
  readonly colbertDim: number;
  readonly vocabSize: number;
  /** Longest input the model accepts, in tokens. */
  readonly maxPositions: number;
  /**
   * `'fused'` when the model's attention was rewritten at load into onnxruntime's fused
   * MultiHeadAttention (low memory on long inputs), `'as-exported'` otherwise.
   */
  readonly attention: AttentionMode;
  readonly maxLength: number;
  readonly tokenizer: M3Tokenizer;
  private readonly runner: BatchRunner;
  private readonly cache: EncodeCache | undefined;
  private readonly limits: BatchLimits;
  private textsEncoded = 0;
  /** Texts being encoded right now (cache key → flight), so concurrent calls share one pass. */
  private readonly inflight = new Map<string, Flight>();
  /** What {@link tokenize} returned, with the text and maxLength it was for (see M3EncodeOptions.tokenized). */
  private readonly issued = new WeakMap<TokenizedText, { text: string; maxLength: number }>();
  private closed = false;

  constructor(args: {
    modelId: string;
    tokenizer: M3Tokenizer;
    runner: BatchRunner;
    engineInfo: {
      hidden: number;
      colbertDim: number;
      maxPositions: number;
      configVocabSize: number | undefined;
      vocabRows: number | undefined;
      attention: AttentionMode;
    };
    options: EncoderOptions;
  }) {
    const { options, engineInfo } = args;
    this.modelId = args.modelId;
    this.tokenizer = args.tokenizer;
    this.runner = args.runner;
    this.dim = engineInfo.hidden;
    this.attention = engineInfo.attention;
    this.colbertDim = engineInfo.colbertDim;
    this.maxPositions = engineInfo.maxPositions;
    this.vocabSize = engineInfo.vocabRows ?? Math.max(engineInfo.configVocabSize ?? 0, args.tokenizer.vocabSize);
    this.maxLength = this.checkMaxLength(options.maxLength ?? Math.min(8192, this.maxPositions), 'maxLength');
    const positive = (v: number | undefined, d: number, name: string) => {
      const x = v ?? d;
      if (!Number.isInteger(x) || x < 1) invalidArgument(`${name} must be a positive integer, got ${v}`);
      return x;
    };
    this.limits = {
      batchSize: positive(options.batchSize, 16, 'batchSize'),
      maxBatchTokens: positive(options.maxBatchTokens, 16384, 'maxBatchTokens'),
      // Over 1024 tokens a padded batch's attention scores (B × 16 heads × L² floats) start to
      // cost more memory than the weights; alone, fused attention needs no mask (batching.ts).
      aloneAbove: 1024,
    };
    const c = options.cache ?? true;
    this.cache = c === false ? undefined : new EncodeCache(c === true ? 512 * 2 ** 20 : c.maxBytes);
  }

  private checkMaxLength(v: number, name: string): number {
    if (!Number.isInteger(v) || v < 2 || v > this.maxPositions) {
      invalidArgument(`${name} must be an integer from 2 to ${this.maxPositions} (the model's limit), got ${v}`);
    }
    return v;
  }

  /** Counters for tests and monitoring. */
  get stats(): EncoderStats {
    return { forwardPasses: this.runner.forwardPasses, textsEncoded: this.textsEncoded, cacheHits: this.cache?.hits ?? 0, cacheBytes: this.cache?.byteSize ?? 0 };
  }

  /** Tokenises as the encoder does (ids with `<s>`/`</s>`, truncated to `maxLength`). */
  async tokenize(texts: readonly string[], maxLength = this.maxLength): Promise<TokenizedText[]> {
    assertTexts(texts);
    const out = await this.tokenizer.encode(texts, this.checkMaxLength(maxLength, 'maxLength'));
    for (let i = 0; i < out.length; i++) this.issued.set(out[i], { text: texts[i], maxLength });
    return out;
  }

  /** `t` when {@link tokenize} issued it for `text` at `maxLength`, else undefined. */
  private reusable(t: TokenizedText | undefined, text: string, maxLength: number): TokenizedText | undefined {
    if (t === undefined) return undefined;
    const of = this.issued.get(t);
    return of !== undefined && of.text === text && of.maxLength === maxLength ? t : undefined;
  }

  /**
   * Encodes texts; results are in input order. Requested outputs (default: dense only) come from
   * one forward pass per text. An empty string is valid (tokens `<s></s>`).
   */
  async encode(texts: readonly string[], options: M3EncodeOptions = {}): Promise<EncodeResult[]> {
    if (this.closed) throw new M3Error('INVALID_ARGUMENT', 'this encoder was closed; create a new one');
    assertTexts(texts);
    const want = selection(options);
    const maxLength = this.checkMaxLength(options.maxLength ?? this.maxLength, 'maxLength');
    const sig = options.signal as unknown;
    if (sig !== undefined && (sig === null || typeof sig !== 'object' || typeof (sig as AbortSignal).addEventListener !== 'function' || typeof (sig as AbortSignal).aborted !== 'boolean')) {
      throw new TypeError('signal must be an AbortSignal');
    }
    checkSignal(options.signal);
    const pre = options.tokenized;
    if (pre !== undefined && !Array.isArray(pre)) throw new TypeError('tokenized must be an array (what tokenize returned for these texts)');
    const out: EncodeResult[] = new Array(texts.length);
    for (let start = 0; start < texts.length; start += CHUNK_TEXTS) {
      const end = Math.min(texts.length, start + CHUNK_TEXTS);
      await this.encodeChunk(texts, start, end, want, maxLength, options.signal, out, pre);
    }
    return out;
  }

  /** Encodes with all three outputs (what indexing stores). */
  async encodeFull(texts: readonly string[], options: Omit<EncodeOptions, keyof OutputSelection> = {}): Promise<FullEncodeResult[]> {
    return (await this.encode(texts, { ...options, dense: true, sparse: true, colbert: true })) as FullEncodeResult[];
  }

  private async encodeChunk(
    texts: readonly string[],
    start: number,
    end: number,
    want: Required<OutputSelection>,
    maxLength: number,
    signal: AbortSignal | undefined,
    out: EncodeResult[],
    pre: readonly (TokenizedText | undefined)[] | undefined,
  ): Promise<void> {
    checkSignal(signal); // aborted while an earlier chunk ran
    const cache = this.cache;
    // With a cache, compute everything once so later calls for other outputs hit.
    const compute: Required<OutputSelection> = cache ? { dense: true, sparse: true, colbert: true } : want;
    const joined = new Map<Flight, number[]>(); // the encodings this call waits for → its output slots
    const fresh: Flight[] = []; // the ones this call starts
    const join = (f: Flight, slot: number) => {
      const slots = joined.get(f);
      if (slots) slots.push(slot);
      else joined.set(f, [slot]);
    };
    for (let i = start; i < end; i++) {
      const tokens = pre && this.reusable(pre[i], texts[i], maxLength);
      if (!cache) {
        const f = newFlight(texts[i], undefined, tokens);
        fresh.push(f);
        join(f, i);
        continue;
      }
      const key = EncodeCache.key(this.modelId, maxLength, texts[i]);
      const hit = cache.get(key);
      if (hit) {
        out[i] = pick(hit, want, true);
        continue;
      }
      let f = this.inflight.get(key); // another call (or an earlier slot of this one) is encoding it
      if (!f) {
        f = newFlight(texts[i], key, tokens);
        this.inflight.set(key, f);
        fresh.push(f);
      }
      join(f, i);
    }
    if (joined.size === 0) return;
    for (const f of joined.keys()) f.waiters++;
    // The work runs detached from this call: other calls may be waiting for the same texts, and
    // it stops only when none is left (runFlights never rejects).
    if (fresh.length > 0) void this.runFlights(fresh, maxLength, compute);
    const all = Promise.all(
      [...joined].map(([f, slots]) =>
        f.promise.then((r) => {
          for (const slot of slots) out[slot] = cache ? pick(r, want, true) : r;
        }),
      ),
    );
    await new Promise<void>((resolve, reject) => {
      let left = false;
      let unlisten = () => {};
      const leave = () => {
        left = true;
        unlisten();
        for (const f of joined.keys()) f.waiters--;
      };
      // This caller alone gives up: shared work goes on for the others, and stops once nobody waits.
      if (signal) {
        unlisten = onAbort(signal, () => {
          if (left) return;
          leave();
          reject(abortError(signal));
        });
      }
      all.then(
        () => {
          if (left) return;
          leave();
          resolve();
        },
        (e: unknown) => {
          if (left) return;
          leave();
          reject(e);
        },
      );
    });
  }

  /**
   * Tokenises, batches by length and runs the texts of `flights`, settling each flight as its
   * batch finishes. A batch none of whose texts has a waiter left is skipped (also while queued
   * for a worker); a failed batch fails its own texts only. Never rejects.
   */
  private async runFlights(flights: readonly Flight[], maxLength: number, compute: Required<OutputSelection>): Promise<void> {
    try {
      // Texts whose tokenisation the caller passed (M3EncodeOptions.tokenized) are not tokenised again.
      const todo = flights.filter((f) => f.tokens === undefined);
      const fresh = todo.length > 0 ? await this.tokenizer.encode(todo.map((f) => f.text), maxLength) : [];
      let next = 0;
      const tokenized = flights.map((f) => f.tokens ?? fresh[next++]);
      for (const f of flights) {
        f.text = ''; // the ids are all that is needed now
        f.tokens = undefined;
      }
      const batches = planBatches(
        tokenized.map((t) => t.ids.length),
        this.limits,
      );
      for (const batch of batches) {
        const wanted = () => batch.some((j) => flights[j].waiters > 0);
        for (;;) {
          if (!wanted()) {
            for (const j of batch) this.settle(flights[j], new M3Error('ABORTED', 'encode aborted: every caller waiting for this text aborted'));
            break;
          }
          let raw: RawOutputs[];
          try {
            raw = await this.runner.run(
              batch.map((j) => tokenized[j].ids),
              compute,
              wanted,
            );
          } catch (e) {
            // Cancelled in the runner's queue, but a caller joined since: run it after all.
            if (e instanceof M3Error && e.code === 'ABORTED' && wanted()) continue;
            for (const j of batch) this.settle(flights[j], e);
            break;
          }
          batch.forEach((j, b) => {
            this.textsEncoded++;
            this.settle(flights[j], undefined, { ...raw[b], tokens: tokenized[j].ids.length, truncated: tokenized[j].truncated });
          });
          break;
        }
      }
    } catch (e) {
      for (const f of flights) this.settle(f, e);
    }
  }

  /** Resolves (with `result`) or rejects (with `error`) a flight once, caching a result. */
  private settle(f: Flight, error: unknown, result?: EncodeResult): void {
    if (f.settled) return;
    f.settled = true;
    if (f.key !== undefined) {
      if (this.inflight.get(f.key) === f) this.inflight.delete(f.key);
      if (!error && this.cache && !this.closed) this.cache.set(f.key, result as FullEncodeResult);
    }
    if (error) f.reject(error);
    else f.resolve(result as EncodeResult);
  }

  /**
   * FlagEmbedding's `convert_id_to_token`: lexical weights keyed by decoded token strings.
   * Ids that decode to the same string collide (the later one wins), as in Python.
   */
  async convertIdToToken(sparse: SparseVector): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (let i = 0; i < sparse.indices.length; i++) out[await this.tokenizer.decodeId(sparse.indices[i])] = sparse.values[i];
    return out;
  }

  /** Drops cached encodings. */
  clearCache(): void {
    this.cache?.clear();
  }

  /** Releases the ONNX sessions (and worker threads). The encoder cannot be used afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose?.();
    this.cache?.clear();
    await this.runner.close();
  }
}

/**
 * The requested outputs of `r`. With `copy`, fresh arrays: cached encodings are shared by every
 * caller, so none may hand out (and let a caller change) the cached arrays themselves.
 */
function pick(r: EncodeResult, want: Required<OutputSelection>, copy: boolean): EncodeResult {
  const o: EncodeResult = { tokens: r.tokens, truncated: r.truncated };
  if (want.dense && r.dense) o.dense = copy ? r.dense.slice() : r.dense;
  if (want.sparse && r.sparse) o.sparse = copy ? { indices: r.sparse.indices.slice(), values: r.sparse.values.slice() } : r.sparse;
  if (want.colbert && r.colbert) o.colbert = copy ? { data: r.colbert.data.slice(), count: r.colbert.count, dim: r.colbert.dim } : r.colbert;
  return o;
}

/**
 * One text being encoded, shared by every call that asked for it while it runs (reference
 * counted by `waiters`: the calls still waiting, i.e. neither aborted nor failed).
 */
interface Flight {
  /** The text until it is tokenised (then dropped). */
  text: string;
  /** Its tokenisation when the caller passed it (then dropped). */
  tokens: TokenizedText | undefined;
  /** Cache key, or undefined for a call's private flight (cache off). */
  key: string | undefined;
  promise: Promise<EncodeResult>;
  resolve: (r: EncodeResult) => void;
  reject: (e: unknown) => void;
  waiters: number;
  settled: boolean;
}

function newFlight(text: string, key: string | undefined, tokens: TokenizedText | undefined): Flight {
  const f = { text, key, tokens, waiters: 0, settled: false } as Flight;
  f.promise = new Promise<EncodeResult>((resolve, reject) => {
    f.resolve = resolve;
    f.reject = reject;
  });
  f.promise.catch(() => undefined); // observed by its waiters; one that nobody waits for is not unhandled
  return f;
}

/** Callbacks waiting for each signal: one 'abort' listener per signal, however many calls share it. */
const abortWaiters = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Runs `cb` when `signal` aborts; returns the function that stops waiting. A signal shared by many
 * concurrent calls (e.g. a server's shutdown signal) gets one listener, not one per call, so Node
 * never warns about a listener leak.
 */
function onAbort(signal: AbortSignal, cb: () => void): () => void {
  let set = abortWaiters.get(signal);
  if (!set) {
    const callbacks = new Set<() => void>();
    set = callbacks;
    abortWaiters.set(signal, callbacks);
    signal.addEventListener(
      'abort',
      () => {
        abortWaiters.delete(signal);
        for (const f of [...callbacks]) f();
      },
      { once: true },
    );
  }
  const mine = set;
  const entry = () => cb();
  mine.add(entry);
  return () => {
    mine.delete(entry);
  };
}

function abortError(signal: AbortSignal): M3Error {
  return new M3Error('ABORTED', `encode aborted${signal.reason instanceof Error ? `: ${signal.reason.message}` : ''}`, { cause: signal.reason });
}
