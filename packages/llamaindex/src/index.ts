/**
 * @bgem3/llamaindex: BGE-M3 for LlamaIndex.TS on onnxruntime-node — a dense embedding, a sparse
 * retriever, a ColBERT reranker and a hybrid (ensemble) retriever. The model and all scoring
 * live in @bgem3/core; these classes are thin LlamaIndex-native adapters that share one encoder
 * and one encode cache per model, so each text goes through the model once.
 *
 * Peer dependency: `llamaindex` (every LlamaIndex import here comes from it, so the app and this
 * package always use the same copy of `@llamaindex/core`).
 */
export { BGEM3Embedding, type BGEM3EmbeddingOptions } from './embedding.js';
export { BGEM3SparseRetriever, type BGEM3SparseRetrieverOptions, type BGEM3SparseFromDocumentsOptions } from './sparse-retriever.js';
export { BGEM3ColbertReranker, type BGEM3ColbertRerankerOptions } from './colbert-reranker.js';
export { BGEM3EnsembleRetriever, type BGEM3EnsembleRetrieverOptions, type BGEM3EnsembleScores } from './ensemble-retriever.js';
export type { BGEM3ModelOptions } from './shared.js';
