/**
 * BGEM3VectorStore: a LangChain `VectorStore` over any `M3Store` (the embedded M3Index, or
 * PgM3Store from @bgem3/pgvector), and its retriever, which runs dense, sparse or hybrid search.
 * Storage, persistence and scoring are the store's; this file only speaks LangChain.
 */
import { M3Index, type M3Query, type M3Store, type M3Where } from '@bgem3/core';
import { DEFAULT_M3_WEIGHTS, checkM3Weights, checkOptions, hasBrand, invalid, oneOf, positiveInt, queryString, sourceOf, type EncoderSource, type ModelBase } from '@bgem3/core/adapter';
import type { CallbackManagerForRetrieverRun, Callbacks } from '@langchain/core/callbacks/manager';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import { VectorStore, VectorStoreRetriever, type VectorStoreRetrieverInput } from '@langchain/core/vectorstores';
import { BGEM3Embeddings } from './embeddings.js';
import { ANONYMOUS_KEY, MODEL_KEYS, RETRIEVER_KEYS, filterOptions, hitToDocument, scoreMetadata, type BGEM3Filter, type BGEM3ModelParams } from './shared.js';

/** How a {@link BGEM3Retriever} searches. */
export type BGEM3SearchMode = 'dense' | 'sparse' | 'hybrid';

/** Options of {@link BGEM3VectorStore}. */
export interface BGEM3VectorStoreArgs extends BGEM3ModelParams {
  /** The store (an M3Index, a PgM3Store, …). `fromDocuments`/`fromTexts` make an in-memory M3Index without it. */
  store?: M3Store;
}

/** Options of {@link BGEM3VectorStore.addDocuments}. */
export interface BGEM3AddDocumentsOptions {
  /** One id per document; an id wins over `doc.id`. An id already stored is replaced. */
  ids?: string[];
  /** Stops the encoding (the call rejects with code ABORTED). */
  signal?: AbortSignal;
}

/** Options of {@link BGEM3VectorStore.asRetriever}. */
export interface BGEM3RetrieverArgs {
  /** Documents returned (default 4, like LangChain's retrievers). */
  k?: number;
  /** `"hybrid"` (default): the M3 pipeline; `"dense"`; `"sparse"`. */
  mode?: BGEM3SearchMode;
  /** A `where` object or a `(metadata, id) => boolean` function. */
  filter?: BGEM3Filter;
  /** Hybrid: candidates from each of dense and sparse search (default 100). */
  fetchK?: number;
  /** Hybrid: `[dense, sparse, colbert]` weights of the M3 All score (default [0.4, 0.2, 0.4]). */
  weights?: readonly [number, number, number];
  /** LangChain's `searchType`: only `"similarity"` (MMR is not offered). */
  searchType?: 'similarity';
  callbacks?: Callbacks;
  tags?: string[];
  metadata?: Record<string, unknown>;
  verbose?: boolean;
}

const STORE_KEYS = [...MODEL_KEYS, 'store'];
const RETRIEVER_ARG_KEYS = ['k', 'mode', 'filter', 'fetchK', 'weights', 'searchType', 'vectorStore', ...RETRIEVER_KEYS];

function storeBase(store: M3Store): ModelBase {
  return { what: 'the store', encoder: store.encoder, modelId: store.modelId, dim: store.dim, vocabSize: store.vocabSize };
}

function checkStore(store: unknown, what: string): asserts store is M3Store {
  const s = store as M3Store;
  if (s === null || typeof s !== 'object' || typeof s.search !== 'function' || typeof s.rescore !== 'function' || typeof s.modelId !== 'string') {
    invalid(`${what} must be an M3Store (an M3Index, a PgM3Store, …)`);
  }
}

/**
 * A LangChain vector store over an `M3Store`. Each document is encoded once (dense, sparse and
 * ColBERT from one forward pass) and kept by the store; a query encodes one text, the query.
 *
 * - `similaritySearch*` are dense search (LangChain's contract);
 * - `asRetriever({ mode })` searches `"hybrid"` (default: dense ∪ sparse candidates reranked by
 *   the M3 All score), `"dense"` or `"sparse"`, and puts each mode's score in the metadata;
 * - documents added without an id are stored under a generated id (returned by `addDocuments`)
 *   but come back without one, like MemoryVectorStore;
 * - `addVectors` is refused: the store needs all three outputs, which `addDocuments` computes in
 *   one pass.
 *
 * @example
 * ```ts
 * const vectorStore = await BGEM3VectorStore.fromDocuments(docs, undefined, { store });
 * const retriever = vectorStore.asRetriever({ k: 5 }); // hybrid
 * ```
 */
export class BGEM3VectorStore extends VectorStore {
  declare FilterType: BGEM3Filter;
  /** The store. */
  readonly store: M3Store;
  declare embeddings: BGEM3Embeddings;

