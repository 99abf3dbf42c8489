/**
 * How far one encoder's figures are from another's on the same texts: the measurement behind
 * the q8 tolerance (fp32 vs int8 backbone of the same model), usable on any pair of models.
 */
import { invalidArgument } from '../errors.js';
import { colbertScore, denseScore } from '../scoring/scores.js';
import type { EncodeResult, TextEncoder3 } from '../types.js';

/** Largest differences between two encoders' figures over every pair of the given texts. */
export interface DriftReport {
  texts: number;
  /** max |dense_a(i,j) − dense_b(i,j)| over all ordered pairs (i, j). */
  denseSimilarity: number;
  /** max |colbert_a(i,j) − colbert_b(i,j)| over all ordered pairs (i, j). */
  colbertScore: number;
  /** max |w_a − w_b| over every token of every text (a token one side lacks counts as 0 there). */
  lexicalWeight: number;
  /** Tokens whose weight is > 0 on one side only (near-zero weights crossing relu's threshold). */
  thresholdFlips: number;
  /** min cosine between the two encoders' dense vectors of the same text. */
  minDenseCosine: number;
}

/**
 * Encodes `texts` with both encoders (all three outputs) and reports the largest deviations of
 * the figures `checkModel` compares. `a` is the baseline (e.g. the fp32 model), `b` the model
 * under test (e.g. its int8 backbone).
 */
export async function measureDrift(a: TextEncoder3, b: TextEncoder3, texts: readonly string[], options: { maxLength?: number } = {}): Promise<DriftReport> {
  if (!Array.isArray(texts) || texts.length === 0) invalidArgument('measureDrift needs at least one text');
  const want = { dense: true, sparse: true, colbert: true, ...(options.maxLength ? { maxLength: options.maxLength } : {}) };
  const A = await a.encode(texts, want);
  const B = await b.encode(texts, want);
  const full = (r: EncodeResult, who: string) => {
    if (!r.dense || !r.sparse || !r.colbert) invalidArgument(`${who} did not return dense, sparse and ColBERT outputs`);
    return r as Required<EncodeResult>;
  };
  const fa = A.map((r) => full(r, 'encoder a'));
  const fb = B.map((r) => full(r, 'encoder b'));
  const report: DriftReport = { texts: texts.length, denseSimilarity: 0, colbertScore: 0, lexicalWeight: 0, thresholdFlips: 0, minDenseCosine: 1 };
  for (let i = 0; i < texts.length; i++) {
    report.minDenseCosine = Math.min(report.minDenseCosine, denseScore(fa[i].dense, fb[i].dense));
    const wa = new Map<number, number>();
    fa[i].sparse.indices.forEach((id, k) => wa.set(id, fa[i].sparse.values[k]));
    const wb = new Map<number, number>();
    fb[i].sparse.indices.forEach((id, k) => wb.set(id, fb[i].sparse.values[k]));
    for (const id of new Set([...wa.keys(), ...wb.keys()])) {
      if (wa.has(id) !== wb.has(id)) report.thresholdFlips++;
      report.lexicalWeight = Math.max(report.lexicalWeight, Math.abs((wa.get(id) ?? 0) - (wb.get(id) ?? 0)));
    }
    for (let j = 0; j < texts.length; j++) {
      report.denseSimilarity = Math.max(report.denseSimilarity, Math.abs(denseScore(fa[i].dense, fa[j].dense) - denseScore(fb[i].dense, fb[j].dense)));
      report.colbertScore = Math.max(report.colbertScore, Math.abs(colbertScore(fa[i].colbert, fa[j].colbert) - colbertScore(fb[i].colbert, fb[j].colbert)));
    }
  }
  return report;
}
