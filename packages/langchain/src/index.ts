/**
 * @bgem3/langchain: BGE-M3 for LangChain.js, computed locally on onnxruntime-node by
 * `@bgem3/core`. One forward pass per text gives the dense vector ({@link BGEM3Embeddings}), the
 * lexical weights ({@link BGEM3SparseRetriever}) and the ColBERT vectors
 * ({@link BGEM3ColbertReranker}); {@link BGEM3EnsembleRetriever} combines all three.
 *
 * @packageDocumentation
 */
export type { BGEM3ModelParams } from './encoder-source.js';
export { BGEM3Embeddings, type BGEM3EmbeddingsParams } from './embeddings.js';
export { BGEM3SparseRetriever, type BGEM3SparseRetrieverInput, type BGEM3AddDocumentsOptions } from './sparse-retriever.js';
export { BGEM3ColbertReranker, type BGEM3ColbertRerankerParams, type BGEM3RerankOptions, type BGEM3RerankResult } from './reranker.js';
export {
  BGEM3EnsembleRetriever,
  type BGEM3EnsembleRetrieverInput,
  type BGEM3EnsembleFromDocumentsOptions,
  type BGEM3FusionMode,
} from './ensemble-retriever.js';
