/**
 * An inverted index over BGE-M3 lexical weights with exact top-k search.
 *
 * Score: FlagEmbedding's `compute_lexical_matching_score`, Σ_{t ∈ q∩d} w_q[t]·w_d[t], accumulated
 * in float64 in ascending token-id order — the same arithmetic as a brute-force merge of the two
 * sorted vectors, so results equal brute force bit for bit, not merely within a tolerance.
 *
 * Layout (why it looks like this):
 * - Documents live in *slots* numbered in insertion order; a replaced or deleted document's slot
 *   is tombstoned and skipped at query time.
 * - The bulk of the postings is one CSR ("main"): per-term offsets into a single Int32 array of
 *   slots (ascending within a term) and a Float32 array of weights — 8 bytes per posting, no
 *   object per posting, and scans over one monomorphic array.
 * - New documents go to a doc-major append buffer ("delta": token ids + weights), so adding is a
 *   sequential append with no per-term allocation. Queries score the delta by brute force (a
 *   table lookup per delta posting) and the main CSR with pruning.
 * - The CSR is rebuilt lazily, merging the delta and dropping dead postings in one O(postings)
 *   counting-sort pass, when the delta outgrows max(65,536, main/32) postings or a quarter of
 *   the main postings or slots are dead — so rebuild work stays amortised O(1) per posting and
 *   the brute-force part stays small. Bulk loads therefore pay one rebuild, on the first search
 *   (or call {@link SparseIndex.compact} to pay it up front).
 *
 * Search is MaxScore (Turtle & Flood 1995) document-at-a-time over the CSR: with θ the current
 * k-th best score, query terms are sorted by their upper bound w_q·max_d w_d; the longest prefix
 * of terms whose bounds sum to less than θ is "non-essential" — a document containing only those
 * cannot enter the top k — so candidates come only from the essential lists, and non-essential
 * lists are probed by galloping search, stopping as soon as the remaining bounds cannot lift the
 * candidate over θ. Pruning only skips documents whose upper bound is strictly below θ (with a
 * relative safety margin of 1e-9 for float rounding in the partial sums), and the final score of
 * every surviving document is re-summed in token order, so the result is exact, ties included
 * (equal scores are ordered by id ascending).
 */
import { M3Error, invalidArgument } from '../errors.js';
import type { SparseVector } from '../types.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import {
  bufferSource,
  bytesView,
  checkId,
  checkK,
  concatChunks,
  corrupt,
  decodeIds,
  encodeContainer,
  encodeIds,
  expectSection,
  fileSource,
  metaInt,
  metaString,
  openContainer,
  sectionOf,
  type ByteSource,
  type SectionWriter,
} from './binary-format.js';
import { TopK, type ScoredId } from './topk.js';

/** Default vocabulary size: XLM-RoBERTa / BGE-M3 (250,002 token ids). */
export const M3_VOCAB_SIZE = 250002;

const MAGIC = 'BGM3SPRS';
const VERSION = 1;
const END = 0x7fffffff;
// Relative slack on θ when pruning: partial sums are added in a different order than the final
// (canonical) score, so they may differ in the last bits; 1e-9 is far above that rounding.
const PRUNE_SLACK = 1e-9;
// Delta size (postings) below which the brute-forced delta never triggers a rebuild.
const DELTA_MIN = 1 << 16;
// Dead slots below which the id table is not worth compacting.
const DEAD_SLOTS_MIN = 1024;

/** Options of {@link SparseIndex}. */
export interface SparseIndexOptions {
  /** Size of the token-id space (default 250002, BGE-M3). Token ids must be below it. */
  vocabSize?: number;
  /** Id of the model whose lexical weights are indexed (stored in saved files; default ''). */
  modelId?: string;
}

/** Options of {@link SparseIndex.search}. */
export interface SparseSearchOptions {
  /**
   * Only documents for which this returns true are returned. It is called only for documents
   * that would enter the current top k, so a selective filter still yields k exact results.
   */
  filter?: (id: string) => boolean;
}

/** A document to index in {@link SparseIndex.upsertMany}. */
export interface SparseDoc {
  id: string;
  vector: SparseVector;
}

// Validates a sparse vector; returns the number of entries with weight > 0.
function checkVector(v: SparseVector, vocabSize: number, what: string): number {
  if (v === null || typeof v !== 'object' || !v.indices || !v.values) invalidArgument(`${what} must be a SparseVector {indices, values}`);
  const { indices, values } = v;
  if (indices.length !== values.length) invalidArgument(`${what}: ${indices.length} indices but ${values.length} values`);
  let nnz = 0;
  let prev = -1;
  for (let i = 0; i < indices.length; i++) {
    const t = indices[i];
    if (!Number.isInteger(t) || t <= prev) invalidArgument(`${what}: token ids must be strictly ascending integers (index ${i}: ${t} after ${prev})`);
    if (t >= vocabSize) invalidArgument(`${what}: token id ${t} is outside the vocabulary (size ${vocabSize})`);
    prev = t;
    const w = values[i];
    if (!(w >= 0) || w === Infinity) invalidArgument(`${what}: weight ${w} of token ${t} must be finite and ≥ 0`);
    if (w > 0) nnz++;
  }
  return nnz;
}

// First position in [from, end) whose value is ≥ target, or `end` (galloping, then binary search).
function seek(docs: Int32Array, end: number, from: number, target: number): number {
  if (from >= end || docs[from] >= target) return from;
  let lo = from; // docs[lo] < target
  let step = 1;
  let hi = from + 1;
  while (hi < end && docs[hi] < target) {
    lo = hi;
    step <<= 1;
    hi = lo + step;
  }
  if (hi > end) hi = end;
  // invariant: docs[lo] < target, and hi === end or docs[hi] ≥ target
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (docs[mid] < target) lo = mid;
    else hi = mid;
  }
  return hi;
}

