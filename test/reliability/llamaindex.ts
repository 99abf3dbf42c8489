/**
 * LlamaIndex.TS for the reliability tests: the same module instance @bgem3/llamaindex uses (its
 * own dependency, resolved through its realpath), since the workspace's test package does not
 * depend on `llamaindex` itself.
 */
export * from '../../packages/llamaindex/node_modules/llamaindex/dist/index.js';
