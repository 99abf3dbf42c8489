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
  private readonly tok: Tokenizer;

  private constructor(tok: Tokenizer, special: SpecialIds) {
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
    try {
      JSON.parse(raw); // a clearer message than the native parser's for truncated files
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
    return new M3Tokenizer(tok, special);
  }

  /** Tokenises texts with `<s> … </s>` and FlagEmbedding's truncation. Order is kept. */
  async encode(texts: readonly string[], maxLength: number): Promise<TokenizedText[]> {
    if (!Number.isInteger(maxLength) || maxLength < 2) invalidArgument(`maxLength must be an integer ≥ 2, got ${maxLength}`);
    if (texts.length === 0) return [];
    // Lone UTF-16 surrogates cannot cross into Rust as UTF-8; replace them by U+FFFD explicitly
    // (what the binding would do silently) so the behaviour is defined and documented.
    const clean = texts.map((t) => (t.isWellFormed() ? t : t.toWellFormed()));
    const encodings = await this.tok.encodeBatch(clean, { addSpecialTokens: false });
    const keep = maxLength - 2;
    return encodings.map((e) => {
      const pieces = e.getIds();
      const n = Math.min(pieces.length, keep);
      const ids = new Int32Array(n + 2);
      ids[0] = this.special.cls;
      for (let i = 0; i < n; i++) ids[i + 1] = pieces[i];
      ids[n + 1] = this.special.eos;
      return { ids, truncated: pieces.length > keep };
    });
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
