/**
 * `checkModel`: runs BAAI's model-card example (or a reference's inputs) through an encoder,
 * compares every figure with the reference that applies, and asserts the properties every
 * BGE-M3-style model has.
 */
import { randomUUID } from 'node:crypto';
import { M3Error, invalidArgument } from '../errors.js';
import type { ModelDtype } from '../model/layout.js';
import { colbertScore, denseScore, lexicalMatchingScore } from '../scoring/scores.js';
import type { EncodeResult, FullEncodeResult, SparseVector } from '../types.js';
import { decidePublishedReference, type ReferenceDecision } from './identity.js';
import { BGE_M3_REFERENCE } from './published.js';
import { parseCheckReference, parseTextRef, type CheckReference, type CheckTextRef } from './reference.js';
import { checkTolerance, judgeFigure, toleranceClass, type CheckOutput, type CheckTolerance } from './tolerance.js';
import type { CheckEncoder, CheckFigure, CheckOptions, CheckResult } from './types.js';
import { checkOutputs, judgeOnePass, type LabelledEncoding, type UniversalCheck, type UniversalCheckName } from './universal.js';

/** How outputs are named in messages. */
export const OUTPUT_NAMES: Readonly<Record<CheckOutput, string>> = Object.freeze({
  dense_similarity: 'dense similarity',
  lexical_weight: 'lexical weight',
  lexical_matching_score: 'lexical matching score',
  colbert_score: 'ColBERT score',
});

const CHECK_TITLES: Readonly<Record<UniversalCheckName, string>> = Object.freeze({
  finite: 'non-finite output',
  'dense-unit-norm': 'dense vector not of unit norm',
  'colbert-unit-norm': 'ColBERT vector not of unit norm',
  'colbert-rows': 'wrong number of ColBERT vectors',
  'sparse-positive': 'lexical weight not > 0',
  'sparse-no-special-tokens': 'lexical weight on a special token',
  'one-forward-pass': 'more than one forward pass',
});

const ALL = { dense: true, sparse: true, colbert: true } as const;
const PROBE_ATTEMPTS = 3;

function inferDtype(modelId: string): ModelDtype {
  return /quantized/i.test(modelId) ? 'q8' : 'fp32';
}

function checkOptions(options: CheckOptions): { reference: CheckReference | 'auto' | 'none'; dtype: ModelDtype | undefined } {
  if (!options || typeof options !== 'object') invalidArgument(`checkModel options must be an object, got ${options === null ? 'null' : typeof options}`);
  const r = options.reference ?? 'auto';
  if (r !== 'auto' && r !== 'none' && (typeof r !== 'object' || r === null)) {
    invalidArgument(`checkModel: reference must be 'auto', 'none' or reference figures (see loadCheckReference), got ${JSON.stringify(r)}`);
  }
  if (options.dtype !== undefined && options.dtype !== 'fp32' && options.dtype !== 'q8') {
    invalidArgument(`checkModel: dtype must be 'fp32' or 'q8', got ${JSON.stringify(options.dtype)}`);
  }
  return { reference: typeof r === 'object' ? parseCheckReference(r, 'checkModel reference') : r, dtype: options.dtype };
}

function fmtNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  return Math.abs(x) >= 1e-3 ? String(Number(x.toFixed(5))) : x.toExponential(2);
}

/** FlagEmbedding's `convert_id_to_token` of one text: keys in text order, equal strings collide (the later id wins). */
async function tokenWeights(encoder: CheckEncoder, ids: Int32Array, sparse: SparseVector): Promise<Map<string, number>> {
  const weight = new Map<number, number>();
  sparse.indices.forEach((id, k) => weight.set(id, sparse.values[k]));
  const order: number[] = [];
  const seen = new Set<number>();
  for (const id of ids) {
    if (weight.has(id) && !seen.has(id)) {
      seen.add(id);
      order.push(id);
    }
  }
  for (const id of weight.keys()) if (!seen.has(id)) order.push(id); // not in the ids (cannot happen with M3Encoder)
  const out = new Map<string, number>();
  for (const id of order) out.set(await encoder.tokenizer.decodeId(id), weight.get(id)!);
  return out;
}

