/**
 * Tokenisation identical to the Hugging Face fast tokenizer that FlagEmbedding uses.
 *
 * We run Hugging Face's own Rust `tokenizers` (official Node bindings) on the model's
 * `tokenizer.json`, so normalisation, pre-tokenisation and the Unigram model are the reference
 * implementation itself, not a port. (The pure-JS tokenizer inside @huggingface/transformers
 * differs on emoji/zero-width text and drops `</s>` when truncating; see the fixture README.)
 *
 * Truncation is done here rather than by the tokenizer's truncation setting: the setting is
 * mutable state on a shared native object, and concurrent calls with different `maxLength`s
 * (queries vs passages) would race. The rule is HF's for one sequence with the XLM-R template:
 * `[<s>] + pieces[:maxLength-2] + [</s>]`, so `</s>` is always kept.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { M3Error, invalidArgument } from '../errors.js';

/** Characters tokenised first per piece kept; the prefix grows 4× while it gives too few pieces. */
const CHARS_PER_PIECE_GUESS = 8;
/** Most characters per native tokenizer call: its memory is ~40 bytes per character. */
const MAX_CHARS_PER_CALL = 1 << 20;

/**
 * Where a text may be cut, at or after `minChars`, so that tokenising `text.slice(0, cut)` gives
 * exactly the first pieces of tokenising `text` whole; `text.length` when there is no such point.
 *
 * Why this is exact for the XLM-R / BGE-M3 tokenizer (normalizer: Precompiled charsmap, right
 * Strip, `" {2,}"` → `▁`; pre-tokenizer: Metaspace, which splits at spaces; model: Unigram, run
 * on each word alone): the cut is just before a U+0020 that starts a run of spaces and is not
 * followed by a combining character. The charsmap works per grapheme cluster and a space always
 * begins a new cluster (unless a combining mark follows it, which is excluded), so every
 * character before the cut normalises as in the whole text; the space (run) is a word boundary in
 * both; the right Strip only removes what would follow the last word; and each word before the
 * cut is segmented by Unigram on its own. The pieces of the prefix are therefore a prefix of the
 * pieces of the whole text (asserted against whole-text tokenisation in the tests, over texts
 * with CJK, emoji, combining marks and every kind of whitespace at the cut).
 *
 * With `unspacedPairs` (text in scripts written without spaces), a cut may also fall between two
 * such characters that no vocabulary piece holds next to each other: see {@link UnspacedPairs}.
 */
export function cutPoint(text: string, minChars: number, unspacedPairs?: UnspacedPairs): number {
  if (text.length <= minChars) return text.length;
  for (let c = Math.max(1, minChars); c < text.length; c++) {
    const code = text.charCodeAt(c);
    if (code === 0x20) {
      if (text.charCodeAt(c - 1) === 0x20) continue; // inside a run: its start was before minChars
      if (JOINS_NEXT.test(text.slice(Math.max(0, c - 2), c))) continue; // a Prepend character takes the space into its cluster
      if (c + 1 < text.length && JOINS_PREVIOUS.test(text.slice(c + 1, c + 3))) continue; // a mark joining the space's cluster
      return c;
    }
    if (unspacedPairs && isUnspaced(code) && isUnspaced(text.charCodeAt(c - 1)) && unspacedPairs.safeBetween(text, c)) return c;
    if (!unspacedPairs) {
      // Only spaces can be cut points: jump to the next one.
      const next = text.indexOf(' ', c + 1);
      if (next === -1) return text.length;
      c = next - 1;
    }
  }
  return text.length;
}

/**
 * A BMP character from U+0E00 on (Thai, Lao, Tibetan, Myanmar, Khmer, CJK, kana, Hangul
 * syllables, …: the scripts written without spaces start there), not a surrogate and not a Hangul
 * jamo (jamo join a syllable into one grapheme cluster and compose with it).
 */
