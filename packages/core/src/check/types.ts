/** Public types of the model check (`checkModel`, `bgem3 check`, a server's health endpoint). */
import type { ModelDtype } from '../model/layout.js';
import type { SpecialIds, TokenizedText } from '../tokenizer/m3-tokenizer.js';
import type { EncodeOptions, EncodeResult } from '../types.js';
import type { CheckReference, CheckTextRef, ReferencePrecision } from './reference.js';
import type { CheckOutput, CheckTolerance } from './tolerance.js';
import type { UniversalCheck } from './universal.js';

/**
 * What the check needs from an encoder. {@link M3Encoder} has all of it (in-thread or with
 * workers); `stats` is optional so that other encoders can be checked too (the forward-pass
 * count is then reported as not observable).
 */
export interface CheckEncoder {
  readonly modelId: string;
  readonly dim: number;
  readonly colbertDim?: number;
  readonly vocabSize: number;
  readonly maxPositions?: number;
  encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]>;
  /** Token ids as the encoder feeds them (`<s> … </s>`). */
  tokenize(texts: readonly string[], maxLength?: number): Promise<TokenizedText[]>;
  readonly tokenizer: {
    readonly special: SpecialIds;
    /** FlagEmbedding's `convert_id_to_token` of one id (`tokenizer.decode([id])`: "▁What" → "What"). */
    decodeId(id: number): Promise<string>;
  };
  readonly stats?: { readonly forwardPasses: number; readonly textsEncoded: number };
}

/** Options of {@link checkModel}. */
export interface CheckOptions {
  /**
   * The figures to compare with:
   * - `'auto'` (default): BAAI's published example when the model is BAAI/bge-m3 (loaded from
   *   the Hub repo BAAI/bge-m3 or Xenova/bge-m3, or a local model with BGE-M3's shape whose
   *   tokenizer splits the example texts as BAAI's does), otherwise none;
   * - a {@link CheckReference} (e.g. from {@link loadCheckReference}): always compared;
   * - `'none'`: universal checks only.
   */
  reference?: CheckReference | 'auto' | 'none';
  /**
   * The model's weights: `'fp32'`, or `'q8'` for an int8 backbone (wider tolerance, see
   * {@link checkTolerance}). Default: `'q8'` when the model id names a `*quantized*` ONNX file
   * (the Hub's q8 preset does), else `'fp32'`; pass it when loading a quantised local model.
   */
  dtype?: ModelDtype;
  signal?: AbortSignal;
}

/** Why the compared reference applies. */
export type ReferenceBasis =
  /** The caller passed the reference. */
  | 'given'
  /** The model was loaded from a Hub repo holding BAAI/bge-m3's weights. */
  | 'hub-repo'
  /** A local or other model with BGE-M3's shape and BAAI's tokenizer: assumed to be BAAI/bge-m3. */
  | 'model-identity';

/** One computed figure, beside its reference value when a reference applies. */
export interface CheckFigure {
  output: CheckOutput;
  /** e.g. `sentences_1[0]·sentences_2[1]`, or `sentences_1[0] 'GE'` for a lexical weight. */
  label: string;
  /** The inputs it is computed from: one text (lexical weight) or [query, passage]. */
  texts: readonly CheckTextRef[];
  /** The token, for lexical weights (FlagEmbedding's `convert_id_to_token` string). */
  token?: string;
  /** Our figure (0 for a reference token the model gives no weight). */
  value: number;
  /** The reference's figure (0 for a token the reference lacks); absent when no reference applies. */
  published?: number;
  /** |value − published|; absent when no reference applies. */
  deviation?: number;
  /** The tolerance of this figure's class; absent when no reference applies. */
  tolerance?: number;
  /** Within tolerance; absent when no reference applies. */
  ok?: boolean;
  /** Set when only one side has the token. */
  note?: 'not produced by the model' | 'not in the reference';
}

/**
 * The result of {@link checkModel}: plain JSON data (what `bgem3 check --json` prints and a
 * server can return from its health endpoint). Fields are stable; new fields may be added.
 */
export interface CheckResult {
  /** True when every universal check passed (or was skipped) and, if a reference applies, every figure is within tolerance. */
  ok: boolean;
  /** True when figures were compared with a reference. */
  applies: boolean;
  /** True when a reference applies and every figure is within tolerance: the model computes what the reference says. */
  verified: boolean;
  /** One line: the verdict, naming the worst figure and by how much when one is off. */
  summary: string;
  /** One line per failed figure or universal check, worst first. */
  failures: string[];
  modelId: string;
  dtype: ModelDtype;
  /** The reference compared with, when one applies. */
  reference?: { model: string; source: string; precision: ReferencePrecision; basis: ReferenceBasis };
  /** Why the reference applies or why none does. */
  reason: string;
  /** Present when a reference applies. */
  tolerance?: CheckTolerance;
  /** Every figure of the computation (compared or not). */
  figures: CheckFigure[];
  universal: UniversalCheck[];
  /** The inputs used. */
  inputs: { sentences_1: readonly string[]; sentences_2: readonly string[] };
  /** ISO time the check finished. */
  checkedAt: string;
  durationMs: number;
}
