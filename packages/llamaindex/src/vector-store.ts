/**
 * BGEM3VectorStore: a LlamaIndex `BaseVectorStore` over any `M3Store` (the embedded M3Index, or
 * PgM3Store from @bgem3/pgvector). It stores the text (`storesText`), so
 * `VectorStoreIndex.fromVectorStore(store)` works, and it answers the query modes DEFAULT
 * (dense), SPARSE and HYBRID (dense ∪ sparse candidates reranked by the M3 All score).
 */
import { M3Error, type M3Store, type M3Weights } from '@bgem3/core';
import { EncoderSource, attachSource, checkM3Weights, checkOptions, invalid, oneOf, positiveInt, sourceOf, weightsFromAlpha } from '@bgem3/core/adapter';
import { BaseVectorStore, MetadataMode, VectorStoreQueryMode, type BaseEmbedding, type BaseNode, type VectorStoreQuery, type VectorStoreQueryResult } from 'llamaindex';
import { BGEM3Embedding } from './embedding.js';
import { toWhere } from './filters.js';
import { MODEL_KEYS, checkStore, hitToNode, metadataModeOf, nodeToDocument, storeBase, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3VectorStore}. */
export interface BGEM3VectorStoreOptions extends BGEM3ModelOptions {
  /** The store (an M3Index, a PgM3Store, …). */
  store: M3Store;
  /** The embedding LlamaIndex uses for nodes and queries (default: a BGEM3Embedding of the store's model, embedding `metadataMode` text). */
  embedModel?: BaseEmbedding;
  /**
   * Which node text is encoded for all three outputs (default `MetadataMode.NONE`: the text
   * alone, so metadata such as file paths is not lexically searchable; `EMBED` includes the
   * metadata LlamaIndex embeds).
   */
  metadataMode?: MetadataMode;
  /**
   * What a DEFAULT query runs: `"dense"` (default) or `"hybrid"`, so that `index.asQueryEngine()`
   * and `index.asChatEngine()` retrieve hybrid without being given a retriever.
   */
  defaultMode?: 'dense' | 'hybrid';
  /** HYBRID: candidates from each of dense and sparse search (default 100; `customParams.fetchK` per query). */
  fetchK?: number;
  /** HYBRID: `[dense, sparse, colbert]` weights (default [0.4, 0.2, 0.4]; `alpha` or `customParams.weights` per query). */
  weights?: readonly [number, number, number];
}

/** `customParams` a query may carry (anything else is refused). */
export interface BGEM3QueryParams {
  /** HYBRID: candidates per first-stage mode. */
  fetchK?: number;
  /** HYBRID: `[dense, sparse, colbert]` weights (instead of `alpha`). */
  weights?: readonly [number, number, number];
}

const KEYS = [...MODEL_KEYS, 'store', 'embedModel', 'metadataMode', 'defaultMode', 'fetchK', 'weights'];
const QUERY_KEYS = ['queryEmbedding', 'similarityTopK', 'docIds', 'queryStr', 'mode', 'alpha', 'filters', 'mmrThreshold', 'customParams'];
// An arbitrary unit vector: a dense search with it and a filter lists the matching documents.
const basis = (dim: number) => {
  const v = new Float32Array(dim);
  v[0] = 1;
  return v;
};

/**
 * A LlamaIndex vector store over an `M3Store` (see the file comment). Each node is encoded once
 * (dense, sparse and ColBERT from one pass, of its `metadataMode` text); a query encodes one
 * text, the query, with the store's model; candidates' vectors come from the store.
 *
 * Similarities are the raw scores of the mode: the inner product (DEFAULT), the lexical matching
 * score (SPARSE) or the M3 All score (HYBRID).
 *
 * @example
 * ```ts
 * const vectorStore = new BGEM3VectorStore({ store });
 * Settings.embedModel = vectorStore.embedModel;
 * const index = await VectorStoreIndex.fromVectorStore(vectorStore);
 * const engine = index.asQueryEngine({ retriever: index.asRetriever({ mode: "hybrid", similarityTopK: 5 }) });
 * ```
 */