function isUnspaced(code: number): boolean {
  if (code < 0x0e00 || code > 0xffff || (code >= 0xd800 && code <= 0xdfff)) return false;
  return !((code >= 0x1100 && code <= 0x11ff) || (code >= 0xa960 && code <= 0xa97f) || (code >= 0xd7b0 && code <= 0xd7ff));
}

/**
 * Cut points inside a word of a script written without spaces (Chinese, Japanese, Thai, …). Unigram segments a word by Viterbi
 * over a lattice whose edges are the vocabulary pieces found in it. When no piece contains the
 * two characters around position `c` next to each other, no edge crosses `c`: every segmentation
 * of the whole word has a node at `c`, the best one included, and its part before `c` is the best
 * segmentation of the part before `c`, which is what tokenising the prefix computes (the forward
 * pass up to `c` is the same, ties included). Both characters must also be their own NFKC form and
 * grapheme clusters of their own, so that normalisation before `c` is the same in both.
 *
 * Holds the adjacent pairs of such characters that occur inside some vocabulary piece, sorted.
 */
export class UnspacedPairs {
  private constructor(private readonly keys: Float64Array) {}

  /** From the vocabulary pieces (`model.vocab` of a Unigram tokenizer.json). */
  static fromPieces(pieces: Iterable<string>): UnspacedPairs {
    const keys: number[] = [];
    for (const piece of pieces) {
      for (let i = 1; i < piece.length; i++) {
        const a = piece.charCodeAt(i - 1);
        const b = piece.charCodeAt(i);
        if (isUnspaced(a) && isUnspaced(b)) keys.push(a * 0x10000 + b);
      }
    }
    const sorted = Float64Array.from(new Set(keys)).sort();
    return new UnspacedPairs(sorted);
  }

  get size(): number {
    return this.keys.length;
  }

  private has(a: number, b: number): boolean {
    const key = a * 0x10000 + b;
    let lo = 0;
    let hi = this.keys.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const k = this.keys[mid];
      if (k === key) return true;
      if (k < key) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  /** Whether `text` may be cut between `c - 1` and `c` (both {@link isUnspaced} characters). */
  safeBetween(text: string, c: number): boolean {
    const a = text[c - 1];
    const b = text[c];
    if (this.has(a.charCodeAt(0), b.charCodeAt(0))) return false; // a piece spans the two
    if (a.normalize('NFKC') !== a || b.normalize('NFKC') !== b) return false; // e.g. U+3000, half-width kana
    if (JOINS_PREVIOUS.test(b) || JOINS_NEXT.test(a)) return false; // one grapheme cluster
    // A combining mark after `b` would change nothing before `c`; one after `a` is `b` itself (excluded).
    return true;
  }
}

/**
 * True for the pipeline {@link cutPoint} is proven for: a Unigram model, a Metaspace
 * pre-tokenizer that splits, and normalizers among Precompiled, right Strip and the `" {2,}"`
 * Replace (BGE-M3 and XLM-R's tokenizer.json).
 */
function isXlmRobertaPipeline(json: unknown): boolean {
  const j = json as { model?: { type?: unknown }; pre_tokenizer?: { type?: unknown; split?: unknown }; normalizer?: unknown };
  if (j?.model?.type !== 'Unigram') return false;
  if (j.pre_tokenizer?.type !== 'Metaspace' || j.pre_tokenizer.split === false) return false;
  const n = j.normalizer as { type?: unknown; normalizers?: unknown[] } | null | undefined;
  const list = n == null ? [] : n.type === 'Sequence' ? (n.normalizers ?? []) : [n];
  return list.every((x) => {
    const y = x as { type?: unknown; strip_left?: unknown; pattern?: { Regex?: unknown; String?: unknown } };
    if (y?.type === 'Precompiled') return true;
    if (y?.type === 'Strip') return y.strip_left === false;
    if (y?.type === 'Replace') return y.pattern?.Regex === ' {2,}';
    return false;
  });
}

/** Grapheme-cluster Prepend characters (UAX #29 GB9b) ending a string: they join what follows. */
const JOINS_NEXT = /[\p{Cf}\u0D4E\u{111C2}\u{111C3}\u{1193F}\u{11941}\u{11A3A}\u{11A84}-\u{11A89}\u{11D46}]$/u;
/** Characters that join the preceding cluster (Extend, ZWJ, SpacingMark, emoji modifiers: GB9, GB9a), or a format character. */
const JOINS_PREVIOUS = /^[\p{M}\p{Cf}\p{Emoji_Modifier}\u0E33\u0EB3]/u;

/** Token ids of one text after truncation. */
export interface TokenizedText {
  ids: Int32Array;
  /** True when pieces were dropped to fit `maxLength`. */
  truncated: boolean;
}

/** Special token ids, read from the tokenizer files (XLM-R: `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3). */
export interface SpecialIds {
  cls: number;
  eos: number;
  pad: number;
  unk: number;
}

function readJson(path: string): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (cause) {
    throw new M3Error('MODEL_FILE_INVALID', `${path} is not valid JSON: ${(cause as Error).message}`, { file: path, cause });
  }
}