  _vectorstoreType(): string {
    return 'bgem3';
  }

  /**
   * @param embeddings a BGEM3Embeddings of the store's model (default: one made from the store);
   *   any other embeddings would put other vectors in the query than in the store, and are refused
   * @param args `{ store }` and optionally model options (only to give the model of a store that has none)
   */
  constructor(embeddings: EmbeddingsInterface | undefined, args: BGEM3VectorStoreArgs) {
    const a = checkOptions(args, STORE_KEYS, 'BGEM3VectorStore');
    checkStore(a.store, 'store');
    const store = a.store;
    const { store: _s, ...model } = a;
    let emb: BGEM3Embeddings;
    if (embeddings === undefined) {
      emb = new BGEM3Embeddings({ ...model, store });
    } else {
      if (!hasBrand(embeddings, 'langchain.BGEM3Embeddings')) invalid('embeddings must be a BGEM3Embeddings (the store holds BGE-M3 vectors; queries must be BGE-M3 vectors too), or undefined');
      if (Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: give the model to the embeddings, or no embeddings`);
      emb = embeddings as BGEM3Embeddings;
      const s = sourceOf<EncoderSource>(emb);
      const given = s?.givenEncoder;
      if (given && given.modelId !== store.modelId) invalid(`the embeddings are model ${JSON.stringify(given.modelId)}, the store is ${JSON.stringify(store.modelId)}`);
    }
    super(emb, {});
    this.store = store;
    this.embeddings = emb;
    this.checked = undefined;
  }

  private checked: Promise<void> | undefined;

  // The embeddings' model must be the store's (checked once, when first needed).
  private checkEmbeddings(): Promise<void> {
    this.checked ??= (async () => {
      const enc = await (sourceOf<EncoderSource>(this.embeddings) as EncoderSource).get();
      if (enc.modelId !== this.store.modelId || enc.dim !== this.store.dim) {
        invalid(`the embeddings are model ${JSON.stringify(enc.modelId)} (dimension ${enc.dim}), the store is ${JSON.stringify(this.store.modelId)} (dimension ${this.store.dim})`);
      }
    })();
    this.checked.catch(() => {
      this.checked = undefined;
    });
    return this.checked;
  }

  /**
   * Encodes and stores documents (dense, sparse and ColBERT from one pass each). Ids:
   * `options.ids`, else `doc.id`, else generated (returned, and the document comes back without
   * an id). An id already stored is replaced. Returns one id per document.
   */
  async addDocuments(documents: DocumentInterface[], options: BGEM3AddDocumentsOptions = {}): Promise<string[]> {
    const o = checkOptions(options, ['ids', 'signal'], 'addDocuments');
    if (!Array.isArray(documents)) throw new TypeError('documents must be an array of Documents');
    if (o.ids !== undefined && (!Array.isArray(o.ids) || o.ids.length !== documents.length)) invalid(`ids must be an array with one id per document (${documents.length})`);
    const docs = documents.map((d, i) => {
      if (d === null || typeof d !== 'object') throw new TypeError(`documents[${i}] must be a Document`);
      if (typeof d.pageContent !== 'string') throw new TypeError(`documents[${i}].pageContent must be a string`);
      const given = o.ids?.[i];
      if (given !== undefined && typeof given !== 'string') throw new TypeError(`the id of documents[${i}] must be a string`);
      const id = given ?? (typeof d.id === 'string' && d.id.length > 0 ? d.id : undefined);
      const metadata = { ...(d.metadata ?? {}) };
      if (id === undefined) metadata[ANONYMOUS_KEY] = true;
      else delete metadata[ANONYMOUS_KEY];
      return { ...(id !== undefined ? { id } : {}), text: d.pageContent, metadata };
    });
    if (docs.length === 0) return [];
    if (this.store.encoder) return this.store.add(docs, o.signal ? { signal: o.signal } : {});
    // A store opened without its encoder: encoded here, with the model of the embeddings.
    const encodings = await this.source().encode(
      docs.map((d) => d.text),
      { dense: true, sparse: true, colbert: true, ...(o.signal ? { signal: o.signal } : {}) },
    );
    return this.store.addEncoded(docs.map((d, i) => ({ ...d, encoding: encodings[i] as (typeof encodings)[number] })));
  }

  private source(): EncoderSource {
    return sourceOf<EncoderSource>(this.embeddings) as EncoderSource;
  }

  /**
   * The query as the store takes it: the text, when the store has an encoder (it encodes it,
   * once); else its encoding by the embeddings' model (checked to be the store's).
   * @internal
   */
  async storeQuery(text: string, need: { dense?: boolean; sparse?: boolean; colbert?: boolean }): Promise<M3Query> {
    if (this.store.encoder) return text;
    const [e] = await this.source().encode([text], { dense: need.dense ?? false, sparse: need.sparse ?? false, colbert: need.colbert ?? false });
    return e as NonNullable<typeof e>;
  }

  /** Refused: the store keeps dense, sparse and ColBERT vectors; use {@link addDocuments} (one pass computes all three). */
  async addVectors(_vectors: number[][], _documents: DocumentInterface[]): Promise<string[]> {
    return invalid('BGEM3VectorStore.addVectors: the store keeps dense, sparse and ColBERT vectors of each document, and dense vectors alone cannot give them; use addDocuments (one encoder pass computes all three)');
  }

  /** Removes documents by id (unknown ids are ignored). */
  override async delete(params: { ids: string[] } | string[]): Promise<void> {
    const ids = Array.isArray(params) ? params : checkOptions(params, ['ids'], 'delete').ids;
    if (!Array.isArray(ids)) throw new TypeError('delete expects { ids: string[] } or an array of ids');
    ids.forEach((id, i) => {
      if (typeof id !== 'string') throw new TypeError(`ids[${i}] must be a string`);
    });
    await this.store.delete(ids);
  }

  /** Dense search with a query vector (from this store's embeddings): `[document, inner product]`, best first. */
  async similaritySearchVectorWithScore(query: number[], k: number, filter?: BGEM3Filter): Promise<[DocumentInterface, number][]> {
    await this.checkEmbeddings();
    if (!Array.isArray(query)) invalid('query must be a vector (number[])');
    const dense = Float32Array.from(query);
    const hits = await this.store.searchDense({ dense, tokens: 0, truncated: false }, { k: positiveInt(k, 'k', 4), ...filterOptions(filter) });
    return hits.map((h) => [hitToDocument(this.store, h, undefined), h.score]);
  }

  /**
   * A retriever over this store (a `VectorStoreRetriever`): `mode` `"hybrid"` (default),
   * `"dense"` or `"sparse"`; each document carries `denseScore`/`sparseScore`/`colbertScore` (the
   * modes computed), `score` (the raw score it is ranked by) and `relevanceScore` (that score in
   * [0, 1], as (s + 1) / 2 clamped).
   */
  override asRetriever(
    kOrFields?: number | BGEM3RetrieverArgs,
    filter?: BGEM3Filter,
    callbacks?: Callbacks,
    tags?: string[],
    metadata?: Record<string, unknown>,
    verbose?: boolean,
  ): BGEM3Retriever & VectorStoreRetriever<this> {
    const fields: BGEM3RetrieverArgs =
      typeof kOrFields === 'number' || kOrFields === undefined
        ? { ...(kOrFields !== undefined ? { k: kOrFields } : {}), ...(filter !== undefined ? { filter } : {}), ...(callbacks ? { callbacks } : {}), ...(tags ? { tags } : {}), ...(metadata ? { metadata } : {}), ...(verbose !== undefined ? { verbose } : {}) }
        : kOrFields;
    // A BGEM3Retriever's store is this store: typed as LangChain's base declares it (a retriever over `this`).
    return new BGEM3Retriever({ ...fields, vectorStore: this, tags: [...(fields.tags ?? []), this._vectorstoreType()] }) as BGEM3Retriever & VectorStoreRetriever<this>;
  }

  /** Builds a store from documents: `dbConfig.store`, else a new in-memory M3Index of the model. */
  static override async fromDocuments(docs: DocumentInterface[], embeddings: EmbeddingsInterface | undefined, dbConfig: BGEM3VectorStoreArgs = {}): Promise<BGEM3VectorStore> {
    const vs = await BGEM3VectorStore.open(embeddings, dbConfig);
    await vs.addDocuments(docs);
    return vs;
  }

  /** Builds a store from texts; `metadatas` is one object for all or one per text. */
  static override async fromTexts(texts: string[], metadatas: object[] | object | undefined, embeddings: EmbeddingsInterface | undefined, dbConfig: BGEM3VectorStoreArgs = {}): Promise<BGEM3VectorStore> {
    if (!Array.isArray(texts)) invalid('texts must be an array of strings');
    if (Array.isArray(metadatas) && metadatas.length !== texts.length) invalid(`metadatas has ${metadatas.length} entries for ${texts.length} texts`);
    const docs = texts.map((text, i) => new Document({ pageContent: text, metadata: { ...((Array.isArray(metadatas) ? metadatas[i] : metadatas) ?? {}) } }));
    return BGEM3VectorStore.fromDocuments(docs, embeddings, dbConfig);
  }

  /** A vector store on `dbConfig.store`, else on a new in-memory M3Index of the model (of the embeddings, the options, or BAAI/bge-m3). */
  static async open(embeddings: EmbeddingsInterface | undefined, dbConfig: BGEM3VectorStoreArgs = {}): Promise<BGEM3VectorStore> {
    const c = checkOptions(dbConfig, STORE_KEYS, 'BGEM3VectorStore');
    if (c.store) return new BGEM3VectorStore(embeddings, c as BGEM3VectorStoreArgs);
    const { store: _s, ...model } = c;
    if (embeddings !== undefined && !hasBrand(embeddings, 'langchain.BGEM3Embeddings')) invalid('embeddings must be a BGEM3Embeddings, or undefined');
    if (embeddings !== undefined && Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: give the model to the embeddings, or no embeddings`);
    const emb = (embeddings as BGEM3Embeddings | undefined) ?? new BGEM3Embeddings(model);
    const encoder = await (sourceOf<EncoderSource>(emb) as EncoderSource).get();
    const store = await M3Index.create({ encoder, ...(emb.maxLength ? { maxLength: emb.maxLength } : {}) });
    return new BGEM3VectorStore(emb, { store });
  }
}

/** Options of {@link BGEM3Retriever}. */
export type BGEM3RetrieverInput = BGEM3RetrieverArgs & { vectorStore: BGEM3VectorStore };

/**
 * The retriever of a {@link BGEM3VectorStore}: a `VectorStoreRetriever` that runs the store's
 * dense, sparse or hybrid search (see {@link BGEM3VectorStore.asRetriever}).
 */
export class BGEM3Retriever extends VectorStoreRetriever<BGEM3VectorStore> {
  static override lc_name(): string {
    return 'BGEM3Retriever';
  }