export class BGEM3VectorStore extends BaseVectorStore<M3Store, BGEM3QueryParams> {
  storesText = true;
  /** The store. */
  readonly store: M3Store;
  /** Which node text is encoded. */
  readonly metadataMode: MetadataMode;
  /** What a DEFAULT query runs. */
  readonly defaultMode: 'dense' | 'hybrid';
  /** HYBRID defaults. */
  readonly fetchK: number;
  readonly weights: M3Weights;
  private readonly source: EncoderSource;

  constructor(options: BGEM3VectorStoreOptions) {
    const o = checkOptions(options, KEYS, 'BGEM3VectorStore');
    checkStore(o.store);
    const store = o.store;
    const metadataMode = metadataModeOf(o.metadataMode, MetadataMode.NONE);
    const { store: _s, embedModel, metadataMode: _m, defaultMode: _d, fetchK: _f, weights: _w, ...model } = o;
    let embed: BaseEmbedding;
    if (embedModel === undefined) {
      embed = new BGEM3Embedding({ ...model, store, metadataMode });
    } else {
      const given = sourceOf<EncoderSource>(embedModel);
      if (!given) invalid('embedModel must be a BGEM3Embedding (the store holds BGE-M3 vectors; queries and nodes must be BGE-M3 too), or undefined');
      if (Object.keys(model).length > 0) invalid(`${Object.keys(model).join(', ')}: give the model to the embedModel, or no embedModel`);
      const theirs = given.givenEncoder;
      if (theirs && theirs.modelId !== store.modelId) invalid(`embedModel is model ${JSON.stringify(theirs.modelId)}, the store is ${JSON.stringify(store.modelId)}`);
      embed = embedModel;
    }
    super({ embedModel: embed });
    this.store = store;
    this.metadataMode = metadataMode;
    this.defaultMode = oneOf(o.defaultMode, ['dense', 'hybrid'] as const, 'defaultMode', 'dense');
    this.fetchK = positiveInt(o.fetchK, 'fetchK', 100);
    this.weights = checkM3Weights(o.weights, 'weights');
    this.source = new EncoderSource({}, { ...storeBase(store), source: sourceOf<EncoderSource>(embed) as EncoderSource });
    attachSource(this, this.source);
  }

  client(): M3Store {
    return this.store;
  }

  private embedChecked: Promise<void> | undefined;

  // The embedModel's model must be the store's (checked once, when first needed): LlamaIndex
  // embeds nodes and queries with it.
  private checkEmbedModel(): Promise<void> {
    this.embedChecked ??= (async () => {
      const enc = await (sourceOf<EncoderSource>(this.embedModel) as EncoderSource).get();
      if (enc.modelId !== this.store.modelId || enc.dim !== this.store.dim) {
        throw new M3Error('INDEX_MISMATCH', `the embedModel is model ${JSON.stringify(enc.modelId)} (dimension ${enc.dim}), the store is ${JSON.stringify(this.store.modelId)} (dimension ${this.store.dim})`);
      }
    })();
    this.embedChecked.catch(() => {
      this.embedChecked = undefined;
    });
    return this.embedChecked;
  }

  /**
   * Stores nodes: each is encoded once (its `metadataMode` text: all three outputs), and kept
   * with its text and its metadata (LlamaIndex's `_node_content` layout). An id already stored is
   * replaced. Returns the node ids.
   */
  async add(nodes: BaseNode[]): Promise<string[]> {
    if (!Array.isArray(nodes)) invalid('add needs an array of nodes');
    if (nodes.length === 0) return [];
    await this.checkEmbedModel();
    nodes.forEach((n, i) => {
      if (!n || typeof n.getContent !== 'function' || typeof n.id_ !== 'string') invalid(`nodes[${i}] is not a LlamaIndex node`);
    });
    const encodings = await this.source.encode(
      nodes.map((n) => n.getContent(this.metadataMode)),
      { dense: true, sparse: true, colbert: true },
    );
    return this.store.addEncoded(nodes.map((n, i) => ({ ...nodeToDocument(n), encoding: encodings[i] as (typeof encodings)[number] })));
  }

  /** Removes every node of the source document `refDocId` (LlamaIndex's `ref_doc_id`). */
  async delete(refDocId: string): Promise<void> {
    if (typeof refDocId !== 'string' || refDocId.length === 0) invalid('delete needs a refDocId');
    const query = { dense: basis(this.store.dim), tokens: 0, truncated: false };
    for (;;) {
      const hits = await this.store.searchDense(query, { k: 10_000, where: { ref_doc_id: refDocId } });
      if (hits.length === 0) return;
      await this.store.delete(hits.map((h) => h.id));
    }
  }

