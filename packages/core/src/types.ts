/**
 * Data types shared by the encoder, the scores and the retrieval engine. All are plain objects of
 * typed arrays so they can cross worker threads (structured clone / transfer) without copies of
 * per-element objects.
 */

/**
 * Sparse lexical weights of one text: token ids ascending, one weight per id (FlagEmbedding's
 * `lexical_weights` dict, with the id as a number rather than a decimal string).
 */
export interface SparseVector {
  /** Token ids, strictly ascending. */
  indices: Uint32Array;
  /** Weights (> 0), `values[i]` belongs to `indices[i]`. */
  values: Float32Array;
}

/** A row-major matrix of `count` vectors of `dim` floats: one text's ColBERT vectors. */
export interface ColbertMatrix {
  /** Row-major data, length `count * dim`. */
  data: Float32Array;
  /** Number of vectors (real tokens minus CLS, `</s>` kept). */
  count: number;
  /** Vector dimension. */
  dim: number;
}

/** Which outputs to compute. All requested outputs come from one forward pass. */
export interface OutputSelection {
  /** L2-normalised CLS vector (default true). */
  dense?: boolean;
  /** Lexical weights (default false). */
  sparse?: boolean;
  /** ColBERT multi-vectors (default false). */
  colbert?: boolean;
}

/** The encoding of one text. Fields not requested are absent. */
export interface EncodeResult {
  dense?: Float32Array;
  sparse?: SparseVector;
  colbert?: ColbertMatrix;
  /** Tokens fed to the model for this text, `<s>` and `</s>` included. */
  tokens: number;
  /** True when the text was longer than `maxLength` tokens and was cut. */
  truncated: boolean;
}

/** An encoding with all three outputs present (what indexing stores). */
export interface FullEncodeResult extends EncodeResult {
  dense: Float32Array;
  sparse: SparseVector;
  colbert: ColbertMatrix;
}

/** Options of one encode call. */
export interface EncodeOptions extends OutputSelection {
  /** Max tokens per text, `<s>`/`</s>` included (default: the encoder's `maxLength`). */
  maxLength?: number;
  /** Stops the remaining batches when aborted; the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/**
 * What the retrieval engine and the framework adapters need from an encoder. `M3Encoder`
 * implements it; so can a worker pool or a remote encoder.
 */
export interface TextEncoder3 {
  /** A stable id of the model (used in cache keys and stored in indexes). */
  readonly modelId: string;
  /** Dense vector / ColBERT vector dimension. */
  readonly dim: number;
  /** Vocabulary size (the sparse index's id space). */
  readonly vocabSize: number;
  /** ColBERT vector dimension, when it differs from `dim` (absent: same as `dim`). */
  readonly colbertDim?: number;
  /** Default max tokens per text (absent: the encoder decides). */
  readonly maxLength?: number;
  /** Encodes texts in input order; all requested outputs from one forward pass per text. */
  encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]>;
}
