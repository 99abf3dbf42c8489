/**
 * BGEM3EnsembleRetriever: BGE-M3's recommended hybrid pipeline (dense + sparse candidates, then
 * an exact rescoring by all three modes) over LangChain retrievers. Fusion (`reciprocalRankFusion`,
 * `weightedScoreFusion`) and the M3 All-score rerank (`m3Rerank`) are core's; this class gathers
 * candidates through LangChain retrievers, deduplicates them by id and maps scores to metadata.
 */
import {
  M3Error,
  denseScore,
  lexicalMatchingScore,
  m3Rerank,
  reciprocalRankFusion,
  weightedScoreFusion,
  type EncodeResult,
  type M3Encoded,
  type M3ScoreWeights,
  type RankedEntry,
  type ScoredId,
  type SparseVector,
} from '@bgem3/core';
import type { CallbackManagerForRetrieverRun } from '@langchain/core/callbacks/manager';
import type { DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever, type BaseRetrieverInput, type BaseRetrieverInterface } from '@langchain/core/retrievers';
import type { VectorStoreInterface } from '@langchain/core/vectorstores';
import { BGEM3Embeddings } from './embeddings.js';
import { EncoderSource, checkPositiveInteger, checkQuery, type BGEM3ModelParams } from './encoder-source.js';
import { BGEM3SparseRetriever, copyDoc, prepareDocuments, type BGEM3AddDocumentsOptions } from './sparse-retriever.js';

/** How the two candidate lists are fused. */
export type BGEM3FusionMode = 'rrf' | 'weighted';

/** Options of {@link BGEM3EnsembleRetriever}. */
export interface BGEM3EnsembleRetrieverInput extends BaseRetrieverInput, BGEM3ModelParams {
  /**
   * The dense retriever, e.g. `vectorStore.asRetriever()` over a store built with
   * {@link BGEM3Embeddings}. A `VectorStoreRetriever` is asked for `fetchK` documents; any other
   * retriever returns its own number.
   */
  denseRetriever: BaseRetrieverInterface;
  /**
   * The lexical retriever, normally a {@link BGEM3SparseRetriever} (asked for `fetchK` documents;
   * its encoder is reused when no `model`/`encoder` is given here). Any retriever works.
   */
  sparseRetriever: BaseRetrieverInterface;
  /** Documents to return (default 4). */
  k?: number;
  /** Candidates requested from each retriever (default 100; at least `k`). */
  fetchK?: number;
  /**
   * `"rrf"` (default): reciprocal rank fusion, Σ weight / (c + rank). `"weighted"`: each list's
   * scores min-max normalised, then weighted; the scores are the exact M3 dense score (for the
   * dense list) and lexical score (for the sparse list) of each candidate, since LangChain
   * retrievers do not return scores.
   */
  fusion?: BGEM3FusionMode;
  /** Fusion weights `[dense, sparse]` (default `[0.5, 0.5]`, as LangChain's `EnsembleRetriever`). */
  weights?: readonly [number, number];
  /** The RRF constant (default 60). */
  c?: number;
  /**
   * Rescore the fused candidates with the M3 All score (default true), which then orders the
   * results; `false` returns the fused order.
   */
  rerank?: boolean;
  /** `[dense, sparse, colbert]` weights of the M3 All score (default `[0.4, 0.2, 0.4]`). */
  rerankWeights?: M3ScoreWeights;
  /** Best fused candidates passed to the rerank (default: all of them). */
  rerankCandidates?: number;
  /** Texts per encoder call in {@link BGEM3EnsembleRetriever.addDocuments} (default 64). */
  batchSize?: number;
}

/** Options of {@link BGEM3EnsembleRetriever.fromDocuments}. */
export interface BGEM3EnsembleFromDocumentsOptions extends Omit<BGEM3EnsembleRetrieverInput, 'denseRetriever' | 'sparseRetriever'> {
  /**
   * The vector store to fill (with precomputed vectors, via `addVectors`). Default: a new
   * `MemoryVectorStore` from `@langchain/classic` (install it, or pass your own store).
   */
  vectorStore?: VectorStoreInterface;
}

type Doc = DocumentInterface;

