#!/usr/bin/env node
/**
 * An LCEL RAG chain with BGE-M3 hybrid retrieval:
 *
 *   text files (docs/) → RecursiveCharacterTextSplitter → BGEM3VectorStore.fromDocuments (an
 *   M3Index keeping each chunk's dense, sparse and ColBERT vectors from one forward pass)
 *   → its hybrid retriever (dense ∪ sparse candidates, reranked by dense + sparse + ColBERT from
 *   the stored vectors) → prompt → chat model → answer citing its sources as [1], [2].
 *
 *   pnpm start                                   # BAAI/bge-m3, downloaded once (~2.3 GB)
 *   pnpm start -- --model /path/to/model/dir     # a local model directory
 *   pnpm start -- --question "What is MaxSim?"
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BGEM3VectorStore } from '@bgem3/langchain';
import { Document } from '@langchain/core/documents';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda, RunnablePassthrough, RunnableSequence } from '@langchain/core/runnables';
import { RecursiveCharacterTextSplitter } from '@langchain/textsplitters';
import { chatModelFromEnv, loadEncoder, parseOptions } from './setup.mjs';

const NAME = 'langchain-rag';
const USAGE = `Usage: pnpm start -- [--model <dir|repo>] [--dtype fp32|q8] [--question "…" …]

  --model <dir|repo>  model directory or Hugging Face repo id (default BAAI/bge-m3, ~2.3 GB once)
  --dtype fp32|q8     q8 = the int8 backbone (~570 MB for BAAI/bge-m3)
  --question "…"      a question of your own (repeatable; default: two questions, one in Chinese)
Chat model: OPENAI_API_KEY / OPENAI_BASE_URL / CHAT_MODEL, else an offline extractive fallback.`;

const DEFAULT_QUESTIONS = ['What are the three representations that BGE-M3 produces?', '为什么跨语言匹配主要依靠稠密向量？'];

const DOCS_DIR = fileURLToPath(new URL('./docs/', import.meta.url));

/** 1. Load: one Document per text file, with its file name as the source. */
function loadTextFiles(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => new Document({ pageContent: readFileSync(join(dir, f), 'utf8'), metadata: { source: `docs/${f}` } }));
}

/** The sources as the prompt shows them: `[n] (file) text`, one line each, best first. */
function formatSources(docs) {
  return docs.map((d, i) => `[${i + 1}] (${d.metadata.source}) ${d.pageContent.replace(/\s+/g, ' ').trim()}`).join('\n');
}

const prompt = ChatPromptTemplate.fromMessages([
  [
    'system',
    'Answer the question using only the numbered sources below. After each statement, cite the source(s) it comes from as [1], [2], … ' +
      'If the sources do not contain the answer, say so. Answer in the language of the question.\n\nSources:\n{sources}',
  ],
  ['human', '{question}'],
]);

async function main() {
  const opts = parseOptions(NAME, USAGE, { question: { type: 'string', multiple: true } });
  const questions = opts.question ?? DEFAULT_QUESTIONS;
  const { llm, description } = await chatModelFromEnv();
  console.log(`Chat model: ${description}`);

  const encoder = await loadEncoder(NAME, opts);
  try {
    // 2. Split into chunks that keep their source file; ids make the citations stable.
    const files = loadTextFiles(DOCS_DIR);
    const splitter = new RecursiveCharacterTextSplitter({ chunkSize: 500, chunkOverlap: 50 });
    const chunks = (await splitter.splitDocuments(files)).map((c, i) => new Document({ ...c, id: `chunk-${i}` }));

    // 3. The store (an in-memory M3Index here; pass { store } for M3Index.open(dir) on disk or a
    //    PgM3Store), filled with ONE forward pass per chunk. Its retriever runs the M3 pipeline:
    //    dense ∪ sparse candidates, reranked by the M3 All score; only the question is encoded.
    const vectorStore = await BGEM3VectorStore.fromDocuments(chunks, undefined, { encoder });
    const retriever = vectorStore.asRetriever({ k: 3, mode: 'hybrid', fetchK: 100, weights: [0.4, 0.2, 0.4] });
    console.log(`Indexed ${files.length} files as ${chunks.length} chunks (BGE-M3 dense + sparse, reranked with ColBERT) [model ${opts.model}]`);

    // 4. The chain: retrieve → format the numbered sources → prompt → chat model → text.
    //    It returns the documents too, so the answer's [n] can be listed with their files.
    const answerChain = RunnableSequence.from([
      RunnableLambda.from(({ question, docs }) => ({ question, sources: formatSources(docs) })),
      prompt,
      llm,
      new StringOutputParser(),
    ]);
    const chain = RunnableSequence.from([{ question: new RunnablePassthrough(), docs: retriever }, RunnablePassthrough.assign({ answer: answerChain })]);

    for (const question of questions) {
      const { answer, docs } = await chain.invoke(question);
      console.log(`\nQuestion: ${question}`);
      console.log(`Answer: ${answer.trim()}`);
      console.log('Sources:');
      docs.forEach((d, i) => {
        const m = d.metadata;
        const scores = `dense ${m.denseScore.toFixed(3)}, sparse ${m.sparseScore.toFixed(3)}, colbert ${m.colbertScore.toFixed(3)} → ${m.score.toFixed(3)}`;
        const lines = m.loc?.lines ? (m.loc.lines.from === m.loc.lines.to ? `line ${m.loc.lines.from}` : `lines ${m.loc.lines.from}-${m.loc.lines.to}`) : '';
        console.log(`  [${i + 1}] ${m.source}${lines ? `, ${lines}` : ''} (${scores})`);
      });
    }
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