function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

/** The M3 tokenizer: ids as FlagEmbedding's `tokenizer(text, truncation=True, max_length=…)` gives them. */
export class M3Tokenizer {
  readonly special: SpecialIds;
  readonly vocabSize: number;
  /** @internal Characters handed to the native tokenizer so far (tests check the work is bounded). */
  charsTokenized = 0;
  private readonly tok: Tokenizer;

  /**
   * Whether {@link cutPoint}'s argument holds for this tokenizer's pipeline (XLM-R's); when not,
   * every text is tokenised whole (still at most {@link MAX_CHARS_PER_CALL} characters per call).
   */
  readonly prefixSafe: boolean;
  /** Cut points inside words of unspaced scripts (see {@link UnspacedPairs}); undefined when {@link prefixSafe} is false. */
  private readonly unspacedPairs: UnspacedPairs | undefined;

  private constructor(tok: Tokenizer, special: SpecialIds, prefixSafe: boolean, unspacedPairs: UnspacedPairs | undefined) {
    this.prefixSafe = prefixSafe;
    this.unspacedPairs = unspacedPairs;
    this.tok = tok;
    this.special = special;
    this.vocabSize = tok.getVocabSize(true);
  }

  /**
   * Loads `tokenizer.json` (and `tokenizer_config.json` beside it, when present, for the names
   * of the special tokens).
   */
  static load(tokenizerJsonPath: string): M3Tokenizer {
    let raw: string;
    try {
      raw = readFileSync(tokenizerJsonPath, 'utf8');
    } catch (cause) {
      throw new M3Error('MODEL_NOT_FOUND', `tokenizer file not found: ${tokenizerJsonPath}`, { file: tokenizerJsonPath, cause });
    }
    let tok: Tokenizer;
    let json: unknown;
    try {
      json = JSON.parse(raw); // a clearer message than the native parser's for truncated files
      tok = Tokenizer.fromString(raw);
    } catch (cause) {
      throw new M3Error(
        'MODEL_FILE_INVALID',
        `${tokenizerJsonPath} is not a valid Hugging Face tokenizer.json (${(cause as Error).message}); re-download the model files`,
        { file: tokenizerJsonPath, cause },
      );
    }
    const cfg = readJson(join(dirname(tokenizerJsonPath), 'tokenizer_config.json')) ?? {};
    const idOf = (key: string, fallback: string): number => {
      const name = tokenName(cfg[key]) ?? fallback;
      const id = tok.tokenToId(name);
      if (id === null || id === undefined) {
        throw new M3Error('MODEL_FILE_INVALID', `${tokenizerJsonPath} has no id for the special token ${name} (${key})`, {
          file: tokenizerJsonPath,
        });
      }
      return id;
    };
    const special: SpecialIds = {
      cls: idOf('cls_token', '<s>'),
      eos: idOf('eos_token', '</s>'),
      pad: idOf('pad_token', '<pad>'),
      unk: idOf('unk_token', '<unk>'),
    };
    const safe = isXlmRobertaPipeline(json);
    const vocab = (json as { model?: { vocab?: unknown } }).model?.vocab;
    const pieces = Array.isArray(vocab) ? vocab.map((v) => (Array.isArray(v) && typeof v[0] === 'string' ? v[0] : '')) : undefined;
    return new M3Tokenizer(tok, special, safe && !!pieces, safe && pieces ? UnspacedPairs.fromPieces(pieces) : undefined);
  }

