/**
 * The encoder engine: one ONNX session (plus the ColBERT head session for backbone graphs) that
 * turns batches of token ids into dense, sparse and ColBERT outputs. It holds no queue and no
 * cache, so the same class runs in the main thread or inside a worker thread.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import * as ort from 'onnxruntime-node';
import { M3Error } from '../errors.js';
import { detectGraphLayout, type GraphLayout, type ModelPaths } from '../model/layout.js';
import { loadHeads, type M3Heads } from '../model/heads.js';
import { fuseAttention } from '../model/attention-fusion.js';
import { float16ToFloat32 } from '../model/float16.js';
import { embeddingRows } from '../model/graph-facts.js';
import { readModelConfig } from '../model/model-config.js';
import type { SpecialIds } from '../tokenizer/m3-tokenizer.js';
import type { ColbertMatrix, OutputSelection, SparseVector } from '../types.js';
import { buildOnnxModel, OnnxType } from './onnx-graph.js';
import { aggregateSparse, l2Normalized, normalizedRows, sparseWeightAt } from './postprocess.js';

/** onnxruntime session settings exposed to users. */
export interface SessionSettings {
  /** Threads used inside one ONNX run (default: all cores, or cores / workers with a pool). */
  intraOpNumThreads?: number;
  /**
   * onnxruntime's CPU memory arena (default true). On, large activations are reused instead of
   * being freshly allocated and page-faulted each run (3× faster on an 8192-token input here);
   * the arena grows to the largest batch seen and never shrinks. Off, memory returns to the
   * system after every run: use it for servers with rare very long inputs.
   */
  enableCpuMemArena?: boolean;
  /**
   * Rewrite the exported attention into onnxruntime's fused MultiHeadAttention at load time
   * (default true). One 8192-token input then needs about 1 GB of activations instead of 9 GB,
   * and short batches run as fast or faster. Set false to run the graph exactly as exported.
   */
  fuseAttention?: boolean;
}

/** How the model's attention runs: rewritten to fused MultiHeadAttention, or as the file has it. */
export type AttentionMode = 'fused' | 'as-exported';

/** Outputs of one text, before the encoder adds token counts. */
export interface RawOutputs {
  dense?: Float32Array;
  sparse?: SparseVector;
  colbert?: ColbertMatrix;
}

/** What an engine needs to be rebuilt elsewhere (e.g. in a worker): plain, cloneable data. */
export interface EngineSpec {
  paths: ModelPaths;
  special: SpecialIds;
  session: SessionSettings;
  /** Nice increment for a worker thread running this engine (see LoadOptions.workerNice). */
  workerNice?: number;
}

function lastDim(meta: unknown): number | undefined {
  const shape = (meta as { shape?: unknown[] } | undefined)?.shape;
  const d = Array.isArray(shape) ? shape[shape.length - 1] : undefined;
  return typeof d === 'number' && d > 0 ? d : undefined;
}

/**
 * Opens an ONNX session. `externalDataDir` is where the external-data files of a model given as
 * bytes live (a file path finds them beside itself).
 */
export async function createSession(
  path: string | Uint8Array,
  settings: SessionSettings,
  file: string,
  externalDataDir?: string,
): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    enableCpuMemArena: settings.enableCpuMemArena ?? true,
    ...(settings.intraOpNumThreads ? { intraOpNumThreads: settings.intraOpNumThreads } : {}),
    ...(externalDataDir ? { extra: { session: { model_external_initializers_file_folder_path: externalDataDir } } } : {}),
  };
  try {
    return typeof path === 'string' ? await ort.InferenceSession.create(path, options) : await ort.InferenceSession.create(path, options);
  } catch (cause) {
    const reason = (cause as Error).message.split('\n')[0];
    // onnxruntime blames the graph when its external-data file is truncated or missing; name the
    // data file (the one to re-download): a quoted path in the message, else the sidecar beside it.
    const data =
      typeof path === 'string' && /external/i.test(reason)
        ? (/"([^"]+)"/.exec(reason)?.[1] ?? [`${path}_data`, `${path}.data`].find((p) => existsSync(p)))
        : undefined;
    if (data) {
      throw new M3Error(
        'MODEL_FILE_INVALID',
        `cannot load ONNX model ${file}: its external-data file ${data} is ${existsSync(data) ? 'truncated or damaged' : 'missing'} (${reason})`,
        { file: data, cause },
      );
    }
    throw new M3Error(
      'MODEL_FILE_INVALID',
      `cannot load ONNX model ${file}: ${reason} (is the file complete, with its external-data file beside it?)`,
      { file, cause },
    );
  }
}