interface Candidate {
  key: string;
  doc: Doc;
  /** Metadata of the same document from the other list (merged under the first one's). */
  otherMetadata?: Record<string, unknown>;
}

/**
 * Hybrid retrieval plus rerank, the pipeline BGE-M3 is built for:
 *
 * 1. candidates from a dense retriever and a {@link BGEM3SparseRetriever} (`fetchK` each);
 * 2. fusion (`"rrf"` with per-retriever `weights`, or `"weighted"` scores);
 * 3. deduplication by document id (by page content only for documents without an id), so the
 *    same chunk from both retrievers (or twice from one) counts once;
 * 4. rerank of the candidates by the M3 All score, (w_d·dense + w_s·sparse + w_c·colbert) / Σw
 *    (core's `m3Rerank`, FlagEmbedding's formula; `rerank: false` skips it);
 * 5. the best `k`, as copies carrying `metadata.denseScore`, `sparseScore`, `colbertScore`,
 *    `fusedScore` (the fusion score) and `relevanceScore` (the score they are ordered by).
 *
 * Unlike `EnsembleRetriever` from `@langchain/classic`, it deduplicates by id, attaches scores and
 * caps the output at `k`. The query and every document are encoded once for all stages (shared
 * encode cache). An empty or blank query returns [].
 *
 * @example
 * ```ts
 * const retriever = await BGEM3EnsembleRetriever.fromDocuments(docs, { k: 5 });
 * const hits = await retriever.invoke("hybrid search with BGE-M3");
 * ```
 */
export class BGEM3EnsembleRetriever extends BaseRetriever {
  static override lc_name(): string {
    return 'BGEM3EnsembleRetriever';
  }

  lc_namespace = ['bgem3', 'retrievers'];

  /** The dense retriever (see {@link BGEM3EnsembleRetrieverInput.denseRetriever}). */
  denseRetriever: BaseRetrieverInterface;
  /** The lexical retriever (see {@link BGEM3EnsembleRetrieverInput.sparseRetriever}). */
  sparseRetriever: BaseRetrieverInterface;
  /** Documents returned per query. */
  k: number;
  /** Candidates requested from each retriever. */
  fetchK: number;
  /** Fusion of the two candidate lists. */
  fusion: BGEM3FusionMode;
  /** Fusion weights `[dense, sparse]`. */
  weights: readonly [number, number];
  /** The RRF constant. */
  c: number;
  /** Whether the candidates are rescored by the M3 All score. */
  rerank: boolean;
  /** `[dense, sparse, colbert]` weights of the M3 All score. */
  rerankWeights: M3ScoreWeights;
  /** Best fused candidates passed to the rerank (undefined: all). */
  rerankCandidates: number | undefined;
  /** Texts per encoder call in {@link BGEM3EnsembleRetriever.addDocuments}. */
  batchSize: number;
  private readonly source: EncoderSource;

  constructor(fields: BGEM3EnsembleRetrieverInput) {
    super({ callbacks: fields?.callbacks, tags: fields?.tags, metadata: fields?.metadata, verbose: fields?.verbose });
    if (!isRetriever(fields?.denseRetriever)) throw new TypeError('denseRetriever must be a LangChain retriever (with invoke)');
    if (!isRetriever(fields.sparseRetriever)) throw new TypeError('sparseRetriever must be a LangChain retriever (with invoke)');
    this.denseRetriever = fields.denseRetriever;
    this.sparseRetriever = fields.sparseRetriever;
    this.k = checkPositiveInteger(fields.k ?? 4, 'k');
    this.fetchK = checkPositiveInteger(fields.fetchK ?? 100, 'fetchK');
    this.fusion = fields.fusion ?? 'rrf';
    if (this.fusion !== 'rrf' && this.fusion !== 'weighted') throw new M3Error('INVALID_ARGUMENT', `fusion must be "rrf" or "weighted", got ${JSON.stringify(fields.fusion)}`);
    this.weights = fields.weights ?? [0.5, 0.5];
    this.c = fields.c ?? 60;
    if (typeof this.c !== 'number' || !Number.isFinite(this.c) || this.c < 0) {
      throw new M3Error('INVALID_ARGUMENT', `c (the RRF constant) must be a finite number ≥ 0, got ${String(fields.c)}`);
    }
    this.rerank = fields.rerank ?? true;
    this.rerankWeights = fields.rerankWeights ?? [0.4, 0.2, 0.4];
    this.rerankCandidates = fields.rerankCandidates === undefined ? undefined : checkPositiveInteger(fields.rerankCandidates, 'rerankCandidates');
    this.batchSize = checkPositiveInteger(fields.batchSize ?? 64, 'batchSize');
    // Validated by core now, so a mistake fails here rather than at the first query.
    reciprocalRankFusion([[], []], { k: this.c, weights: this.weights });
    checkRerankWeights(this.rerankWeights);
    const ownModel = fields.model !== undefined || fields.encoder !== undefined;
    this.source = !ownModel && this.sparseRetriever instanceof BGEM3SparseRetriever ? this.sparseRetriever._encoderSource() : new EncoderSource(fields);
  }

