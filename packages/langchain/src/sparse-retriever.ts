/**
 * BGEM3SparseRetriever: lexical retrieval with BGE-M3's learned sparse weights, a drop-in
 * replacement for LangChain's `BM25Retriever`. Scoring and the inverted index are core's
 * `SparseIndex` (exact top-k by FlagEmbedding's lexical matching score); this class only adapts
 * it to LangChain documents, ids, callbacks and persistence.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { M3Error, SparseIndex, writeFileAtomic, type SparseVector, type TextEncoder3 } from '@bgem3/core';
import type { CallbackManagerForRetrieverRun } from '@langchain/core/callbacks/manager';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import { BaseRetriever, type BaseRetrieverInput } from '@langchain/core/retrievers';
import { EncoderSource, checkPositiveInteger, checkQuery, type BGEM3ModelParams } from './encoder-source.js';

/** Options of {@link BGEM3SparseRetriever}. */
export interface BGEM3SparseRetrieverInput extends BaseRetrieverInput, BGEM3ModelParams {
  /** Documents to return (default 4, like LangChain's retrievers). */
  k?: number;
  /**
   * Only documents for which this returns true are returned. Applied inside the top-k search,
   * so a selective filter still yields `k` results when that many match.
   */
  filter?: (doc: DocumentInterface) => boolean;
  /** Texts per encoder call when adding documents (default 64). */
  batchSize?: number;
}

/** Options of {@link BGEM3SparseRetriever.addDocuments}. */
export interface BGEM3AddDocumentsOptions {
  /**
   * One id per document. An id wins over `doc.id`; documents with neither get a random UUID.
   * Adding an id that is already indexed replaces that document.
   */
  ids?: string[];
}

/** What the ensemble passes when it already has the sparse vectors (one encoder pass per document). */
interface EncodedDoc {
  doc: DocumentInterface & { id: string };
  sparse: SparseVector;
}

/** The index and documents; shared by a retriever and its `k`-variants made for the ensemble. */
interface SparseState {
  index: SparseIndex | undefined;
  docs: Map<string, DocumentInterface & { id: string }>;
  /** Set when the index came from a file: the encoder must match it. */
  checked: boolean;
}

const MAGIC = 'BGM3LCSP';
const FORMAT_VERSION = 1;
const utf8 = new TextEncoder();

/**
 * A retriever over BGE-M3 lexical (sparse) weights: each text's tokens get a learned weight, and a
 * document scores Σ over the tokens it shares with the query of w_query·w_doc (FlagEmbedding's
 * `compute_lexical_matching_score`), found exactly by an inverted index.
 *
 * Replaces `BM25Retriever` (`@langchain/community/retrievers/bm25`) with the same shape
 * (`fromDocuments`, `k`, `invoke`) and none of its pitfalls: matching is on model tokens, so it is
 * case-robust, does not match "cat" inside "category", ignores query punctuation, and scores
 * Chinese, Japanese, Arabic or Russian text (BM25's `\w+` word count makes CJK lengths 0 and scores
 * NaN). Documents that share no token with the query are not returned (no zero-score padding).
 *
 * Returned documents are copies carrying `id` and `metadata.sparseScore`; the stored documents
 * are never mutated. Adding a document whose id is already indexed replaces it.
 *
 * @example
 * ```ts
 * const retriever = await BGEM3SparseRetriever.fromDocuments(docs, { k: 4 });
 * const hits = await retriever.invoke("capital of France");
 * hits[0].metadata.sparseScore; // the lexical matching score
 * ```
 */
export class BGEM3SparseRetriever extends BaseRetriever {
  static override lc_name(): string {
    return 'BGEM3SparseRetriever';
  }

  lc_namespace = ['bgem3', 'retrievers'];

  /** Documents returned per query. */
  k: number;
  /** Optional document filter (see {@link BGEM3SparseRetrieverInput.filter}). */
  filter: ((doc: DocumentInterface) => boolean) | undefined;
  /** Texts per encoder call when adding documents. */
  batchSize: number;

  private source: EncoderSource;
  private state: SparseState;