/**
 * Opens the model, with its attention fused when the graph allows it (model/attention-fusion.ts).
 * Any failure of the fused graph falls back to the file as exported, whose errors name the file.
 */
async function openModelSession(
  path: string,
  settings: SessionSettings,
  numHeads: number | undefined,
): Promise<{ session: ort.InferenceSession; attention: AttentionMode; vocabRows: number | undefined }> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = readFileSync(path);
  } catch {
    bytes = undefined; // unreadable: loading the file below reports it
  }
  const vocabRows = bytes ? embeddingRows(bytes) : undefined;
  if (bytes && settings.fuseAttention !== false) {
    let fused: ReturnType<typeof fuseAttention>;
    try {
      fused = fuseAttention(bytes, { ...(numHeads ? { numHeads } : {}), selfFileName: basename(path) });
    } catch {
      fused = undefined; // not protobuf: loading the file below reports it
    }
    if (fused) {
      try {
        return { session: await createSession(fused.bytes, settings, path, dirname(path)), attention: 'fused', vocabRows };
      } catch {
        // e.g. an operator set this onnxruntime lacks: the exported graph still runs
      }
    }
  }
  bytes = undefined;
  return { session: await createSession(path, settings, path), attention: 'as-exported', vocabRows };
}

/** Element types an output may have: float32 is used as is, float16 is converted to float32 exactly. */
const FLOAT_TYPES = new Set(['float32', 'float16']);

interface OutputMeta {
  type?: string;
  shape?: ReadonlyArray<number | string>;
}

/**
 * Checks an output's element type and rank from the session's metadata, and its static
 * dimensions where `dims` gives a number (undefined = any). Refuses with MODEL_FILE_INVALID
 * naming the graph and the output.
 */
function checkOutput(file: string, name: string, meta: OutputMeta | undefined, dims: ReadonlyArray<number | undefined>, what: string): void {
  if (!meta) return;
  const refuse = (why: string): never => {
    throw new M3Error('MODEL_FILE_INVALID', `${file}: output '${name}' ${why}; expected ${what}`, { file });
  };
  if (meta.type !== undefined && !FLOAT_TYPES.has(meta.type)) refuse(`has element type ${meta.type}`);
  const shape = meta.shape;
  if (!Array.isArray(shape)) return;
  if (shape.length !== dims.length) refuse(`has rank ${shape.length} (shape [${shape.join(', ')}])`);
  dims.forEach((d, i) => {
    if (d !== undefined && typeof shape[i] === 'number' && shape[i] !== d) refuse(`has shape [${shape.join(', ')}]`);
  });
}

/** A float output as float32 values (float16 converted exactly); anything else is refused. */
function floatData(t: ort.Tensor, file: string, name: string): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as ArrayLike<number>);
  throw new M3Error('MODEL_FILE_INVALID', `${file}: output '${name}' has element type ${t.type}; expected float32 or float16`, { file });
}

/** Checks a run's output dimensions (the metadata may leave them symbolic). */
function checkDims(t: ort.Tensor, file: string, name: string, want: ReadonlyArray<number>): void {
  if (t.dims.length !== want.length || t.dims.some((d, i) => d !== want[i])) {
    throw new M3Error('MODEL_FILE_INVALID', `${file}: output '${name}' has dimensions [${t.dims.join(', ')}], expected [${want.join(', ')}]`, { file });
  }
}

/** Builds the ColBERT head as a tiny ONNX graph: states [B,L,H] · Wᵀ + b → [B,L,C] (onnxruntime's MatMul). */
async function colbertHeadSession(heads: M3Heads, settings: SessionSettings): Promise<ort.InferenceSession> {
  const { hidden, dim, weight, bias } = heads.colbert;
  const wt = new Float32Array(hidden * dim); // transpose [C,H] → [H,C] once at load
  for (let c = 0; c < dim; c++) for (let h = 0; h < hidden; h++) wt[h * dim + c] = weight[c * hidden + h];
  const bytes = buildOnnxModel({
    name: 'bgem3_colbert_head',
    inputs: [{ name: 'states', type: OnnxType.float, shape: ['batch', 'length', hidden] }],
    outputs: [{ name: 'colbert', type: OnnxType.float, shape: ['batch', 'length', dim] }],
    initializers: [
      { name: 'W', type: OnnxType.float, dims: [hidden, dim], data: wt },
      { name: 'b', type: OnnxType.float, dims: [dim], data: bias },
    ],
    nodes: [
      { op: 'MatMul', inputs: ['states', 'W'], outputs: ['projected'] },
      { op: 'Add', inputs: ['projected', 'b'], outputs: ['colbert'] },
    ],
  });
  return createSession(bytes, settings, 'colbert head');
}