// Position of `slot` in docs[lo..hi), or -1.
function find(docs: Int32Array, lo: number, hi: number, slot: number): number {
  const end = hi;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (docs[mid] < slot) lo = mid + 1;
    else hi = mid;
  }
  return lo < end && docs[lo] === slot ? lo : -1;
}

function grow<T extends Int32Array | Uint32Array | Float32Array | Uint8Array>(a: T, need: number): T {
  if (need <= a.length) return a;
  let cap = Math.max(16, a.length);
  while (cap < need) cap = Math.ceil(cap * 1.5);
  const b = new (a.constructor as new (n: number) => T)(cap);
  b.set(a);
  return b;
}

// Token ids below this are looked up in a flat table (at most 16 MiB, grown to the largest id
// seen); larger ones, which only a vocabulary beyond 4M ids can produce, in a Map.
const TABLE_MAX = 1 << 22;

/**
 * Token id ↔ term number: the index's postings are numbered by the terms that occur, never by
 * the vocabulary size, so a 2^30-id vocabulary costs nothing until its ids are used. Term numbers
 * of the main CSR ascend with their token ids (rebuilds renumber).
 */
class TermDictionary {
  private table = new Int32Array(0); // token → term + 1 (0: none)
  private readonly big = new Map<number, number>();
  tokens = new Uint32Array(16); // term → token
  count = 0;

  /** The term number of `token`, or -1. */
  get(token: number): number {
    if (token < this.table.length) return this.table[token] - 1;
    if (token < TABLE_MAX) return -1;
    return this.big.get(token) ?? -1;
  }

  private set(token: number, term: number): void {
    if (token < TABLE_MAX) {
      if (token >= this.table.length) {
        const bigger = new Int32Array(Math.min(TABLE_MAX, Math.max(token + 1, 1024, Math.ceil(this.table.length * 1.5))));
        bigger.set(this.table);
        this.table = bigger;
      }
      this.table[token] = term + 1;
    } else this.big.set(token, term);
  }

  /** The term number of `token`, added if new. */
  intern(token: number): number {
    const t = this.get(token);
    if (t >= 0) return t;
    const term = this.count++;
    this.tokens = grow(this.tokens, this.count);
    this.tokens[term] = token;
    this.set(token, term);
    return term;
  }

  /** Replaces the dictionary by `tokens` (strictly ascending, all below TABLE_MAX): term i is tokens[i]. */
  assignAscending(tokens: Uint32Array<ArrayBuffer>, tableSize: number): void {
    this.table = new Int32Array(Math.min(TABLE_MAX, Math.max(1024, tableSize)));
    this.big.clear();
    for (let i = 0; i < tokens.length; i++) this.table[tokens[i]] = i + 1;
    this.tokens = tokens.length >= 16 ? tokens : grow(tokens, 16);
    this.count = tokens.length;
  }

  /** Renumbers: new term i is old term order[i]. */
  renumber(order: Int32Array): void {
    const old = this.tokens;
    this.tokens = new Uint32Array(Math.max(16, order.length));
    for (let i = 0; i < order.length; i++) {
      const token = old[order[i]];
      this.tokens[i] = token;
      this.set(token, i);
    }
  }

  clear(): void {
    this.table = new Int32Array(0);
    this.big.clear();
    this.tokens = new Uint32Array(16);
    this.count = 0;
  }
}

// Arena chunk size of a SparseLoadBuffer (a vector larger than this gets a chunk of its own).
const LOAD_ARENA_CHUNK = 1 << 24;

/**
 * Sparse vectors gathered for {@link SparseIndex.loadChecked}, each checked as it is added: what
 * a store uses to load thousands of stored vectors. The bytes are copied into large arena chunks
 * (no allocation per vector, and the caller's buffers, e.g. whole database rows, are not kept
 * alive); each vector is a pair of views into them.
 */
export class SparseLoadBuffer {
  private readonly vectors: SparseVector[] = [];
  private chunk = new Uint8Array(0);
  private used = 0;

  constructor(readonly vocabSize: number) {}

  /** Number of vectors added. */
  get count(): number {
    return this.vectors.length;
  }

  /**
   * Adds one document's stored bytes (n uint32 token ids, then n float32 weights, little-endian
   * as this platform's). Returns false, adding nothing, unless the ids ascend strictly below
   * `vocabSize` and the weights are finite and ≥ 0.
   */
  push(bytes: Uint8Array): boolean {
    if (bytes.byteLength % 8 !== 0) return false;
    const n = bytes.byteLength / 8;
    if (this.used + bytes.byteLength > this.chunk.byteLength) {
      this.chunk = new Uint8Array(Math.max(LOAD_ARENA_CHUNK, bytes.byteLength));
      this.used = 0;
    }
    // Offsets stay multiples of 8 (every vector is), so the views are aligned.
    const at = this.used;
    this.chunk.set(bytes, at);
    const t = new Uint32Array(this.chunk.buffer, at, n);
    const w = new Float32Array(this.chunk.buffer, at + 4 * n, n);
    let prev = -1;
    for (let i = 0; i < n; i++) {
      if (t[i] <= prev || t[i] >= this.vocabSize || !(w[i] >= 0) || w[i] === Infinity) return false;
      prev = t[i];
    }
    this.used = at + bytes.byteLength;
    this.vectors.push({ indices: t, values: w });
    return true;
  }

  /** Vector i (views). */
  vector(i: number): SparseVector {
    return this.vectors[i];
  }
}