  /**
   * Builds the whole stack from documents with ONE encoder pass per document: a vector store
   * (default `MemoryVectorStore`, filled through `addVectors` with the precomputed dense vectors
   * and a {@link BGEM3Embeddings} for queries), a {@link BGEM3SparseRetriever} indexed with the
   * precomputed sparse weights, and this retriever over both.
   */
  static async fromDocuments(documents: DocumentInterface[], options: BGEM3EnsembleFromDocumentsOptions = {}): Promise<BGEM3EnsembleRetriever> {
    const { vectorStore: givenStore, ...rest } = options;
    const source = new EncoderSource(rest);
    const model = source.params();
    const fetchK = checkPositiveInteger(rest.fetchK ?? 100, 'fetchK');
    const vectorStore = givenStore ?? (await createMemoryVectorStore(new BGEM3Embeddings(model)));
    const sparseRetriever = new BGEM3SparseRetriever({ ...model, k: fetchK, batchSize: rest.batchSize });
    const retriever = new BGEM3EnsembleRetriever({
      ...rest,
      denseRetriever: vectorStore.asRetriever({ k: fetchK }),
      sparseRetriever,
    });
    await retriever.addDocuments(documents);
    return retriever;
  }

  /**
   * Adds documents to both the vector store (through `addVectors`) and the sparse retriever,
   * encoding each document once. Needs a `VectorStoreRetriever` as dense retriever and a
   * {@link BGEM3SparseRetriever}. Ids: `options.ids`, else `doc.id`, else a random UUID; an id
   * already present replaces that document in both. Returns one id per input document.
   */
  async addDocuments(documents: DocumentInterface[], options: BGEM3AddDocumentsOptions = {}): Promise<string[]> {
    const { store, sparse } = this.writableParts('addDocuments');
    const { docs, ids } = prepareDocuments(documents, options.ids);
    if (docs.length === 0) return [];
    const encoded: EncodeResult[] = [];
    for (let start = 0; start < docs.length; start += this.batchSize) {
      const part = docs.slice(start, start + this.batchSize);
      encoded.push(...(await this.source.encode(part.map((d) => d.pageContent), { dense: true, sparse: true })));
    }
    const replaced = docs.filter((d) => sparse.getDocument(d.id) !== undefined).map((d) => d.id);
    if (replaced.length > 0) await deleteFromStore(store, replaced);
    const docIds = docs.map((d) => d.id);
    await store.addVectors(
      encoded.map((e) => Array.from(e.dense as Float32Array)),
      docs,
      { ids: docIds },
    );
    await sparse._addEncoded(docs.map((doc, i) => ({ doc, sparse: encoded[i].sparse as SparseVector })));
    return ids;
  }

  /** Removes documents from the vector store and the sparse retriever. */
  async delete(params: { ids: string[] } | string[]): Promise<void> {
    const { store, sparse } = this.writableParts('delete');
    const ids = Array.isArray(params) ? params : params?.ids;
    if (!Array.isArray(ids)) throw new TypeError('delete expects { ids: string[] } or an array of ids');
    await deleteFromStore(store, ids);
    await sparse.delete(ids);
  }

