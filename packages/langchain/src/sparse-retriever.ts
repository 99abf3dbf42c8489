/**
 * BGEM3SparseRetriever: lexical retrieval with BGE-M3's learned sparse weights, in the shape of
 * LangChain's `BM25Retriever` (`new X({ docs, k })`, `X.fromDocuments(docs, { k })`). It is a
 * sparse-mode view of a {@link BGEM3VectorStore}: storage and scoring are the store's.
 */
import type { M3Store } from '@bgem3/core';
import { attachSource, bool, checkOptions, invalid, positiveInt, queryString, refuseLegacyFile, sourceOf, type EncoderSource } from '@bgem3/core/adapter';
import type { CallbackManagerForRetrieverRun } from '@langchain/core/callbacks/manager';
import type { DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever, type BaseRetrieverInput } from '@langchain/core/retrievers';
import { BGEM3Embeddings } from './embeddings.js';
import { BGEM3VectorStore, type BGEM3AddDocumentsOptions } from './vector-store.js';
import { MODEL_KEYS, RETRIEVER_KEYS, filterOptions, hitToDocument, scoreMetadata, type BGEM3Filter, type BGEM3ModelParams } from './shared.js';

/** Options of {@link BGEM3SparseRetriever}. */
export interface BGEM3SparseRetrieverInput extends BaseRetrieverInput, BGEM3ModelParams {
  /** Documents to index (as BM25Retriever's `docs`); indexed in the background, awaited by the first query. */
  docs?: DocumentInterface[];
  /** Documents returned (default 4). */
  k?: number;
  /** Add `sparseScore`, `score` and `relevanceScore` to the metadata (default true). */
  includeScore?: boolean;
  /** A store to search (its documents; new ones are added to it). */
  store?: M3Store;
  /** A vector store to search (instead of `store`). */
  vectorStore?: BGEM3VectorStore;
  /** A `where` object or a `(metadata, id) => boolean` function, applied inside the top-k search. */
  filter?: BGEM3Filter;
}

const KEYS = [...MODEL_KEYS, ...RETRIEVER_KEYS, 'docs', 'k', 'includeScore', 'store', 'vectorStore', 'filter'];
const LEGACY_MAGIC = 'BGM3LCSP';

/**
 * A retriever over BGE-M3 lexical weights: a document scores Σ over the tokens it shares with
 * the query of w_query·w_doc (FlagEmbedding's lexical matching score), found exactly. Matching is
 * on model tokens: case-robust, whole tokens, punctuation-proof, and it scores every language
 * BGE-M3 knows. Documents that share no token with the query are not returned.
 *
 * Returned documents are copies; a document given without an id comes back without one.
 */
export class BGEM3SparseRetriever extends BaseRetriever {
  static override lc_name(): string {
    return 'BGEM3SparseRetriever';
  }

  lc_namespace = ['bgem3', 'retrievers', 'sparse'];

  /** Documents returned per query. */
  k: number;
  /** Whether scores are added to the metadata. */
  includeScore: boolean;
  /** Optional filter. */
  filter: BGEM3Filter | undefined;
  private readonly vectorStoreReady: Promise<BGEM3VectorStore>;

  constructor(fields: BGEM3SparseRetrieverInput = {}) {
    const f = checkOptions(fields, KEYS, 'BGEM3SparseRetriever');
    super({ callbacks: f.callbacks, tags: f.tags, metadata: f.metadata, verbose: f.verbose });
    this.k = positiveInt(f.k, 'k', 4);
    this.includeScore = bool(f.includeScore, 'includeScore', true);
    if (f.filter !== undefined && (f.filter === null || (typeof f.filter !== 'object' && typeof f.filter !== 'function'))) invalid('filter must be a where object or a function (metadata, id) => boolean');
    this.filter = f.filter;
    if (f.docs !== undefined && !Array.isArray(f.docs)) invalid('docs must be an array of Documents');
    const { docs, k: _k, includeScore: _i, store, vectorStore, filter: _f, callbacks: _c, tags: _t, metadata: _m, verbose: _v, ...model } = f;
    if (store !== undefined && vectorStore !== undefined) invalid('give store or vectorStore, not both');
    if (vectorStore !== undefined && !(vectorStore instanceof BGEM3VectorStore)) invalid('vectorStore must be a BGEM3VectorStore');
    if (vectorStore !== undefined && Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: the model comes from the vector store`);
    const vs: BGEM3VectorStore | undefined = vectorStore ?? (store !== undefined ? new BGEM3VectorStore(undefined, { ...model, store }) : undefined);
    const embeddings = vs ? vs.embeddings : new BGEM3Embeddings(model);
    attachSource(this, sourceOf<EncoderSource>(embeddings));
    const ready = vs ? Promise.resolve(vs) : BGEM3VectorStore.open(embeddings, {});
    this.vectorStoreReady = docs && docs.length > 0 ? ready.then(async (v) => (await v.addDocuments(docs), v)) : ready;
    // A failed background index is reported by the next call, never as an unhandled rejection.
    this.vectorStoreReady.catch(() => undefined);
  }

  /**
   * A retriever over `documents` (BM25Retriever's factory shape: synchronous, indexing runs in
   * the background and the first query waits for it; `await` works too).
   */
  static fromDocuments(documents: DocumentInterface[], options: Omit<BGEM3SparseRetrieverInput, 'docs'> = {}): BGEM3SparseRetriever {
    return new BGEM3SparseRetriever({ ...options, docs: documents });
  }

  /** The vector store searched (once its documents are indexed). */
  get vectorStore(): Promise<BGEM3VectorStore> {
    return this.vectorStoreReady;
  }

  /** Adds documents (see {@link BGEM3VectorStore.addDocuments}); returns their ids. */
  async addDocuments(documents: DocumentInterface[], options?: BGEM3AddDocumentsOptions): Promise<string[]> {
    return (await this.vectorStoreReady).addDocuments(documents, options);
  }

  /** Removes documents by id. */
  async delete(params: { ids: string[] } | string[]): Promise<void> {
    await (await this.vectorStoreReady).delete(params);
  }

  /**
   * The single-file format of @bgem3/langchain 0.1 (`save`) is gone: persistence is the
   * store's. This reports how to rebuild.
   */
  static async load(path: string): Promise<never> {
    const how =
      'persistence is now the store\'s: rebuild once with `const store = await M3Index.create({ encoder })` (or a PgM3Store), ' +
      '`await BGEM3VectorStore.fromDocuments(docs, undefined, { store })`, save or open the store as it documents, and use `new BGEM3SparseRetriever({ store })`';
    return refuseLegacyFile(path, LEGACY_MAGIC, "BGEM3SparseRetriever file of @bgem3/langchain", how);
  }

  override async _getRelevantDocuments(query: string, _runManager?: CallbackManagerForRetrieverRun): Promise<DocumentInterface[]> {
    queryString(query);
    const k = positiveInt(this.k, 'k', 4);
    const vs = await this.vectorStoreReady;
    if (query.trim().length === 0) return [];
    const hits = await vs.store.searchSparse(await vs.storeQuery(query, { sparse: true }), { k, ...filterOptions(this.filter) });
    return hits.map((h) => hitToDocument(vs.store, h, this.includeScore ? scoreMetadata(h.score, { sparse: h.score }) : undefined));
  }
}