/**
 * Inverted index over M3 lexical weights, keyed by string document ids, with exact top-k search
 * by the lexical matching score.
 *
 * Update semantics: {@link upsert} of an existing id replaces that document's whole vector (the
 * old weights stop counting immediately, and the document is re-added as the newest); within
 * one {@link upsertMany} call the last entry of a repeated id wins. Mutations are synchronous
 * and O(postings of the document); they must not run while {@link save} is pending (they throw
 * INVALID_ARGUMENT then, rather than let the save write a torn file).
 */
export class SparseIndex {
  /** Size of the token-id space. */
  readonly vocabSize: number;
  /** Id of the model whose weights are indexed ('' when unknown). */
  readonly modelId: string;

  // Term numbers of the token ids that occur (see TermDictionary).
  private readonly terms = new TermDictionary();
  // Main CSR over slots [0, mainSlots): term t's postings are mDocs/mW[mOff[t] .. mOff[t+1]),
  // t a term number (ascending with token ids).
  private mOff: Int32Array;
  private mDocs = new Int32Array(0);
  private mW = new Float32Array(0);
  // Per term: max main weight (dead postings included: still a valid upper bound).
  private mMax: Float32Array;
  private mainSlots = 0;
  private mainDead = 0; // dead postings inside the main CSR

  // Delta, doc-major, slots [mainSlots, slotCount): document i's postings are
  // dTerms/dW[dStart[i] .. dStart[i+1]), term numbers in ascending token-id order.
  private dTerms = new Uint32Array(1024);
  private dW = new Float32Array(1024);
  private dStart = new Int32Array(16);
  private dLen = 0;

  // Per slot: id (undefined once dead), number of postings, live flag.
  private slotIds: (string | undefined)[] = [];
  private slotNnz = new Int32Array(16);
  private slotAlive = new Uint8Array(16);
  private slotCount = 0;
  private readonly idToSlot = new Map<string, number>();
  private livePostings = 0;

  // Scratch: query position + 1 per token id (0 = not in the query), cleared after each use.
  private qpos: Int32Array | undefined;
  private saving = 0;

