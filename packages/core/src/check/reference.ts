/**
 * Reference figures for `checkModel` / `bgem3 check`, and the JSON file format that carries them
 * (`--reference F`), with validation that names what is wrong.
 */
import { readFileSync } from 'node:fs';
import { M3Error } from '../errors.js';
import { MODEL_CARD_SENTENCES_1, MODEL_CARD_SENTENCES_2 } from './published.js';

/** The precision a reference's figures were computed in; it decides the tolerance. */
export type ReferencePrecision = 'fp16' | 'fp32';

/** A text of the check's inputs, named as in the model card's code: `sentences_1[0]`, `sentences_2[1]`. */
export type CheckTextRef = `sentences_${1 | 2}[${number}]`;

/** A score between two of the inputs. For `colbert_score`, `query` is the side whose vectors are averaged. */
export interface ReferencePairFigure {
  query: CheckTextRef;
  passage: CheckTextRef;
  value: number;
}

/**
 * Reference figures: what FlagEmbedding computes for a model on a few inputs. The JSON file of
 * `bgem3 check --reference F` has exactly these fields:
 *
 * ```json
 * {
 *   "model": "my-org/bge-m3-finetuned",
 *   "source": "FlagEmbedding 1.4.0 BGEM3FlagModel(path, use_fp16=False), CPU",
 *   "precision": "fp32",
 *   "sentences_1": ["What is BGE M3?", "Defination of BM25"],
 *   "sentences_2": ["BGE M3 is an embedding model …", "BM25 is a bag-of-words …"],
 *   "dense_similarity": [[0.7012, 0.3321], [0.3405, 0.7254]],
 *   "lexical_weights": [{"What": 0.0911, "is": 0.0702}, {"De": 0.0613, "fin": 0.1442}],
 *   "lexical_matching_score": [{"query": "sentences_1[0]", "passage": "sentences_2[0]", "value": 0.2107}],
 *   "colbert_score": [{"query": "sentences_1[0]", "passage": "sentences_2[0]", "value": 0.8012}],
 *   "tolerance": {"dense": 0.001, "weights": 0.002}
 * }
 * ```
 *
 * - `model`, `source` (required): whose figures these are and how they were made; printed with the result.
 * - `precision` (required): `"fp16"` (FlagEmbedding's default `use_fp16=True` on a GPU) or `"fp32"` (CPU, or `use_fp16=False`).
 * - `sentences_1`, `sentences_2` (optional; default the model card's texts, misspelling included).
 *   (The numbers above are illustrative; BAAI's own figures are `BGE_M3_REFERENCE`.)
 * - `dense_similarity`: `embeddings_1 @ embeddings_2.T`, one row per `sentences_1` text, one column per `sentences_2` text.
 * - `lexical_weights`: `model.convert_id_to_token(output_1['lexical_weights'])`, one object per `sentences_1` text.
 *   A token the model produces that the object lacks is compared with 0, and the reverse.
 * - `lexical_matching_score`: `model.compute_lexical_matching_score(lw_a, lw_b)` of two inputs.
 * - `colbert_score`: `model.colbert_score(colbert_vecs_query, colbert_vecs_passage)` of two inputs.
 * - `tolerance` (optional): replaces the tolerance derived from `precision` and the model's dtype
 *   for dense-type figures (dense similarity, ColBERT score) and weight-type figures (lexical
 *   weights and scores).
 *
 * At least one of the four figure fields is required; unknown fields are an error (a typo would
 * otherwise silently drop figures).
 */
export interface CheckReference {
  model: string;
  source: string;
  precision: ReferencePrecision;
  sentences_1: readonly string[];
  sentences_2: readonly string[];
  dense_similarity?: readonly (readonly number[])[];
  lexical_weights?: readonly Readonly<Record<string, number>>[];
  lexical_matching_score?: readonly ReferencePairFigure[];
  colbert_score?: readonly ReferencePairFigure[];
  tolerance?: { readonly dense?: number; readonly weights?: number };
}

