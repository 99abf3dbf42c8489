import { readFile } from 'node:fs/promises';
import { M3Error, SparseIndex, writeFileAtomic, type SparseVector, type TextEncoder3 } from '@bgem3/core';
import {
  BaseRetriever,
  DEFAULT_SIMILARITY_TOP_K,
  MetadataMode,
  NodeRelationship,
  Settings,
  jsonToNode,
  type BaseDocumentStore,
  type BaseNode,
  type Document,
  type NodeWithScore,
  type QueryBundle,
  type NodeParser,
} from 'llamaindex';
import { EncoderSource, invalid, positiveInt, queryText, type BGEM3ModelOptions } from './shared.js';

/** Options of {@link BGEM3SparseRetriever}. */
export interface BGEM3SparseRetrieverOptions extends BGEM3ModelOptions {
  /** Nodes to index (also see {@link BGEM3SparseRetriever.fromNodes}). */
  nodes?: BaseNode[];
  /**
   * A document store to index, e.g. `index.docStore` of a `VectorStoreIndex` over the default
   * `SimpleVectorStore`. Entries that are only the source documents of other entries (the
   * documents a node parser split) are skipped, so each chunk is indexed once.
   */
  docStore?: BaseDocumentStore;
  /** Only these ids of the docStore are indexed. */
  docIds?: string[];
  /**
   * Re-read the docStore on every query and index what was added or changed there (and drop what
   * was deleted); only new or changed nodes are encoded. Default true. With false, the docStore
   * is read on the first query and by {@link BGEM3SparseRetriever.refresh}.
   */
  syncOnRetrieve?: boolean;
  /** Results per query (default 2, LlamaIndex's `DEFAULT_SIMILARITY_TOP_K`). */
  topK?: number;
  /**
   * Which node text is indexed (default `MetadataMode.EMBED`: the text `BGEM3Embedding` embeds, so
   * a node already embedded for the vector index is not run through the model again).
   */
  metadataMode?: MetadataMode;
}

/** Options of {@link BGEM3SparseRetriever.fromDocuments}. */
export interface BGEM3SparseFromDocumentsOptions extends BGEM3SparseRetrieverOptions {
  /** Splits the documents (default `Settings.nodeParser`). */
  nodeParser?: NodeParser;
}

type NodeJson = Record<string, unknown> & { id_: string; type: string; hash?: string };

const FILE_MAGIC = 'BGM3LISP';
const FILE_VERSION = 1;

/**
 * BGE-M3 sparse (lexical-weight) retrieval as a LlamaIndex.TS retriever.
 *
 * It keeps its own index, keyed by node id: core's exact {@link SparseIndex} over the nodes'
 * lexical weights plus a JSON copy of each node. So it works with any vector store, also those
 * that keep the text themselves and leave the docStore empty (Qdrant, Postgres, Chroma, …), and it
 * can be saved and loaded. The score is FlagEmbedding's lexical matching score
 * Σ_{t ∈ q∩d} w_q[t]·w_d[t] (≥ 0, unbounded; higher is better); only nodes sharing at least one
 * token with the query are returned.
 *
 * Returned nodes are fresh copies (changing them does not change the index).
 *
 * @example
 * ```ts
 * const sparse = await BGEM3SparseRetriever.fromNodes(nodes, { topK: 5 });
 * const hits = await sparse.retrieve('what is BGE-M3?');
 * // or over a VectorStoreIndex's docStore (kept in sync on every query):
 * const sparse2 = new BGEM3SparseRetriever({ docStore: index.docStore, topK: 5 });
 * ```
 */
export class BGEM3SparseRetriever extends BaseRetriever {
  /** Results per query. */
  topK: number;
  /** Which node text is indexed. */
  readonly metadataMode: MetadataMode;
  /** The docStore this retriever follows, if any. */
  readonly docStore: BaseDocumentStore | undefined;
  private readonly docIds: Set<string> | undefined;
  private readonly syncOnRetrieve: boolean;
  private readonly source: EncoderSource;
  private index: SparseIndex | undefined;
  private readonly nodes = new Map<string, NodeJson>();
  /** Ids that came from the docStore (only those are dropped when they leave it). */
  private readonly fromDocStore = new Set<string>();
  private synced = false;
  /** Mutations run one after another (a promise-chain mutex). */
  private queue: Promise<unknown> = Promise.resolve();
  /** Nodes given to the constructor, indexed on first use (a constructor cannot await). */
  private initialNodes: BaseNode[] | undefined;