  /**
   * Tokenises texts with `<s> … </s>` and FlagEmbedding's truncation. Order is kept.
   *
   * The work is bounded by `maxLength`, not by the length of the texts: a long text is tokenised
   * up to a cut point past which its first `maxLength - 2` pieces cannot change (see
   * {@link cutPoint}), and only when that prefix gives too few pieces is a longer one tried. The
   * result is exactly that of tokenising every text whole. Native calls take at most
   * {@link MAX_CHARS_PER_CALL} characters (one longer text goes alone).
   */
  async encode(texts: readonly string[], maxLength: number): Promise<TokenizedText[]> {
    if (!Number.isInteger(maxLength) || maxLength < 2) invalidArgument(`maxLength must be an integer ≥ 2, got ${maxLength}`);
    const out: TokenizedText[] = new Array(texts.length);
    const keep = maxLength - 2;
    let todo = texts.map((_, i) => i);
    let budget = this.prefixSafe ? Math.max(256, keep * CHARS_PER_PIECE_GUESS) : Infinity;
    while (todo.length > 0) {
      const retry: number[] = [];
      let group: Array<{ i: number; text: string; whole: boolean }> = [];
      let chars = 0;
      const flush = async () => {
        if (group.length === 0) return;
        const g = group;
        group = [];
        chars = 0;
        this.charsTokenized += g.reduce((n, x) => n + x.text.length, 0);
        const encodings = await this.tok.encodeBatch(
          g.map((x) => x.text),
          { addSpecialTokens: false },
        );
        encodings.forEach((e, k) => {
          const pieces = e.getIds();
          // A prefix with more than `keep` pieces decides the result; with fewer, look further.
          if (g[k].whole || pieces.length > keep) out[g[k].i] = this.withSpecials(pieces, keep);
          else retry.push(g[k].i);
        });
      };
      for (const i of todo) {
        const text = texts[i];
        const end = cutPoint(text, budget, this.unspacedPairs);
        let part = end === text.length ? text : text.slice(0, end);
        // Lone UTF-16 surrogates cannot cross into Rust as UTF-8; replace them by U+FFFD explicitly
        // (what the binding would do silently) so the behaviour is defined and documented. A cut
        // is always before a space, so it never splits a surrogate pair.
        if (!part.isWellFormed()) part = part.toWellFormed();
        if (chars > 0 && chars + part.length > MAX_CHARS_PER_CALL) await flush();
        group.push({ i, text: part, whole: end === text.length });
        chars += part.length;
      }
      await flush();
      todo = retry;
      budget *= 4;
    }
    return out;
  }

  /** `[<s>] + pieces[:keep] + [</s>]`, HF's truncation of one sequence with the XLM-R template. */
  private withSpecials(pieces: ArrayLike<number>, keep: number): TokenizedText {
    const n = Math.min(pieces.length, keep);
    const ids = new Int32Array(n + 2);
    ids[0] = this.special.cls;
    for (let i = 0; i < n; i++) ids[i + 1] = pieces[i];
    ids[n + 1] = this.special.eos;
    return { ids, truncated: pieces.length > keep };
  }

  /** FlagEmbedding's `convert_id_to_token` for one id: `tokenizer.decode([id])` ("▁What" → "What"). */
  async decodeId(id: number): Promise<string> {
    return this.tok.decode([id], false);
  }

  /** The raw vocabulary piece of an id (e.g. "▁What"), or null when out of range. */
  idToToken(id: number): string | null {
    return this.tok.idToToken(id);
  }
}
