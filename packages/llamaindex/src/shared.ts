/**
 * What the classes of this package share: the model options (core's adapter kit), the model of
 * `Settings.embedModel`, query text, and node conversion from a store's hits.
 */
import type { M3Hit, M3Store } from '@bgem3/core';
import { MODEL_PARAM_KEYS, attachStored, invalid, sourceOf, storedOf, type EncoderSource, type M3ModelParams, type ModelBase } from '@bgem3/core/adapter';
import { MetadataMode, Settings, extractText, metadataDictToNode, nodeToMetadata, type BaseNode, type MessageContent, type QueryBundle } from 'llamaindex';

/**
 * Which BGE-M3 model a class uses (the same options for every class, from `@bgem3/core/adapter`):
 * `model`, `encoder` or `endpoint`, load options, `maxLength`. A class given none takes the model
 * of what it is built on (its store), else of `Settings.embedModel` when that is a
 * {@link BGEM3Embedding}, else `BAAI/bge-m3`.
 */
export type BGEM3ModelOptions = M3ModelParams;

/** The option names of {@link BGEM3ModelOptions}. */
export const MODEL_KEYS = MODEL_PARAM_KEYS;

/** A store as what a class is built on. */
export function storeBase(store: M3Store): ModelBase {
  return { what: 'the store', encoder: store.encoder, modelId: store.modelId, dim: store.dim, vocabSize: store.vocabSize };
}

/** `Settings.embedModel`, when it is a BGE-M3 embedding of this package (any copy), as a model base. */
export function settingsBase(): ModelBase | undefined {
  let model: unknown;
  try {
    model = Settings.embedModel;
  } catch {
    return undefined; // not set: LlamaIndex's getter throws
  }
  const source = sourceOf<EncoderSource>(model);
  return source ? { what: 'Settings.embedModel', source } : undefined;
}

/** Checks a store argument. */
export function checkStore(store: unknown, what = 'store'): asserts store is M3Store {
  const s = store as M3Store;
  if (s === null || typeof s !== 'object' || typeof s.search !== 'function' || typeof s.rescore !== 'function' || typeof s.modelId !== 'string') {
    invalid(`${what} must be an M3Store (an M3Index, a PgM3Store, …)`);
  }
}

/** Checks a MetadataMode option. */
export function metadataModeOf(value: unknown, fallback: MetadataMode, name = 'metadataMode'): MetadataMode {
  if (value === undefined) return fallback;
  if (!Object.values(MetadataMode).includes(value as MetadataMode)) invalid(`${name} must be a MetadataMode, got ${String(value)}`);
  return value as MetadataMode;
}

/**
 * The text of a query as LlamaIndex passes it (a string, multimodal content parts, or a
 * QueryBundle). A missing query, or one with no text part, throws INVALID_ARGUMENT.
 */
export function queryText(query: MessageContent | QueryBundle | null | undefined, who: string): string {
  if (query === undefined || query === null) invalid(`${who} needs a query, got ${String(query)}`);
  if (typeof query === 'object' && !Array.isArray(query)) {
    if ((query as QueryBundle).query === undefined || (query as QueryBundle).query === null) invalid(`${who} needs a query: the QueryBundle has no \`query\``);
    return queryText((query as QueryBundle).query, who);
  }
  if (typeof query !== 'string' && !Array.isArray(query)) invalid(`${who}: the query must be a string or message content parts, got ${typeof query}`);
  if (Array.isArray(query) && !query.some((p) => p?.type === 'text')) invalid(`${who}: the query has no text part (BGE-M3 encodes text only)`);
  return extractText(query);
}

/** A node as a store document: its text and its metadata with the node itself (LlamaIndex's `_node_content`). */
export function nodeToDocument(node: BaseNode): { id: string; text: string; metadata: Record<string, unknown> } {
  return { id: node.id_, text: node.getContent(MetadataMode.NONE), metadata: nodeToMetadata(node, true) as Record<string, unknown> };
}

/** A store hit as a fresh node (recording where its vectors are stored). */
export function hitToNode(store: M3Store, hit: M3Hit): BaseNode {
  const node = metadataDictToNode(hit.metadata, { fallback: { id_: hit.id, text: hit.text } });
  node.setContent(hit.text);
  attachStored(node, store, hit.id);
  return node;
}

/** A copy of `node` with `scores` under metadata `key`, a key hidden from embeddings and LLM prompts. */
export function withScores(node: BaseNode, key: string | null, scores: Record<string, unknown>): BaseNode {
  if (key === null) return node;
  const copy = node.clone();
  copy.metadata = { ...copy.metadata, [key]: scores };
  const embedKeys = copy.excludedEmbedMetadataKeys ?? [];
  const llmKeys = copy.excludedLlmMetadataKeys ?? [];
  copy.excludedEmbedMetadataKeys = embedKeys.includes(key) ? embedKeys : [...embedKeys, key];
  copy.excludedLlmMetadataKeys = llmKeys.includes(key) ? llmKeys : [...llmKeys, key];
  const stored = storedOf<M3Store>(node);
  if (stored) attachStored(copy, stored.store, stored.id);
  return copy;
}