  constructor(fields: BGEM3SparseRetrieverInput = {}) {
    // Only the BaseRetriever fields go to super: they are what LangChain serialises and traces.
    super({ callbacks: fields.callbacks, tags: fields.tags, metadata: fields.metadata, verbose: fields.verbose });
    this.source = new EncoderSource(fields);
    this.k = checkPositiveInteger(fields.k ?? 4, 'k');
    if (fields.filter !== undefined && typeof fields.filter !== 'function') throw new TypeError('filter must be a function (doc) => boolean');
    this.filter = fields.filter;
    this.batchSize = checkPositiveInteger(fields.batchSize ?? 64, 'batchSize');
    this.state = { index: undefined, docs: new Map(), checked: true };
  }

  /** Builds a retriever and indexes `documents` (ids from `doc.id`, else generated). */
  static async fromDocuments(documents: DocumentInterface[], options: BGEM3SparseRetrieverInput = {}): Promise<BGEM3SparseRetriever> {
    const retriever = new BGEM3SparseRetriever(options);
    await retriever.addDocuments(documents);
    return retriever;
  }

  /**
   * Builds a retriever from texts. `metadatas` is one object for all texts or one per text (as in
   * `MemoryVectorStore.fromTexts`).
   */
  static async fromTexts(
    texts: string[],
    metadatas: Record<string, unknown> | Record<string, unknown>[] | undefined,
    options: BGEM3SparseRetrieverInput = {},
  ): Promise<BGEM3SparseRetriever> {
    if (!Array.isArray(texts)) throw new TypeError('texts must be an array of strings');
    if (Array.isArray(metadatas) && metadatas.length !== texts.length) {
      throw new M3Error('INVALID_ARGUMENT', `metadatas has ${metadatas.length} entries for ${texts.length} texts`);
    }
    const docs = texts.map((text, i) => {
      if (typeof text !== 'string') throw new TypeError(`texts[${i}] must be a string, got ${text === null ? 'null' : typeof text}`);
      const metadata = Array.isArray(metadatas) ? metadatas[i] : metadatas;
      return new Document({ pageContent: text, metadata: { ...(metadata ?? {}) } });
    });
    return BGEM3SparseRetriever.fromDocuments(docs, options);
  }

  /** Number of indexed documents. */
  get size(): number {
    return this.state.docs.size;
  }

  /** The indexed document with this id (a copy), or undefined. */
  getDocument(id: string): DocumentInterface | undefined {
    const d = this.state.docs.get(id);
    return d ? copyDoc(d, {}) : undefined;
  }

  /**
   * Indexes documents and returns their ids, one per input document. Ids come from `options.ids`, else
   * `doc.id`, else a random UUID. An id already indexed (or repeated in this call: the last one
   * wins) is replaced. Metadata should be JSON-serialisable if you {@link save}.
   */
  async addDocuments(documents: DocumentInterface[], options: BGEM3AddDocumentsOptions = {}): Promise<string[]> {
    const { docs: prepared, ids } = prepareDocuments(documents, options.ids);
    if (prepared.length === 0) return [];
    const encoded: EncodedDoc[] = [];
    for (let start = 0; start < prepared.length; start += this.batchSize) {
      const part = prepared.slice(start, start + this.batchSize);
      const results = await this.source.encode(
        part.map((d) => d.pageContent),
        { dense: false, sparse: true },
      );
      part.forEach((doc, i) => encoded.push({ doc, sparse: results[i].sparse as SparseVector }));
    }
    await this._addEncoded(encoded);
    return ids;
  }

  /**
   * Removes documents by id (unknown ids are ignored). Accepts `{ ids }` like a vector store, or
   * the ids directly.
   */
  async delete(params: { ids: string[] } | string[] | string): Promise<void> {
    const ids = typeof params === 'string' ? [params] : Array.isArray(params) ? params : params?.ids;
    if (!Array.isArray(ids)) throw new TypeError('delete expects { ids: string[] } or an array of ids');
    ids.forEach((id, i) => {
      if (typeof id !== 'string') throw new TypeError(`ids[${i}] must be a string, got ${typeof id}`);
    });
    this.state.index?.delete(ids);
    for (const id of ids) this.state.docs.delete(id);
  }

