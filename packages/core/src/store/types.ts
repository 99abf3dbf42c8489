/**
 * `M3Store`: the one interface of every store of BGE-M3 documents. A store holds, for each
 * document, its text, its metadata and all three representations (dense vector, sparse lexical
 * weights, ColBERT vectors), durably, and answers the M3 retrieval pipeline over them
 * (m3-reference, "hybrid retrieval + rerank"): dense top-fetchK ∪ sparse top-fetchK, every
 * candidate rescored by the three modes, ranked by the M3 All score.
 *
 * Implemented by the embedded `M3Index` (@bgem3/core) and by `PgM3Store` (@bgem3/pgvector).
 * The framework adapters, the CLI and the server are views of a store: they only use this
 * interface. A query over a store encodes one text, the query: the candidates' vectors come from
 * the store.
 *
 * Rules every implementation keeps (and the shared modules in this folder enforce):
 * - ids are well-formed Unicode strings of bounded length ({@link MAX_ID_LENGTH});
 * - metadata is plain JSON ({@link JsonObject}); the stored copy is independent of the caller's;
 * - mutations take effect in call order, whatever the encode times;
 * - a search never fails because a candidate was deleted meanwhile;
 * - nothing returned aliases the store's internal storage.
 */
import type { EncodeResult, TextEncoder3 } from '../types.js';
import type { M3Weights } from '../scoring/weights.js';
import type { M3Where } from './where.js';

/** Longest accepted id, in UTF-16 code units (ids are keys: bounded so every store can hold them). */
export const MAX_ID_LENGTH = 512;

/** A JSON value as a store keeps it: no `undefined`, no NaN/Infinity, no class instances. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Plain JSON object metadata. */
export type JsonObject = { [key: string]: JsonValue };

/** A document to add. */
export interface M3Document {
  /** Stable id (default: a random UUID). Adding an existing id replaces that document. */
  id?: string;
  /** The text that is encoded and stored. */
  text: string;
  /** Plain JSON metadata (default `{}`); checked and copied when added. */
  metadata?: Record<string, unknown>;
}

/** A document whose encoding was computed already (dense, sparse and ColBERT, same model). */
export interface M3EncodedDocument extends M3Document {
  encoding: EncodeResult;
}

/** A stored document, as returned (a copy: changing it changes nothing in the store). */
export interface M3StoredDocument {
  id: string;
  text: string;
  metadata: JsonObject;
}

/** A hit of one mode. */
export interface M3Hit extends M3StoredDocument {
  score: number;
}

/** The three mode scores of one hit. */
export interface M3HitScores {
  dense: number;
  sparse: number;
  colbert: number;
}

/** A hit of the hybrid pipeline: the M3 All score and each mode's score. */
export interface M3SearchResult extends M3Hit {
  scores: M3HitScores;
}

/** A function filter: documents for which it does not return `true` are never returned. */
export type M3Filter = (metadata: JsonObject, id: string) => boolean;

