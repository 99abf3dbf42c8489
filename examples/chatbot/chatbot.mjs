#!/usr/bin/env node
/**
 * A terminal chatbot over BGE-M3 hybrid retrieval, with conversation memory, streaming its
 * answers token by token.
 *
 * Each turn:
 *   1. Condense: a follow-up ("How many moons does it have?") becomes a standalone question using
 *      the conversation so far (an LLM rewrites it; the offline fallback prepends the previous
 *      question), so retrieval sees what "it" is.
 *   2. Retrieve with a BGEM3VectorStore's hybrid retriever: dense + sparse candidates, reranked
 *      by all three BGE-M3 scores from the stored vectors (only the question is encoded).
 *   3. Answer with the sources and the last turns in the prompt, streamed as it is generated,
 *      citing sources as [1], [2].
 *
 * Interactive on a terminal (type `exit` or Ctrl-D to quit, `/new` to forget the conversation).
 * When stdin is not a terminal, every line of stdin is one question:
 *
 *   printf 'Which planet is the largest?\nHow many moons does it have?\n' | pnpm start -- --model <dir>
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BGEM3VectorStore } from '@bgem3/langchain';
import { Document } from '@langchain/core/documents';
import { AIMessage, HumanMessage } from '@langchain/core/messages';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate, MessagesPlaceholder } from '@langchain/core/prompts';
import { RunnableLambda, RunnableSequence } from '@langchain/core/runnables';
import { RecursiveCharacterTextSplitter } from '@langchain/textsplitters';
import { ExtractiveChatModel, chatModelFromEnv, loadEncoder, parseOptions } from './setup.mjs';

const NAME = 'chatbot';
const USAGE = `Usage: pnpm start -- [--model <dir|repo>] [--dtype fp32|q8] [--turns N]

  --model <dir|repo>  model directory or Hugging Face repo id (default BAAI/bge-m3, ~2.3 GB once)
  --dtype fp32|q8     q8 = the int8 backbone (~570 MB for BAAI/bge-m3)
  --turns N           earlier turns kept in memory (default 4)
On a terminal: type questions, \`/new\` forgets the conversation, \`exit\` or Ctrl-D quits.
Otherwise each line of stdin is a question.
Chat model: OPENAI_API_KEY / OPENAI_BASE_URL / CHAT_MODEL, else an offline extractive fallback.`;

const KNOWLEDGE_DIR = fileURLToPath(new URL('./knowledge/', import.meta.url));

function loadKnowledge() {
  return readdirSync(KNOWLEDGE_DIR)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => new Document({ pageContent: readFileSync(join(KNOWLEDGE_DIR, f), 'utf8'), metadata: { source: `knowledge/${f}` } }));
}

const condensePrompt = ChatPromptTemplate.fromMessages([
  ['system', 'Rewrite the last question of the user as a standalone question that can be understood without the conversation. Keep its language. Reply with the question only.'],
  new MessagesPlaceholder('history'),
  ['human', '{question}'],
]);

const answerPrompt = ChatPromptTemplate.fromMessages([
  [
    'system',
    'You are a helpful assistant. Answer using only the numbered sources below, and cite the source(s) of each statement as [1], [2], … ' +
      'If the sources do not contain the answer, say so. Answer in the language of the question.\n\nSources:\n{sources}',
  ],
  new MessagesPlaceholder('history'),
  ['human', '{question}'],
]);

function formatSources(docs) {
  return docs.map((d, i) => `[${i + 1}] (${d.metadata.source}) ${d.pageContent.replace(/\s+/g, ' ').trim()}`).join('\n');
}

async function main() {
  const opts = parseOptions(NAME, USAGE, { turns: { type: 'string', default: '4' } });
  const maxTurns = Number(opts.turns);
  if (!Number.isInteger(maxTurns) || maxTurns < 0) throw new Error(`--turns must be an integer ≥ 0, got ${opts.turns}`);
  const interactive = Boolean(process.stdin.isTTY);
  const { llm, description } = await chatModelFromEnv();
  console.log(`Chat model: ${description}`);

  const encoder = await loadEncoder(NAME, opts);
  try {
    const files = loadKnowledge();
    const splitter = new RecursiveCharacterTextSplitter({ chunkSize: 400, chunkOverlap: 40 });
    const chunks = (await splitter.splitDocuments(files)).map((c, i) => new Document({ ...c, id: `chunk-${i}` }));
    const vectorStore = await BGEM3VectorStore.fromDocuments(chunks, undefined, { encoder });
    const retriever = vectorStore.asRetriever({ k: 3 });
    console.log(`Knowledge: ${files.length} files, ${chunks.length} chunks, BGE-M3 hybrid retrieval + ColBERT rerank [model ${opts.model}]`);

    /** The conversation: the last `maxTurns` question/answer pairs. */
    let history = [];
    const historyMessages = () => history.flatMap((t) => [new HumanMessage(t.question), new AIMessage(t.answer)]);

    // A standalone question for retrieval. The extractive fallback cannot rewrite text, so it
    // searches with the previous question and the follow-up together.
    const condense =
      llm instanceof ExtractiveChatModel
        ? RunnableLambda.from(({ question }) => (history.length ? `${history[history.length - 1].question} ${question}` : question))
        : RunnableSequence.from([condensePrompt, llm, new StringOutputParser()]);

    const answerChain = RunnableSequence.from([answerPrompt, llm, new StringOutputParser()]);

    async function turn(question) {
      const standalone = history.length ? (await condense.invoke({ question, history: historyMessages() })).trim() : question;
      if (history.length) console.log(`  (memory: ${history.length} earlier turn${history.length > 1 ? 's' : ''}; searching for: ${standalone})`);
      const docs = await retriever.invoke(standalone);
      process.stdout.write('Bot: ');
      let answer = '';
      // stream: print each piece as the chat model produces it
      for await (const piece of await answerChain.stream({ sources: formatSources(docs), history: historyMessages(), question })) {
        answer += piece;
        process.stdout.write(piece);
      }
      process.stdout.write('\n');
      console.log(`  Sources: ${docs.map((d, i) => `[${i + 1}] ${d.metadata.source}`).join('  ')}`);
      history.push({ question, answer: answer.trim() });
      if (history.length > maxTurns) history = history.slice(history.length - maxTurns);
    }

    const rl = createInterface({ input: process.stdin, output: interactive ? process.stdout : undefined, terminal: interactive });
    if (interactive) {
      console.log('Ask about the planets (in any language). `/new` starts over, `exit` quits.');
      rl.setPrompt('You: ');
      rl.prompt();
    }
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === 'exit' || line === 'quit') break;
      if (line === '/new') {
        history = [];
        console.log('  (memory cleared)');
      } else if (line) {
        if (!interactive) console.log(`\nYou: ${line}`);
        await turn(line);
      }
      if (interactive) rl.prompt();
    }
    rl.close();
    await vectorStore.store.close();
  } finally {
    await encoder.close();
  }
}

main().catch((err) => {
  console.error(`${NAME}: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env.OPENAI_API_KEY || process.env.OPENAI_BASE_URL) console.error('  (a chat model is configured: check OPENAI_BASE_URL, OPENAI_API_KEY and CHAT_MODEL, or unset them for the offline fallback)');
  if (process.env.BGEM3_DEBUG && err instanceof Error) console.error(err.stack);
  process.exit(1);
});