  /**
   * Saves the index and the documents to one file, atomically (core's `writeFileAtomic`: a crash
   * mid-save leaves the previous file intact). Reload with {@link BGEM3SparseRetriever.load}.
   *
   * Format: `BGM3LCSP`, u32 version, u32 header length, a UTF-8 JSON header
   * `{modelId, k, maxLength, documents: [{id, pageContent, metadata}]}`, then core's SparseIndex
   * bytes (CRC-checked).
   */
  async save(path: string): Promise<void> {
    const index = await this.ensureIndex();
    const bytes = index.toBytes(); // synchronous: a consistent snapshot with `docs`
    const header = utf8.encode(
      JSON.stringify({
        format: 'bgem3-langchain-sparse',
        modelId: index.modelId,
        k: this.k,
        maxLength: this.source.maxLength ?? null,
        documents: [...this.state.docs.values()].map((d) => ({ id: d.id, pageContent: d.pageContent, metadata: d.metadata })),
      }),
    );
    const head = new Uint8Array(16);
    head.set(utf8.encode(MAGIC), 0);
    const view = new DataView(head.buffer);
    view.setUint32(8, FORMAT_VERSION, true);
    view.setUint32(12, header.byteLength, true);
    await writeFileAtomic(path, [head, header, bytes]);
  }

  /**
   * Loads a retriever saved by {@link save}. `options` are the constructor's (model, k, …);
   * unset `k` and `maxLength` come from the file. The model must be the one the index was built
   * with (checked when it loads; a mismatch throws M3Error INDEX_MISMATCH).
   */
  static async load(path: string, options: BGEM3SparseRetrieverInput = {}): Promise<BGEM3SparseRetriever> {
    const bytes = await readFile(path);
    const bad = (why: string): never => {
      throw new M3Error('INDEX_INVALID', `${path} is not a saved BGEM3SparseRetriever: ${why}`, { file: path });
    };
    if (bytes.byteLength < 16 || bytes.subarray(0, 8).toString('latin1') !== MAGIC) bad('wrong magic');
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = view.getUint32(8, true);
    if (version !== FORMAT_VERSION) bad(`format version ${version} (this package reads ${FORMAT_VERSION})`);
    const headerLength = view.getUint32(12, true);
    if (16 + headerLength > bytes.byteLength) bad('truncated header');
    let header: { modelId?: unknown; k?: unknown; maxLength?: unknown; documents?: unknown };
    try {
      header = JSON.parse(bytes.subarray(16, 16 + headerLength).toString('utf8'));
    } catch {
      return bad('damaged header');
    }
    const index = SparseIndex.fromBytes(bytes.subarray(16 + headerLength), {}, path);
    if (!Array.isArray(header.documents)) bad('no documents');
    const docs = new Map<string, DocumentInterface & { id: string }>();
    for (const d of header.documents as { id?: unknown; pageContent?: unknown; metadata?: unknown }[]) {
      if (typeof d?.id !== 'string' || typeof d.pageContent !== 'string' || typeof d.metadata !== 'object' || d.metadata === null) bad('a malformed document');
      docs.set(d.id as string, new Document({ id: d.id as string, pageContent: d.pageContent as string, metadata: d.metadata as Record<string, unknown> }) as DocumentInterface & { id: string });
    }
    if (docs.size !== index.size || [...index.ids()].some((id) => !docs.has(id))) bad('documents and index disagree');
    const savedK = typeof header.k === 'number' ? header.k : undefined;
    const savedMaxLength = typeof header.maxLength === 'number' ? header.maxLength : undefined;
    const retriever = new BGEM3SparseRetriever({
      ...options,
      k: options.k ?? savedK,
      maxLength: options.maxLength ?? savedMaxLength,
    });
    retriever.state = { index, docs, checked: false };
    return retriever;
  }

  override async _getRelevantDocuments(query: string, _runManager?: CallbackManagerForRetrieverRun): Promise<DocumentInterface[]> {
    checkQuery(query);
    const k = checkPositiveInteger(this.k, 'k');
    if (this.state.docs.size === 0 || query.trim().length === 0) return [];
    const index = await this.ensureIndex();
    const [q] = await this.source.encode([query], { dense: false, sparse: true });
    const filter = this.filter;
    const docs = this.state.docs;
    const hits = index.search(q.sparse as SparseVector, k, filter ? { filter: (id) => filter(copyDoc(docs.get(id)!, {})) } : {});
    return hits.map((h) => copyDoc(docs.get(h.id)!, { sparseScore: h.score }));
  }