  constructor(options: BGEM3SparseRetrieverOptions = {}) {
    super();
    this.source = new EncoderSource(options);
    this.topK = positiveInt(options.topK, DEFAULT_SIMILARITY_TOP_K, 'topK');
    this.metadataMode = options.metadataMode ?? MetadataMode.EMBED;
    if (!Object.values(MetadataMode).includes(this.metadataMode)) invalid(`metadataMode must be a MetadataMode, got ${String(options.metadataMode)}`);
    if (options.docStore !== undefined && typeof options.docStore?.docs !== 'function') invalid('docStore must be a BaseDocumentStore');
    this.docStore = options.docStore;
    if (options.docIds !== undefined && !Array.isArray(options.docIds)) invalid('docIds must be an array of node ids');
    this.docIds = options.docIds ? new Set(options.docIds) : undefined;
    this.syncOnRetrieve = options.syncOnRetrieve ?? true;
    if (options.nodes !== undefined && !Array.isArray(options.nodes)) invalid('nodes must be an array of nodes');
    this.initialNodes = options.nodes && options.nodes.length > 0 ? [...options.nodes] : undefined;
  }

  /** Builds a retriever over `nodes` (encoded now). */
  static async fromNodes(nodes: BaseNode[], options: Omit<BGEM3SparseRetrieverOptions, 'nodes'> = {}): Promise<BGEM3SparseRetriever> {
    const r = new BGEM3SparseRetriever(options);
    await r.addNodes(nodes);
    return r;
  }

  /**
   * Splits documents with `nodeParser` (default `Settings.nodeParser`) and indexes the nodes.
   * For a hybrid setup with a vector index, index the *same* nodes in both (e.g.
   * {@link fromDocStore} on `index.docStore`, or {@link fromNodes} on the nodes you gave the
   * index): the ensemble retriever matches results by node id, and every split makes new ids.
   */
  static async fromDocuments(documents: Document[], options: Omit<BGEM3SparseFromDocumentsOptions, 'nodes'> = {}): Promise<BGEM3SparseRetriever> {
    const { nodeParser, ...rest } = options;
    const parser = nodeParser ?? Settings.nodeParser;
    const nodes: BaseNode[] = await parser.getNodesFromDocuments(documents);
    return BGEM3SparseRetriever.fromNodes(nodes, rest);
  }

  /** Builds a retriever over a document store (read now; see `syncOnRetrieve`). */
  static async fromDocStore(docStore: BaseDocumentStore, options: Omit<BGEM3SparseRetrieverOptions, 'docStore'> = {}): Promise<BGEM3SparseRetriever> {
    const r = new BGEM3SparseRetriever({ ...options, docStore });
    await r.refresh();
    return r;
  }

  /** Number of indexed nodes (nodes given to the constructor count once indexed, on first use). */
  get size(): number {
    return this.nodes.size;
  }

  /** Whether a node with this id is indexed. */
  has(id: string): boolean {
    return this.nodes.has(id);
  }

  /** Ids of the indexed nodes. */
  ids(): string[] {
    return [...this.nodes.keys()];
  }

  /** A copy of an indexed node, or undefined. */
  getNode(id: string): BaseNode | undefined {
    const json = this.nodes.get(id);
    return json ? toNode(json) : undefined;
  }

  // Runs `fn` after every earlier mutation (a promise-chain mutex), constructor nodes indexed first.
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const step = async (): Promise<T> => {
      const initial = this.initialNodes;
      if (initial) {
        this.initialNodes = undefined;
        await this.upsert(initial, 'user');
      }
      return fn();
    };
    const run = this.queue.then(step, step);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async ready(): Promise<{ encoder: TextEncoder3; index: SparseIndex }> {
    const encoder = await this.source.get();
    if (!this.index) this.index = new SparseIndex({ vocabSize: encoder.vocabSize, modelId: encoder.modelId });
    else checkMatch(this.index, encoder);
    return { encoder, index: this.index };
  }

  private async encodeSparse(encoder: TextEncoder3, texts: string[]): Promise<SparseVector[]> {
    if (texts.length === 0) return [];
    const out = await encoder.encode(texts, { dense: false, sparse: true, ...this.source.encodeOptions });
    return out.map((r) => r.sparse as SparseVector);
  }