  override async _getRelevantDocuments(query: string, runManager?: CallbackManagerForRetrieverRun): Promise<DocumentInterface[]> {
    checkQuery(query);
    const k = checkPositiveInteger(this.k, 'k');
    const fetchK = Math.max(checkPositiveInteger(this.fetchK, 'fetchK'), k);
    if (query.trim().length === 0) return [];

    // The query first, with every output the later stages need: the retrievers' own query
    // encodings then hit the cache instead of racing each other into two forward passes.
    const [q] = await this.source.encode([query], { dense: true, sparse: true, colbert: this.rerank });
    const [denseDocs, sparseDocs] = await Promise.all([
      withFetchK(this.denseRetriever, fetchK).invoke(query, runManager?.getChild('dense_retriever')),
      withFetchK(this.sparseRetriever, fetchK).invoke(query, runManager?.getChild('sparse_retriever')),
    ]);

    const candidates = new Map<string, Candidate>();
    const lists: string[][] = [denseDocs, sparseDocs].map((docs) =>
      docs.map((doc) => {
        const key = keyOf(doc);
        const seen = candidates.get(key);
        if (!seen) candidates.set(key, { key, doc });
        else if (seen.doc !== doc && seen.otherMetadata === undefined) seen.otherMetadata = doc.metadata;
        return key;
      }),
    );
    if (candidates.size === 0) return [];

    // Encodings of candidates (cache hits for documents indexed in this process).
    // Only the candidates that are scored: all for 'weighted', the rerank pool otherwise.
    const encode = async (keys: readonly string[]): Promise<Map<string, EncodeResult>> => {
      const res = await this.source.encode(
        keys.map((key) => (candidates.get(key) as Candidate).doc.pageContent),
        { dense: true, sparse: true, colbert: this.rerank },
      );
      return new Map(keys.map((key, i) => [key, res[i]]));
    };

    let encodings: Map<string, EncodeResult> | undefined;
    let fused: ScoredId[];
    const modeScores = new Map<string, { dense?: number; sparse?: number; colbert?: number }>();
    if (this.fusion === 'rrf') {
      fused = reciprocalRankFusion(
        lists.map((l) => l.map((id): RankedEntry => ({ id }))),
        { k: this.c, weights: this.weights },
      );
    } else {
      encodings = await encode([...candidates.keys()]);
      for (const [key, e] of encodings) {
        modeScores.set(key, {
          dense: denseScore(q.dense as Float32Array, e.dense as Float32Array),
          sparse: lexicalMatchingScore(q.sparse as SparseVector, e.sparse as SparseVector),
        });
      }
      fused = weightedScoreFusion(
        [
          lists[0].map((id) => ({ id, score: modeScores.get(id)?.dense as number })),
          lists[1].map((id) => ({ id, score: modeScores.get(id)?.sparse as number })),
        ],
        { weights: this.weights },
      );
    }
    if (fused.length === 0) return [];

    if (!this.rerank) {
      return fused.slice(0, k).map((h) => {
        const c = candidates.get(h.id) as Candidate;
        const s = modeScores.get(h.id);
        const scores: Record<string, number> = {};
        if (s?.dense !== undefined) scores.denseScore = s.dense;
        if (s?.sparse !== undefined) scores.sparseScore = s.sparse;
        return output(c, { ...scores, fusedScore: h.score, relevanceScore: h.score });
      });
    }

    const pool = this.rerankCandidates === undefined ? fused : fused.slice(0, this.rerankCandidates);
    const enc = encodings ?? (await encode(pool.map((h) => h.id)));
    const hits = await m3Rerank(
      q as M3Encoded,
      pool.map((h) => enc.get(h.id) as M3Encoded),
      { weights: this.rerankWeights, k: Math.min(k, pool.length) },
    );
    const colbertUsed = this.rerankWeights[2] > 0;
    return hits.map((hit) => {
      const h = pool[hit.index];
      const scores: Record<string, number> = { denseScore: hit.scores.dense, sparseScore: hit.scores.sparse };
      if (colbertUsed) scores.colbertScore = hit.scores.colbert;
      return output(candidates.get(h.id) as Candidate, { ...scores, fusedScore: h.score, relevanceScore: hit.score });
    });
  }

