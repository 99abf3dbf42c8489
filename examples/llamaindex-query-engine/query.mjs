#!/usr/bin/env node
/**
 * A LlamaIndex.TS query engine with BGE-M3 hybrid retrieval and a ColBERT reranker:
 *
 *   text files (data/) → VectorStoreIndex (Settings.embedModel = BGEM3Embedding)
 *   → BGEM3EnsembleRetriever (the index's dense retriever + BGEM3SparseRetriever, fused, reranked
 *     by BGE-M3's dense + sparse + ColBERT score) → BGEM3ColbertReranker (node postprocessor)
 *   → response synthesizer + LLM → answer, with its source nodes.
 *
 *   pnpm start                                   # BAAI/bge-m3, downloaded once (~2.3 GB)
 *   pnpm start -- --model /path/to/model/dir     # a local model directory
 *   pnpm start -- --question "Who created Hangul?"
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BGEM3ColbertReranker, BGEM3Embedding, BGEM3EnsembleRetriever, BGEM3SparseRetriever } from '@bgem3/llamaindex';
import { Document, MetadataMode, SentenceSplitter, Settings, VectorStoreIndex } from 'llamaindex';
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

  // One encoder for every class: each chunk goes through BGE-M3 once, and the embedding, the
  // sparse retriever, the ensemble and the reranker all reuse that pass.
  const encoder = await loadEncoder(NAME, opts);
  try {
    Settings.llm = llm;
    Settings.embedModel = new BGEM3Embedding({ encoder });
    Settings.nodeParser = new SentenceSplitter({ chunkSize: 128, chunkOverlap: 16 });

    const documents = loadDocuments();
    const index = await VectorStoreIndex.fromDocuments(documents);

    // Hybrid retrieval: the index's dense retriever and a sparse retriever over the same nodes
    // (the default SimpleVectorStore keeps them in the docStore), fused by RRF, then every
    // candidate rescored by (0.4·dense + 0.2·sparse + 0.4·colbert).
    const hybrid = new BGEM3EnsembleRetriever({
      encoder,
      retrievers: [index.asRetriever({ similarityTopK: 10 }), new BGEM3SparseRetriever({ encoder, docStore: index.docStore, topK: 10 })],
      topK: 5,
    });
    // ColBERT late interaction keeps the best 3 of those 5 for the LLM. MetadataMode.EMBED scores
    // the text that was embedded, so the nodes' ColBERT vectors come from the encode cache.
    const reranker = new BGEM3ColbertReranker({ encoder, topN: 3, metadataMode: MetadataMode.EMBED });
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