  /**
   * @internal Indexes documents whose sparse vectors were already computed (the ensemble's
   * one-pass build). Documents must carry their final ids.
   */
  async _addEncoded(encoded: readonly EncodedDoc[]): Promise<void> {
    const index = await this.ensureIndex();
    index.upsertMany(encoded.map((e) => ({ id: e.doc.id, vector: e.sparse })));
    for (const e of encoded) this.state.docs.set(e.doc.id, e.doc);
  }

  /** @internal A view of this retriever returning `k` documents, sharing index, documents and encoder. */
  _withK(k: number): BGEM3SparseRetriever {
    const r = new BGEM3SparseRetriever({
      k,
      filter: this.filter,
      batchSize: this.batchSize,
      callbacks: this.callbacks,
      tags: this.tags,
      metadata: this.metadata,
      verbose: this.verbose,
    });
    r.source = this.source;
    r.state = this.state;
    return r;
  }

  /** @internal The encoder source (shared with the ensemble built over this retriever). */
  _encoderSource(): EncoderSource {
    return this.source;
  }

  /** The index, created on first use for the encoder's vocabulary; a loaded index is checked against the encoder. */
  private async ensureIndex(): Promise<SparseIndex> {
    const enc: TextEncoder3 = await this.source.get();
    const state = this.state;
    if (!state.index) {
      state.index = new SparseIndex({ vocabSize: enc.vocabSize, modelId: enc.modelId });
    } else if (!state.checked) {
      const idx = state.index;
      if (idx.vocabSize !== enc.vocabSize || idx.modelId !== enc.modelId) {
        throw new M3Error(
          'INDEX_MISMATCH',
          `this sparse index was built with model ${JSON.stringify(idx.modelId)} (vocabulary ${idx.vocabSize}), ` +
            `but the encoder is ${JSON.stringify(enc.modelId)} (vocabulary ${enc.vocabSize}); load it with the same model`,
        );
      }
      state.checked = true;
    }
    return state.index;
  }
}

/** Validates documents and assigns final ids; a repeated id keeps its last document. */
export function prepareDocuments(documents: unknown, ids: unknown): { docs: (DocumentInterface & { id: string })[]; ids: string[] } {
  if (!Array.isArray(documents)) throw new TypeError('documents must be an array of Documents');
  if (ids !== undefined && (!Array.isArray(ids) || ids.length !== documents.length)) {
    throw new M3Error('INVALID_ARGUMENT', `ids must be an array with one id per document (${documents.length}), got ${Array.isArray(ids) ? ids.length : typeof ids}`);
  }
  const byId = new Map<string, DocumentInterface & { id: string }>();
  const out: string[] = [];
  documents.forEach((doc: DocumentInterface, i) => {
    if (doc === null || typeof doc !== 'object') throw new TypeError(`documents[${i}] must be a Document`);
    if (typeof doc.pageContent !== 'string') throw new TypeError(`documents[${i}].pageContent must be a string, got ${typeof doc.pageContent}`);
    const given = (ids as unknown[] | undefined)?.[i] ?? doc.id;
    if (given !== undefined && given !== null && given !== '' && typeof given !== 'string') throw new TypeError(`the id of documents[${i}] must be a string, got ${typeof given}`);
    const id = typeof given === 'string' && given.length > 0 ? given : randomUUID();
    out.push(id);
    byId.delete(id); // keep the last occurrence at its own position
    byId.set(id, new Document({ pageContent: doc.pageContent, metadata: { ...(doc.metadata ?? {}) }, id }) as DocumentInterface & { id: string });
  });
  return { docs: [...byId.values()], ids: out };
}

/** A copy of a stored document with extra metadata (the stored one is never handed out). */
export function copyDoc(doc: DocumentInterface, extra: Record<string, unknown>): DocumentInterface {
  return new Document({ pageContent: doc.pageContent, metadata: { ...doc.metadata, ...extra }, id: doc.id });
}