  /** Answers DEFAULT (dense), SPARSE and HYBRID queries; every other mode is refused. */
  async query(query: VectorStoreQuery<BGEM3QueryParams>, _options?: object): Promise<VectorStoreQueryResult> {
    const q = checkOptions(query, QUERY_KEYS, 'BGEM3VectorStore.query');
    await this.checkEmbedModel();
    const asked = q.mode ?? VectorStoreQueryMode.DEFAULT;
    const mode = asked === VectorStoreQueryMode.DEFAULT && this.defaultMode === 'hybrid' ? VectorStoreQueryMode.HYBRID : asked;
    if (mode !== VectorStoreQueryMode.DEFAULT && mode !== VectorStoreQueryMode.SPARSE && mode !== VectorStoreQueryMode.HYBRID) {
      invalid(`BGEM3VectorStore answers the query modes default (dense), sparse and hybrid, not ${JSON.stringify(mode)}`);
    }
    if (q.mmrThreshold !== undefined) invalid('mmrThreshold applies to the mmr mode, which BGEM3VectorStore does not answer');
    if (q.alpha !== undefined && mode !== VectorStoreQueryMode.HYBRID) invalid('alpha applies to the hybrid mode only');
    const params = checkOptions(q.customParams, ['fetchK', 'weights'], 'customParams');
    if (mode !== VectorStoreQueryMode.HYBRID && Object.keys(params).length > 0) invalid('customParams fetchK and weights apply to the hybrid mode only');
    if (params.weights !== undefined && q.alpha !== undefined) invalid('give alpha or customParams.weights, not both');
    const k = positiveInt(q.similarityTopK, 'similarityTopK', 2);
    const where = toWhere(q.filters);
    let filter: ((m: unknown, id: string) => boolean) | undefined;
    if (q.docIds !== undefined) {
      if (!Array.isArray(q.docIds)) invalid('docIds must be an array of node ids');
      const ids = new Set(q.docIds);
      filter = (_m, id) => ids.has(id);
    }
    const restrict = { ...(where ? { where } : {}), ...(filter ? { filter } : {}) };
    const text = typeof q.queryStr === 'string' ? q.queryStr : undefined;
    const store = this.store;
    let hits: { id: string; score: number; text: string; metadata: Record<string, unknown> }[];
    if (mode === VectorStoreQueryMode.DEFAULT) {
      // The query text is encoded with the store's model (a cache hit after the index's embedModel
      // embedded it); a bare queryEmbedding is used only without a query text.
      if (text !== undefined) {
        const [e] = await this.source.encode([text], { dense: true });
        hits = await store.searchDense(e as NonNullable<typeof e>, { k, ...restrict });
      } else {
        if (!Array.isArray(q.queryEmbedding)) invalid('a default query needs queryStr or queryEmbedding');
        hits = await store.searchDense({ dense: Float32Array.from(q.queryEmbedding), tokens: 0, truncated: false }, { k, ...restrict });
      }
    } else {
      if (text === undefined) invalid(`a ${mode} query needs queryStr`);
      if (mode === VectorStoreQueryMode.SPARSE) {
        const [e] = await this.source.encode([text], { dense: false, sparse: true });
        hits = await store.searchSparse(e as NonNullable<typeof e>, { k, ...restrict });
      } else {
        const weights = params.weights !== undefined ? checkM3Weights(params.weights, 'customParams.weights') : weightsFromAlpha(q.alpha, this.weights);
        const [e] = await this.source.encode([text], { dense: true, sparse: true, colbert: weights[2] > 0 });
        hits = await store.search(e as NonNullable<typeof e>, { k, fetchK: positiveInt(params.fetchK, 'customParams.fetchK', this.fetchK), weights, ...restrict });
      }
    }
    return {
      nodes: hits.map((h) => hitToNode(store, h as Parameters<typeof hitToNode>[1])),
      similarities: hits.map((h) => h.score),
      ids: hits.map((h) => h.id),
    };
  }
}
