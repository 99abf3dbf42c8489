#!/usr/bin/env node
/**
 * A LlamaIndex.TS query engine with BGE-M3 hybrid retrieval and a ColBERT reranker:
 *
 *   text files (data/) → VectorStoreIndex over a BGEM3VectorStore (an M3Index keeping each
 *   chunk's dense, sparse and ColBERT vectors from one forward pass)
 *   → hybrid retrieval (dense ∪ sparse candidates reranked by BGE-M3's dense + sparse + ColBERT
 *     score, from the stored vectors) → BGEM3ColbertReranker (node postprocessor)
 *   → response synthesizer + LLM → answer, with its source nodes.
 *
 *   pnpm start                                   # BAAI/bge-m3, downloaded once (~2.3 GB)
 *   pnpm start -- --model /path/to/model/dir     # a local model directory
 *   pnpm start -- --question "Who created Hangul?"
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { M3Index } from '@bgem3/core';
import { BGEM3ColbertReranker, BGEM3EnsembleRetriever, BGEM3VectorStore } from '@bgem3/llamaindex';
import { Document, MetadataMode, SentenceSplitter, Settings, VectorStoreIndex, storageContextFromDefaults } from 'llamaindex';
import { llmFromEnv, loadEncoder, parseOptions } from './setup.mjs';

const NAME = 'llamaindex-query-engine';
const USAGE = `Usage: pnpm start -- [--model <dir|repo>] [--dtype fp32|q8] [--question "…" …]

  --model <dir|repo>  model directory or Hugging Face repo id (default BAAI/bge-m3, ~2.3 GB once)
  --dtype fp32|q8     q8 = the int8 backbone (~570 MB for BAAI/bge-m3)
  --question "…"      a question of your own (repeatable; default: two questions, one in Russian)
LLM: OPENAI_API_KEY / OPENAI_BASE_URL / CHAT_MODEL, else an offline extractive fallback.`;

const DEFAULT_QUESTIONS = ['When was the Korean alphabet created, and how are its letters arranged?', 'На каких языках пишут кириллицей?'];

const DATA_DIR = fileURLToPath(new URL('./data/', import.meta.url));

function loadDocuments() {
  return readdirSync(DATA_DIR)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => new Document({ id_: f, text: readFileSync(join(DATA_DIR, f), 'utf8'), metadata: { source: `data/${f}` } }));
}

async function main() {
  const opts = parseOptions(NAME, USAGE, { question: { type: 'string', multiple: true } });
  const questions = opts.question ?? DEFAULT_QUESTIONS;
  const { llm, description } = await llmFromEnv();
  console.log(`LLM: ${description}`);

  // One encoder for the whole script: the store, the embedding and the reranker use it.
  const encoder = await loadEncoder(NAME, opts);
  try {
    // The store: an M3Index (M3Index.open(dir, { encoder }) would keep it on disk; PgM3Store
    // from @bgem3/pgvector works the same). Each chunk is encoded once, all three outputs.
    const store = await M3Index.create({ encoder });
    const vectorStore = new BGEM3VectorStore({ store });
    Settings.llm = llm;
    Settings.embedModel = vectorStore.embedModel;
    Settings.nodeParser = new SentenceSplitter({ chunkSize: 128, chunkOverlap: 16 });

    const documents = loadDocuments();
    const index = await VectorStoreIndex.fromDocuments(documents, { storageContext: await storageContextFromDefaults({ vectorStore }) });

    // Hybrid retrieval over the store: dense ∪ sparse candidates, each rescored by
    // (0.4·dense + 0.2·sparse + 0.4·colbert) from its stored vectors; only the question is
    // encoded. index.asRetriever({ mode: "hybrid", similarityTopK: 5 }) returns the same nodes;
    // the ensemble also records each mode's score, printed below.
    const hybrid = new BGEM3EnsembleRetriever({ vectorStore, topK: 5 });
    // ColBERT late interaction keeps the best 3 of those 5 for the LLM, rescoring them from the
    // store's ColBERT vectors (nothing is encoded again).
    const reranker = new BGEM3ColbertReranker({ store, topN: 3 });
    const queryEngine = index.asQueryEngine({ retriever: hybrid, nodePostprocessors: [reranker] });
    console.log(`Indexed ${documents.length} documents [model ${opts.model}]; query engine: hybrid retriever (top 5) → ColBERT reranker (top 3) → LLM`);

    for (const question of questions) {
      const response = await queryEngine.query({ query: question });
      console.log(`\nQuestion: ${question}`);
      console.log(`Answer: ${response.toString().trim()}`);
      console.log('Sources:');
      response.sourceNodes?.forEach((n, i) => {
        const s = n.node.metadata.bgem3_scores;
        const m3 = s ? `; hybrid: dense ${s.dense.toFixed(3)}, sparse ${s.sparse.toFixed(3)}, colbert ${s.colbert.toFixed(3)} → ${s.score.toFixed(3)}` : '';
        const text = n.node.getContent(MetadataMode.NONE).replace(/\s+/g, ' ');
        console.log(`  [${i + 1}] ${n.node.metadata.source} (ColBERT ${n.score?.toFixed(3)}${m3}) "${text.length > 70 ? `${text.slice(0, 69)}…` : text}"`);
      });
    }
    await store.close();
  } finally {
    await encoder.close();
  }
}

main().catch((err) => {
  console.error(`${NAME}: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env.OPENAI_API_KEY || process.env.OPENAI_BASE_URL) console.error('  (an LLM is configured: check OPENAI_BASE_URL, OPENAI_API_KEY and CHAT_MODEL, or unset them for the offline fallback)');
  if (process.env.BGEM3_DEBUG && err instanceof Error) console.error(err.stack);
  process.exit(1);
});
