/**
 * BGEM3SparseRetriever: BGE-M3 lexical retrieval as a LlamaIndex retriever, in the shape of
 * `Bm25Retriever` (`{ docStore, topK, docIds }`). A sparse-mode view of a store: given a store
 * (or a {@link BGEM3VectorStore}) it searches it; given nodes or a docStore it keeps them in an
 * in-memory M3Index, following the docStore as it changes.
 */
import { M3Error, M3Index, type M3Store } from '@bgem3/core';
import { EncoderSource, attachSource, bool, checkOptions, invalid, positiveInt, refuseLegacyFile, sourceOf } from '@bgem3/core/adapter';
import { BaseRetriever, MetadataMode, Settings, type BaseDocumentStore, type BaseNode, type Document, type NodeParser, type NodeWithScore, type QueryBundle } from 'llamaindex';
import { BGEM3VectorStore } from './vector-store.js';
import { MODEL_KEYS, checkStore, hitToNode, metadataModeOf, queryText, settingsBase, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3SparseRetriever}. */
export interface BGEM3SparseRetrieverOptions extends BGEM3ModelOptions {
  /** Search this store (its documents). */
  store?: M3Store;
  /** Or this vector store. */
  vectorStore?: BGEM3VectorStore;
  /** Or these nodes (kept in an in-memory M3Index). */
  nodes?: BaseNode[];
  /** Or this document store (as Bm25Retriever): its nodes, re-read on every query (see `syncOnRetrieve`). */
  docStore?: BaseDocumentStore;
  /** With a docStore: only these ids. */
  docIds?: string[];
  /** With a docStore: re-read it on every query, indexing only new or changed nodes (default true). */
  syncOnRetrieve?: boolean;
  /** Results per query (default 10, as Bm25Retriever). */
  topK?: number;
  /**
   * Which node text is indexed, for nodes and docStores (default `MetadataMode.NONE`, as
   * Bm25Retriever: metadata such as file paths is not lexically searchable).
   */
  metadataMode?: MetadataMode;
}

/** Options of {@link BGEM3SparseRetriever.fromDocuments}. */
export interface BGEM3SparseFromDocumentsOptions extends Omit<BGEM3SparseRetrieverOptions, 'nodes'> {
  /** Splits the documents (default `Settings.nodeParser`). */
  nodeParser?: NodeParser;
}

const KEYS = [...MODEL_KEYS, 'store', 'vectorStore', 'nodes', 'docStore', 'docIds', 'syncOnRetrieve', 'topK', 'metadataMode'];
const LEGACY_MAGIC = 'BGM3LISP';
/** Bm25Retriever's default topK. */
const BM25_TOP_K = 10;

/**
 * BGE-M3 sparse (lexical-weight) retrieval: a node scores Σ over the tokens it shares with the
 * query of w_query·w_node (FlagEmbedding's lexical matching score, ≥ 0, higher is better), found
 * exactly. Only nodes sharing a token with the query are returned, as fresh copies.
 */
