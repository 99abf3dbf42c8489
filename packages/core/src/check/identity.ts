/**
 * Which reference a check may apply. BAAI's published figures belong to BAAI/bge-m3 and to no
 * other model: a fixture, a fine-tune or another architecture computes other numbers, and
 * comparing them would either fail for no fault or, worse, "verify" against figures that are
 * not the model's. The decision never uses a file path.
 */
import { BGE_M3_REFERENCE, BGE_M3_SHAPE, BGE_M3_WEIGHT_REPOS, MODEL_CARD_SENTENCES_1, MODEL_CARD_TOKENS } from './published.js';
import type { CheckReference } from './reference.js';
import type { CheckEncoder, ReferenceBasis } from './types.js';

/** The outcome: the reference to compare with, or none, and why. */
export interface ReferenceDecision {
  reference: CheckReference | undefined;
  basis: ReferenceBasis | undefined;
  reason: string;
}

/** The Hub repo of a `hub:<repo>@<commit>:<file>` model id, if it is one. */
export function hubRepoOf(modelId: string): string | undefined {
  const m = /^hub:([^@\s]+)@/.exec(modelId);
  return m ? m[1] : undefined;
}

/** How the encoder's tokenizer splits the model card's `sentences_1`, as `convert_id_to_token` names the pieces. */
async function exampleTokens(encoder: CheckEncoder): Promise<string[][]> {
  const tokenized = await encoder.tokenize(MODEL_CARD_SENTENCES_1, Math.min(64, encoder.maxPositions ?? 64));
  return Promise.all(tokenized.map((t) => Promise.all(Array.from(t.ids.subarray(1, t.ids.length - 1), (id) => encoder.tokenizer.decodeId(id)))));
}

/**
 * Decides whether BAAI's published example applies to `encoder`:
 * 1. loaded from a Hub repo with BAAI/bge-m3's weights (BAAI/bge-m3, or Xenova/bge-m3 for q8): applies;
 * 2. otherwise (a local directory, another repo), when the model has BGE-M3's shape (dense and
 *    ColBERT dimension 1024, vocabulary 250002, 8192 positions) and its tokenizer splits the
 *    example texts into exactly the tokens of the published lexical weights: applies, as an
 *    assumption stated in the result (a fine-tune of BGE-M3 passes this test too, and then
 *    fails the comparison; it should be checked against figures of its own);
 * 3. otherwise none applies, and the reason lists what differs.
 */
export async function decidePublishedReference(encoder: CheckEncoder): Promise<ReferenceDecision> {
  const repo = hubRepoOf(encoder.modelId);
  if (repo && BGE_M3_WEIGHT_REPOS.some((r) => r.toLowerCase() === repo.toLowerCase())) {
    return { reference: BGE_M3_REFERENCE, basis: 'hub-repo', reason: `loaded from the Hub repo ${repo}, whose weights are BAAI/bge-m3's` };
  }
  const differs: string[] = [];
  const colbertDim = encoder.colbertDim ?? encoder.dim;
  if (encoder.dim !== BGE_M3_SHAPE.dim) differs.push(`dense dimension ${encoder.dim}, not ${BGE_M3_SHAPE.dim}`);
  if (colbertDim !== BGE_M3_SHAPE.colbertDim) differs.push(`ColBERT dimension ${colbertDim}, not ${BGE_M3_SHAPE.colbertDim}`);
  if (encoder.vocabSize !== BGE_M3_SHAPE.vocabSize) differs.push(`vocabulary ${encoder.vocabSize}, not ${BGE_M3_SHAPE.vocabSize}`);
  if (encoder.maxPositions !== undefined && encoder.maxPositions !== BGE_M3_SHAPE.maxPositions) {
    differs.push(`${encoder.maxPositions} positions, not ${BGE_M3_SHAPE.maxPositions}`);
  }
  const tokens = await exampleTokens(encoder);
  tokens.forEach((got, i) => {
    const want = MODEL_CARD_TOKENS[i];
    if (got.length !== want.length || got.some((t, k) => t !== want[k])) {
      differs.push(`its tokenizer splits ${JSON.stringify(MODEL_CARD_SENTENCES_1[i])} into ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
    }
  });
  if (differs.length === 0) {
    return {
      reference: BGE_M3_REFERENCE,
      basis: 'model-identity',
      reason:
        "not loaded from the BAAI/bge-m3 repo, but it has BGE-M3's shape and BAAI's tokenizer, so it is compared as BAAI/bge-m3 " +
        '(a fine-tuned model differs by design: check it against its own figures)',
    };
  }
  return {
    reference: undefined,
    basis: undefined,
    reason: `the published figures belong to BAAI/bge-m3, and this model is not it: ${differs.join('; ')}`,
  };
}
