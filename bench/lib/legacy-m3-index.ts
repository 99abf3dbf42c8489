/**
 * A frozen copy of M3Index as released before the SQLite store (commit 928aa6d), kept for the
 * store benchmark's old-vs-new comparison and the migration test: everything in memory, each save
 * a complete new generation. Not part of any package.
 *
 * M3Index: the embedded default index of @bgem3/core. One BGE-M3 forward pass per document gives
 * all three representations; the index keeps them side by side, with the text and metadata:
 *
 * - dense vectors in a {@link DenseIndex} (exact inner-product search),
 * - lexical weights in a {@link SparseIndex} (exact MaxScore search),
 * - ColBERT matrices in a {@link ColbertStore} (fp16 by default) for MaxSim rescoring.
 *
 * {@link M3Index.search} runs the pipeline recommended for M3 (m3-reference.md §4.4–4.5):
 * candidates = dense top-fetchK ∪ sparse top-fetchK, every candidate rescored exactly by all
 * three modes, ranked by FlagEmbedding's combined score (w_d·dense + w_s·sparse + w_c·colbert) /
 * Σw. ColBERT is used as a reranker only, as BAAI recommend (too large for a first stage).
 *
 * Persistence is crash-safe as a whole: {@link M3Index.save} writes a complete new generation
 * directory (manifest, documents, three index files, each fsynced) and only then atomically
 * replaces the `CURRENT` pointer file; a crash at any point leaves the previous generation
 * loadable. Layout of an index directory:
 *
 *     CURRENT                     {"format":"bgem3-m3index","generation":"gen-000007-9f3a1c"}
 *     gen-000007-9f3a1c/manifest.json
 *     gen-000007-9f3a1c/docs.jsonl     one {"id","text","metadata"} object per line
 *     gen-000007-9f3a1c/dense.bin      DenseIndex file   (magic BGM3DENS)
 *     gen-000007-9f3a1c/sparse.bin     SparseIndex file  (magic BGM3SPRS)
 *     gen-000007-9f3a1c/colbert.bin    ColbertStore file (magic BGM3COLB)
 *
 * The previous generation is kept (a reader may still be loading it); older ones and leftovers
 * of interrupted saves are removed by the next successful save. One writer per directory.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { M3Error, invalidArgument } from '../../packages/core/src/errors.js';
import type { EncodeResult, FullEncodeResult, OutputSelection, SparseVector, TextEncoder3 } from '../../packages/core/src/types.js';
import { writeFileAtomic } from '../../packages/core/src/util/atomic-file.js';
import { checkId, checkK, crc32 } from '../../packages/core/src/retrieval/binary-format.js';
import { ColbertStore, type ColbertPrecision } from '../../packages/core/src/retrieval/colbert-store.js';
import { DenseIndex } from '../../packages/core/src/retrieval/dense-index.js';
import { checkFusionWeights } from '../../packages/core/src/retrieval/fusion.js';
import { m3AllScore, type M3Weights as M3ScoreWeights } from '../../packages/core/src/scoring/weights.js';
import { maxSimStored } from '../../packages/core/src/retrieval/maxsim.js';
import { resolveQuery } from '../../packages/core/src/store/query.js';
import { SparseIndex } from '../../packages/core/src/retrieval/sparse-index.js';
import { sortHits } from '../../packages/core/src/retrieval/topk.js';

const FORMAT = 'bgem3-m3index';
const FORMAT_VERSION = 1;
const POINTER = 'CURRENT';
const GEN_RE = /^gen-(\d{6,})-[0-9a-f]{6,}$/;

/** A document to index. */
export interface M3Document {
  /** Stable id (default: a random UUID). Adding an existing id replaces that document. */
  id?: string;
  text: string;
  /** Plain JSON-serialisable data (kept through save/load); default {}. */
  metadata?: Record<string, unknown>;
}

/** A document whose encoding was already computed (all three outputs required). */
export interface M3EncodedDocument extends M3Document {
  encoding: EncodeResult;
}

/** A stored document. */
export interface M3StoredDocument {
  id: string;
  text: string;
  metadata: Record<string, unknown>;
}