  // Encodes and indexes nodes (callers hold the mutex). The last of repeated ids wins.
  private async upsert(nodes: readonly BaseNode[], origin: 'docStore' | 'user'): Promise<void> {
    const byId = new Map<string, BaseNode>();
    nodes.forEach((n, i) => {
      if (!n || typeof n.getContent !== 'function' || typeof n.id_ !== 'string') invalid(`nodes[${i}] is not a LlamaIndex node`);
      byId.set(n.id_, n);
    });
    if (byId.size === 0) return;
    const list = [...byId.values()];
    const { encoder, index } = await this.ready();
    const vectors = await this.encodeSparse(
      encoder,
      list.map((n) => n.getContent(this.metadataMode)),
    );
    index.upsertMany(list.map((n, i) => ({ id: n.id_, vector: vectors[i] as SparseVector })));
    list.forEach((n) => {
      this.nodes.set(n.id_, toJson(n));
      if (origin === 'docStore') this.fromDocStore.add(n.id_);
      else this.fromDocStore.delete(n.id_);
    });
  }

  /** Adds nodes, or replaces nodes with the same id (their text is encoded now). */
  addNodes(nodes: BaseNode[]): Promise<void> {
    if (!Array.isArray(nodes)) return Promise.reject(new M3Error('INVALID_ARGUMENT', 'addNodes needs an array of nodes'));
    return this.exclusive(() => this.upsert(nodes, 'user'));
  }

  /** Removes nodes by id; unknown ids are ignored. Returns how many were removed. */
  deleteNodes(ids: string | string[]): Promise<number> {
    return this.exclusive(async () => this.remove(typeof ids === 'string' ? [ids] : ids));
  }

  /** Removes every node whose source document (`NodeRelationship.SOURCE`) is `refDocId`. */
  deleteRefDoc(refDocId: string): Promise<number> {
    return this.exclusive(async () => {
      const ids: string[] = [];
      for (const [id, json] of this.nodes) {
        const source = (json.relationships as Record<string, { nodeId?: string }> | undefined)?.[NodeRelationship.SOURCE];
        if (id === refDocId || source?.nodeId === refDocId) ids.push(id);
      }
      return this.remove(ids);
    });
  }

  private remove(ids: readonly string[]): number {
    let n = 0;
    for (const id of ids) {
      if (!this.nodes.delete(id)) continue;
      this.index?.delete(id);
      this.fromDocStore.delete(id);
      n++;
    }
    return n;
  }

  /**
   * Reads the docStore and indexes what is new or changed there (by node hash), dropping nodes
   * that left it. Nodes added with {@link addNodes} are kept. No-op without a docStore.
   */
  refresh(): Promise<void> {
    return this.exclusive(() => this.syncNow());
  }

  private async syncNow(): Promise<void> {
    this.synced = true;
    const store = this.docStore;
    if (!store) return;
    const docs = await store.docs();
    const refs = (await store.getAllRefDocInfo()) ?? {};
    const parents = new Set(Object.entries(refs).filter(([, info]) => (info?.nodeIds?.length ?? 0) > 0).map(([id]) => id));
    const wanted = new Map<string, BaseNode>();
    for (const [id, node] of Object.entries(docs)) {
      if (parents.has(id) || (this.docIds && !this.docIds.has(id))) continue;
      wanted.set(id, node);
    }
    const gone = [...this.fromDocStore].filter((id) => !wanted.has(id));
    this.remove(gone);
    // The docStore is authoritative for the ids it holds: new ids and changed hashes are (re)indexed.
    const changed = [...wanted.values()].filter((n) => this.nodes.get(n.id_)?.hash !== n.hash);
    await this.upsert(changed, 'docStore');
  }

  /** Top-`topK` nodes by lexical matching score with the query. */
  async _retrieve(params: QueryBundle): Promise<NodeWithScore[]> {
    const text = queryText(params, 'BGEM3SparseRetriever');
    if (!this.synced || (this.docStore && this.syncOnRetrieve)) await this.refresh();
    await this.queue; // read-your-writes: adds and deletes started before this query
    if (this.nodes.size === 0) return [];
    const { encoder, index } = await this.ready();
    const [query] = await this.encodeSparse(encoder, [text]);
    const hits = index.search(query as SparseVector, this.topK);
    return hits.map((h) => ({ node: toNode(this.nodes.get(h.id) as NodeJson), score: h.score }));
  }