/** Encodes one new text with all three outputs and reads the encoder's pass counter around it. */
async function probeOnePass(
  encoder: CheckEncoder,
  maxLength: number,
  signal: AbortSignal | undefined,
): Promise<{ check: UniversalCheck; encoding: EncodeResult }> {
  let last: EncodeResult | undefined;
  for (let attempt = 0; attempt < PROBE_ATTEMPTS; attempt++) {
    // A text no cache can hold yet, so the encoder has to run it.
    const text = `bgem3 check ${randomUUID()}`;
    const before = encoder.stats ? { forwardPasses: encoder.stats.forwardPasses, textsEncoded: encoder.stats.textsEncoded } : undefined;
    const [r] = await encoder.encode([text], { ...ALL, maxLength, signal });
    last = r;
    const all = !!(r?.dense && r.sparse && r.colbert);
    const after = encoder.stats;
    if (!before || !after) {
      return {
        check: all
          ? { name: 'one-forward-pass', status: 'pass', detail: 'one encode call returned dense, sparse and ColBERT (this encoder exposes no forward-pass counter)' }
          : { name: 'one-forward-pass', status: 'fail', detail: 'an encode call asking for dense, sparse and ColBERT did not return all three' },
        encoding: r,
      };
    }
    const verdict = judgeOnePass(before, after, all);
    if (verdict) return { check: verdict, encoding: r };
  }
  return {
    check: {
      name: 'one-forward-pass',
      status: 'skipped',
      detail: `other texts were encoded on this encoder during each of ${PROBE_ATTEMPTS} attempts, so its pass counter could not be attributed`,
    },
    encoding: last!,
  };
}

interface Computation {
  figures: CheckFigure[];
  encodings: LabelledEncoding[];
}

/** Computes every figure of `layout` on `inputs`; compares with `layout` when `compare` is set. */
async function compute(
  encoder: CheckEncoder,
  layout: CheckReference,
  compare: { tolerance: CheckTolerance } | undefined,
  maxLength: number,
  signal: AbortSignal | undefined,
): Promise<Computation> {
  const s1 = layout.sentences_1;
  const s2 = layout.sentences_2;
  const encoded = (await encoder.encode([...s1, ...s2], { ...ALL, maxLength, signal })) as FullEncodeResult[];
  const text = (ref: CheckTextRef): FullEncodeResult => {
    const p = parseTextRef(ref)!;
    return encoded[p.list === 1 ? p.index : s1.length + p.index];
  };
  const encodings: LabelledEncoding[] = encoded.map((result, i) => ({
    label: i < s1.length ? `sentences_1[${i}]` : `sentences_2[${i - s1.length}]`,
    result,
  }));
  if (encodings.some((e) => !e.result.dense || !e.result.sparse || !e.result.colbert)) return { figures: [], encodings };

  const figures: CheckFigure[] = [];
  const add = (f: Omit<CheckFigure, 'published' | 'deviation' | 'tolerance' | 'ok'>, published: number | undefined) => {
    const fig: CheckFigure = { ...f };
    if (compare && published !== undefined) {
      const tolerance = compare.tolerance[toleranceClass(f.output)];
      const v = judgeFigure(f.value, published, tolerance);
      Object.assign(fig, { published, deviation: v.deviation, tolerance, ok: v.ok });
    }
    figures.push(fig);
  };
  const ref1 = (i: number) => `sentences_1[${i}]` as CheckTextRef;
  const ref2 = (j: number) => `sentences_2[${j}]` as CheckTextRef;

  if (layout.dense_similarity) {
    for (let i = 0; i < s1.length; i++) {
      for (let j = 0; j < s2.length; j++) {
        add(
          { output: 'dense_similarity', label: `${ref1(i)}·${ref2(j)}`, texts: [ref1(i), ref2(j)], value: denseScore(text(ref1(i)).dense, text(ref2(j)).dense) },
          layout.dense_similarity[i][j],
        );
      }
    }
  }
  if (layout.lexical_weights) {
    const tokenized = await encoder.tokenize(s1, maxLength);
    for (let i = 0; i < s1.length; i++) {
      const ours = await tokenWeights(encoder, tokenized[i].ids, text(ref1(i)).sparse);
      const published = layout.lexical_weights[i];
      const tokens = [...ours.keys(), ...(compare ? Object.keys(published).filter((t) => !ours.has(t)) : [])];
      for (const token of tokens) {
        const has = Object.hasOwn(published, token);
        const produced = ours.has(token);
        const f: Omit<CheckFigure, 'published' | 'deviation' | 'tolerance' | 'ok'> = {
          output: 'lexical_weight',
          label: `${ref1(i)} ${JSON.stringify(token).replace(/^"|"$/g, "'")}`,
          texts: [ref1(i)],
          token,
          value: ours.get(token) ?? 0,
        };
        if (compare && !produced) f.note = 'not produced by the model';
        else if (compare && !has) f.note = 'not in the reference';
        add(f, compare ? (has ? published[token] : 0) : undefined);
      }
    }
  }
  const pairs = (output: 'lexical_matching_score' | 'colbert_score') => {
    for (const p of layout[output] ?? []) {
      const q = text(p.query);
      const d = text(p.passage);
      const value = output === 'lexical_matching_score' ? lexicalMatchingScore(q.sparse, d.sparse) : colbertScore(q.colbert, d.colbert);
      add({ output, label: `${p.query}·${p.passage}`, texts: [p.query, p.passage], value }, p.value);
    }
  };
  pairs('lexical_matching_score');
  pairs('colbert_score');
  return { figures, encodings };
}

