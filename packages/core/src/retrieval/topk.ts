/**
 * Bounded top-k selection shared by the indexes.
 *
 * Results are ordered by score descending, then by id ascending (JS string order), so that equal
 * scores give a deterministic order that does not depend on insertion order or internal slots.
 * The heap keeps the *worst* kept entry on top, so "can this candidate still enter?" is one compare.
 */

/** A search hit: a document id and its score (higher is better). */
export interface ScoredId {
  id: string;
  score: number;
}

/** Sorts hits in place: score descending, then id ascending. */
export function sortHits<T extends ScoredId>(hits: T[]): T[] {
  return hits.sort((a, b) => (b.score - a.score) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A min-heap of (score, slot) pairs where ties are broken by the slot's id. */
export class TopK {
  readonly capacity: number;
  size = 0;
  private readonly scores: Float64Array;
  private readonly slots: Int32Array;
  private readonly ids: ArrayLike<string | undefined>;

  /** `ids[slot]` gives the id used to break score ties. */
  constructor(capacity: number, ids: ArrayLike<string | undefined>) {
    this.capacity = capacity;
    this.scores = new Float64Array(capacity);
    this.slots = new Int32Array(capacity);
    this.ids = ids;
  }

  get full(): boolean {
    return this.size === this.capacity;
  }

  /** The score of the worst kept entry once full, else -Infinity (anything can enter). */
  get threshold(): number {
    return this.size === this.capacity ? this.scores[0] : Number.NEGATIVE_INFINITY;
  }

  // a is worse than b: lower score, or equal score and larger id.
  private worse(sa: number, ia: number, sb: number, ib: number): boolean {
    if (sa !== sb) return sa < sb;
    return (this.ids[ia] as string) > (this.ids[ib] as string);
  }

  /** Whether (score, slot) would be kept if pushed now. */
  accepts(score: number, slot: number): boolean {
    if (this.size < this.capacity) return true;
    return this.worse(this.scores[0], this.slots[0], score, slot);
  }

  /** Adds (score, slot), evicting the worst entry when full. Call only when {@link accepts}. */
  push(score: number, slot: number): void {
    const s = this.scores;
    const o = this.slots;
    if (this.size < this.capacity) {
      // sift up
      let i = this.size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!this.worse(score, slot, s[p], o[p])) break;
        s[i] = s[p];
        o[i] = o[p];
        i = p;
      }
      s[i] = score;
      o[i] = slot;
      return;
    }
    // replace the root and sift down
    const n = this.size;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.worse(s[r], o[r], s[l], o[l]) ? r : l;
      if (!this.worse(s[c], o[c], score, slot)) break;
      s[i] = s[c];
      o[i] = o[c];
      i = c;
    }
    s[i] = score;
    o[i] = slot;
  }

  /** The kept entries, best first. */
  toHits(): ScoredId[] {
    const out: ScoredId[] = new Array(this.size);
    for (let i = 0; i < this.size; i++) out[i] = { id: this.ids[this.slots[i]] as string, score: this.scores[i] };
    return sortHits(out);
  }
}