export class EncoderEngine {
  readonly layout: GraphLayout;
  /** Dense (= hidden) dimension. */
  readonly hidden: number;
  /** ColBERT vector dimension. */
  readonly colbertDim: number;
  /** Longest input in tokens that position embeddings allow (`max_position_embeddings - 2`). */
  readonly maxPositions: number;
  /** Vocabulary size from config.json, when it says. */
  readonly configVocabSize: number | undefined;
  /** Rows of the graph's word-embedding table, when its structure says (see model/graph-facts.ts). */
  readonly vocabRows: number | undefined;
  /** Whether attention runs fused (rewritten at load) or as exported. */
  readonly attention: AttentionMode;
  /** Forward passes run (batches through the backbone). */
  forwardPasses = 0;

  private readonly skip: ReadonlySet<number>;
  /** Token ids must be below this (the embedding table's rows, else config's vocab_size). */
  private readonly idLimit: number | undefined;
  private readonly sparseRank: number;
  /** Element types of the id inputs (`input_ids`, `attention_mask`, `token_type_ids`). */
  private readonly inputTypes: Record<string, 'int32' | 'int64'>;
  private constructor(
    private readonly spec: EngineSpec,
    private readonly session: ort.InferenceSession,
    layout: GraphLayout,
    private readonly heads: M3Heads | undefined,
    private readonly headSession: ort.InferenceSession | undefined,
    dims: {
      hidden: number;
      colbertDim: number;
      maxPositions: number;
      vocab: number | undefined;
      vocabRows: number | undefined;
      attention: AttentionMode;
      sparseRank?: number;
      inputTypes: Record<string, 'int32' | 'int64'>;
    },
  ) {
    this.inputTypes = dims.inputTypes;
    this.layout = layout;
    this.attention = dims.attention;
    this.hidden = dims.hidden;
    this.colbertDim = dims.colbertDim;
    this.maxPositions = dims.maxPositions;
    this.configVocabSize = dims.vocab;
    this.vocabRows = dims.vocabRows;
    this.idLimit = dims.vocabRows ?? dims.vocab;
    this.sparseRank = dims.sparseRank ?? 3;
    const s = spec.special;
    this.skip = new Set([s.cls, s.eos, s.pad, s.unk]);
  }

  static async create(spec: EngineSpec): Promise<EncoderEngine> {
    const config = readModelConfig(spec.paths.config);
    const file = spec.paths.onnx;
    const { session, attention, vocabRows } = await openModelSession(file, spec.session, config.numAttentionHeads);
    try {
      return await EncoderEngine.build(spec, session, attention, vocabRows, config);
    } catch (e) {
      await session.release().catch(() => undefined);
      throw e;
    }
  }