/** Options of {@link M3Index.create}. */
export interface M3IndexOptions {
  /** The encoder producing dense, sparse and ColBERT outputs (e.g. `M3Encoder`). */
  encoder: TextEncoder3;
  /** Storage precision of ColBERT vectors (default 'fp16': half the memory, MaxSim error ~1e-6). */
  colbertPrecision?: ColbertPrecision;
  /** Max tokens per text passed to the encoder (default: the encoder's own). */
  maxLength?: number;
  /** Documents per encode call in {@link M3Index.add} (default 32). */
  batchSize?: number;
  /** onnxruntime threads for dense search and MaxSim (default: all cores). */
  intraOpNumThreads?: number;
}

/** Options of {@link M3Index.load}. */
export interface M3IndexLoadOptions {
  /** Encoder for new documents and text queries; must match the index's model, dim and vocabulary. */
  encoder?: TextEncoder3;
  /** Overrides the saved `maxLength`. */
  maxLength?: number;
  batchSize?: number;
  intraOpNumThreads?: number;
}

/** Options of {@link M3Index.add}. */
export interface M3AddOptions {
  /** Stops between batches (and inside the encoder); the call rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** Metadata filter: documents for which it returns false are never returned. */
export type M3Filter = (metadata: Record<string, unknown>, id: string) => boolean;

/** Options of {@link M3Index.search}. */
export interface M3SearchOptions {
  /** Results to return (default 10). */
  k?: number;
  /** Candidates taken from each of dense and sparse search before rescoring (default 100, at least k). */
  fetchK?: number;
  /** [dense, sparse, colbert] weights of the combined score (default [0.4, 0.2, 0.4]). */
  weights?: M3ScoreWeights;
  filter?: M3Filter;
}

/** Options of {@link M3Index.searchDense} / {@link M3Index.searchSparse}. */
export interface M3SingleModeOptions {
  /** Results to return (default 10). */
  k?: number;
  filter?: M3Filter;
}

/** A search result of a single mode. */
export interface M3Hit extends M3StoredDocument {
  score: number;
}

/** A result of {@link M3Index.search}: the combined score and the three mode scores. */
export interface M3SearchResult extends M3Hit {
  scores: { dense: number; sparse: number; colbert: number };
}

interface Manifest {
  format: string;
  version: number;
  modelId: string;
  dim: number;
  vocabSize: number;
  colbertPrecision: ColbertPrecision;
  count: number;
  maxLength: number | null;
  files: { docs: string; dense: string; sparse: string; colbert: string };
  docsBytes: number;
  docsCrc32: number;
  createdAt: string;
}

/** Checks that `encoder` has the TextEncoder3 shape (INVALID_ARGUMENT naming `what` if not); shared by the stores. */
export function assertTextEncoder3(encoder: TextEncoder3 | undefined, what = 'encoder'): asserts encoder is TextEncoder3 {
  if (
    encoder === null ||
    typeof encoder !== 'object' ||
    typeof encoder.encode !== 'function' ||
    typeof encoder.modelId !== 'string' ||
    !Number.isSafeInteger(encoder.dim) ||
    encoder.dim <= 0 ||
    !Number.isSafeInteger(encoder.vocabSize) ||
    encoder.vocabSize <= 0
  ) {
    invalidArgument(`${what} must be a TextEncoder3 {modelId, dim, vocabSize, encode()}`);
  }
}

function checkPositiveInt(v: unknown, name: string): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)) invalidArgument(`${name} must be a positive integer, got ${String(v)}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function abortError(): M3Error {
  return new M3Error('ABORTED', 'M3Index.add was aborted');
}

/**
 * The embedded hybrid index (see the file comment). Create with {@link M3Index.create} or
 * {@link M3Index.load}. Mutations and saves are serialised internally; searches may run
 * concurrently with them and see the index between two batches.
 */
export class M3Index {
  readonly modelId: string;
  readonly dim: number;
  readonly vocabSize: number;
  readonly colbertPrecision: ColbertPrecision;
  private encoder: TextEncoder3 | undefined;
  private readonly maxLength: number | undefined;
  private readonly batchSize: number;
  private readonly threads: { intraOpNumThreads?: number };
  private dense: DenseIndex;
  private sparse: SparseIndex;
  private colbert: ColbertStore;
  private readonly docs = new Map<string, { text: string; metadata: Record<string, unknown> }>();
  private lock: Promise<unknown> = Promise.resolve();

  private constructor(
    meta: { modelId: string; dim: number; vocabSize: number; colbertPrecision: ColbertPrecision },
    options: { encoder?: TextEncoder3; maxLength?: number; batchSize?: number; intraOpNumThreads?: number },
    parts?: { dense: DenseIndex; sparse: SparseIndex; colbert: ColbertStore },
  ) {
    this.modelId = meta.modelId;
    this.dim = meta.dim;
    this.vocabSize = meta.vocabSize;
    this.colbertPrecision = meta.colbertPrecision;
    this.encoder = options.encoder;
    this.maxLength = options.maxLength;
    this.batchSize = options.batchSize ?? 32;
    this.threads = options.intraOpNumThreads !== undefined ? { intraOpNumThreads: options.intraOpNumThreads } : {};
    this.dense = parts?.dense ?? new DenseIndex({ dim: meta.dim, modelId: meta.modelId, ...this.threads });
    this.sparse = parts?.sparse ?? new SparseIndex({ vocabSize: meta.vocabSize, modelId: meta.modelId });
    this.colbert = parts?.colbert ?? new ColbertStore({ dim: meta.dim, precision: meta.colbertPrecision, modelId: meta.modelId });
  }

  /** Creates an empty index for `encoder`'s model. */
  static async create(options: M3IndexOptions): Promise<M3Index> {
    assertTextEncoder3(options?.encoder);
    const precision = options.colbertPrecision ?? 'fp16';
    if (!['fp32', 'fp16', 'int8'].includes(precision)) invalidArgument(`colbertPrecision must be 'fp32', 'fp16' or 'int8', got ${String(precision)}`);
    checkPositiveInt(options.maxLength, 'maxLength');
    checkPositiveInt(options.batchSize, 'batchSize');
    checkPositiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    const { encoder } = options;
    return new M3Index({ modelId: encoder.modelId, dim: encoder.dim, vocabSize: encoder.vocabSize, colbertPrecision: precision }, options);
  }

  /** Number of documents. */
  get size(): number {
    return this.docs.size;
  }

  has(id: string): boolean {
    return this.docs.has(id);
  }

  /** The stored document, or undefined. */
  get(id: string): M3StoredDocument | undefined {
    const d = this.docs.get(id);
    return d ? { id, text: d.text, metadata: d.metadata } : undefined;
  }

  /** Ids of the stored documents. */
  ids(): IterableIterator<string> {
    return this.docs.keys();
  }

  // Runs `fn` after every earlier mutation/save has finished (a promise-chain mutex).
  private exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private requireEncoder(): TextEncoder3 {
    if (!this.encoder) invalidArgument('this M3Index has no encoder: pass { encoder } to M3Index.create/load, or query with a precomputed EncodeResult');
    return this.encoder;
  }

  // Validates a document and its full encoding before anything is stored, so that a bad entry
  // cannot leave the three stores disagreeing.
  private checkEncoded(doc: M3Document, enc: EncodeResult | undefined, where: string): asserts enc is FullEncodeResult {
    if (!enc || typeof enc !== 'object') invalidArgument(`${where}: missing encoding`);
    const { dense, sparse, colbert } = enc;
    if (!(dense instanceof Float32Array) || dense.length !== this.dim) invalidArgument(`${where}: the encoding needs a dense Float32Array of ${this.dim} values`);
    for (let i = 0; i < dense.length; i++) if (!Number.isFinite(dense[i])) invalidArgument(`${where}: dense value ${i} is not finite`);
    if (!sparse || !(sparse.indices instanceof Uint32Array) || !(sparse.values instanceof Float32Array) || sparse.indices.length !== sparse.values.length) {
      invalidArgument(`${where}: the encoding needs sparse {indices: Uint32Array, values: Float32Array}`);
    }
    let prev = -1;
    for (let i = 0; i < sparse.indices.length; i++) {
      const t = sparse.indices[i];
      const w = sparse.values[i];
      if (t <= prev || t >= this.vocabSize) invalidArgument(`${where}: sparse token ids must ascend strictly below ${this.vocabSize}`);
      if (!(w >= 0) || w === Infinity) invalidArgument(`${where}: sparse weight ${w} must be finite and ≥ 0`);
      prev = t;
    }
    if (!colbert || !(colbert.data instanceof Float32Array) || colbert.dim !== this.dim || colbert.data.length !== colbert.count * this.dim) {
      invalidArgument(`${where}: the encoding needs a ColBERT matrix of ${this.dim}-dimensional vectors`);
    }
    for (let i = 0; i < colbert.data.length; i++) if (!Number.isFinite(colbert.data[i])) invalidArgument(`${where}: ColBERT value ${i} is not finite`);
    if (typeof doc.text !== 'string') invalidArgument(`${where}: text must be a string`);
  }

  private checkDoc(doc: M3Document, where: string): string {
    if (!isPlainObject(doc)) invalidArgument(`${where} must be an object {id?, text, metadata?}`);
    if (typeof doc.text !== 'string') invalidArgument(`${where}.text must be a string`);
    if (doc.id !== undefined) checkId(doc.id, `${where}.id`);
    if (doc.metadata !== undefined && !isPlainObject(doc.metadata)) invalidArgument(`${where}.metadata must be a plain object`);
    return doc.id ?? randomUUID();
  }

  // Stores one validated batch in all three stores and the document table (synchronous: no
  // search can observe a half-inserted batch).
  private insert(batch: { id: string; doc: M3Document; enc: FullEncodeResult }[]): void {
    this.dense.upsertMany(batch.map((b) => ({ id: b.id, vector: b.enc.dense })));
    this.sparse.upsertMany(batch.map((b) => ({ id: b.id, vector: b.enc.sparse })));
    for (const b of batch) {
      this.colbert.upsert(b.id, b.enc.colbert);
      this.docs.set(b.id, { text: b.doc.text, metadata: b.doc.metadata ?? {} });
    }
  }

  /**
   * Encodes and adds documents: every batch of `batchSize` texts costs ONE encoder call with
   * dense, sparse and ColBERT requested together, and is stored before the next batch is
   * encoded, so a large (async) iterable is never held twice in memory. A repeated id replaces
   * the earlier document (within a batch only the last one is encoded). Returns the ids, in
   * input order. On failure, batches already stored stay stored.
   */
  async add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options: M3AddOptions = {}): Promise<string[]> {
    const encoder = this.requireEncoder();
    const signal = options.signal;
    const ids: string[] = [];
    let batch: { id: string; doc: M3Document }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      // Within a batch the last occurrence of an id wins: encode it once.
      const last = new Map<string, number>();
      batch.forEach((b, i) => last.set(b.id, i));
      const unique = batch.filter((b, i) => last.get(b.id) === i);
      batch = [];
      if (signal?.aborted) throw abortError();
      const encodeOptions = { dense: true, sparse: true, colbert: true, ...(this.maxLength ? { maxLength: this.maxLength } : {}), ...(signal ? { signal } : {}) };
      const encoded = await encoder.encode(unique.map((u) => u.doc.text), encodeOptions);
      if (!Array.isArray(encoded) || encoded.length !== unique.length) {
        throw new M3Error('INVALID_ARGUMENT', `the encoder returned ${Array.isArray(encoded) ? encoded.length : 'no'} results for ${unique.length} texts`);
      }
      const full = unique.map((u, i) => {
        const enc = encoded[i];
        this.checkEncoded(u.doc, enc, `encoding of document ${JSON.stringify(u.id)}`);
        return { id: u.id, doc: u.doc, enc };
      });
      await this.exclusive(() => this.insert(full));
    };
    let i = 0;
    const take = async (doc: M3Document) => {
      const id = this.checkDoc(doc, `docs[${i++}]`);
      ids.push(id);
      batch.push({ id, doc });
      if (batch.length >= this.batchSize) await flush();
    };
    if (Symbol.asyncIterator in Object(docs)) {
      for await (const doc of docs as AsyncIterable<M3Document>) await take(doc);
    } else {
      for (const doc of docs as Iterable<M3Document>) await take(doc);
    }
    await flush();
    return ids;
  }

  /**
   * Adds documents whose encodings were computed elsewhere (e.g. by an adapter that already
   * embedded them). Each `encoding` needs dense, sparse and ColBERT outputs from the same model.
   * All entries are validated before any is stored. Returns the ids, in input order.
   */
  async addEncoded(docs: Iterable<M3EncodedDocument>): Promise<string[]> {
    const list = [...docs];
    const ids: string[] = [];
    const byId = new Map<string, { id: string; doc: M3Document; enc: FullEncodeResult }>();
    list.forEach((doc, i) => {
      const id = this.checkDoc(doc, `docs[${i}]`);
      const enc = doc.encoding;
      this.checkEncoded(doc, enc, `docs[${i}].encoding`);
      ids.push(id);
      byId.delete(id); // the last occurrence wins, and keeps its position
      byId.set(id, { id, doc, enc });
    });
    await this.exclusive(() => this.insert([...byId.values()]));
    return ids;
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. */
  async delete(ids: string | Iterable<string>): Promise<number> {
    const iterable = ids !== null && typeof ids === 'object' && Symbol.iterator in ids;
    // A TypeError, as for non-string texts: the caller passed the wrong kind of value.
    if (typeof ids !== 'string' && !iterable) throw new TypeError(`delete(ids): ids must be a string or an array of strings, got ${ids === null ? 'null' : typeof ids}`);
    const list = typeof ids === 'string' ? [ids] : [...ids];
    list.forEach((id, i) => {
      if (typeof id !== 'string') throw new TypeError(`delete(ids): ids[${i}] must be a string, got ${id === null ? 'null' : typeof id}`);
    });
    return this.exclusive(() => {
      const present = list.filter((id) => this.docs.has(id));
      this.dense.delete(present);
      this.sparse.delete(present);
      this.colbert.delete(present);
      let n = 0;
      for (const id of present) if (this.docs.delete(id)) n++;
      return n;
    });
  }

  private encodeQuery(query: string | EncodeResult, need: OutputSelection): Promise<EncodeResult> {
    return resolveQuery(query, need, { encoder: () => this.requireEncoder(), dim: this.dim, vocabSize: this.vocabSize, ...(this.maxLength ? { maxLength: this.maxLength } : {}) });
  }

  private idFilter(filter: M3Filter | undefined): ((id: string) => boolean) | undefined {
    if (filter === undefined) return undefined;
    if (typeof filter !== 'function') invalidArgument('filter must be a function (metadata, id) => boolean');
    return (id) => {
      const d = this.docs.get(id);
      return d !== undefined && filter(d.metadata, id) === true;
    };
  }

  private hit(id: string, score: number): M3Hit | undefined {
    const d = this.docs.get(id);
    return d ? { id, text: d.text, metadata: d.metadata, score } : undefined;
  }

  /**
   * Hybrid search, the recommended M3 pipeline: dense top-fetchK ∪ sparse top-fetchK (deduped)
   * → every candidate rescored exactly by dense (inner product), sparse (lexical matching score)
   * and ColBERT (MaxSim) → combined score (w_d·dense + w_s·sparse + w_c·colbert)/Σw → top k
   * (ties: id ascending). A string query is encoded once, with all three outputs (ColBERT is
   * skipped when its weight is 0). An empty index returns [].
   */
  async search(query: string | EncodeResult, options: M3SearchOptions = {}): Promise<M3SearchResult[]> {
    const k = options.k ?? 10;
    checkK(k);
    const fetchK = options.fetchK ?? 100;
    checkK(fetchK, 'fetchK');
    const weights: M3ScoreWeights = options.weights ?? [0.4, 0.2, 0.4];
    checkFusionWeights(weights, 3);
    const filter = this.idFilter(options.filter);
    if (this.docs.size === 0) return [];
    // ColBERT is the one costly mode: with weight 0 it is neither requested nor computed (its
    // reported score is then 0), as in m3Rerank.
    const useColbert = weights[2] > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert });
    const n = Math.max(fetchK, k);
    const denseHits = await this.dense.search(q.dense as Float32Array, n, filter ? { filter } : {});
    // Everything below up to MaxSim is synchronous, so the candidates exist in all stores.
    const sparseHits = this.sparse.search(q.sparse as SparseVector, n, filter ? { filter } : {});
    const candidates = [...new Set([...denseHits.map((h) => h.id), ...sparseHits.map((h) => h.id)])];
    if (candidates.length === 0) return [];
    const dense = this.dense.scoreIds(q.dense as Float32Array, candidates);
    const sparse = this.sparse.scoreIds(q.sparse as SparseVector, candidates);
    const colbert = useColbert
      ? await maxSimStored(q.colbert as NonNullable<EncodeResult['colbert']>, this.colbert, candidates, this.threads)
      : new Float64Array(candidates.length);
    const results: M3SearchResult[] = [];
    candidates.forEach((id, i) => {
      const scores = { dense: dense[i], sparse: sparse[i], colbert: colbert[i] };
      const hit = this.hit(id, m3AllScore(scores, weights)); // undefined if deleted meanwhile
      if (hit) results.push({ ...hit, scores });
    });
    return sortHits(results).slice(0, k);
  }

  /** Dense-only exact search (inner product of the normalised vectors). */
  async searchDense(query: string | EncodeResult, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    const k = options.k ?? 10;
    checkK(k);
    const filter = this.idFilter(options.filter);
    if (this.docs.size === 0) return [];
    const q = await this.encodeQuery(query, { dense: true });
    const hits = await this.dense.search(q.dense as Float32Array, k, filter ? { filter } : {});
    return hits.map((h) => this.hit(h.id, h.score)).filter((h): h is M3Hit => h !== undefined);
  }

  /** Sparse-only exact search (lexical matching score; documents sharing no token are not returned). */
  async searchSparse(query: string | EncodeResult, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    const k = options.k ?? 10;
    checkK(k);
    const filter = this.idFilter(options.filter);
    if (this.docs.size === 0) return [];
    const q = await this.encodeQuery(query, { sparse: true });
    const hits = this.sparse.search(q.sparse as SparseVector, k, filter ? { filter } : {});
    return hits.map((h) => this.hit(h.id, h.score)).filter((h): h is M3Hit => h !== undefined);
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  /**
   * Saves the whole index to directory `dir` (created if needed) as a new generation, then
   * atomically switches `CURRENT` to it (see the file comment): a crash or kill at any moment
   * leaves the previous save loadable. Metadata must be JSON-serialisable.
   */
  async save(dir: string): Promise<void> {
    return this.exclusive(async () => {
      await mkdir(dir, { recursive: true });
      const previous = await readPointer(dir).catch(() => undefined);
      let seq = 1;
      for (const name of await readdir(dir)) {
        const m = GEN_RE.exec(name);
        if (m) seq = Math.max(seq, Number(m[1]) + 1);
      }
      const gen = `gen-${String(seq).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
      const genDir = join(dir, gen);
      await mkdir(genDir);
      const files = { docs: 'docs.jsonl', dense: 'dense.bin', sparse: 'sparse.bin', colbert: 'colbert.bin' };
      const docs = this.docs;
      let docsCrc = 0;
      let docsBytes = 0;
      const utf8 = new TextEncoder();
      const lines = function* (): Generator<Uint8Array> {
        for (const [id, d] of docs) {
          let json: string;
          try {
            json = JSON.stringify({ id, text: d.text, metadata: d.metadata });
          } catch (err) {
            throw new M3Error('INVALID_ARGUMENT', `metadata of document ${JSON.stringify(id)} is not JSON-serialisable: ${(err as Error).message}`, { cause: err });
          }
          const line = utf8.encode(`${json}\n`);
          docsCrc = crc32(line, docsCrc);
          docsBytes += line.byteLength;
          yield line;
        }
      };
      try {
        await writeFileAtomic(join(genDir, files.docs), lines());
        await this.dense.save(join(genDir, files.dense));
        await this.sparse.save(join(genDir, files.sparse));
        await this.colbert.save(join(genDir, files.colbert));
      } catch (err) {
        await rm(genDir, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
      const manifest: Manifest = {
        format: FORMAT,
        version: FORMAT_VERSION,
        modelId: this.modelId,
        dim: this.dim,
        vocabSize: this.vocabSize,
        colbertPrecision: this.colbertPrecision,
        count: this.docs.size,
        maxLength: this.maxLength ?? null,
        files,
        docsBytes,
        docsCrc32: docsCrc,
        createdAt: new Date().toISOString(),
      };
      await writeFileAtomic(join(genDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      // The commit point: until this rename, CURRENT names the previous generation.
      await writeFileAtomic(join(dir, POINTER), `${JSON.stringify({ format: FORMAT, generation: gen })}\n`);
      for (const name of await readdir(dir)) {
        if (GEN_RE.test(name) && name !== gen && name !== previous) await rm(join(dir, name), { recursive: true, force: true });
      }
    });
  }

  /**
   * Loads an index saved by {@link save}. INDEX_INVALID (naming the file) when the directory is
   * not an index or a part is damaged or inconsistent; INDEX_MISMATCH when `options.encoder`
   * has another model id, dimension or vocabulary size than the index (the message lists what
   * differs). Without an encoder the index can still be searched with EncodeResult queries.
   */
  static async load(dir: string, options: M3IndexLoadOptions = {}): Promise<M3Index> {
    if (options.encoder !== undefined) assertTextEncoder3(options.encoder, 'options.encoder');
    checkPositiveInt(options.maxLength, 'maxLength');
    checkPositiveInt(options.batchSize, 'batchSize');
    checkPositiveInt(options.intraOpNumThreads, 'intraOpNumThreads');
    const gen = await readPointer(dir);
    const genDir = join(dir, gen);
    const manifestPath = join(genDir, 'manifest.json');
    const manifest = await readManifest(manifestPath);
    const enc = options.encoder;
    if (enc) {
      const diffs: string[] = [];
      if (enc.modelId !== manifest.modelId) diffs.push(`model id ${JSON.stringify(manifest.modelId)} (index) vs ${JSON.stringify(enc.modelId)} (encoder)`);
      if (enc.dim !== manifest.dim) diffs.push(`dimension ${manifest.dim} vs ${enc.dim}`);
      if (enc.vocabSize !== manifest.vocabSize) diffs.push(`vocabulary size ${manifest.vocabSize} vs ${enc.vocabSize}`);
      if (diffs.length) throw new M3Error('INDEX_MISMATCH', `${dir}: the index does not match the encoder: ${diffs.join('; ')}`, { file: manifestPath });
    }
    const expect = { modelId: manifest.modelId };
    const part = async <T>(name: string, fn: (path: string) => Promise<T>): Promise<T> => {
      const path = join(genDir, name);
      try {
        return await fn(path);
      } catch (err) {
        // Inside one index directory a part that disagrees with the manifest is corruption.
        if (err instanceof M3Error && err.code === 'INDEX_MISMATCH') throw new M3Error('INDEX_INVALID', `${err.message} (the manifest says otherwise)`, { file: path, cause: err });
        throw err;
      }
    };
    const dense = await part(manifest.files.dense, (p) =>
      DenseIndex.load(p, { ...expect, dim: manifest.dim, ...(options.intraOpNumThreads ? { intraOpNumThreads: options.intraOpNumThreads } : {}) }),
    );
    const sparse = await part(manifest.files.sparse, (p) => SparseIndex.load(p, { ...expect, vocabSize: manifest.vocabSize }));
    const colbert = await part(manifest.files.colbert, (p) => ColbertStore.load(p, { ...expect, dim: manifest.dim, precision: manifest.colbertPrecision }));
    const maxLength = options.maxLength ?? manifest.maxLength ?? undefined;
    const index = new M3Index(
      manifest,
      { ...options, ...(maxLength !== undefined ? { maxLength } : {}) },
      { dense, sparse, colbert },
    );
    const docsPath = join(genDir, manifest.files.docs);
    await readDocs(docsPath, manifest, (id, text, metadata) => {
      if (index.docs.has(id)) corruptFile(docsPath, `duplicate id ${JSON.stringify(id)}`);
      index.docs.set(id, { text, metadata });
    });
    // The four parts must describe exactly the same documents.
    if (index.docs.size !== manifest.count) corruptFile(docsPath, `${index.docs.size} documents, the manifest says ${manifest.count}`);
    for (const [name, store] of [
      [manifest.files.dense, dense],
      [manifest.files.sparse, sparse],
      [manifest.files.colbert, colbert],
    ] as const) {
      if (store.size !== manifest.count) corruptFile(join(genDir, name), `${store.size} documents, the manifest says ${manifest.count}`);
      for (const id of index.docs.keys()) if (!store.has(id)) corruptFile(join(genDir, name), `document ${JSON.stringify(id)} is missing`);
    }
    return index;
  }
}

function corruptFile(file: string, what: string): never {
  throw new M3Error('INDEX_INVALID', `${file}: ${what}`, { file });
}

async function readPointer(dir: string): Promise<string> {
  const path = join(dir, POINTER);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new M3Error('INDEX_INVALID', `${dir} is not an M3Index directory (cannot read ${POINTER}: ${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file: path, cause: err });
  }
  let gen: unknown;
  try {
    const p = JSON.parse(text) as { format?: unknown; generation?: unknown };
    if (p.format !== FORMAT) throw new Error(`format ${JSON.stringify(p.format)}`);
    gen = p.generation;
  } catch (err) {
    corruptFile(path, `not an M3Index pointer file (${(err as Error).message})`);
  }
  // A strict pattern: the pointer can never lead outside the index directory.
  if (typeof gen !== 'string' || !GEN_RE.test(gen)) corruptFile(path, `invalid generation ${JSON.stringify(gen)}`);
  return gen;
}

async function readManifest(path: string): Promise<Manifest> {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new M3Error('INDEX_INVALID', `${path}: unreadable manifest (${(err as Error).message})`, { file: path, cause: err });
  }
  const bad = (field: string) => corruptFile(path, `invalid manifest field ${field}: ${JSON.stringify(m?.[field])}`);
  if (m?.format !== FORMAT) bad('format');
  if (m.version !== FORMAT_VERSION) corruptFile(path, `unsupported M3Index format version ${JSON.stringify(m.version)} (this build reads ${FORMAT_VERSION})`);
  if (typeof m.modelId !== 'string') bad('modelId');
  for (const f of ['dim', 'vocabSize', 'count', 'docsBytes', 'docsCrc32'] as const) {
    if (typeof m[f] !== 'number' || !Number.isSafeInteger(m[f]) || (m[f] as number) < 0) bad(f);
  }
  if ((m.dim as number) === 0 || (m.vocabSize as number) === 0) bad('dim');
  if (!['fp32', 'fp16', 'int8'].includes(m.colbertPrecision as string)) bad('colbertPrecision');
  if (m.maxLength !== null && (typeof m.maxLength !== 'number' || !Number.isSafeInteger(m.maxLength) || m.maxLength <= 0)) bad('maxLength');
  const files = m.files as Record<string, unknown> | undefined;
  for (const f of ['docs', 'dense', 'sparse', 'colbert']) {
    // plain file names only: a manifest can never point outside its generation directory
    if (typeof files?.[f] !== 'string' || !/^[\w.-]+$/.test(files[f] as string) || files[f] === '..' || files[f] === '.') bad('files');
  }
  return m as unknown as Manifest;
}

async function readDocs(path: string, manifest: Manifest, onDoc: (id: string, text: string, metadata: Record<string, unknown>) => void): Promise<void> {
  let crc = 0;
  let bytes = 0;
  let lineNo = 0;
  let pending: Buffer[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const handle = (line: Buffer) => {
    lineNo++;
    let doc: { id?: unknown; text?: unknown; metadata?: unknown };
    try {
      doc = JSON.parse(decoder.decode(line)) as typeof doc;
    } catch (err) {
      corruptFile(path, `line ${lineNo} is not valid JSON (${(err as Error).message})`);
    }
    if (typeof doc?.id !== 'string' || doc.id.length === 0 || typeof doc.text !== 'string' || !isPlainObject(doc.metadata)) {
      corruptFile(path, `line ${lineNo} is not a {id, text, metadata} document`);
    }
    onDoc(doc.id, doc.text, doc.metadata);
  };
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      crc = crc32(chunk, crc);
      bytes += chunk.byteLength;
      if (bytes > manifest.docsBytes) corruptFile(path, `longer than the ${manifest.docsBytes} bytes the manifest records`);
      let start = 0;
      for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
        pending.push(chunk.subarray(start, nl));
        handle(Buffer.concat(pending));
        pending = [];
        start = nl + 1;
      }
      if (start < chunk.byteLength) pending.push(chunk.subarray(start));
    }
  } catch (err) {
    if (err instanceof M3Error) throw err;
    throw new M3Error('INDEX_INVALID', `${path}: cannot read documents (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file: path, cause: err });
  }
  if (pending.length > 0) corruptFile(path, 'truncated (the last line has no newline)');
  if (bytes !== manifest.docsBytes) corruptFile(path, `truncated: ${bytes} bytes, the manifest records ${manifest.docsBytes}`);
  if (crc !== manifest.docsCrc32) corruptFile(path, 'checksum mismatch: the file is corrupt');
}
