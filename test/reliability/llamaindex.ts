/**
 * LlamaIndex.TS for the reliability tests: the same module instance @bgem3/llamaindex uses (its
 * own dependency, reached through its realpath), since the workspace's test package does not
 * depend on `llamaindex` itself. Its declarations live apart from its JS (dist/type/).
 */
// @ts-expect-error: the JS entry has no declarations beside it; they are imported below
import * as runtime from '../../packages/llamaindex/node_modules/llamaindex/dist/index.js';
import type * as Types from '../../packages/llamaindex/node_modules/llamaindex/dist/type/index.d.ts';

const li = runtime as unknown as typeof Types;
export const { TextNode, BaseNode, BaseRetriever, MetadataMode } = li;