  constructor(options: SparseIndexOptions = {}) {
    const vocabSize = options.vocabSize ?? M3_VOCAB_SIZE;
    if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0 || vocabSize >= 0x7fffffff) {
      invalidArgument(`vocabSize must be a positive integer below 2^31, got ${vocabSize}`);
    }
    const modelId = options.modelId ?? '';
    if (typeof modelId !== 'string' || modelId.length > 4096) invalidArgument('modelId must be a string of at most 4096 characters');
    this.vocabSize = vocabSize;
    this.modelId = modelId;
    this.mOff = new Int32Array(1);
    this.mMax = new Float32Array(0);
  }

  // Number of terms the main CSR covers.
  private get mainTermSpace(): number {
    return this.mOff.length - 1;
  }

  /** Number of (live) documents. */
  get size(): number {
    return this.idToSlot.size;
  }

  /** Number of stored postings (non-zero weights) of live documents. */
  get postingCount(): number {
    return this.livePostings;
  }

  /** Whether a document with this id is indexed. */
  has(id: string): boolean {
    return this.idToSlot.has(id);
  }

  /** Ids of the indexed documents (insertion order of their latest version). */
  *ids(): IterableIterator<string> {
    for (let s = 0; s < this.slotCount; s++) if (this.slotAlive[s]) yield this.slotIds[s] as string;
  }

  private assertWritable(): void {
    if (this.saving > 0) invalidArgument('SparseIndex is being saved; wait for save() to resolve before modifying it');
  }

  /**
   * Adds a document, or replaces the vector of an existing id. Zero weights are skipped; token
   * ids must be strictly ascending and below `vocabSize`, weights finite and ≥ 0.
   */
  upsert(id: string, vector: SparseVector): void {
    this.upsertMany([{ id, vector }]);
  }

  /**
   * Adds or replaces many documents. All inputs are validated before anything changes (an invalid
   * entry leaves the index untouched). A repeated id: the last entry wins.
   */
  upsertMany(docs: Iterable<SparseDoc>, options: { checked?: boolean } = {}): void {
    this.assertWritable();
    const list = Array.isArray(docs) ? (docs as SparseDoc[]) : [...docs];
    const last = new Map<string, number>();
    for (let i = 0; i < list.length; i++) {
      const d = list[i];
      // `checked`: the caller (M3Index) validated ids and vectors already (see DenseIndex.upsertMany).
      if (options.checked !== true) {
        checkId(d?.id, `docs[${i}].id`);
        checkVector(d.vector, this.vocabSize, `docs[${i}].vector`);
      }
      last.set(d.id, i);
    }
    for (let i = 0; i < list.length; i++) {
      const d = list[i];
      if (last.get(d.id) !== i) continue;
      this.removeSlot(d.id);
      this.appendDoc(d.id, d.vector);
    }
  }

  /**
   * Fills an EMPTY index with the documents of `buffer` (document i has id `ids[i]`), building
   * the main CSR directly in one counting sort: no append buffer, no rebuild, no per-document
   * arrays. What a store does when it loads; the caller guarantees the ids are valid and
   * distinct (the vectors were checked by the buffer). Zero weights are dropped, as by upsert.
   */
  loadChecked(ids: readonly string[], buffer: SparseLoadBuffer): void {
    this.assertWritable();
    if (this.slotCount !== 0) invalidArgument('SparseIndex.loadChecked needs an empty index');
    if (ids.length !== buffer.count) invalidArgument(`loadChecked: ${ids.length} ids for ${buffer.count} vectors`);
    if (buffer.vocabSize !== this.vocabSize) invalidArgument('loadChecked: the buffer was made for another vocabulary');
    const n = ids.length;
    if (this.vocabSize > TABLE_MAX) {
      // Token ids beyond the flat table's range: the general path (a vocabulary no M3 model has).
      this.upsertMany(ids.map((id, i) => ({ id, vector: buffer.vector(i) })), { checked: true });
      this.compact();
      return;
    }
    // Pass 1: postings per token.
    const perToken = new Int32Array(this.vocabSize);
    let postings = 0;
    for (let d = 0; d < n; d++) {
      const { indices, values } = buffer.vector(d);
      for (let p = 0; p < indices.length; p++) {
        if (values[p] > 0) {
          perToken[indices[p]]++;
          postings++;
        }
      }
    }
    if (postings > END) invalidArgument('SparseIndex exceeds 2^31 postings');
    let V = 0;
    for (let t = 0; t < this.vocabSize; t++) if (perToken[t] > 0) V++;
    const termTokens = new Uint32Array(V);
    const off = new Int32Array(V + 1);
    // perToken becomes token → first free position of its term.
    for (let t = 0, term = 0; t < this.vocabSize; t++) {
      const c = perToken[t];
      if (c === 0) continue;
      termTokens[term] = t;
      off[term + 1] = off[term] + c;
      perToken[t] = off[term];
      term++;
    }
    // Pass 2: place, document by document (slots ascend within each term).
    const docs = new Int32Array(postings);
    const w = new Float32Array(postings);
    const nnz = new Int32Array(Math.max(16, n));
    for (let d = 0; d < n; d++) {
      const { indices, values } = buffer.vector(d);
      let c = 0;
      for (let p = 0; p < indices.length; p++) {
        const x = values[p];
        if (!(x > 0)) continue;
        const q = perToken[indices[p]]++;
        docs[q] = d;
        w[q] = x;
        c++;
      }
      nnz[d] = c;
    }
    const max = new Float32Array(V);
    for (let term = 0; term < V; term++) {
      let m = 0;
      for (let p = off[term], e = off[term + 1]; p < e; p++) if (w[p] > m) m = w[p];
      max[term] = m;
    }
    this.terms.assignAscending(termTokens, V > 0 ? termTokens[V - 1] + 1 : 0);
    this.installMain(off, docs, w, max, [...ids], nnz);
    this.livePostings = postings;
  }

  // Makes the given CSR over `ids` (slot i is ids[i], all alive, nnz[i] postings) the whole
  // index: no delta, no dead slots.
  private installMain(off: Int32Array<ArrayBuffer>, docs: Int32Array<ArrayBuffer>, w: Float32Array<ArrayBuffer>, max: Float32Array<ArrayBuffer>, ids: (string | undefined)[], nnz: Int32Array<ArrayBuffer>): void {
    const n = ids.length;
    this.mOff = off;
    this.mDocs = docs;
    this.mW = w;
    this.mMax = max;
    this.mainSlots = n;
    this.mainDead = 0;
    this.dTerms = new Uint32Array(1024);
    this.dW = new Float32Array(1024);
    this.dStart = new Int32Array(16);
    this.dLen = 0;
    this.slotIds = ids;
    this.slotNnz = nnz;
    const alive = new Uint8Array(Math.max(16, n));
    alive.fill(1, 0, n);
    this.slotAlive = alive;
    this.slotCount = n;
    this.idToSlot.clear();
    for (let s = 0; s < n; s++) this.idToSlot.set(ids[s] as string, s);
  }

  /** Removes documents; unknown ids are ignored. Returns how many were removed. */
  delete(ids: string | Iterable<string>): number {
    this.assertWritable();
    let removed = 0;
    for (const id of typeof ids === 'string' ? [ids] : ids) if (this.removeSlot(id)) removed++;
    return removed;
  }

  /** Removes every document. */
  clear(): void {
    this.assertWritable();
    this.mOff = new Int32Array(1);
    this.mDocs = new Int32Array(0);
    this.mW = new Float32Array(0);
    this.mMax = new Float32Array(0);
    this.terms.clear();
    this.qpos = undefined;
    this.mainSlots = 0;
    this.mainDead = 0;
    this.dTerms = new Uint32Array(1024);
    this.dW = new Float32Array(1024);
    this.dStart = new Int32Array(16);
    this.dLen = 0;
    this.slotIds = [];
    this.slotNnz = new Int32Array(16);
    this.slotAlive = new Uint8Array(16);
    this.slotCount = 0;
    this.idToSlot.clear();
    this.livePostings = 0;
  }

  private removeSlot(id: string): boolean {
    const slot = this.idToSlot.get(id);
    if (slot === undefined) return false;
    this.idToSlot.delete(id);
    this.slotAlive[slot] = 0;
    this.slotIds[slot] = undefined;
    this.livePostings -= this.slotNnz[slot];
    if (slot < this.mainSlots) this.mainDead += this.slotNnz[slot];
    return true;
  }

  private appendDoc(id: string, v: SparseVector): void {
    if (this.slotCount >= END - 1) this.rebuild();
    if (this.slotCount >= END - 1) invalidArgument('SparseIndex is full (2^31 documents)');
    const slot = this.slotCount++;
    this.slotAlive = grow(this.slotAlive, slot + 1);
    this.slotNnz = grow(this.slotNnz, slot + 1);
    const di = slot - this.mainSlots;
    this.dStart = grow(this.dStart, di + 2);
    const { indices, values } = v;
    this.dTerms = grow(this.dTerms, this.dLen + indices.length);
    this.dW = grow(this.dW, this.dLen + indices.length);
    const terms = this.dTerms;
    const ws = this.dW;
    let p = this.dLen;
    this.dStart[di] = p;
    for (let i = 0; i < indices.length; i++) {
      const w = Math.fround(values[i]);
      if (!(w > 0)) continue;
      terms[p] = this.terms.intern(indices[i]);
      ws[p] = w;
      p++;
    }
    const nnz = p - this.dLen;
    this.dLen = p;
    this.dStart[di + 1] = p;
    this.slotIds[slot] = id;
    this.slotAlive[slot] = 1;
    this.slotNnz[slot] = nnz;
    this.idToSlot.set(id, slot);
    this.livePostings += nnz;
  }

  // Whether the lazy rebuild is due (see the file comment for the policy and why).
  private rebuildDue(): boolean {
    const mainTotal = this.mOff[this.mainTermSpace];
    const deadSlots = this.slotCount - this.idToSlot.size;
    return (
      this.dLen > Math.max(DELTA_MIN, mainTotal >> 5) ||
      this.mainDead > Math.max(DELTA_MIN, mainTotal >> 2) ||
      deadSlots > Math.max(DEAD_SLOTS_MIN, this.slotCount >> 2)
    );
  }

  /**
   * Merges the append buffer into the main CSR, drops deleted/replaced documents and renumbers
   * slots. Runs automatically on search when due; call it after a bulk load to pay the
   * (O(postings), ~0.1–0.3 s per 10M postings) cost up front instead of on the first query.
   */
  compact(): void {
    this.assertWritable();
    if (this.dLen === 0 && this.slotCount === this.idToSlot.size) return;
    this.rebuild();
  }

  private rebuild(): void {
    const V0 = this.mainTermSpace;
    const V = this.terms.count;
    // New terms (≥ V0) were numbered as they came: renumber so numbers ascend with token ids.
    // newOf[old] = new number; order[new] = old number.
    let order: Int32Array | undefined;
    let newOf: Int32Array | undefined;
    if (V > V0) {
      const toks = this.terms.tokens;
      order = Int32Array.from({ length: V }, (_, i) => i).sort((a, b) => toks[a] - toks[b]);
      newOf = new Int32Array(V);
      for (let i = 0; i < V; i++) newOf[order[i]] = i;
    }
    const nw = (t: number) => (newOf === undefined ? t : newOf[t]);
    const alive = this.slotAlive;
    const remap = new Int32Array(this.slotCount);
    const ids: (string | undefined)[] = [];
    let n = 0;
    for (let s = 0; s < this.slotCount; s++) {
      if (alive[s]) {
        remap[s] = n++;
        ids.push(this.slotIds[s]);
      } else remap[s] = -1;
    }
    const oOff = this.mOff;
    const oDocs = this.mDocs;
    const oW = this.mW;
    const dT = this.dTerms;
    const dW = this.dW;
    const dS = this.dStart;
    const nDelta = this.slotCount - this.mainSlots;
    // Pass 1: postings per term.
    const off = new Int32Array(V + 1);
    if (this.mainDead === 0) {
      for (let t = 0; t < V0; t++) off[nw(t) + 1] = oOff[t + 1] - oOff[t];
    } else {
      for (let t = 0; t < V0; t++) {
        let c = 0;
        for (let p = oOff[t], e = oOff[t + 1]; p < e; p++) if (alive[oDocs[p]]) c++;
        off[nw(t) + 1] = c;
      }
    }
    for (let i = 0; i < nDelta; i++) {
      if (!alive[this.mainSlots + i]) continue;
      for (let p = dS[i], e = dS[i + 1]; p < e; p++) off[nw(dT[p]) + 1]++;
    }
    for (let t = 0; t < V; t++) {
      const next = off[t + 1] + off[t];
      if (next > END) invalidArgument('SparseIndex exceeds 2^31 postings');
      off[t + 1] = next;
    }
    // Pass 2: place. Main postings first, then delta ones: delta slots are larger, so every
    // term's list stays sorted by slot.
    const total = off[V];
    const docs = new Int32Array(total);
    const w = new Float32Array(total);
    const max = new Float32Array(V);
    const pos = off.slice(0, V);
    for (let t = 0; t < V0; t++) {
      const tn = nw(t);
      let q = pos[tn];
      let m = 0;
      for (let p = oOff[t], e = oOff[t + 1]; p < e; p++) {
        const ns = remap[oDocs[p]];
        if (ns < 0) continue;
        const x = oW[p];
        docs[q] = ns;
        w[q] = x;
        q++;
        if (x > m) m = x;
      }
      pos[tn] = q;
      max[tn] = m;
    }
    for (let i = 0; i < nDelta; i++) {
      const ns = remap[this.mainSlots + i];
      if (ns < 0) continue;
      for (let p = dS[i], e = dS[i + 1]; p < e; p++) {
        const t = nw(dT[p]);
        const x = dW[p];
        const q = pos[t]++;
        docs[q] = ns;
        w[q] = x;
        if (x > max[t]) max[t] = x;
      }
    }
    const nnz = new Int32Array(Math.max(16, n));
    for (let s = 0; s < this.slotCount; s++) if (remap[s] >= 0) nnz[remap[s]] = this.slotNnz[s];
    if (order !== undefined) this.terms.renumber(order);
    this.installMain(off, docs, w, max, ids, nnz);
  }

  /**
   * Every document's stored weights (zero weights dropped), rebuilt from the postings in one pass:
   * for exporting or migrating an index, not for queries.
   */
  vectors(): Map<string, SparseVector> {
    if (this.dLen > 0 || this.slotCount !== this.idToSlot.size) this.rebuild();
    const n = this.slotCount;
    const nnz = this.slotNnz;
    const start = new Int32Array(n + 1);
    for (let s = 0; s < n; s++) start[s + 1] = start[s] + nnz[s];
    const terms = new Uint32Array(start[n]);
    const ws = new Float32Array(start[n]);
    const fill = start.slice(0, n);
    const off = this.mOff;
    for (let t = 0; t < this.mainTermSpace; t++) {
      for (let p = off[t], e = off[t + 1]; p < e; p++) {
        const q = fill[this.mDocs[p]]++;
        terms[q] = this.terms.tokens[t];
        ws[q] = this.mW[p];
      }
    }
    const out = new Map<string, SparseVector>();
    for (let s = 0; s < n; s++) out.set(this.slotIds[s] as string, { indices: terms.slice(start[s], start[s + 1]), values: ws.slice(start[s], start[s + 1]) });
    return out;
  }

  /**
   * Exact top-k documents by lexical matching score with `query`, best first (ties: id
   * ascending). Only documents sharing at least one token with the query are returned, so a
   * query with no indexed token gives []. `k` must be a positive integer; a k above the number of
   * matches returns all matches.
   */
  search(query: SparseVector, k: number, options: SparseSearchOptions = {}): ScoredId[] {
    checkK(k);
    checkVector(query, this.vocabSize, 'query');
    const filter = options.filter;
    if (filter !== undefined && typeof filter !== 'function') invalidArgument('filter must be a function');
    if (this.idToSlot.size === 0 || query.indices.length === 0) return [];
    if (this.saving === 0 && this.rebuildDue()) this.rebuild();

    const heap = new TopK(Math.min(k, this.idToSlot.size), this.slotIds);
    if (this.dLen > 0) this.searchDelta(query, heap, filter);
    this.searchMain(query, heap, filter);
    return heap.toHits();
  }

  // Brute force over the append buffer: one table lookup per delta posting. Document terms are
  // ascending, so shared terms are met in ascending order: the same sum as a merge.
  private searchDelta(query: SparseVector, heap: TopK, filter: ((id: string) => boolean) | undefined): void {
    const qpos = this.queryPositions(query);
    const qi = query.indices;
    const qv = query.values;
    const dT = this.dTerms;
    const dW = this.dW;
    const dS = this.dStart;
    const alive = this.slotAlive;
    const base = this.mainSlots;
    const nDelta = this.slotCount - base;
    for (let i = 0; i < nDelta; i++) {
      const slot = base + i;
      if (!alive[slot]) continue;
      let s = 0;
      let hit = false;
      for (let p = dS[i], e = dS[i + 1]; p < e; p++) {
        const j = qpos[dT[p]];
        if (j !== 0) {
          s += qv[j - 1] * dW[p];
          hit = true;
        }
      }
      if (hit && heap.accepts(s, slot) && (filter === undefined || filter(this.slotIds[slot] as string))) heap.push(s, slot);
    }
    this.clearQueryPositions(query, qpos);
  }

  // Query position + 1 per term number (0: not in the query); clear with clearQueryPositions.
  private queryPositions(query: SparseVector): Int32Array {
    if (this.qpos === undefined || this.qpos.length < this.terms.count) this.qpos = new Int32Array(Math.max(this.terms.count, 1024));
    const qpos = this.qpos;
    const qi = query.indices;
    const qv = query.values;
    for (let p = 0; p < qi.length; p++) {
      const t = qv[p] > 0 ? this.terms.get(qi[p]) : -1;
      if (t >= 0) qpos[t] = p + 1;
    }
    return qpos;
  }

  private clearQueryPositions(query: SparseVector, qpos: Int32Array): void {
    for (let p = 0; p < query.indices.length; p++) {
      const t = this.terms.get(query.indices[p]);
      if (t >= 0) qpos[t] = 0;
    }
  }

  // MaxScore over the main CSR (see the file comment).
  private searchMain(query: SparseVector, heap: TopK, filter: ((id: string) => boolean) | undefined): void {
    const mOff = this.mOff;
    const space = this.mainTermSpace;
    const qi = query.indices;
    const qv = query.values;
    // Query terms with main postings, in ascending token order ("canonical" positions).
    const terms: number[] = [];
    const qw: number[] = [];
    for (let p = 0; p < qi.length; p++) {
      const t = this.terms.get(qi[p]);
      const w = qv[p];
      if (w > 0 && t >= 0 && t < space && mOff[t + 1] > mOff[t]) {
        terms.push(t);
        qw.push(w);
      }
    }
    const n = terms.length;
    if (n === 0) return;

    // Sort by upper bound ascending: the non-essential terms are always a prefix of this order.
    const ub = terms.map((t, i) => qw[i] * this.mMax[t]);
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => ub[a] - ub[b] || mOff[terms[b] + 1] - mOff[terms[b]] - (mOff[terms[a] + 1] - mOff[terms[a]]));
    const endL = new Int32Array(n);
    const qwL = new Float64Array(n);
    const canon = new Int32Array(n);
    const prefix = new Float64Array(n);
    const cursor = new Int32Array(n);
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const c = order[i];
      const t = terms[c];
      cursor[i] = mOff[t];
      endL[i] = mOff[t + 1];
      qwL[i] = qw[c];
      canon[i] = c;
      acc += ub[c];
      prefix[i] = acc;
    }
    const docs = this.mDocs;
    const wts = this.mW;
    const alive = this.slotAlive;
    const slotIds = this.slotIds;
    const contrib = new Float64Array(n);

    let firstEss = 0;
    let thetaLow = Number.NEGATIVE_INFINITY;
    const raise = (): boolean => {
      const theta = heap.threshold;
      thetaLow = theta - Math.abs(theta) * PRUNE_SLACK;
      while (firstEss < n && prefix[firstEss] < thetaLow) firstEss++;
      return firstEss === n; // no document outside the heap can reach θ
    };
    if (heap.full && raise()) return;

    let cur = END;
    for (let i = firstEss; i < n; i++) if (docs[cursor[i]] < cur) cur = docs[cursor[i]];

    while (cur !== END) {
      // Essential lists: score `cur` where present, step past it, and find the next candidate.
      let s = 0;
      let next = END;
      for (let i = n - 1; i >= firstEss; i--) {
        let c = cursor[i];
        const end = endL[i];
        if (c >= end) continue;
        if (docs[c] === cur) {
          const v = qwL[i] * wts[c];
          s += v;
          contrib[canon[i]] = v;
          cursor[i] = ++c;
          if (c >= end) continue;
        }
        const d = docs[c];
        if (d < next) next = d;
      }
      if (alive[cur] === 1) {
        // Non-essential lists, largest bound first; give up once the rest cannot reach θ.
        let pruned = false;
        for (let i = firstEss - 1; i >= 0; i--) {
          if (s + prefix[i] < thetaLow) {
            pruned = true;
            break;
          }
          const end = endL[i];
          const c = seek(docs, end, cursor[i], cur);
          cursor[i] = c;
          if (c < end && docs[c] === cur) {
            const v = qwL[i] * wts[c];
            s += v;
            contrib[canon[i]] = v;
          }
        }
        if (!pruned) {
          // The reported score, re-summed in ascending token order like a brute-force merge.
          let exact = 0;
          for (let p = 0; p < n; p++) exact += contrib[p];
          if (heap.accepts(exact, cur) && (filter === undefined || filter(slotIds[cur] as string))) {
            heap.push(exact, cur);
            if (heap.full && raise()) break;
          }
        }
      }
      contrib.fill(0);
      cur = next;
    }
  }

  /**
   * Lexical matching scores of `query` with the given documents (0 when no token is shared),
   * summed in ascending token order, identical to {@link search}'s scores. Unknown ids throw
   * INVALID_ARGUMENT. Cost O(|q| · log postings) per id: meant for rescoring candidates.
   */
  scoreIds(query: SparseVector, ids: readonly string[]): Float64Array {
    checkVector(query, this.vocabSize, 'query');
    const out = new Float64Array(ids.length);
    const qi = query.indices;
    const qv = query.values;
    for (const id of ids) if (!this.idToSlot.has(id)) invalidArgument(`unknown document id ${JSON.stringify(id)}`);
    const qterm = Int32Array.from(qi, (t) => this.terms.get(t));
    const qpos = this.queryPositions(query);
    try {
      for (let j = 0; j < ids.length; j++) {
        const slot = this.idToSlot.get(ids[j]) as number;
        let s = 0;
        if (slot < this.mainSlots) {
          for (let p = 0; p < qi.length; p++) {
            const t = qterm[p];
            if (!(qv[p] > 0) || t < 0 || t >= this.mainTermSpace) continue;
            const pos = find(this.mDocs, this.mOff[t], this.mOff[t + 1], slot);
            if (pos >= 0) s += qv[p] * this.mW[pos];
          }
        } else {
          // The document's terms come in ascending token order: the same sum as a merge.
          const di = slot - this.mainSlots;
          for (let b = this.dStart[di], e = this.dStart[di + 1]; b < e; b++) {
            const q = qpos[this.dTerms[b]];
            if (q !== 0) s += qv[q - 1] * this.dW[b];
          }
        }
        out[j] = s;
      }
    } finally {
      this.clearQueryPositions(query, qpos);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  private encode(): { byteLength: number; chunks: () => Iterable<Uint8Array> } {
    // Not compact(): a second save may start while the first is pending (nothing can have
    // changed since the first one compacted, so there is nothing to rebuild then).
    if (this.dLen > 0 || this.slotCount !== this.idToSlot.size) this.rebuild();
    const V = this.mainTermSpace;
    const off = this.mOff;
    const termIds: number[] = [];
    const termLens: number[] = [];
    for (let t = 0; t < V; t++) {
      const len = off[t + 1] - off[t];
      if (len > 0) {
        termIds.push(this.terms.tokens[t]);
        termLens.push(len);
      }
    }
    const postings = off[V];
    const [idLens, idBytes] = encodeIds(this.slotIds.slice(0, this.slotCount) as string[]);
    return encodeContainer(
      MAGIC,
      VERSION,
      {
        kind: 'sparse',
        modelId: this.modelId,
        vocabSize: this.vocabSize,
        docCount: this.slotCount,
        termCount: termIds.length,
        postingCount: postings,
      },
      [
        idLens,
        idBytes,
        sectionOf(bytesView(Uint32Array.from(termIds))),
        sectionOf(bytesView(Uint32Array.from(termLens))),
        sectionOf(bytesView(this.mDocs.subarray(0, postings))),
        sectionOf(bytesView(this.mW.subarray(0, postings))),
      ],
    );
  }

  /** Serialises the index (format in {@link SparseIndex.save}). Compacts first. */
  toBytes(): Uint8Array {
    const c = this.encode();
    return concatChunks(c.byteLength, c.chunks());
  }

  /**
   * Saves the index to `path` atomically (see `writeFileAtomic`): a crash mid-save leaves the
   * previous file intact. Compacts first.
   *
   * Format: the retrieval container (see binary-format.ts) with magic `BGM3SPRS`, version 1, meta
   * `{kind:'sparse', modelId, vocabSize, docCount, termCount, postingCount}` and sections
   * 0 u32[docCount] id byte lengths · 1 UTF-8 ids · 2 u32[termCount] term ids (ascending) ·
   * 3 u32[termCount] posting-list lengths · 4 u32[postingCount] document numbers (ascending per
   * term, < docCount) · 5 f32[postingCount] weights (finite, > 0); little-endian, CRC-32 checked.
   */
  async save(path: string): Promise<void> {
    const c = this.encode();
    this.saving++;
    try {
      await writeFileAtomic(path, c.chunks());
    } finally {
      this.saving--;
    }
  }

  /**
   * Loads an index saved by {@link save}. A damaged, truncated or foreign file throws
   * INDEX_INVALID naming the file; `expected` values that differ from the file's (vocabulary
   * size, model id) throw INDEX_MISMATCH.
   */
  static async load(path: string, expected: SparseIndexOptions = {}): Promise<SparseIndex> {
    const src = fileSource(path);
    try {
      return SparseIndex.read(src, expected);
    } finally {
      src.close();
    }
  }

  /** Deserialises bytes produced by {@link toBytes} (same checks as {@link load}). */
  static fromBytes(bytes: Uint8Array, expected: SparseIndexOptions = {}, name = '<sparse index bytes>'): SparseIndex {
    return SparseIndex.read(bufferSource(bytes, name), expected);
  }

  private static read(src: ByteSource, expected: SparseIndexOptions): SparseIndex {
    const file = src.name;
    const c = openContainer(src, MAGIC, [VERSION], 'sparse index');
    const m = c.meta;
    const L = c.sectionLengths;
    if (m.kind !== 'sparse') corrupt(file, `invalid header field kind: ${JSON.stringify(m.kind)}`);
    if (L.length !== 6) corrupt(file, `expected 6 sections, found ${L.length}`);
    const modelId = metaString(file, m, 'modelId');
    const vocabSize = metaInt(file, m, 'vocabSize', 0x7ffffffe);
    if (vocabSize === 0) corrupt(file, 'invalid header field vocabSize: 0');
    const docCount = metaInt(file, m, 'docCount', END - 1);
    const termCount = metaInt(file, m, 'termCount', vocabSize);
    const postingCount = metaInt(file, m, 'postingCount', END);
    if (expected.vocabSize !== undefined && expected.vocabSize !== vocabSize) {
      throw new M3Error('INDEX_MISMATCH', `${file}: the index was built for a vocabulary of ${vocabSize} tokens, expected ${expected.vocabSize}`, { file });
    }
    if (expected.modelId !== undefined && expected.modelId !== modelId) {
      throw new M3Error('INDEX_MISMATCH', `${file}: the index was built with model ${JSON.stringify(modelId)}, expected ${JSON.stringify(expected.modelId)}`, { file });
    }
    // Every section length is implied by the counts; all are checked before any allocation.
    expectSection(file, L, 0, docCount * 4, 'id lengths');
    expectSection(file, L, 2, termCount * 4, 'term ids');
    expectSection(file, L, 3, termCount * 4, 'posting-list lengths');
    expectSection(file, L, 4, postingCount * 4, 'posting documents');
    expectSection(file, L, 5, postingCount * 4, 'posting weights');

    const idLens = new Uint32Array(docCount);
    c.readSection(0, bytesView(idLens));
    const idBytes = new Uint8Array(L[1]);
    c.readSection(1, idBytes);
    const termIds = new Uint32Array(termCount);
    c.readSection(2, bytesView(termIds));
    const termLens = new Uint32Array(termCount);
    c.readSection(3, bytesView(termLens));
    const docs = new Int32Array(postingCount);
    c.readSection(4, bytesView(docs));
    const weights = new Float32Array(postingCount);
    c.readSection(5, bytesView(weights));
    c.finish();

    // The CRC passed; still check every invariant search relies on (a crafted file can have a
    // valid CRC): ascending terms and slots, in-range numbers, finite positive weights.
    const ids = decodeIds(file, idLens, idBytes);
    const index = new SparseIndex({ vocabSize, modelId });
    // The CSR covers the terms that occur, not the vocabulary.
    const off = new Int32Array(termCount + 1);
    const max = new Float32Array(termCount);
    index.mOff = off;
    index.mMax = max;
    const nnz = new Int32Array(Math.max(16, docCount));
    let p = 0;
    let prevTerm = -1;
    for (let i = 0; i < termCount; i++) {
      const t = termIds[i];
      const len = termLens[i];
      if (t <= prevTerm || t >= vocabSize) corrupt(file, `term ids not strictly ascending below ${vocabSize} at entry ${i}`);
      if (len === 0 || len > postingCount - p) corrupt(file, `posting-list length ${len} of term ${t} is invalid`);
      off[i] = p;
      index.terms.intern(t);
      prevTerm = t;
      let prev = -1;
      let m = 0;
      const end = p + len;
      for (; p < end; p++) {
        const d = docs[p];
        const w = weights[p];
        if (d <= prev || d >= docCount) corrupt(file, `postings of term ${t} are not ascending document numbers below ${docCount}`);
        if (!(w > 0) || w === Infinity) corrupt(file, `weight ${w} of term ${t} is not finite and positive`);
        prev = d;
        if (w > m) m = w;
        nnz[d]++;
      }
      max[i] = m;
    }
    if (p !== postingCount) corrupt(file, 'posting-list lengths do not add up to the posting count');
    off[termCount] = p;
    index.installMain(off, docs, weights, max, ids, nnz);
    index.livePostings = postingCount;
    return index;
  }
}