function figureFailure(f: CheckFigure, dtype: ModelDtype, precision: string): string {
  const how =
    f.note === 'not produced by the model'
      ? `the model gives this token no weight, published ${fmtNumber(f.published!)}`
      : f.note === 'not in the reference'
        ? `${fmtNumber(f.value)}, a token the reference does not have`
        : `${fmtNumber(f.value)} vs published ${fmtNumber(f.published!)}`;
  return `${OUTPUT_NAMES[f.output]} ${f.label} is off by ${fmtNumber(f.deviation!)} (${how}; tolerance ${f.tolerance} for ${dtype === 'q8' ? 'a' : 'an'} ${dtype} model vs the ${precision} reference)`;
}

const UNIVERSAL_PASSED =
  'universal checks passed (finite outputs, unit-norm dense and ColBERT rows, sparse weights > 0 without special tokens, one forward pass for all three outputs)';

/**
 * Checks that `encoder` computes what FlagEmbedding computes.
 *
 * Runs the model card's inputs (or the reference's) through the encoder with all three outputs,
 * computes the published figures (dense similarities `s1 @ s2.T`, lexical weights of
 * `sentences_1` through `convert_id_to_token`, lexical matching and ColBERT scores) and:
 * - when a reference applies (see {@link CheckOptions.reference}; BAAI's published example
 *   applies only to BAAI/bge-m3), compares each figure with it within {@link checkTolerance};
 * - always asserts the universal properties (finite outputs, unit-norm dense and ColBERT rows,
 *   one ColBERT row per token after `<s>`, sparse weights > 0 without special tokens, one
 *   forward pass for all three outputs, observed on a fresh text through `encoder.stats`).
 *
 * It never reports a model as verified against a reference that does not apply: on any other
 * model `applies` and `verified` are false and only the universal checks decide `ok`.
 * Cheap: five short texts (about a second on the full-size model). Other encodes may run on
 * the same encoder meanwhile; the pass counter check then retries, and at worst is `skipped`.
 *
 * A model whose weights yield non-finite values makes the encoder throw; that is returned as a
 * failed `finite` check, not thrown. Other errors (closed encoder, abort) are thrown.
 *
 * @example
 * const result = await checkModel(encoder);            // BAAI/bge-m3: compared with the model card
 * if (!result.ok) console.error(result.summary);       // names the output and by how much
 * const own = await checkModel(encoder, { reference: loadCheckReference('my-model.json') });
 */
