/**
 * What the classes of this package share: the model options (core's adapter kit), the document
 * conversion from a store's hits, and the filter type.
 */
import type { M3Filter, M3Hit, M3Store, M3Where } from '@bgem3/core';
import { MODEL_PARAM_KEYS, attachStored, storedOf, unitScore, type M3ModelParams } from '@bgem3/core/adapter';
import { Document, type DocumentInterface } from '@langchain/core/documents';

/**
 * Which BGE-M3 model a class uses (the same options for every class, from `@bgem3/core/adapter`):
 * `model`, `encoder` or `endpoint`, load options, `maxLength`. A class given none takes the
 * model of what it is built on (its store, its embeddings), else `BAAI/bge-m3`.
 */
export type BGEM3ModelParams = M3ModelParams;

/** The option names of {@link BGEM3ModelParams}. */
export const MODEL_KEYS = MODEL_PARAM_KEYS;

/** The option names of LangChain's `BaseRetrieverInput`. */
export const RETRIEVER_KEYS: readonly string[] = ['callbacks', 'tags', 'metadata', 'verbose'];

/**
 * A filter of a store search: a declarative `where` object (`{ lang: "en" }`,
 * `{ year: { $gte: 2020 } }`, …: core's grammar, evaluated where the data lives, in SQL for
 * PgM3Store), or a function `(metadata, id) => boolean` run in the application.
 */
export type BGEM3Filter = M3Where | M3Filter;

/** The store options of a filter. */
export function filterOptions(filter: BGEM3Filter | undefined): { where?: M3Where; filter?: M3Filter } {
  if (filter === undefined) return {};
  return typeof filter === 'function' ? { filter } : { where: filter };
}

/**
 * Metadata key marking a stored document that was added without an id: the store keys it by a
 * generated id, but it is returned without one (no id is invented for a user's document), so an
 * ensemble dedups it with its copies by content.
 */
export const ANONYMOUS_KEY = '__bgem3_anonymous';

/** A store hit as a LangChain Document (a fresh object), recording where its vectors are. */
export function hitToDocument(store: M3Store, hit: M3Hit, scores: Record<string, number> | undefined): DocumentInterface {
  const { [ANONYMOUS_KEY]: anonymous, ...metadata } = hit.metadata;
  const doc = new Document({ pageContent: hit.text, metadata: scores ? { ...metadata, ...scores } : metadata, ...(anonymous === true ? {} : { id: hit.id }) });
  attachStored(doc, store, hit.id);
  return doc;
}

/** The score metadata of a hit: each mode's score, `score` (raw) and `relevanceScore` ([0, 1]). */
export function scoreMetadata(score: number, modes: { dense?: number; sparse?: number; colbert?: number }): Record<string, number> {
  const out: Record<string, number> = {};
  if (modes.dense !== undefined) out.denseScore = modes.dense;
  if (modes.sparse !== undefined) out.sparseScore = modes.sparse;
  if (modes.colbert !== undefined) out.colbertScore = modes.colbert;
  out.score = score;
  out.relevanceScore = unitScore(score);
  return out;
}

/** A copy of a document with extra metadata (the input is not mutated); keeps where its vectors are. */
export function withMetadata(doc: DocumentInterface, extra: Record<string, unknown>): DocumentInterface {
  const copy = new Document({ pageContent: doc.pageContent, metadata: { ...doc.metadata, ...extra }, ...(typeof doc.id === 'string' ? { id: doc.id } : {}) });
  const stored = storedOf(doc);
  if (stored) attachStored(copy, stored.store, stored.id);
  return copy;
}