  private static async build(
    spec: EngineSpec,
    session: ort.InferenceSession,
    attention: AttentionMode,
    vocabRows: number | undefined,
    config: ReturnType<typeof readModelConfig>,
  ): Promise<EncoderEngine> {
    const file = spec.paths.onnx;
    const layout = detectGraphLayout(file, session.inputNames, session.outputNames);
    const metaOf = (name: string) => {
      const i = session.outputNames.indexOf(name);
      return (session as unknown as { outputMetadata?: OutputMeta[] }).outputMetadata?.[i];
    };
    const cfgHidden = config.hiddenSize;
    const maxPos = config.maxPositionEmbeddings !== undefined ? config.maxPositionEmbeddings - 2 : 8192;
    if (vocabRows !== undefined && config.vocabSize !== undefined && config.vocabSize !== vocabRows) {
      const cfg = spec.paths.config as string;
      throw new M3Error(
        'MODEL_FILE_INVALID',
        `${cfg}: vocab_size is ${config.vocabSize} but the word-embedding table of ${file} has ${vocabRows} rows; config.json belongs to another model`,
        { file: cfg },
      );
    }
    const inputTypes: Record<string, 'int32' | 'int64'> = {};
    const inputMeta = (session as unknown as { inputMetadata?: OutputMeta[] }).inputMetadata;
    session.inputNames.forEach((name, i) => {
      const type = inputMeta?.[i]?.type ?? 'int64';
      if (!['input_ids', 'attention_mask', 'token_type_ids'].includes(name)) return;
      if (type !== 'int64' && type !== 'int32') {
        throw new M3Error('MODEL_FILE_INVALID', `${file}: input '${name}' has element type ${type}; expected int64 (or int32)`, { file });
      }
      inputTypes[name] = type;
    });
    const dims = { maxPositions: maxPos, vocab: config.vocabSize, vocabRows, attention, inputTypes };
    if (layout.kind === 'backbone') {
      const meta = metaOf(layout.hiddenOutput);
      const hidden = lastDim(meta) ?? cfgHidden;
      checkOutput(file, layout.hiddenOutput, meta, [undefined, undefined, cfgHidden], `token states [batch, length, ${cfgHidden ?? 'hidden'}] of float32 or float16`);
      const m3Heads = await loadHeads(spec.paths.colbertHead, spec.paths.sparseHead, hidden, file.replace(/[/\\][^/\\]*$/, ''));
      const headSession = await colbertHeadSession(m3Heads, spec.session);
      return new EncoderEngine(spec, session, layout, m3Heads, headSession, {
        ...dims,
        hidden: m3Heads.colbert.hidden,
        colbertDim: m3Heads.colbert.dim,
      });
    }
    const hidden = lastDim(metaOf(layout.dense)) ?? cfgHidden;
    const colbertDim = lastDim(metaOf(layout.colbert)) ?? hidden;
    if (!hidden || !colbertDim) {
      throw new M3Error('MODEL_FILE_INVALID', `${file}: cannot tell the vector dimension (no static output shape and no config.json)`, {
        file,
      });
    }
    checkOutput(file, layout.dense, metaOf(layout.dense), [undefined, cfgHidden ?? hidden], `dense vectors [batch, ${cfgHidden ?? hidden}] of float32 or float16`);
    const sparseMeta = metaOf(layout.sparse);
    const sparseRank = Array.isArray(sparseMeta?.shape) && sparseMeta.shape.length === 2 ? 2 : 3;
    checkOutput(file, layout.sparse, sparseMeta, sparseRank === 2 ? [undefined, undefined] : [undefined, undefined, 1], 'sparse weights [batch, length, 1] of float32 or float16');
    checkOutput(file, layout.colbert, metaOf(layout.colbert), [undefined, undefined, colbertDim], `ColBERT vectors [batch, length, ${colbertDim}] of float32 or float16`);
    return new EncoderEngine(spec, session, layout, undefined, undefined, { ...dims, hidden, colbertDim, sparseRank });
  }

  /**
   * Runs one batch (right-padded with the pad id, attention mask 0 on padding) and applies
   * FlagEmbedding's rules per text. `batch[i]` are the ids of text i, `<s>`/`</s>` included.
   */
  async run(batch: readonly Int32Array[], want: OutputSelection): Promise<RawOutputs[]> {
    const B = batch.length;
    const L = batch.reduce((m, ids) => Math.max(m, ids.length), 0);
    const inputIds = new Int32Array(B * L).fill(this.spec.special.pad);
    const mask = new Int32Array(B * L);
    const limit = this.idLimit;
    batch.forEach((ids, b) => {
      for (let i = 0; i < ids.length; i++) {
        if (limit !== undefined && (ids[i] >= limit || ids[i] < 0)) this.idOutOfRange(ids[i], limit);
        inputIds[b * L + i] = ids[i];
        mask[b * L + i] = 1;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: this.intTensor('input_ids', inputIds, B, L),
      attention_mask: this.intTensor('attention_mask', mask, B, L),
    };
    if (this.session.inputNames.includes('token_type_ids')) {
      feeds.token_type_ids = this.intTensor('token_type_ids', new Int32Array(B * L), B, L);
    }
    const file = this.spec.paths.onnx;
    const results: RawOutputs[] = batch.map(() => ({}));
    if (this.layout.kind === 'backbone') {
      const name = this.layout.hiddenOutput;
      const out = await this.runSession(this.session, feeds, [name], file);
      this.forwardPasses++;
      const statesTensor = out[name];
      checkDims(statesTensor, file, name, [B, L, this.hidden]);
      const states = floatData(statesTensor, file, name);
      statesTensor.dispose();
      batch.forEach((_, b) => this.assertFinite(states, b * L * this.hidden, this.hidden));
      this.applyHeads(batch, states, L, want, results);
      if (want.colbert && this.headSession) {
        const c = await this.runSession(this.headSession, { states: new ort.Tensor('float32', states, [B, L, this.hidden]) }, ['colbert'], 'the ColBERT head');
        const proj = c.colbert.data as Float32Array;
        const C = this.colbertDim;
        batch.forEach((ids, b) => {
          results[b].colbert = normalizedRows(proj, (b * L + 1) * C, ids.length - 1, C); // CLS dropped, </s> kept
        });
        c.colbert.dispose();
      }
      return results;
    }
    const { dense, sparse, colbert } = this.layout;
    const fetch = [want.dense && dense, want.sparse && sparse, want.colbert && colbert].filter((x): x is string => !!x);
    const out = await this.runSession(this.session, feeds, fetch.length ? fetch : [dense], file);
    this.forwardPasses++;
    const H = this.hidden;
    const C = this.colbertDim;
    const data = (name: string, dims: number[]): Float32Array => {
      checkDims(out[name], file, name, dims);
      return floatData(out[name], file, name);
    };
    const d = out[dense] ? data(dense, [B, H]) : undefined;
    const w = want.sparse ? data(sparse, this.sparseRank === 2 ? [B, L] : [B, L, 1]) : undefined; // raw relu per position
    const v = want.colbert ? data(colbert, [B, L - 1, C]) : undefined; // normalised, padding zero
    for (const t of Object.values(out)) t.dispose();
    if (d) batch.forEach((_, b) => this.assertFinite(d, b * H, H));
    batch.forEach((ids, b) => {
      const r = results[b];
      if (want.dense && d) r.dense = l2Normalized(d, b * H, H); // already unit norm; copy
      if (w) r.sparse = aggregateSparse(ids, (pos) => w[b * L + pos], this.skip);
      if (v) r.colbert = normalizedRows(v, b * (L - 1) * C, ids.length - 1, C);
    });
    return results;
  }

  /** An id/mask input in the element type the graph declares (int64, or int32 in some exports). */
  private intTensor(name: string, values: Int32Array, B: number, L: number): ort.Tensor {
    if (this.inputTypes[name] === 'int32') return new ort.Tensor('int32', values, [B, L]);
    return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), [B, L]);
  }

