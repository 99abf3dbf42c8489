/**
 * What the LlamaIndex.TS example needs around the retrieval itself: command-line options, the
 * BGE-M3 encoder (with a download progress bar and a clear message when it cannot be had), and an
 * LLM, a real one from the environment or an offline extractive fallback.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL, M3Encoder, M3Error, createCliProgress, defaultCacheDir, isRepoId } from '@bgem3/core';
import { BaseLLM, extractText } from 'llamaindex';

/**
 * Parses `--model <dir|repo>`, `--dtype fp32|q8` and the example's own options. A relative model
 * directory is also looked up from where pnpm was started (INIT_CWD), because
 * `pnpm --filter … start` runs the script inside the example's folder.
 */
export function parseOptions(name, usage, extra = {}) {
  let values;
  const argv = process.argv.slice(2);
  try {
    ({ values } = parseArgs({
      args: argv[0] === '--' ? argv.slice(1) : argv,
      options: { model: { type: 'string', default: DEFAULT_MODEL }, dtype: { type: 'string' }, help: { type: 'boolean', short: 'h' }, ...extra },
    }));
  } catch (err) {
    fail(name, `${err.message}\n\n${usage}`);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  if (values.dtype !== undefined && values.dtype !== 'fp32' && values.dtype !== 'q8') fail(name, `--dtype must be fp32 or q8, got ${values.dtype}`);
  let model = values.model;
  if (!existsSync(model) && process.env.INIT_CWD && existsSync(resolve(process.env.INIT_CWD, model))) model = resolve(process.env.INIT_CWD, model);
  return { ...values, model };
}

/** Prints `name: message` on stderr and exits 1. */
export function fail(name, message) {
  console.error(`${name}: ${message}`);
  process.exit(1);
}

/**
 * Loads BGE-M3 once for the whole script (every BGEM3* class then gets `{ encoder }`). A repo id
 * is downloaded on first use with a progress bar (on a terminal); a model that cannot be had ends
 * the script with a short explanation instead of a stack trace.
 */
export async function loadEncoder(name, { model, dtype }) {
  if (!existsSync(model) && isRepoId(model)) {
    const size = model.toLowerCase() !== DEFAULT_MODEL.toLowerCase() ? '' : dtype === 'q8' ? ' (about 570 MB)' : ' (about 2.3 GB)';
    console.error(`Loading ${model}: the first run downloads it from the Hugging Face Hub${size} into ${defaultCacheDir()}; later runs use that cache.`);
  }
  const progress = createCliProgress();
  try {
    return await M3Encoder.load(model, { ...(dtype ? { dtype } : {}), hub: { onProgress: progress.onProgress } });
  } catch (err) {
    progress.stop();
    if (!(err instanceof M3Error)) throw err;
    const reason = String(err.message).split('\n')[0].split(/(?<=\.) /)[0];
    if (err.code === 'HUB_ERROR' || err.code === 'OFFLINE_MISS') {
      fail(
        name,
        [
          `cannot load ${model}: ${reason}`,
          `${DEFAULT_MODEL} comes from the Hugging Face Hub (about 2.3 GB, once; cached in ${defaultCacheDir()}).`,
          "Without network, pass --model <local model directory> (e.g. the repo's test/fixtures/tiny-m3-A),",
          'set HF_ENDPOINT to a Hub mirror, or HF_HUB_OFFLINE=1 to use an existing cache.',
        ].join('\n  '),
      );
    }
    fail(name, `cannot load the model ${model}: ${reason}`);
  } finally {
    progress.stop();
  }
}

/**
 * An OpenAI-compatible LLM when one is configured (OPENAI_API_KEY and/or OPENAI_BASE_URL, model
 * CHAT_MODEL, default gpt-4o-mini; Ollama: OPENAI_BASE_URL=http://localhost:11434/v1
 * OPENAI_API_KEY=ollama CHAT_MODEL=llama3.2), else the offline {@link ExtractiveLLM}. Returns the
 * LLM and a line saying which one it is.
 */
export async function llmFromEnv(env = process.env) {
  const baseURL = env.OPENAI_BASE_URL || undefined;
  const apiKey = env.OPENAI_API_KEY || undefined;
  if (baseURL || apiKey) {
    const { OpenAI } = await import('@llamaindex/openai');
    const model = env.CHAT_MODEL || 'gpt-4o-mini';
    // local servers such as Ollama ignore the key, but the client wants one
    const llm = new OpenAI({ model, temperature: 0, maxRetries: 2, apiKey: apiKey ?? 'not-needed', ...(baseURL ? { baseURL } : {}) });
    return { llm, description: `${model} at ${baseURL ?? 'https://api.openai.com/v1'} (OpenAI-compatible, @llamaindex/openai)` };
  }
  return {
    llm: new ExtractiveLLM(),
    description: 'extractive (offline fallback: answers with the best sentences of the retrieved passages; set OPENAI_API_KEY or OPENAI_BASE_URL, and CHAT_MODEL, for an LLM)',
  };
}

const words = new Intl.Segmenter(undefined, { granularity: 'word' });
const sentences = new Intl.Segmenter(undefined, { granularity: 'sentence' });

/** Lower-cased word-like segments (works for scripts without spaces, e.g. Chinese, too). */
function terms(text) {
  return new Set([...words.segment(text.toLowerCase())].filter((s) => s.isWordLike).map((s) => s.segment));
}

/**
 * A minimal deterministic LLM for machines without one: LlamaIndex's `BaseLLM` (whose `complete`
 * calls `chat`) with `metadata` and `chat`. It reads the passages between the dashed lines of the
 * query engine's prompt ("Context information is below. ---… {context} ---… Query: {query}") and
 * answers with the sentence of each of the first passages (the best ranked) that shares the most
 * words with the query. Streams word by word when asked to.
 */
export class ExtractiveLLM extends BaseLLM {
  metadata = { model: 'extractive', temperature: 0, topP: 1, contextWindow: 32768, tokenizer: undefined, structuredOutput: false };

  constructor(maxPassages = 2) {
    super();
    this.maxPassages = maxPassages;
  }

  async chat(params) {
    const last = params.messages[params.messages.length - 1];
    const text = this.answer(last ? extractText(last.content) : '');
    if (params.stream) {
      return (async function* () {
        for (const { segment } of words.segment(text)) yield { delta: segment, raw: null };
      })();
    }
    return { message: { role: 'assistant', content: text }, raw: null };
  }

  /** The answer to one prompt. */
  answer(prompt) {
    // a refine step ("We have provided an existing answer: …") keeps the answer it was given
    const existing = /existing answer: ?([\s\S]*?)\n(?:We have|-{5,})/i.exec(prompt);
    if (existing) return existing[1].trim();
    const context = /-{5,}\n([\s\S]*?)\n-{5,}/.exec(prompt)?.[1] ?? '';
    const query = /Query: ?([\s\S]*?)\n(?:Answer|$)/.exec(prompt)?.[1] ?? prompt;
    // paragraphs that are only `key: value` lines are node metadata, not passage text
    const passages = context.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p && !p.split('\n').every((l) => /^[\w .-]{1,40}: /.test(l)));
    if (passages.length === 0) return 'I found nothing about that in the documents.';
    const q = terms(query);
    return passages
      .slice(0, this.maxPassages)
      .map((p) => {
        let best = p;
        let bestScore = -1;
        for (const { segment } of sentences.segment(p)) {
          const s = segment.trim();
          const score = [...terms(s)].filter((t) => q.has(t)).length;
          if (s && score > bestScore) [best, bestScore] = [s, score];
        }
        return best;
      })
      .join(' ');
  }
}
