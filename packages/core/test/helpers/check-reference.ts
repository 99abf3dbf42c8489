// Reference figures for `checkModel` built from the fixture's golden.json, i.e. from FlagEmbedding's own
// outputs for tiny-m3-A: its encode_scores matrices, its convert_id_to_token dicts, and (where golden.json
// has no ready figure) FlagEmbedding's formulas applied to its golden outputs.
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import onnxProto from 'onnx-proto';
import { toFloat16Bits, fromFloat16Bits } from '../../src/retrieval/float16.ts';
import { FIXTURE, golden } from './fixture.ts';

/** compute_lexical_matching_score on two id-keyed golden dicts. */
export function lexicalScore(a: Record<string, number>, b: Record<string, number>): number {
  let s = 0;
  for (const [id, w] of Object.entries(a)) if (id in b) s += w * b[id];
  return s;
}

/** colbert_score on two golden ColBERT matrices (rows of numbers). */
export function colbertScoreOf(q: number[][], p: number[][]): number {
  let total = 0;
  for (const qi of q) {
    let best = Number.NEGATIVE_INFINITY;
    for (const pj of p) {
      let s = 0;
      for (let k = 0; k < qi.length; k++) s += qi[k] * pj[k];
      best = Math.max(best, s);
    }
    total += best;
  }
  return total / q.length;
}

const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);

/**
 * The model card's figures for tiny-m3-A. golden.json's texts 0-1 are the model card's sentences_1 and its
 * passages 0-1 (= texts 2-3) its sentences_2, so encode_scores[q][p] for q, p < 2 are the figures themselves.
 */
export function modelCardReference(): Record<string, unknown> {
  const g = golden();
  const es = g.encode_scores;
  return {
    model: 'tiny-m3-A',
    source: 'test/fixtures/tiny-m3-A/golden.json (FlagEmbedding 1.4.0 M3Embedder, CPU, fp32)',
    precision: 'fp32',
    sentences_1: [g.texts[0], g.texts[1]],
    sentences_2: [g.passages[0], g.passages[1]],
    dense_similarity: [
      [es.dense[0][0], es.dense[0][1]],
      [es.dense[1][0], es.dense[1][1]],
    ],
    lexical_weights: [g.lexical_tokens[0], g.lexical_tokens[1]],
    lexical_matching_score: [
      { query: 'sentences_1[0]', passage: 'sentences_2[0]', value: es.sparse[0][0] },
      // not among golden's query × passage scores: FlagEmbedding's formula on its lexical weights
      { query: 'sentences_1[0]', passage: 'sentences_1[1]', value: lexicalScore(g.lexical_weights[0], g.lexical_weights[1]) },
    ],
    colbert_score: [
      { query: 'sentences_1[0]', passage: 'sentences_2[0]', value: es.colbert[0][0] },
      { query: 'sentences_1[0]', passage: 'sentences_2[1]', value: es.colbert[0][1] },
    ],
  };
}

/**
 * A wider reference over golden texts `s1` × `s2` (indices into golden.texts, ColBERT ≤ 96 vectors): dense
 * similarities from golden dense vectors, lexical weights = golden lexical_tokens (convert_id_to_token,
 * collisions included), lexical and ColBERT scores by FlagEmbedding's formulas on golden outputs.
 */
export function goldenReference(s1: number[], s2: number[]): Record<string, unknown> {
  const g = golden();
  const ref = (list: 1 | 2, i: number) => `sentences_${list}[${i}]`;
  const lexical: unknown[] = [];
  const colbert: unknown[] = [];
  s1.forEach((a, i) =>
    s2.forEach((b, j) => {
      lexical.push({ query: ref(1, i), passage: ref(2, j), value: lexicalScore(g.lexical_weights[a], g.lexical_weights[b]) });
      colbert.push({ query: ref(1, i), passage: ref(2, j), value: colbertScoreOf(g.colbert[a], g.colbert[b]) });
    }),
  );
  return {
    model: 'tiny-m3-A',
    source: 'golden.json',
    precision: 'fp32',
    sentences_1: s1.map((i) => g.texts[i]),
    sentences_2: s2.map((i) => g.texts[i]),
    dense_similarity: s1.map((a) => s2.map((b) => dot(g.dense[a], g.dense[b]))),
    lexical_weights: s1.map((i) => g.lexical_tokens[i]),
    lexical_matching_score: lexical,
    colbert_score: colbert,
  };
}

/** A copy of the fixture's backbone layout (onnx/model.onnx + data, heads, tokenizer, config) in `dir`. */
export function copyFixture(dir: string): string {
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'colbert_linear.pt', 'sparse_linear.pt']) cpSync(join(FIXTURE, f), join(dir, f));
  for (const f of ['model.onnx', 'model.onnx_data']) cpSync(join(FIXTURE, 'onnx', f), join(dir, 'onnx', f));
  return dir;
}

/** Adds `delta` to the sparse head's bias in `dir`/sparse_linear.pt (fp16, as torch stores it). */
export function shiftSparseBias(dir: string, delta: number): { before: number; after: number } {
  const file = join(dir, 'sparse_linear.pt');
  const entries = unzipSync(readFileSync(file));
  const name = Object.keys(entries).find((n) => /\/data\/\d+$/.test(n) && entries[n].length === 2);
  if (!name) throw new Error('no 2-byte bias storage in sparse_linear.pt');
  const dv = new DataView(entries[name].buffer, entries[name].byteOffset, 2);
  const before = fromFloat16Bits(dv.getUint16(0, true));
  dv.setUint16(0, toFloat16Bits(before + delta), true);
  writeFileSync(file, zipSync(entries, { level: 0 }));
  return { before, after: fromFloat16Bits(dv.getUint16(0, true)) };
}

/** Byte range of an initializer in the external-data file of `dir`/onnx/model.onnx. */
export function initializerRange(dir: string, nameContains: string): { offset: number; length: number } {
  const model = onnxProto.onnx.ModelProto.decode(readFileSync(join(dir, 'onnx', 'model.onnx')));
  const t = model.graph!.initializer!.find((i) => i.name!.includes(nameContains));
  if (!t) throw new Error(`no initializer named like ${nameContains}`);
  const kv = Object.fromEntries(t.externalData!.map((e) => [e.key, e.value]));
  return { offset: Number(kv.offset ?? 0), length: Number(kv.length) };
}

/** Applies `f(value, column)` to the float32 values of row `row` (of `width` floats) of an external initializer. */
export function editInitializerRow(dir: string, nameContains: string, row: number, width: number, f: (x: number, k: number) => number): void {
  const { offset } = initializerRange(dir, nameContains);
  const file = join(dir, 'onnx', 'model.onnx_data');
  const bytes = readFileSync(file);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let k = 0; k < width; k++) {
    const at = offset + (row * width + k) * 4;
    dv.setFloat32(at, f(dv.getFloat32(at, true), k), true);
  }
  writeFileSync(file, bytes);
}