/** Options of {@link M3Store.add}. */
export interface M3AddOptions {
  /** Stops between batches (and inside the encoder); the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** What restricts the documents a search may return; both may be given (both must match). */
export interface M3FilterOptions {
  /**
   * A declarative metadata filter ({@link M3Where}), evaluated where the data lives (in SQL for
   * PgM3Store). Invalid values (undefined, functions, NaN, …) are INVALID_ARGUMENT, never a
   * match-all.
   */
  where?: M3Where;
  /** A function over each candidate's metadata and id, run in the application. */
  filter?: M3Filter;
}

/** Options of {@link M3Store.search}. */
export interface M3SearchOptions extends M3FilterOptions {
  /** Results to return (default 10). */
  k?: number;
  /** Candidates taken from each of dense and sparse search before the rerank (default 100, at least k). */
  fetchK?: number;
  /** `[dense, sparse, colbert]` weights of the M3 All score (default `DEFAULT_M3_WEIGHTS`, [0.4, 0.2, 0.4]). */
  weights?: M3Weights;
  /**
   * Candidates that get the ColBERT rerank (default the store's own, `DEFAULT_RERANK_DEPTH` = 40
   * unless set when the store was opened; at least k). The union of the dense and sparse candidates is ranked
   * by w_d·dense + w_s·sparse (exact scores) and only the best `rerankDepth` are scored by
   * MaxSim, so their M3 All score is exact; `rerankDepth ≥ 2·fetchK` reranks every candidate.
   * Ignored when the ColBERT weight is 0, or when dense and sparse both weigh 0 (all are reranked).
   */
  rerankDepth?: number;
  /** Stops the query's encoding; the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** Options of {@link M3Store.searchDense} and {@link M3Store.searchSparse}. */
export interface M3SingleModeOptions extends M3FilterOptions {
  /** Results to return (default 10). */
  k?: number;
  /** Stops the query's encoding; the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** Options of {@link M3Store.rescore}. */
export interface M3RescoreOptions {
  /** `[dense, sparse, colbert]` weights of the M3 All score (default [0.4, 0.2, 0.4]). */
  weights?: M3Weights;
  /** Keep the best `k` (default: all). */
  k?: number;
  /** Stops the query's encoding; the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** A store query: a text (the store encodes it, once) or an encoding computed elsewhere. */
export type M3Query = string | EncodeResult;

/** What identifies the model of a store: documents and queries must come from this model. */
export interface M3StoreModel {
  /** The encoder's `modelId` (content-derived for local directories, the repo id for the Hub). */
  readonly modelId: string;
  /** Dense and ColBERT vector dimension. */
  readonly dim: number;
  /** Vocabulary size (the id space of the sparse weights). */
  readonly vocabSize: number;
}

/**
 * A durable store of BGE-M3 documents with the M3 retrieval pipeline (see the file comment).
 * All methods are async; every implementation validates its arguments with the shared modules,
 * so the same input gets the same error everywhere.
 */
export interface M3Store extends M3StoreModel {
  /**
   * The encoder used for {@link add} and text queries, if the store has one. Adapters take their
   * model from here, so an application loads one model per process.
   */
  readonly encoder: TextEncoder3 | undefined;

  /**
   * Encodes and adds documents (one encoder call per batch, all three outputs). An existing id
   * is replaced. Returns the ids in input order. Takes effect in call order relative to the
   * store's other mutations.
   */
  add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options?: M3AddOptions): Promise<string[]>;
  /** Adds documents whose encodings were computed elsewhere; all are validated before any is stored. */
  addEncoded(docs: Iterable<M3EncodedDocument>, options?: M3AddOptions): Promise<string[]>;
  /** Removes documents; unknown ids are ignored. Returns how many were removed. */
  delete(ids: string | Iterable<string>): Promise<number>;

  /** The stored document, or undefined. */
  get(id: string): Promise<M3StoredDocument | undefined>;
  /** The stored documents of `ids` that exist, in the order of `ids` (duplicates once). */
  getMany(ids: readonly string[]): Promise<M3StoredDocument[]>;
  /** Whether `id` is stored. */
  has(id: string): Promise<boolean>;
  /** Number of stored documents. */
  count(): Promise<number>;

  /**
   * Hybrid search, the recommended M3 pipeline: dense top-fetchK ∪ sparse top-fetchK, each
   * candidate rescored by dense, sparse and ColBERT, ranked by the M3 All score (ties: id
   * ascending). A text query is encoded once.
   */
  search(query: M3Query, options?: M3SearchOptions): Promise<M3SearchResult[]>;
  /** Dense-only search (inner product of the normalised vectors). */
  searchDense(query: M3Query, options?: M3SingleModeOptions): Promise<M3Hit[]>;
  /** Sparse-only search (lexical matching score; documents sharing no token are not returned). */
  searchSparse(query: M3Query, options?: M3SingleModeOptions): Promise<M3Hit[]>;
  /**
   * The M3 rerank of given stored documents: each of `ids` that exists is scored by the three
   * modes from its stored vectors (nothing but the query is encoded), best first (ties: id).
   * Unknown ids are left out.
   */
  rescore(query: M3Query, ids: readonly string[], options?: M3RescoreOptions): Promise<M3SearchResult[]>;

  /** Waits for pending writes, makes them durable and releases the store's resources (idempotent). */
  close(): Promise<void>;
}