  /** `session.run`, with onnxruntime's failures as an M3Error naming the graph. */
  private async runSession(
    session: ort.InferenceSession,
    feeds: Record<string, ort.Tensor>,
    fetch: string[],
    file: string,
  ): Promise<ort.InferenceSession.ReturnType> {
    try {
      return await session.run(feeds, fetch);
    } catch (cause) {
      if (cause instanceof M3Error) throw cause;
      const reason = String((cause as Error)?.message ?? cause).split('\n')[0];
      // A token id beyond the embedding table (when the graph's structure did not tell its size).
      const gather = /indices element out of data bounds, idx=(\d+) must be within the inclusive range \[-?\d+,(\d+)\]/.exec(reason);
      const ids = feeds.input_ids?.data as ArrayLike<number | bigint> | undefined;
      if (gather && ids && Array.prototype.some.call(ids, (v: number | bigint) => Number(v) === Number(gather[1]))) this.idOutOfRange(Number(gather[1]), Number(gather[2]) + 1);
      throw new M3Error('MODEL_FILE_INVALID', `onnxruntime failed to run ${file}: ${reason}`, { file: this.spec.paths.onnx, cause });
    }
  }

  private idOutOfRange(id: number, limit: number): never {
    const tok = this.spec.paths.tokenizer;
    throw new M3Error(
      'MODEL_FILE_INVALID',
      `${tok} produced token id ${id}, but the model (${this.spec.paths.onnx}) has only ${limit} token embeddings: tokenizer.json belongs to another model`,
      { file: tok },
    );
  }

  /**
   * Corrupt weights of the right size load fine and then yield NaN/Infinity; stop there with an
   * error naming the file rather than hand non-finite vectors to an index.
   */
  private assertFinite(data: Float32Array, offset: number, n: number): void {
    for (let i = offset; i < offset + n; i++) {
      if (!Number.isFinite(data[i])) {
        throw new M3Error(
          'MODEL_FILE_INVALID',
          `${this.spec.paths.onnx} produced non-finite values: its weights (or external-data file) are likely corrupt; re-download the model`,
          { file: this.spec.paths.onnx },
        );
      }
    }
  }

  private applyHeads(batch: readonly Int32Array[], states: Float32Array, L: number, want: OutputSelection, results: RawOutputs[]): void {
    const H = this.hidden;
    const heads = this.heads as M3Heads;
    batch.forEach((ids, b) => {
      const base = b * L * H;
      if (want.dense) results[b].dense = l2Normalized(states, base, H);
      if (want.sparse) {
        results[b].sparse = aggregateSparse(ids, (pos) => sparseWeightAt(states, base + pos * H, heads.sparse.weight, heads.sparse.bias), this.skip);
      }
    });
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.headSession?.release();
  }
}
