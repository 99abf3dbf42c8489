/**
 * @bgem3/langchain: BGE-M3 for LangChain.js, as thin views of a store (`M3Store`: the embedded
 * M3Index of @bgem3/core, or PgM3Store of @bgem3/pgvector). One forward pass per document gives
 * the dense vector, the lexical weights and the ColBERT vectors; the store keeps them, and a
 * query encodes one text.
 *
 * @packageDocumentation
 */
export type { BGEM3ModelParams, BGEM3Filter } from './shared.js';
export { BGEM3Embeddings, type BGEM3EmbeddingsParams } from './embeddings.js';
export {
  BGEM3VectorStore,
  BGEM3Retriever,
  type BGEM3VectorStoreArgs,
  type BGEM3RetrieverArgs,
  type BGEM3RetrieverInput,
  type BGEM3AddDocumentsOptions,
  type BGEM3SearchMode,
} from './vector-store.js';
export { BGEM3SparseRetriever, type BGEM3SparseRetrieverInput } from './sparse-retriever.js';
export { BGEM3ColbertReranker, type BGEM3ColbertRerankerParams, type BGEM3RerankOptions, type BGEM3RerankResult } from './reranker.js';
export { BGEM3EnsembleRetriever, type BGEM3EnsembleRetrieverInput, type BGEM3EnsembleFromDocumentsOptions } from './ensemble-retriever.js';