export async function checkModel(encoder: CheckEncoder, options: CheckOptions = {}): Promise<CheckResult> {
  const started = performance.now();
  const opts = checkOptions(options);
  if (!encoder || typeof encoder.encode !== 'function' || typeof encoder.tokenize !== 'function' || !encoder.tokenizer) {
    invalidArgument('checkModel needs an encoder with encode(), tokenize() and tokenizer (an M3Encoder)');
  }
  const dtype = opts.dtype ?? inferDtype(encoder.modelId);
  let decision: ReferenceDecision;
  if (opts.reference === 'none') decision = { reference: undefined, basis: undefined, reason: 'no reference was asked for' };
  else if (opts.reference === 'auto') decision = await decidePublishedReference(encoder);
  else decision = { reference: opts.reference, basis: 'given', reason: `the reference for ${opts.reference.model} was given` };
  const reference = decision.reference;
  const layout = reference ?? BGE_M3_REFERENCE; // which figures to compute; compared only with a reference
  const tolerance = reference ? checkTolerance(dtype, reference.precision, reference.tolerance) : undefined;
  const maxLength = Math.min(8192, encoder.maxPositions ?? 8192);

  let universal: UniversalCheck[];
  let figures: CheckFigure[] = [];
  try {
    const probe = await probeOnePass(encoder, maxLength, options.signal);
    const run = await compute(encoder, layout, tolerance ? { tolerance } : undefined, maxLength, options.signal);
    figures = run.figures;
    universal = [...checkOutputs([...run.encodings, { label: 'a probe text', result: probe.encoding }], specialIds(encoder)), probe.check];
  } catch (e) {
    // The engine refuses non-finite model outputs (corrupt weights, broken fp16 exports).
    if (!(e instanceof M3Error && e.code === 'MODEL_FILE_INVALID')) throw e;
    universal = [{ name: 'finite', status: 'fail', detail: e.message }];
  }

  const failures = [
    ...universal.filter((u) => u.status === 'fail').map((u) => `${CHECK_TITLES[u.name]}: ${u.detail}`),
    ...figures
      .filter((f) => f.ok === false)
      .sort((a, b) => b.deviation! / Math.max(b.tolerance!, 1e-12) - a.deviation! / Math.max(a.tolerance!, 1e-12))
      .map((f) => figureFailure(f, dtype, reference!.precision)),
  ];
  const universalOk = !universal.some((u) => u.status === 'fail');
  const figuresOk = figures.every((f) => f.ok !== false);
  const applies = reference !== undefined;
  const ok = universalOk && figuresOk && failures.length === 0;
  const compared = figures.filter((f) => f.ok !== undefined).length;
  const skipped = universal.filter((u) => u.status === 'skipped');
  const universalLine = skipped.length
    ? `${UNIVERSAL_PASSED.replace(/\)$/, '')}; not observed: ${skipped.map((s) => s.detail).join('; ')})`
    : UNIVERSAL_PASSED;
  let summary: string;
  if (!ok) {
    const more = failures.length > 1 ? ` (and ${failures.length - 1} more failure${failures.length > 2 ? 's' : ''})` : '';
    const hint = decision.basis === 'model-identity' && universalOk ? "; this model is not loaded from BAAI/bge-m3: if it is a fine-tune, check it against its own figures (a reference file)" : '';
    summary = `check failed: ${failures[0]}${more}${hint}`;
  } else if (applies) {
    const what = decision.basis === 'given' ? `the reference for ${reference.model}` : "BAAI's published example";
    summary = `model verified against ${what}: ${compared} figures within tolerance (dense ${tolerance!.dense}, weights ${tolerance!.weights}, ${dtype}); ${universalLine}`;
  } else {
    summary =
      opts.reference === 'none'
        ? `no reference compared; ${universalLine}`
        : `no published reference applies to this model (BAAI's figures are for BAAI/bge-m3 only; a reference file compares others); ${universalLine}`;
  }
  const result: CheckResult = {
    ok,
    applies,
    verified: applies && ok,
    summary,
    failures,
    modelId: encoder.modelId,
    dtype,
    reason: decision.reason,
    figures,
    universal,
    inputs: { sentences_1: [...layout.sentences_1], sentences_2: [...layout.sentences_2] },
    checkedAt: new Date().toISOString(),
    durationMs: Math.round(performance.now() - started),
  };
  if (reference) result.reference = { model: reference.model, source: reference.source, precision: reference.precision, basis: decision.basis! };
  if (tolerance) result.tolerance = tolerance;
  return result;
}

function specialIds(encoder: CheckEncoder): number[] {
  const s = encoder.tokenizer.special;
  return [s.cls, s.eos, s.pad, s.unk];
}
