/**
 * `config.json` of a model (transformers' XLM-RoBERTa config): read, and every value this package
 * uses checked against sane bounds, so that a damaged or hostile file is refused with a message
 * naming the file and the field instead of turning into a huge allocation or an odd error later
 * (e.g. `vocab_size: 2^30` used to make an index reserve 12 GB; `max_position_embeddings: -1`
 * surfaced as "maxLength must be an integer from 2 to -3").
 */
import { readFileSync } from 'node:fs';
import { M3Error } from '../errors.js';

/** The fields used, after validation; absent when the file (or the field) is absent. */
export interface ModelConfig {
  hiddenSize?: number;
  numAttentionHeads?: number;
  /** `max_position_embeddings`: the longest input is this minus 2 (XLM-R's padding offset). */
  maxPositionEmbeddings?: number;
  vocabSize?: number;
}

/** Largest accepted `vocab_size`: 16× BGE-M3's 250,002 and above every published tokenizer. */
export const MAX_VOCAB_SIZE = 2 ** 22;
/** Largest accepted `max_position_embeddings` (BGE-M3: 8,194). */
export const MAX_POSITION_EMBEDDINGS = 2 ** 20 + 2;
/** Largest accepted `hidden_size` (BGE-M3: 1,024). */
export const MAX_HIDDEN_SIZE = 65536;

const BOUNDS = {
  hidden_size: [1, MAX_HIDDEN_SIZE, ''],
  num_attention_heads: [1, 1024, ''],
  max_position_embeddings: [4, MAX_POSITION_EMBEDDINGS, ' (the longest input is this minus 2)'],
  vocab_size: [1, MAX_VOCAB_SIZE, ''],
} as const;

/** Reads and validates `config.json`; `{}` without a path. */
export function readModelConfig(path: string | undefined): ModelConfig {
  if (!path) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new M3Error('MODEL_FILE_INVALID', `${path} is not valid JSON`, { file: path, cause });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new M3Error('MODEL_FILE_INVALID', `${path} must hold a JSON object (a transformers model config)`, { file: path });
  }
  const cfg = raw as Record<string, unknown>;
  const field = (name: keyof typeof BOUNDS): number | undefined => {
    const v = cfg[name];
    if (v === undefined || v === null) return undefined;
    const [lo, hi, why] = BOUNDS[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
      throw new M3Error('MODEL_FILE_INVALID', `${path}: ${name} must be an integer from ${lo} to ${hi}${why}, got ${JSON.stringify(v)}`, { file: path });
    }
    return v;
  };
  const out: ModelConfig = {};
  const hidden = field('hidden_size');
  const heads = field('num_attention_heads');
  const positions = field('max_position_embeddings');
  const vocab = field('vocab_size');
  if (hidden !== undefined && heads !== undefined && hidden % heads !== 0) {
    throw new M3Error('MODEL_FILE_INVALID', `${path}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`, { file: path });
  }
  if (hidden !== undefined) out.hiddenSize = hidden;
  if (heads !== undefined) out.numAttentionHeads = heads;
  if (positions !== undefined) out.maxPositionEmbeddings = positions;
  if (vocab !== undefined) out.vocabSize = vocab;
  return out;
}