  private writableParts(what: string): { store: VectorStoreInterface; sparse: BGEM3SparseRetriever } {
    const store = (this.denseRetriever as { vectorStore?: VectorStoreInterface }).vectorStore;
    if (!store || typeof store.addVectors !== 'function' || !(this.sparseRetriever instanceof BGEM3SparseRetriever)) {
      throw new M3Error(
        'INVALID_ARGUMENT',
        `${what} needs a VectorStoreRetriever as denseRetriever and a BGEM3SparseRetriever as sparseRetriever; add documents to your retrievers directly instead`,
      );
    }
    return { store, sparse: this.sparseRetriever };
  }
}

function checkRerankWeights(w: unknown): void {
  if (!Array.isArray(w) || w.length !== 3 || w.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x < 0) || w.every((x) => x === 0)) {
    throw new M3Error('INVALID_ARGUMENT', `rerankWeights must be three finite numbers ≥ 0 [dense, sparse, colbert], not all zero; got ${JSON.stringify(w)}`);
  }
}

function isRetriever(r: unknown): r is BaseRetrieverInterface {
  return r !== null && typeof r === 'object' && typeof (r as BaseRetrieverInterface).invoke === 'function';
}

/** Dedup key: the document id, else (only for id-less documents) its text. */
function keyOf(doc: Doc): string {
  return typeof doc.id === 'string' && doc.id.length > 0 ? `id:${doc.id}` : `text:${doc.pageContent}`;
}

function output(c: Candidate, scores: Record<string, number>): Doc {
  const doc = copyDoc(c.doc, scores);
  if (c.otherMetadata) doc.metadata = { ...c.otherMetadata, ...doc.metadata };
  return doc;
}

interface VectorStoreRetrieverLike extends BaseRetrieverInterface {
  vectorStore: VectorStoreInterface;
  k: number;
  filter?: unknown;
  searchType?: string;
  searchKwargs?: Record<string, unknown>;
  tags?: string[];
  metadata?: Record<string, unknown>;
  verbose?: boolean;
  callbacks?: unknown;
}

/** A variant of `r` returning `fetchK` documents, when `r` has a `k` we know how to change. */
function withFetchK(r: BaseRetrieverInterface, fetchK: number): BaseRetrieverInterface {
  if (r instanceof BGEM3SparseRetriever) return r.k === fetchK ? r : r._withK(fetchK);
  const v = r as VectorStoreRetrieverLike;
  if (v.vectorStore && typeof v.vectorStore.asRetriever === 'function' && typeof v.k === 'number') {
    if (v.k === fetchK) return r;
    const typeTag = typeof v.vectorStore._vectorstoreType === 'function' ? v.vectorStore._vectorstoreType() : undefined;
    return v.vectorStore.asRetriever({
      k: fetchK,
      filter: v.filter as never,
      searchType: v.searchType as never,
      searchKwargs: v.searchKwargs as never,
      tags: v.tags?.filter((t) => t !== typeTag),
      metadata: v.metadata,
      verbose: v.verbose,
      callbacks: v.callbacks as never,
    } as never);
  }
  return r;
}

async function createMemoryVectorStore(embeddings: BGEM3Embeddings): Promise<VectorStoreInterface> {
  let mod: { MemoryVectorStore: new (e: BGEM3Embeddings) => VectorStoreInterface };
  try {
    mod = (await import('@langchain/classic/vectorstores/memory')) as unknown as typeof mod;
  } catch (cause) {
    throw new M3Error(
      'INVALID_ARGUMENT',
      'BGEM3EnsembleRetriever.fromDocuments uses MemoryVectorStore from @langchain/classic by default: install it (npm i @langchain/classic) or pass options.vectorStore',
      { cause },
    );
  }
  return new mod.MemoryVectorStore(embeddings);
}

/** Removes ids from a vector store; MemoryVectorStore (no delete) is filtered directly. */
async function deleteFromStore(store: VectorStoreInterface, ids: readonly string[]): Promise<void> {
  const memory = (store as { memoryVectors?: { id?: string }[] }).memoryVectors;
  if (Array.isArray(memory)) {
    const drop = new Set(ids);
    (store as unknown as { memoryVectors: { id?: string }[] }).memoryVectors = memory.filter((v) => v.id === undefined || !drop.has(v.id));
    return;
  }
  await store.delete({ ids: [...ids] });
}
