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

function readConfig(path: string | undefined): Record<string, unknown> {
  if (!path) return {};
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (cause) {
    throw new M3Error('MODEL_FILE_INVALID', `${path} is not valid JSON`, { file: path, cause });
  }
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
): Promise<{ session: ort.InferenceSession; attention: AttentionMode }> {
  if (settings.fuseAttention !== false) {
    let fused: ReturnType<typeof fuseAttention>;
    try {
      fused = fuseAttention(readFileSync(path), { ...(numHeads ? { numHeads } : {}), selfFileName: basename(path) });
    } catch {
      fused = undefined; // unreadable or not protobuf: loading the file below reports it
    }
    if (fused) {
      try {
        return { session: await createSession(fused.bytes, settings, path, dirname(path)), attention: 'fused' };
      } catch {
        // e.g. an operator set this onnxruntime lacks: the exported graph still runs
      }
    }
  }
  return { session: await createSession(path, settings, path), attention: 'as-exported' };
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
  /** Whether attention runs fused (rewritten at load) or as exported. */
  readonly attention: AttentionMode;
  /** Forward passes run (batches through the backbone). */
  forwardPasses = 0;

  private readonly skip: ReadonlySet<number>;
  private constructor(
    private readonly spec: EngineSpec,
    private readonly session: ort.InferenceSession,
    layout: GraphLayout,
    private readonly heads: M3Heads | undefined,
    private readonly headSession: ort.InferenceSession | undefined,
    dims: { hidden: number; colbertDim: number; maxPositions: number; vocab: number | undefined; attention: AttentionMode },
  ) {
    this.layout = layout;
    this.attention = dims.attention;
    this.hidden = dims.hidden;
    this.colbertDim = dims.colbertDim;
    this.maxPositions = dims.maxPositions;
    this.configVocabSize = dims.vocab;
    const s = spec.special;
    this.skip = new Set([s.cls, s.eos, s.pad, s.unk]);
  }

  static async create(spec: EngineSpec): Promise<EncoderEngine> {
    const config = readConfig(spec.paths.config);
    const heads = typeof config.num_attention_heads === 'number' ? config.num_attention_heads : undefined;
    const { session, attention } = await openModelSession(spec.paths.onnx, spec.session, heads);
    const layout = detectGraphLayout(spec.paths.onnx, session.inputNames, session.outputNames);
    const metaOf = (name: string) => {
      const i = session.outputNames.indexOf(name);
      return (session as unknown as { outputMetadata?: unknown[] }).outputMetadata?.[i];
    };
    const cfgHidden = typeof config.hidden_size === 'number' ? config.hidden_size : undefined;
    const maxPos = typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings - 2 : 8192;
    const vocab = typeof config.vocab_size === 'number' ? config.vocab_size : undefined;
    if (layout.kind === 'backbone') {
      const hidden = lastDim(metaOf(layout.hiddenOutput)) ?? cfgHidden;
      const m3Heads = await loadHeads(spec.paths.colbertHead, spec.paths.sparseHead, hidden, spec.paths.onnx.replace(/[/\\][^/\\]*$/, ''));
      const headSession = await colbertHeadSession(m3Heads, spec.session);
      return new EncoderEngine(spec, session, layout, m3Heads, headSession, {
        hidden: m3Heads.colbert.hidden,
        colbertDim: m3Heads.colbert.dim,
        maxPositions: maxPos,
        vocab,
        attention,
      });
    }
    const hidden = lastDim(metaOf(layout.dense)) ?? cfgHidden;
    const colbertDim = lastDim(metaOf(layout.colbert)) ?? hidden;
    if (!hidden || !colbertDim) {
      throw new M3Error('MODEL_FILE_INVALID', `${spec.paths.onnx}: cannot tell the vector dimension (no static output shape and no config.json)`, {
        file: spec.paths.onnx,
      });
    }
    return new EncoderEngine(spec, session, layout, undefined, undefined, { hidden, colbertDim, maxPositions: maxPos, vocab, attention });
  }

  /**
   * Runs one batch (right-padded with the pad id, attention mask 0 on padding) and applies
   * FlagEmbedding's rules per text. `batch[i]` are the ids of text i, `<s>`/`</s>` included.
   */
  async run(batch: readonly Int32Array[], want: OutputSelection): Promise<RawOutputs[]> {
    const B = batch.length;
    const L = batch.reduce((m, ids) => Math.max(m, ids.length), 0);
    const inputIds = new BigInt64Array(B * L).fill(BigInt(this.spec.special.pad));
    const mask = new BigInt64Array(B * L);
    batch.forEach((ids, b) => {
      for (let i = 0; i < ids.length; i++) {
        inputIds[b * L + i] = BigInt(ids[i]);
        mask[b * L + i] = 1n;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', inputIds, [B, L]),
      attention_mask: new ort.Tensor('int64', mask, [B, L]),
    };
    if (this.session.inputNames.includes('token_type_ids')) {
      feeds.token_type_ids = new ort.Tensor('int64', new BigInt64Array(B * L), [B, L]);
    }
    const results: RawOutputs[] = batch.map(() => ({}));
    if (this.layout.kind === 'backbone') {
      const out = await this.session.run(feeds, [this.layout.hiddenOutput]);
      this.forwardPasses++;
      const statesTensor = out[this.layout.hiddenOutput];
      const states = statesTensor.data as Float32Array;
      batch.forEach((_, b) => this.assertFinite(states, b * L * this.hidden, this.hidden));
      this.applyHeads(batch, states, L, want, results);
      if (want.colbert && this.headSession) {
        const c = await this.headSession.run({ states: new ort.Tensor('float32', states, [B, L, this.hidden]) });
        const proj = c.colbert.data as Float32Array;
        const C = this.colbertDim;
        batch.forEach((ids, b) => {
          results[b].colbert = normalizedRows(proj, (b * L + 1) * C, ids.length - 1, C); // CLS dropped, </s> kept
        });
        c.colbert.dispose();
      }
      statesTensor.dispose();
      return results;
    }
    const { dense, sparse, colbert } = this.layout;
    const fetch = [want.dense && dense, want.sparse && sparse, want.colbert && colbert].filter((x): x is string => !!x);
    const out = await this.session.run(feeds, fetch.length ? fetch : [dense]);
    this.forwardPasses++;
    const H = this.hidden;
    const C = this.colbertDim;
    if (out[dense]) batch.forEach((_, b) => this.assertFinite(out[dense].data as Float32Array, b * H, H));
    batch.forEach((ids, b) => {
      const r = results[b];
      if (want.dense) r.dense = l2Normalized(out[dense].data as Float32Array, b * H, H); // already unit norm; copy
      if (want.sparse) {
        const w = out[sparse].data as Float32Array; // raw relu per position [B, L, 1]
        r.sparse = aggregateSparse(ids, (pos) => w[b * L + pos], this.skip);
      }
      if (want.colbert) {
        const v = out[colbert].data as Float32Array; // [B, L-1, C], normalised, padding zero
        r.colbert = normalizedRows(v, b * (L - 1) * C, ids.length - 1, C);
      }
    });
    for (const t of Object.values(out)) t.dispose();
    return results;
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
