/**
 * BAAI's published example for BAAI/bge-m3: the only copy of these figures in the project.
 *
 * Source: the BAAI/bge-m3 model card (https://huggingface.co/BAAI/bge-m3, the usage examples;
 * the same text is FlagEmbedding's `research/BGE_M3/README.md`), computed by FlagEmbedding with
 * `BGEM3FlagModel('BAAI/bge-m3', use_fp16=True)`, i.e. in fp16 on a GPU. vLLM's BGE-M3 server
 * test asserts the same values. The figures are copied as printed there (numpy prints fp16
 * values with the fewest digits that identify them, hence `0.678` beside `0.6265`).
 */
import type { CheckReference } from './reference.js';

/**
 * The model card's `sentences_1`. "Defination" is misspelt on the model card and must stay so:
 * the published figures are for this exact text.
 */
export const MODEL_CARD_SENTENCES_1: readonly string[] = Object.freeze(['What is BGE M3?', 'Defination of BM25']);

/** The model card's `sentences_2`. */
export const MODEL_CARD_SENTENCES_2: readonly string[] = Object.freeze([
  'BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.',
  'BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document',
]);

/**
 * The tokens of `sentences_1` as `convert_id_to_token` names them, in text order (the order of
 * the model card's dicts; a JS object would list '3' and '25' first). BAAI/bge-m3's tokenizer
 * splits the texts exactly so; it is part of how a local copy of the model is recognised.
 */
export const MODEL_CARD_TOKENS: readonly (readonly string[])[] = Object.freeze([
  Object.freeze(['What', 'is', 'B', 'GE', 'M', '3', '?']),
  Object.freeze(['De', 'fin', 'ation', 'of', 'BM', '25']),
]);

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** BAAI's published figures for BAAI/bge-m3, in the reference-file format (see {@link CheckReference}). */
export const BGE_M3_REFERENCE: CheckReference = deepFreeze<CheckReference>({
  model: 'BAAI/bge-m3',
  source:
    "BAAI/bge-m3 model card (https://huggingface.co/BAAI/bge-m3), usage examples: FlagEmbedding BGEM3FlagModel('BAAI/bge-m3', use_fp16=True)",
  precision: 'fp16',
  sentences_1: [...MODEL_CARD_SENTENCES_1],
  sentences_2: [...MODEL_CARD_SENTENCES_2],
  // embeddings_1 @ embeddings_2.T
  dense_similarity: [
    [0.6265, 0.3477],
    [0.3499, 0.678],
  ],
  // model.convert_id_to_token(output_1['lexical_weights'])
  lexical_weights: [
    { What: 0.08356, is: 0.0814, B: 0.1296, GE: 0.252, M: 0.1702, '3': 0.2695, '?': 0.04092 },
    { De: 0.05005, fin: 0.1368, ation: 0.04498, of: 0.0633, BM: 0.2515, '25': 0.3335 },
  ],
  // model.compute_lexical_matching_score(output_1['lexical_weights'][0], …)
  lexical_matching_score: [
    { query: 'sentences_1[0]', passage: 'sentences_2[0]', value: 0.19554901123046875 },
    { query: 'sentences_1[0]', passage: 'sentences_1[1]', value: 0.0 },
  ],
  // model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][…])
  colbert_score: [
    { query: 'sentences_1[0]', passage: 'sentences_2[0]', value: 0.7797 },
    { query: 'sentences_1[0]', passage: 'sentences_2[1]', value: 0.462 },
  ],
});

/** Hub repos whose weights are BAAI/bge-m3's (Xenova's holds the int8 `q8` graph of the same model). */
export const BGE_M3_WEIGHT_REPOS: readonly string[] = Object.freeze(['BAAI/bge-m3', 'Xenova/bge-m3']);

/** BAAI/bge-m3's shape, as the encoder reports it. */
export const BGE_M3_SHAPE = Object.freeze({ dim: 1024, colbertDim: 1024, vocabSize: 250002, maxPositions: 8192 });
