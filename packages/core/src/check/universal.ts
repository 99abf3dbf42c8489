/**
 * Properties every BGE-M3-style model's outputs have, whatever its weights: what `checkModel`
 * asserts on a model no reference applies to (and on every other model too).
 */
import type { EncodeResult } from '../types.js';

/** Names of the universal checks. */
export type UniversalCheckName =
  | 'finite'
  | 'dense-unit-norm'
  | 'colbert-unit-norm'
  | 'colbert-rows'
  | 'sparse-positive'
  | 'sparse-no-special-tokens'
  | 'one-forward-pass';

/**
 * One universal check. `skipped` means the property could not be observed (the detail says
 * why); it neither passes nor fails the check.
 */
export interface UniversalCheck {
  name: UniversalCheckName;
  status: 'pass' | 'fail' | 'skipped';
  /** What was checked and, on failure, the first offending value. */
  detail: string;
}

/**
 * How far from 1 a dense vector's or ColBERT row's L2 norm may be. Both are normalised in
 * float32 (`x / max(‖x‖, 1e-12)`), which leaves norms within ~1e-7 of 1; 1e-4 still catches a
 * missing or partial normalisation (an fp16 export normalised in fp16 lands around 1e-3).
 */
export const UNIT_NORM_TOLERANCE = 1e-4;

/** An encoding of one check input, all three outputs requested. */
export interface LabelledEncoding {
  /** e.g. `sentences_1[0]`. */
  label: string;
  result: EncodeResult;
}

function norm(v: Float32Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toPrecision(6) : String(x));

/**
 * The output checks: finite values, unit-norm dense vectors and ColBERT rows, one ColBERT row per
 * token after `<s>` (`</s>` kept), sparse weights > 0 with none on the special tokens.
 * `special` are the ids FlagEmbedding drops (`<s>`, `</s>`, `<pad>`, `<unk>`).
 */
export function checkOutputs(encodings: readonly LabelledEncoding[], special: readonly number[]): UniversalCheck[] {
  const first = new Map<UniversalCheckName, string>();
  const flag = (name: UniversalCheckName, msg: string) => {
    if (!first.has(name)) first.set(name, msg);
  };
  let vectors = 0;
  let rows = 0;
  let weights = 0;
  const specials = new Set(special);
  for (const { label, result: r } of encodings) {
    if (!r.dense || !r.sparse || !r.colbert) {
      const missing = [!r.dense && 'dense', !r.sparse && 'sparse', !r.colbert && 'colbert'].filter(Boolean).join(', ');
      flag('finite', `${label}: the encoder returned no ${missing} output`);
      continue;
    }
    vectors++;
    const d = r.dense;
    const bad = d.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) flag('finite', `${label}: dense[${bad}] is ${d[bad]}`);
    const n = norm(d, 0, d.length);
    if (!(Math.abs(n - 1) <= UNIT_NORM_TOLERANCE)) flag('dense-unit-norm', `${label}: ‖dense‖ = ${fmt(n)}`);

    const s = r.sparse;
    for (let i = 0; i < s.values.length; i++) {
      const w = s.values[i];
      weights++;
      if (!Number.isFinite(w)) flag('finite', `${label}: lexical weight of token ${s.indices[i]} is ${w}`);
      else if (!(w > 0)) flag('sparse-positive', `${label}: lexical weight of token ${s.indices[i]} is ${w}`);
      if (specials.has(s.indices[i])) flag('sparse-no-special-tokens', `${label}: special token id ${s.indices[i]} has lexical weight ${fmt(w)}`);
    }

    const c = r.colbert;
    if (c.count !== r.tokens - 1) {
      flag('colbert-rows', `${label}: ${c.count} ColBERT vectors for ${r.tokens} tokens (expected ${r.tokens - 1}: all but <s>, </s> kept)`);
    }
    for (let row = 0; row < c.count; row++) {
      rows++;
      const from = row * c.dim;
      for (let k = from; k < from + c.dim; k++) {
        if (!Number.isFinite(c.data[k])) {
          flag('finite', `${label}: ColBERT row ${row} has ${c.data[k]}`);
          break;
        }
      }
      const rn = norm(c.data, from, from + c.dim);
      if (!(Math.abs(rn - 1) <= UNIT_NORM_TOLERANCE)) flag('colbert-unit-norm', `${label}: ColBERT row ${row} has norm ${fmt(rn)}`);
    }
  }
  const texts = `${encodings.length} text${encodings.length === 1 ? '' : 's'}`;
  const result = (name: UniversalCheckName, passDetail: string): UniversalCheck => {
    const f = first.get(name);
    return f ? { name, status: 'fail', detail: f } : { name, status: 'pass', detail: passDetail };
  };
  return [
    result('finite', `every output of ${texts} is finite (${vectors} dense vectors, ${weights} lexical weights, ${rows} ColBERT rows)`),
    result('dense-unit-norm', `every dense vector has norm 1 ± ${UNIT_NORM_TOLERANCE}`),
    result('colbert-unit-norm', `every ColBERT row has norm 1 ± ${UNIT_NORM_TOLERANCE}`),
    result('colbert-rows', 'one ColBERT vector per token after <s> (</s> kept)'),
    result('sparse-positive', 'every lexical weight is > 0'),
    result('sparse-no-special-tokens', `no lexical weight on the special tokens (ids ${[...specials].sort((a, b) => a - b).join(', ')})`),
  ];
}

/** Counters the check reads before and after one encode call. */
export interface PassCounters {
  readonly forwardPasses: number;
  readonly textsEncoded: number;
}

/**
 * The one-forward-pass check from counters read around one `encode` call of a single new text
 * with dense, sparse and ColBERT requested. Returns undefined when other work on the same
 * encoder ran in between (the caller retries), so concurrent requests cannot fail it.
 */
export function judgeOnePass(before: PassCounters, after: PassCounters, gotAllThree: boolean): UniversalCheck | undefined {
  const passes = after.forwardPasses - before.forwardPasses;
  const texts = after.textsEncoded - before.textsEncoded;
  if (!gotAllThree) {
    return { name: 'one-forward-pass', status: 'fail', detail: 'an encode call asking for dense, sparse and ColBERT did not return all three' };
  }
  if (texts === 1 && passes === 1) {
    return { name: 'one-forward-pass', status: 'pass', detail: 'one text encoded with dense, sparse and ColBERT ran exactly one forward pass' };
  }
  if (texts === 1 && passes > 1) {
    return { name: 'one-forward-pass', status: 'fail', detail: `one text encoded with dense, sparse and ColBERT ran ${passes} forward passes` };
  }
  if (texts === 0 && passes > 0) {
    return { name: 'one-forward-pass', status: 'fail', detail: `${passes} forward passes ran for a text the encoder reports as not encoded` };
  }
  return undefined; // other texts were encoded meanwhile (or a cache answered): not attributable
}
