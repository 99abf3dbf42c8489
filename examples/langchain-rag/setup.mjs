/**
 * What a LangChain.js RAG script needs around the retrieval itself: command-line options, the
 * BGE-M3 encoder (with a download progress bar and a clear message when it cannot be had), and a
 * chat model, a real one from the environment or an offline extractive fallback.
 *
 * examples/langchain-rag and examples/chatbot carry identical copies of this file, so that each
 * example folder is self-contained.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL, M3Encoder, M3Error, createCliProgress, defaultCacheDir, isRepoId } from '@bgem3/core';
import { AIMessageChunk } from '@langchain/core/messages';
import { SimpleChatModel } from '@langchain/core/language_models/chat_models';
import { ChatGenerationChunk } from '@langchain/core/outputs';

// ---------------------------------------------------------------------------------------------
// Options

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

// ---------------------------------------------------------------------------------------------
// The encoder

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
          'Without network, pass --model <local model directory> (e.g. the repo\'s test/fixtures/tiny-m3-A),',
          'set HF_ENDPOINT to a Hub mirror, or HF_HUB_OFFLINE=1 to use an existing cache.',
        ].join('\n  '),
      );
    }
    fail(name, `cannot load the model ${model}: ${reason}`);
  } finally {
    progress.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The chat model

/**
 * An OpenAI-compatible chat model when one is configured (OPENAI_API_KEY and/or OPENAI_BASE_URL,
 * model CHAT_MODEL, default gpt-4o-mini; Ollama: OPENAI_BASE_URL=http://localhost:11434/v1
 * OPENAI_API_KEY=ollama CHAT_MODEL=llama3.2), else the offline {@link ExtractiveChatModel}.
 * Returns the model and a line saying which one it is.
 */
export async function chatModelFromEnv(env = process.env) {
  const baseURL = env.OPENAI_BASE_URL || undefined;
  const apiKey = env.OPENAI_API_KEY || undefined;
  if (baseURL || apiKey) {
    const { ChatOpenAI } = await import('@langchain/openai');
    const model = env.CHAT_MODEL || 'gpt-4o-mini';
    const llm = new ChatOpenAI({
      model,
      temperature: 0,
      maxRetries: 2,
      apiKey: apiKey ?? 'not-needed', // local servers such as Ollama ignore the key, but the client wants one
      ...(baseURL ? { configuration: { baseURL } } : {}),
    });
    return { llm, description: `${model} at ${baseURL ?? 'https://api.openai.com/v1'} (OpenAI-compatible, @langchain/openai)` };
  }
  return {
    llm: new ExtractiveChatModel(),
    description: 'extractive (offline fallback: answers with the best sentences of the top passages; set OPENAI_API_KEY or OPENAI_BASE_URL, and CHAT_MODEL, for an LLM)',
  };
}

const SOURCE_LINE = /^\[(\d+)\]\s*(?:\([^)]*\)\s*)?(.+)$/;
const words = new Intl.Segmenter(undefined, { granularity: 'word' });
const sentences = new Intl.Segmenter(undefined, { granularity: 'sentence' });

/** Lower-cased word-like segments (works for scripts without spaces, e.g. Chinese, too). */
function terms(text) {
  return new Set([...words.segment(text.toLowerCase())].filter((s) => s.isWordLike).map((s) => s.segment));
}

/**
 * A small deterministic chat model for machines without an LLM. It reads the numbered sources
 * (`[1] (file) text` lines) from the prompt and answers the last human message with the sentence
 * of each of the top passages that shares the most words with the question, each followed by its
 * citation, e.g. "BGE-M3 … three representations. [1] …". It streams word by word.
 */
export class ExtractiveChatModel extends SimpleChatModel {
  /** How many of the top sources the answer quotes. */
  maxSources;

  constructor(fields = {}) {
    super(fields);
    this.maxSources = fields.maxSources ?? 2;
  }

  _llmType() {
    return 'extractive';
  }

  async _call(messages) {
    return this.answer(messages);
  }

  async *_streamResponseChunks(messages, options, runManager) {
    for (const { segment } of words.segment(this.answer(messages))) {
      if (options?.signal?.aborted) break;
      const chunk = new ChatGenerationChunk({ text: segment, message: new AIMessageChunk({ content: segment }) });
      yield chunk;
      await runManager?.handleLLMNewToken(segment);
    }
  }

  /** The answer text for a list of messages. */
  answer(messages) {
    const text = (m) => (typeof m.content === 'string' ? m.content : m.content.map((c) => c.text ?? '').join(''));
    const human = messages.filter((m) => m.type === 'human');
    const question = human.length ? text(human[human.length - 1]) : '';
    const sources = [];
    for (const m of messages) {
      if (m.type === 'human') continue;
      for (const line of text(m).split('\n')) {
        const s = SOURCE_LINE.exec(line.trim());
        if (s) sources.push({ n: s[1], text: s[2] });
      }
    }
    if (sources.length === 0) return 'I found nothing about that in the documents.';
    const q = terms(question);
    const parts = sources.slice(0, this.maxSources).map(({ n, text: passage }) => {
      const candidates = [...sentences.segment(passage)].map((s) => s.segment.trim()).filter(Boolean);
      let best = candidates[0] ?? passage;
      let bestScore = -1;
      for (const c of candidates) {
        const score = [...terms(c)].filter((t) => q.has(t)).length;
        if (score > bestScore) [best, bestScore] = [c, score];
      }
      return `${best} [${n}]`;
    });
    return parts.join(' ');
  }
}
