/**
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
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { M3Error, invalidArgument } from '../errors.js';
import type { EncodeResult, OutputSelection, SparseVector, TextEncoder3 } from '../types.js';
import { m3AllScore, type M3Weights } from '../scoring/weights.js';
import { WriteSequencer, checkEncodedDocuments, ingestDocuments, type EncodedEntry } from '../store/ingest.js';
import { checkRescoreOptions, checkSearchOptions, checkSingleModeOptions, type CheckedFilters } from '../store/options.js';
import { resolveQuery } from '../store/query.js';
import type {
  JsonObject,
  M3AddOptions,
  M3Document,
  M3EncodedDocument,
  M3Hit,
  M3Query,
  M3RescoreOptions,
  M3SearchOptions,
  M3SearchResult,
  M3SingleModeOptions,
  M3Store,
  M3StoredDocument,
} from '../store/types.js';
import { checkId, checkIdList, copyMetadata } from '../store/validate.js';
import { matchesWhere } from '../store/where.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { crc32 } from './binary-format.js';
import { ColbertStore, type ColbertPrecision } from './colbert-store.js';
import { DenseIndex } from './dense-index.js';
import { maxSimStored } from './maxsim.js';
import { SparseIndex } from './sparse-index.js';
import { sortHits } from './topk.js';

const FORMAT = 'bgem3-m3index';
const FORMAT_VERSION = 1;
const POINTER = 'CURRENT';
const GEN_RE = /^gen-(\d{6,})-[0-9a-f]{6,}$/;

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

function isPlainObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function checkPositiveInt(v: unknown, name: string): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)) invalidArgument(`${name} must be a positive integer, got ${String(v)}`);
}

/**
 * The embedded hybrid index (see the file comment), an {@link M3Store}. Create with
 * {@link M3Index.create} or {@link M3Index.load}. Mutations and saves take effect in call order
 * (whatever the encode times); searches may run concurrently with them and see the index
 * between two batches.
 */
export class M3Index implements M3Store {
  readonly modelId: string;
  readonly dim: number;
  readonly vocabSize: number;
  readonly colbertPrecision: ColbertPrecision;
  private encoderRef: TextEncoder3 | undefined;
  private readonly maxLength: number | undefined;
  private readonly batchSize: number;
  private readonly threads: { intraOpNumThreads?: number };
  private dense: DenseIndex;
  private sparse: SparseIndex;
  private colbert: ColbertStore;
  private readonly docs = new Map<string, { text: string; metadata: JsonObject }>();
  private readonly writes = new WriteSequencer();