export class BGEM3SparseRetriever extends BaseRetriever {
  /** Results per query. */
  topK: number;
  /** Which node text is indexed. */
  readonly metadataMode: MetadataMode;
  /** The docStore followed, if any. */
  readonly docStore: BaseDocumentStore | undefined;
  private readonly docIds: Set<string> | undefined;
  private readonly syncOnRetrieve: boolean;
  private readonly source: EncoderSource;
  private readonly given: BGEM3VectorStore | undefined;
  private own: Promise<BGEM3VectorStore> | undefined;
  /** docStore node id → hash, for what the in-memory store holds from it. */
  private readonly synced = new Map<string, string>();
  private syncedOnce = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: BGEM3SparseRetrieverOptions = {}) {
    super();
    const o = checkOptions(options, KEYS, 'BGEM3SparseRetriever');
    const { store, vectorStore, nodes, docStore, docIds, syncOnRetrieve: _s, topK: _t, metadataMode: _m, ...model } = o;
    const sources = (['store', 'vectorStore', 'nodes', 'docStore'] as const).filter((k) => o[k] !== undefined);
    if (sources.length > 1 && !(sources.length === 2 && sources.includes('nodes') && sources.includes('docStore'))) invalid(`give one of store, vectorStore, nodes and docStore, not ${sources.join(' and ')}`);
    if (store !== undefined) checkStore(store);
    if (vectorStore !== undefined && !(vectorStore instanceof BGEM3VectorStore)) invalid('vectorStore must be a BGEM3VectorStore');
    if (vectorStore !== undefined && Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: the model comes from the vector store`);
    if (docStore !== undefined && typeof docStore?.docs !== 'function') invalid('docStore must be a BaseDocumentStore');
    if (docIds !== undefined && (!Array.isArray(docIds) || docStore === undefined)) invalid('docIds must be an array of node ids, with a docStore');
    if (nodes !== undefined && !Array.isArray(nodes)) invalid('nodes must be an array of nodes');
    this.topK = positiveInt(o.topK, 'topK', BM25_TOP_K);
    this.metadataMode = metadataModeOf(o.metadataMode, MetadataMode.NONE);
    if ((store !== undefined || vectorStore !== undefined) && o.metadataMode !== undefined) invalid('metadataMode applies to nodes and docStores (a store was encoded when its documents were added)');
    this.docStore = docStore;
    this.docIds = docIds ? new Set(docIds) : undefined;
    this.syncOnRetrieve = bool(o.syncOnRetrieve, 'syncOnRetrieve', true);
    if (o.syncOnRetrieve !== undefined && docStore === undefined) invalid('syncOnRetrieve applies with a docStore only');
    this.given = vectorStore ?? (store !== undefined ? new BGEM3VectorStore({ ...model, store }) : undefined);
    this.source = this.given ? (sourceOf<EncoderSource>(this.given) as EncoderSource) : new EncoderSource(model, settingsBase);
    attachSource(this, this.source);
    if (nodes && nodes.length > 0) this.exclusive(async () => (await this.ownStore()).add(nodes)).catch(() => undefined);
  }

  /** A retriever over `nodes` (encoded now). */
  static async fromNodes(nodes: BaseNode[], options: Omit<BGEM3SparseRetrieverOptions, 'nodes'> = {}): Promise<BGEM3SparseRetriever> {
    const r = new BGEM3SparseRetriever(options);
    await r.addNodes(nodes);
    return r;
  }

  /**
   * Splits documents (default `Settings.nodeParser`) and indexes the nodes. Beside a
   * VectorStoreIndex of the same documents, prefer {@link fromDocStore} or a shared store:
   * each split makes new node ids (the ensemble then matches the chunks by text).
   */
  static async fromDocuments(documents: Document[], options: BGEM3SparseFromDocumentsOptions = {}): Promise<BGEM3SparseRetriever> {
    const { nodeParser, ...rest } = options;
    const nodes: BaseNode[] = await (nodeParser ?? Settings.nodeParser).getNodesFromDocuments(documents);
    return BGEM3SparseRetriever.fromNodes(nodes, rest);
  }

  /** A retriever over a document store (read now; see `syncOnRetrieve`). */
  static async fromDocStore(docStore: BaseDocumentStore, options: Omit<BGEM3SparseRetrieverOptions, 'docStore'> = {}): Promise<BGEM3SparseRetriever> {
    const r = new BGEM3SparseRetriever({ ...options, docStore });
    await r.refresh();
    return r;
  }

  /** The 0.1 single-file format (`save`) is gone: persistence is the store's. This says how to rebuild. */
  static async load(path: string): Promise<never> {
    const how =
      "persistence is now the store's: rebuild once with `const vectorStore = new BGEM3VectorStore({ store })` over an M3Index or a PgM3Store, " +
      '`await vectorStore.add(nodes)` (or VectorStoreIndex.fromVectorStore + insertNodes), and use `new BGEM3SparseRetriever({ store })`';
    return refuseLegacyFile(path, LEGACY_MAGIC, "BGEM3SparseRetriever file of @bgem3/llamaindex", how);
  }

  // The in-memory store of nodes and docStores, made on first use for the model.
  private ownStore(): Promise<BGEM3VectorStore> {
    if (this.given) invalid('this retriever searches a given store: add documents to that store');
    if (!this.own) {
      const p = (async () => {
        const encoder = await this.source.get();
        const store = await M3Index.create({ encoder, ...(this.source.maxLength ? { maxLength: this.source.maxLength } : {}) });
        return new BGEM3VectorStore({ store, metadataMode: this.metadataMode });
      })();
      this.own = p;
      p.catch(() => {
        if (this.own === p) this.own = undefined;
      });
    }
    return this.own;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Adds nodes, or replaces nodes with the same id (encoded now). */
  addNodes(nodes: BaseNode[]): Promise<void> {
    if (!Array.isArray(nodes)) return Promise.reject(new M3Error('INVALID_ARGUMENT', 'addNodes needs an array of nodes'));
    return this.exclusive(async () => {
      await (await this.ownStore()).add(nodes);
    });
  }

  /** Removes nodes by id; unknown ids are ignored. Returns how many were removed. */
  deleteNodes(ids: string | string[]): Promise<number> {
    return this.exclusive(async () => (await this.ownStore()).store.delete(ids));
  }

  /** Re-reads the docStore: new or changed nodes (by hash) are indexed, nodes that left it removed. */
  refresh(): Promise<void> {
    return this.exclusive(() => this.sync());
  }

  private async sync(): Promise<void> {
    this.syncedOnce = true;
    const ds = this.docStore;
    if (!ds) return;
    const docs = await ds.docs();
    const refs = (await ds.getAllRefDocInfo()) ?? {};
    // Entries that are only the source documents of other entries (what a parser split) are skipped.
    const parents = new Set(Object.entries(refs).filter(([, info]) => (info?.nodeIds?.length ?? 0) > 0).map(([id]) => id));
    const wanted = new Map<string, BaseNode>();
    for (const [id, node] of Object.entries(docs)) if (!parents.has(id) && (!this.docIds || this.docIds.has(id))) wanted.set(id, node);
    const vs = await this.ownStore();
    const gone = [...this.synced.keys()].filter((id) => !wanted.has(id));
    if (gone.length > 0) await vs.store.delete(gone);
    for (const id of gone) this.synced.delete(id);
    const changed = [...wanted.values()].filter((n) => this.synced.get(n.id_) !== n.hash);
    if (changed.length > 0) await vs.add(changed);
    for (const n of changed) this.synced.set(n.id_, n.hash);
  }

  /** Top-`topK` nodes by lexical matching score with the query. */
  async _retrieve(params: QueryBundle): Promise<NodeWithScore[]> {
    const text = queryText(params, 'BGEM3SparseRetriever');
    let vs: BGEM3VectorStore;
    if (this.given) vs = this.given;
    else {
      if (this.docStore && (this.syncOnRetrieve || !this.syncedOnce)) await this.refresh();
      await this.queue;
      vs = await this.ownStore();
    }
    const [q] = await this.source.encode([text], { dense: false, sparse: true });
    const hits = await vs.store.searchSparse(q as NonNullable<typeof q>, { k: positiveInt(this.topK, 'topK', BM25_TOP_K) });
    return hits.map((h) => ({ node: hitToNode(vs.store, h), score: h.score }));
  }
}