  /** The search mode. */
  mode: BGEM3SearchMode;
  /** Hybrid candidates per first-stage mode. */
  fetchK: number;
  /** Hybrid weights `[dense, sparse, colbert]`. */
  weights: readonly [number, number, number];

  constructor(fields: BGEM3RetrieverInput) {
    const f = checkOptions(fields, RETRIEVER_ARG_KEYS, 'BGEM3Retriever');
    if (!(f.vectorStore instanceof BGEM3VectorStore)) invalid('vectorStore must be a BGEM3VectorStore');
    if (f.searchType !== undefined && f.searchType !== 'similarity') invalid(`searchType ${JSON.stringify(f.searchType)} is not offered by BGEM3VectorStore (use mode: "dense" | "sparse" | "hybrid")`);
    if (f.filter !== undefined && (f.filter === null || (typeof f.filter !== 'object' && typeof f.filter !== 'function'))) invalid('filter must be a where object or a function (metadata, id) => boolean');
    super({
      vectorStore: f.vectorStore,
      k: positiveInt(f.k, 'k', 4),
      ...(f.filter !== undefined ? { filter: f.filter } : {}),
      searchType: 'similarity',
      ...(f.callbacks ? { callbacks: f.callbacks } : {}),
      ...(f.tags ? { tags: f.tags } : {}),
      ...(f.metadata ? { metadata: f.metadata } : {}),
      ...(f.verbose !== undefined ? { verbose: f.verbose } : {}),
    } as VectorStoreRetrieverInput<BGEM3VectorStore>);
    this.mode = oneOf(f.mode, ['hybrid', 'dense', 'sparse'] as const, 'mode', 'hybrid');
    this.fetchK = positiveInt(f.fetchK, 'fetchK', 100);
    if (f.weights !== undefined) checkM3Weights(f.weights, 'weights');
    this.weights = f.weights ? ([...f.weights] as [number, number, number]) : [...DEFAULT_M3_WEIGHTS];
    if (f.fetchK !== undefined && this.mode !== 'hybrid') invalid('fetchK applies to mode "hybrid" only');
    if (f.weights !== undefined && this.mode !== 'hybrid') invalid('weights apply to mode "hybrid" only');
  }

  override async _getRelevantDocuments(query: string, _runManager?: CallbackManagerForRetrieverRun): Promise<DocumentInterface[]> {
    queryString(query);
    const store = this.vectorStore.store;
    const k = positiveInt(this.k, 'k', 4);
    const filter = filterOptions(this.filter as BGEM3Filter | undefined);
    if (this.mode === 'hybrid') {
      const q = await this.vectorStore.storeQuery(query, { dense: true, sparse: true, colbert: this.weights[2] > 0 });
      const hits = await store.search(q, { k, fetchK: this.fetchK, weights: checkM3Weights(this.weights), ...filter });
      return hits.map((h) => hitToDocument(store, h, scoreMetadata(h.score, h.scores)));
    }
    const q = await this.vectorStore.storeQuery(query, this.mode === 'dense' ? { dense: true } : { sparse: true });
    const hits = this.mode === 'dense' ? await store.searchDense(q, { k, ...filter }) : await store.searchSparse(q, { k, ...filter });
    return hits.map((h) => hitToDocument(store, h, scoreMetadata(h.score, this.mode === 'dense' ? { dense: h.score } : { sparse: h.score })));
  }
}

export type { M3Where };