  private constructor(
    meta: { modelId: string; dim: number; vocabSize: number; colbertPrecision: ColbertPrecision },
    options: { encoder?: TextEncoder3; maxLength?: number; batchSize?: number; intraOpNumThreads?: number },
    parts?: { dense: DenseIndex; sparse: SparseIndex; colbert: ColbertStore },
  ) {
    this.modelId = meta.modelId;
    this.dim = meta.dim;
    this.vocabSize = meta.vocabSize;
    this.colbertPrecision = meta.colbertPrecision;
    this.encoderRef = options.encoder;
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

  /** The encoder for {@link add} and text queries (undefined for an index loaded without one). */
  get encoder(): TextEncoder3 | undefined {
    return this.encoderRef;
  }

  /** Number of documents (synchronous form of {@link count}). */
  get size(): number {
    return this.docs.size;
  }

  async count(): Promise<number> {
    return this.docs.size;
  }

  async has(id: string): Promise<boolean> {
    checkId(id);
    return this.docs.has(id);
  }

  /** The stored document (a copy), or undefined. */
  async get(id: string): Promise<M3StoredDocument | undefined> {
    checkId(id);
    return this.stored(id);
  }

  async getMany(ids: readonly string[]): Promise<M3StoredDocument[]> {
    const list = checkIdList(ids);
    const out: M3StoredDocument[] = [];
    for (const id of new Set(list)) {
      const d = this.stored(id);
      if (d) out.push(d);
    }
    return out;
  }

  /** Ids of the stored documents. */
  ids(): IterableIterator<string> {
    return [...this.docs.keys()][Symbol.iterator]();
  }

  private stored(id: string): M3StoredDocument | undefined {
    const d = this.docs.get(id);
    return d ? { id, text: d.text, metadata: copyMetadata(d.metadata) } : undefined;
  }

  private requireEncoder(): TextEncoder3 {
    if (!this.encoderRef) invalidArgument('this M3Index has no encoder: pass { encoder } to M3Index.create/load, or query with a precomputed EncodeResult');
    return this.encoderRef;
  }

  // Stores one checked batch in all three stores and the document table (synchronous: no
  // search can observe a half-inserted batch).
  private insert(batch: EncodedEntry[]): void {
    this.dense.upsertMany(batch.map((b) => ({ id: b.id, vector: b.encoding.dense })));
    this.sparse.upsertMany(batch.map((b) => ({ id: b.id, vector: b.encoding.sparse })));
    for (const b of batch) {
      this.colbert.upsert(b.id, b.encoding.colbert);
      this.docs.set(b.id, { text: b.text, metadata: b.metadata });
    }
  }

  /**
   * Encodes and adds documents: every batch of `batchSize` texts costs ONE encoder call with
   * dense, sparse and ColBERT requested together, and is stored before the next batch is
   * encoded, so a large (async) iterable is never held twice in memory. A repeated id replaces
   * the earlier document. Returns the ids, in input order. Takes effect in call order. On
   * failure, batches already stored stay stored (the error says how many).
   */
  add(docs: Iterable<M3Document> | AsyncIterable<M3Document>, options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    let encoder: TextEncoder3;
    try {
      encoder = this.requireEncoder();
    } catch (err) {
      turn.release();
      return Promise.reject(err);
    }
    return ingestDocuments(docs, turn, {
      encoder,
      model: { modelId: this.modelId, dim: this.dim, vocabSize: this.vocabSize },
      batchSize: this.batchSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(options?.signal ? { signal: options.signal } : {}),
      what: 'M3Index.add',
      apply: (batch) => this.insert(batch),
    });
  }

  /**
   * Adds documents whose encodings were computed elsewhere (e.g. by an adapter that already
   * embedded them). Each `encoding` needs dense, sparse and ColBERT outputs from the same model.
   * All entries are checked before any is stored. Returns the ids, in input order.
   */
  addEncoded(docs: Iterable<M3EncodedDocument>, _options: M3AddOptions = {}): Promise<string[]> {
    const turn = this.writes.reserve();
    return (async () => {
      try {
        const { ids, entries } = checkEncodedDocuments(docs, { modelId: this.modelId, dim: this.dim, vocabSize: this.vocabSize }, 'M3Index.addEncoded');
        await turn.ready;
        this.insert(entries);
        return ids;
      } finally {
        turn.release();
      }
    })();
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. Takes effect in call order. */
  delete(ids: string | Iterable<string>): Promise<number> {
    let list: string[];
    try {
      list = checkIdList(ids);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.writes.run(() => {
      const present = list.filter((id) => this.docs.has(id));
      this.dense.delete(present);
      this.sparse.delete(present);
      this.colbert.delete(present);
      let n = 0;
      for (const id of present) if (this.docs.delete(id)) n++;
      return n;
    });
  }

  private encodeQuery(query: M3Query, need: OutputSelection, signal: AbortSignal | undefined): Promise<EncodeResult> {
    return resolveQuery(query, need, {
      encoder: () => this.requireEncoder(),
      dim: this.dim,
      vocabSize: this.vocabSize,
      ...(this.maxLength ? { maxLength: this.maxLength } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  private idFilter(f: CheckedFilters): ((id: string) => boolean) | undefined {
    const { where, filter } = f;
    if (where === undefined && filter === undefined) return undefined;
    return (id) => {
      const d = this.docs.get(id);
      if (d === undefined) return false;
      if (where !== undefined && !matchesWhere(where, d.metadata)) return false;
      return filter === undefined || filter(copyMetadata(d.metadata), id) === true;
    };
  }

  private hit(id: string, score: number): M3Hit | undefined {
    const d = this.stored(id);
    return d ? { ...d, score } : undefined;
  }

  /**
   * Hybrid search, the recommended M3 pipeline: dense top-fetchK ∪ sparse top-fetchK (deduped)
   * → every candidate rescored exactly by dense (inner product), sparse (lexical matching score)
   * and ColBERT (MaxSim) → combined score (w_d·dense + w_s·sparse + w_c·colbert)/Σw → top k
   * (ties: id ascending). A string query is encoded once, with all three outputs (ColBERT is
   * skipped when its weight is 0). An empty index returns [].
   */
  async search(query: M3Query, options: M3SearchOptions = {}): Promise<M3SearchResult[]> {
    const o = checkSearchOptions(options);
    const filter = this.idFilter(o);
    if (this.docs.size === 0) return [];
    // ColBERT is the one costly mode: with weight 0 it is neither requested nor computed (its
    // reported score is then 0), as in m3Rerank.
    const useColbert = o.weights[2] > 0;
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: useColbert }, o.signal);
    const denseHits = await this.dense.search(q.dense as Float32Array, o.fetchK, filter ? { filter } : {});
    // Everything below up to MaxSim is synchronous, so the candidates exist in all stores.
    const sparseHits = this.sparse.search(q.sparse as SparseVector, o.fetchK, filter ? { filter } : {});
    const candidates = [...new Set([...denseHits.map((h) => h.id), ...sparseHits.map((h) => h.id)])].filter((id) => this.docs.has(id));
    return (await this.scoreCandidates(q, candidates, o.weights)).slice(0, o.k);
  }

  // The M3 rerank of candidates that exist now (synchronous up to MaxSim, which reads the
  // ColBERT store; a candidate deleted during MaxSim is dropped, never an error).
  private async scoreCandidates(q: EncodeResult, candidates: string[], weights: M3Weights): Promise<M3SearchResult[]> {
    if (candidates.length === 0) return [];
    const useColbert = weights[2] > 0;
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
    return sortHits(results);
  }

  /** The M3 rerank of stored documents `ids` (see {@link M3Store.rescore}); unknown ids are left out. */
  async rescore(query: M3Query, ids: readonly string[], options: M3RescoreOptions = {}): Promise<M3SearchResult[]> {
    const o = checkRescoreOptions(options);
    const list = [...new Set(checkIdList(ids))];
    const q = await this.encodeQuery(query, { dense: true, sparse: true, colbert: o.weights[2] > 0 }, o.signal);
    const results = await this.scoreCandidates(q, list.filter((id) => this.docs.has(id)), o.weights);
    return o.k === undefined ? results : results.slice(0, o.k);
  }

  /** Dense-only exact search (inner product of the normalised vectors). */
  async searchDense(query: M3Query, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    const o = checkSingleModeOptions(options);
    const filter = this.idFilter(o);
    if (this.docs.size === 0) return [];
    const q = await this.encodeQuery(query, { dense: true }, o.signal);
    const hits = await this.dense.search(q.dense as Float32Array, o.k, filter ? { filter } : {});
    return hits.map((h) => this.hit(h.id, h.score)).filter((h): h is M3Hit => h !== undefined);
  }

  /** Sparse-only exact search (lexical matching score; documents sharing no token are not returned). */
  async searchSparse(query: M3Query, options: M3SingleModeOptions = {}): Promise<M3Hit[]> {
    const o = checkSingleModeOptions(options);
    const filter = this.idFilter(o);
    if (this.docs.size === 0) return [];
    const q = await this.encodeQuery(query, { sparse: true }, o.signal);
    const hits = this.sparse.search(q.sparse as SparseVector, o.k, filter ? { filter } : {});
    return hits.map((h) => this.hit(h.id, h.score)).filter((h): h is M3Hit => h !== undefined);
  }

  /** Waits for pending writes (this in-memory index has nothing else to release). */
  async close(): Promise<void> {
    await this.writes.idle();
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  /**
   * Saves the whole index to directory `dir` (created if needed) as a new generation, then
   * atomically switches `CURRENT` to it (see the file comment): a crash or kill at any moment
   * leaves the previous save loadable. Metadata must be JSON-serialisable.
   */
  async save(dir: string): Promise<void> {
    return this.writes.run(async () => {
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
    await readDocs(docsPath, manifest, (id, text, metadata: JsonObject) => {
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

async function readDocs(path: string, manifest: Manifest, onDoc: (id: string, text: string, metadata: JsonObject) => void): Promise<void> {
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
