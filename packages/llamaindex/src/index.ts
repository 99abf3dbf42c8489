/**
 * @bgem3/llamaindex: BGE-M3 for LlamaIndex.TS, as thin views of a store (`M3Store`: the embedded
 * M3Index of @bgem3/core, or PgM3Store of @bgem3/pgvector): a vector store answering the
 * default (dense), sparse and hybrid query modes, an embedding, a sparse retriever, a hybrid
 * ensemble retriever and a ColBERT reranker. A query over a store encodes one text.
 *
 * Peer dependency: `llamaindex` (every LlamaIndex import here comes from it, so the app and this
 * package always use the same copy of `@llamaindex/core`).
 */
export { BGEM3Embedding, type BGEM3EmbeddingOptions } from './embedding.js';
export { BGEM3VectorStore, type BGEM3VectorStoreOptions, type BGEM3QueryParams } from './vector-store.js';
export { toWhere } from './filters.js';
export { BGEM3SparseRetriever, type BGEM3SparseRetrieverOptions, type BGEM3SparseFromDocumentsOptions } from './sparse-retriever.js';
export { BGEM3ColbertReranker, type BGEM3ColbertRerankerOptions } from './colbert-reranker.js';
export { BGEM3EnsembleRetriever, type BGEM3EnsembleRetrieverOptions, type BGEM3EnsembleScores } from './ensemble-retriever.js';
export type { BGEM3ModelOptions } from './shared.js';