const FIELDS = [
  'model',
  'source',
  'precision',
  'sentences_1',
  'sentences_2',
  'dense_similarity',
  'lexical_weights',
  'lexical_matching_score',
  'colbert_score',
  'tolerance',
] as const;

const TEXT_REF = /^sentences_([12])\[(\d+)\]$/;

/** Resolves `sentences_1[0]` to its list (1 or 2) and index; undefined when malformed. */
export function parseTextRef(ref: string): { list: 1 | 2; index: number } | undefined {
  const m = TEXT_REF.exec(ref);
  return m ? { list: Number(m[1]) as 1 | 2, index: Number(m[2]) } : undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

/**
 * Validates reference figures (e.g. a parsed `--reference` file) and returns them with the
 * defaults filled in. `where` prefixes every error (the file name).
 *
 * @throws M3Error INVALID_ARGUMENT naming the field and what is wrong with it.
 */
export function parseCheckReference(input: unknown, where = 'reference'): CheckReference {
  const fail = (msg: string): never => {
    throw new M3Error('INVALID_ARGUMENT', `${where}: ${msg}`);
  };
  if (!input || typeof input !== 'object' || Array.isArray(input)) fail(`expected a JSON object of reference figures, got ${describe(input)}`);
  const o = input as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknown.length > 0) fail(`unknown field ${unknown.map((k) => `"${k}"`).join(', ')} (known fields: ${FIELDS.join(', ')})`);
  const text = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v.trim() === '') fail(`"${k}" must be a non-empty string, got ${v === undefined ? 'nothing' : describe(v)}`);
    return v as string;
  };
  const model = text('model');
  const source = text('source');
  if (o.precision !== 'fp16' && o.precision !== 'fp32') {
    fail(`"precision" must be "fp16" or "fp32" (the precision FlagEmbedding ran in), got ${o.precision === undefined ? 'nothing' : describe(o.precision)}`);
  }
  const sentences = (k: 'sentences_1' | 'sentences_2', dflt: readonly string[]): string[] => {
    const v = o[k];
    if (v === undefined) return [...dflt];
    if (!Array.isArray(v) || v.length === 0) fail(`"${k}" must be a non-empty array of strings, got ${describe(v)}`);
    (v as unknown[]).forEach((s, i) => {
      if (typeof s !== 'string') fail(`"${k}"[${i}] must be a string, got ${describe(s)}`);
    });
    return [...(v as string[])];
  };
  const s1 = sentences('sentences_1', MODEL_CARD_SENTENCES_1);
  const s2 = sentences('sentences_2', MODEL_CARD_SENTENCES_2);
  const figure = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${what} must be a finite number, got ${describe(v)}`);
    return v as number;
  };
  const out: CheckReference = { model, source, precision: o.precision as ReferencePrecision, sentences_1: s1, sentences_2: s2 };

  if (o.dense_similarity !== undefined) {
    const m = o.dense_similarity;
    const shape = `a ${s1.length} × ${s2.length} matrix (one row per sentences_1 text, one column per sentences_2 text)`;
    if (!Array.isArray(m) || m.length !== s1.length) fail(`"dense_similarity" must be ${shape}, got ${describe(m)}`);
    out.dense_similarity = (m as unknown[]).map((row, i) => {
      if (!Array.isArray(row) || row.length !== s2.length) fail(`"dense_similarity"[${i}] must have ${s2.length} numbers (${shape}), got ${describe(row)}`);
      return (row as unknown[]).map((v, j) => figure(v, `"dense_similarity"[${i}][${j}]`));
    });
  }
  if (o.lexical_weights !== undefined) {
    const l = o.lexical_weights;
    if (!Array.isArray(l) || l.length !== s1.length) {
      fail(`"lexical_weights" must be an array of ${s1.length} objects {token: weight}, one per sentences_1 text, got ${describe(l)}`);
    }
    out.lexical_weights = (l as unknown[]).map((d, i) => {
      if (!d || typeof d !== 'object' || Array.isArray(d)) fail(`"lexical_weights"[${i}] must be an object {token: weight}, got ${describe(d)}`);
      const rec: Record<string, number> = {};
      for (const [tok, w] of Object.entries(d as Record<string, unknown>)) {
        const x = figure(w, `"lexical_weights"[${i}][${JSON.stringify(tok)}]`);
        if (x < 0) fail(`"lexical_weights"[${i}][${JSON.stringify(tok)}] must be ≥ 0 (lexical weights are relu outputs), got ${x}`);
        rec[tok] = x;
      }
      return rec;
    });
  }
  const pairs = (k: 'lexical_matching_score' | 'colbert_score'): ReferencePairFigure[] | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0) fail(`"${k}" must be a non-empty array of {"query", "passage", "value"}, got ${describe(v)}`);
    return (v as unknown[]).map((p, i) => {
      if (!p || typeof p !== 'object' || Array.isArray(p)) fail(`"${k}"[${i}] must be an object {"query", "passage", "value"}, got ${describe(p)}`);
      const e = p as Record<string, unknown>;
      const extra = Object.keys(e).filter((x) => !['query', 'passage', 'value'].includes(x));
      if (extra.length > 0) fail(`"${k}"[${i}] has unknown field ${extra.map((x) => `"${x}"`).join(', ')} (expected query, passage, value)`);
      const ref = (side: 'query' | 'passage'): CheckTextRef => {
        const r = e[side];
        const parsed = typeof r === 'string' ? parseTextRef(r) : undefined;
        if (!parsed) fail(`"${k}"[${i}].${side} must name an input such as "sentences_1[0]", got ${r === undefined ? 'nothing' : describe(r)}`);
        const list = parsed!.list === 1 ? s1 : s2;
        if (parsed!.index >= list.length) fail(`"${k}"[${i}].${side} is ${r}, but sentences_${parsed!.list} has ${list.length} text${list.length === 1 ? '' : 's'}`);
        return r as CheckTextRef;
      };
      return { query: ref('query'), passage: ref('passage'), value: figure(e.value, `"${k}"[${i}].value`) };
    });
  };
  const lex = pairs('lexical_matching_score');
  if (lex) out.lexical_matching_score = lex;
  const col = pairs('colbert_score');
  if (col) out.colbert_score = col;
  if (!out.dense_similarity && !out.lexical_weights && !out.lexical_matching_score && !out.colbert_score) {
    fail('no figures: give at least one of dense_similarity, lexical_weights, lexical_matching_score, colbert_score');
  }
  if (o.tolerance !== undefined) {
    const t = o.tolerance;
    if (!t || typeof t !== 'object' || Array.isArray(t)) fail(`"tolerance" must be an object {"dense"?, "weights"?}, got ${describe(t)}`);
    const tt = t as Record<string, unknown>;
    const extra = Object.keys(tt).filter((x) => x !== 'dense' && x !== 'weights');
    if (extra.length > 0) fail(`"tolerance" has unknown field ${extra.map((x) => `"${x}"`).join(', ')} (expected dense, weights)`);
    const tol: { dense?: number; weights?: number } = {};
    for (const k of ['dense', 'weights'] as const) {
      if (tt[k] === undefined) continue;
      const x = figure(tt[k], `"tolerance".${k}`);
      if (x < 0) fail(`"tolerance".${k} must be ≥ 0, got ${x}`);
      tol[k] = x;
    }
    out.tolerance = tol;
  }
  return out;
}

/**
 * Reads and validates a reference file (see {@link CheckReference} for the format).
 *
 * @throws M3Error INVALID_ARGUMENT when the file is missing, not JSON, or not valid reference figures.
 */
export function loadCheckReference(file: string): CheckReference {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new M3Error('INVALID_ARGUMENT', `reference file ${file}: ${code === 'ENOENT' ? 'not found' : `cannot be read (${(cause as Error).message})`}`, {
      file,
      cause,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new M3Error('INVALID_ARGUMENT', `reference file ${file} is not valid JSON: ${(cause as Error).message}`, { file, cause });
  }
  return parseCheckReference(parsed, `reference file ${file}`);
}
