/**
 * Library messages in the CLI's words.
 *
 * Why: @bgem3/core's errors name the API's options (`pass offline: true`, `options.token`,
 * `maxLength must be …`), which mean nothing to someone typing `bgem3 encode`. The CLI prints
 * every library message through {@link toCliWords}, which rewrites the API's option names into
 * the flags that set them. Only names the CLI has a flag or variable for are rewritten; the
 * table is the one place that maps the two vocabularies (tested in cli-errors.test.ts).
 */

/** Exact phrases first (they carry a value or an instruction), then bare option names. */
const PHRASES: Array<[RegExp, string]> = [
  [/\(or pass offline: true\)/g, '(or pass --offline)'],
  [/HF_HUB_OFFLINE or offline: true/g, 'HF_HUB_OFFLINE or --offline'],
  [/unset HF_HUB_OFFLINE, or pass offline: false/g, 'unset HF_HUB_OFFLINE and drop --offline'],
  [/pass offline: (true|false)/g, 'pass --offline'],
  [/ \(or pass options\.token\)/g, ''],
  [/pass onnxFile \/ --onnx/g, 'pass --onnx'],
];

/** API option name → CLI flag, rewritten where the name stands as a word. */
const OPTIONS: Record<string, string> = {
  maxLength: '--max-length',
  maxQueryLength: '--max-query-length',
  maxPassageLength: '--max-passage-length',
  batchSize: '--batch-size',
  maxBatchTokens: '--max-batch-tokens',
  intraOpNumThreads: '--threads',
  onnxFile: '--onnx',
  colbertPrecision: '--colbert-precision',
  fetchK: '--fetch-k',
  rerankDepth: '--rerank-depth',
};

// A bare word only: not part of a path, a property access, a quoted key or a longer name.
const OPTION_WORD = new RegExp(`(?<![\\w.\\-/"'\`])(${Object.keys(OPTIONS).join('|')})(?![\\w\\-/"'\`])`, 'g');

/** `message` with the API's option names replaced by the CLI's flags. */
export function toCliWords(message: string): string {
  let out = message;
  for (const [pattern, replacement] of PHRASES) out = out.replace(pattern, replacement);
  return out.replace(OPTION_WORD, (name: string) => OPTIONS[name] ?? name);
}