  /**
   * Saves the index and the nodes to one file, atomically (a crash leaves the previous file).
   * The nodes are stored as JSON without their embeddings; metadata must be JSON-serialisable.
   */
  save(path: string): Promise<void> {
    return this.exclusive(async () => {
      const { index } = await this.ready();
      const header = new TextEncoder().encode(
        JSON.stringify({
          modelId: index.modelId,
          metadataMode: this.metadataMode,
          nodes: [...this.nodes.values()],
          fromDocStore: [...this.fromDocStore],
        }),
      );
      const prefix = new Uint8Array(16);
      prefix.set(new TextEncoder().encode(FILE_MAGIC), 0);
      const view = new DataView(prefix.buffer);
      view.setUint32(8, FILE_VERSION, true);
      view.setUint32(12, header.byteLength, true);
      await writeFileAtomic(path, [prefix, header, index.toBytes()]);
    });
  }

  /**
   * Loads a retriever saved by {@link save}. `options` are the usual constructor options (model,
   * topK, docStore, …); the model must be the one the file was built with (INDEX_MISMATCH
   * otherwise), and a damaged file throws INDEX_INVALID.
   */
  static async load(path: string, options: Omit<BGEM3SparseRetrieverOptions, 'nodes'> = {}): Promise<BGEM3SparseRetriever> {
    const bytes = await readFile(path);
    const bad = (why: string, cause?: unknown): never => {
      throw new M3Error('INDEX_INVALID', `${path} is not a BGEM3SparseRetriever file: ${why}`, { file: path, cause });
    };
    if (bytes.byteLength < 16 || new TextDecoder().decode(bytes.subarray(0, 8)) !== FILE_MAGIC) bad('wrong magic');
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = view.getUint32(8, true);
    if (version !== FILE_VERSION) bad(`version ${version}, this package reads ${FILE_VERSION}`);
    const len = view.getUint32(12, true);
    if (16 + len > bytes.byteLength) bad('truncated');
    let header: { modelId?: unknown; metadataMode?: unknown; nodes?: unknown; fromDocStore?: unknown };
    try {
      header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + len)));
    } catch (err) {
      return bad('unreadable node JSON', err);
    }
    if (typeof header.modelId !== 'string' || !Array.isArray(header.nodes) || !Array.isArray(header.fromDocStore)) bad('incomplete header');
    const index = SparseIndex.fromBytes(bytes.subarray(16 + len), { modelId: header.modelId as string }, path);
    const nodes = header.nodes as NodeJson[];
    const ids = new Set(index.ids());
    if (nodes.length !== ids.size || nodes.some((n) => typeof n?.id_ !== 'string' || typeof n.type !== 'string' || !ids.has(n.id_))) bad('the nodes and the index disagree');
    const mode = (options.metadataMode ?? header.metadataMode) as MetadataMode;
    if (options.metadataMode !== undefined && options.metadataMode !== header.metadataMode) {
      invalid(`${path} indexes node text with metadataMode ${String(header.metadataMode)}, not ${String(options.metadataMode)}`);
    }
    const r = new BGEM3SparseRetriever({ ...options, metadataMode: mode });
    const encoder = await r.source.get();
    checkMatch(index, encoder, path);
    r.index = index;
    for (const n of nodes) r.nodes.set(n.id_, n);
    for (const id of header.fromDocStore as string[]) if (r.nodes.has(id)) r.fromDocStore.add(id);
    r.synced = !r.docStore;
    return r;
  }
}

function checkMatch(index: SparseIndex, encoder: TextEncoder3, file?: string): void {
  if (index.modelId !== encoder.modelId || index.vocabSize !== encoder.vocabSize) {
    throw new M3Error(
      'INDEX_MISMATCH',
      `${file ?? 'the sparse index'} was built with model ${JSON.stringify(index.modelId)} (vocabulary ${index.vocabSize}), ` +
        `but the encoder is ${JSON.stringify(encoder.modelId)} (vocabulary ${encoder.vocabSize}); rebuild the index or use the same model`,
      file !== undefined ? { file } : undefined,
    );
  }
}

/** A deep JSON copy of a node without its embedding (what the index stores). */
function toJson(node: BaseNode): NodeJson {
  const json = node.toMutableJSON() as NodeJson;
  delete json.embedding;
  return json;
}

function toNode(json: NodeJson): BaseNode {
  return jsonToNode(structuredClone(json));
}
