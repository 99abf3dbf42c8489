/**
 * Ingestion shared by every store: documents are checked, batched, encoded (one encoder call per
 * batch with all three outputs), checked again as encodings, and applied to the store in CALL
 * order, whatever the encode times.
 *
 * Why call order needs a sequencer: `add(x)` then `delete(x)` without awaiting must leave no x,
 * and `add(id, v1)` then `add(id, v2)` must keep v2 even when v1 (longer) finishes encoding
 * last. Each mutation reserves its turn synchronously when it is called
 * ({@link WriteSequencer.reserve}); it may encode meanwhile, but applies only when every earlier
 * mutation has finished. Reads do not take turns.
 */
import { M3Error } from '../errors.js';
import type { EncodeOptions, FullEncodeResult, TextEncoder3 } from '../types.js';
import type { M3Document, M3EncodedDocument, M3StoreModel } from './types.js';
import { checkDocument, checkEncoding, type CheckedDocument } from './validate.js';

/** A reserved turn of {@link WriteSequencer}. */
export interface WriteTurn {
  /** Resolves when every earlier turn has been released. */
  readonly ready: Promise<void>;
  /** Ends this turn (idempotent); the next one may then apply. Always call it, also on failure. */
  release(): void;
}

/** Call-order serialisation of a store's mutations (see the file comment). */
export class WriteSequencer {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;

  /** Reserves the next turn. Call it synchronously when the mutation is called. */
  reserve(): WriteTurn {
    const previous = this.tail;
    let release!: () => void;
    const done = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.tail = previous.then(() => done);
    this.pending++;
    let released = false;
    return {
      ready: previous,
      release: () => {
        if (released) return;
        released = true;
        this.pending--;
        release();
      },
    };
  }

  /** Runs `fn` in a new turn (reserved now) and releases it after, whatever happens. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const turn = this.reserve();
    return turn.ready.then(fn).finally(() => turn.release());
  }

  /** Resolves when every turn reserved so far has been released. */
  idle(): Promise<void> {
    return this.tail;
  }

  /** Number of turns reserved and not yet released. */
  get size(): number {
    return this.pending;
  }
}

/** A document ready to store: checked, with its checked (copied) encoding. */
export interface EncodedEntry extends CheckedDocument {
  encoding: FullEncodeResult;
}

/** What {@link ingestDocuments} needs from the store. */
export interface IngestContext {
  encoder: TextEncoder3;
  /** The store's model: every encoding is checked against it. */
  model: M3StoreModel;
  /** Whether the store keeps ColBERT vectors (default true: they are requested and checked). */
  colbert?: boolean;
  /** Documents per encoder call. */
  batchSize: number;
  maxLength?: number;
  signal?: AbortSignal;
  /** Name used in messages, e.g. "M3Index.add". */
  what: string;
  /** Stores one batch (last occurrence of each id only). Called in order, inside the call's turn. */
  apply(batch: EncodedEntry[]): Promise<void> | void;
}

function aborted(what: string): M3Error {
  return new M3Error('ABORTED', `${what} was aborted`);
}

/** Keeps the last occurrence of each id, at the position of that last occurrence. */
export function lastOccurrences<T extends { id: string }>(entries: readonly T[]): T[] {
  const last = new Map<string, number>();
  entries.forEach((e, i) => last.set(e.id, i));
  return entries.filter((e, i) => last.get(e.id) === i);
}

/**
 * The body of `add`: checks every document as it is taken from `docs` (an array or a large
 * (async) iterable, never held whole), encodes batches of `batchSize`, and applies each batch
 * inside `turn` (reserved by the caller when `add` was called). Returns the ids in input order.
 * On failure, batches already applied stay applied (the error says how many documents were
 * stored). Releases the turn when done.
 */
export async function ingestDocuments(docs: Iterable<M3Document> | AsyncIterable<M3Document>, turn: WriteTurn, ctx: IngestContext): Promise<string[]> {
  const ids: string[] = [];
  let stored = 0;
  let waited = false;
  let batch: CheckedDocument[] = [];
  const encodeOptions: EncodeOptions = {
    dense: true,
    sparse: true,
    colbert: ctx.colbert !== false,
    ...(ctx.maxLength ? { maxLength: ctx.maxLength } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  };
  const flush = async () => {
    if (batch.length === 0) return;
    const unique = lastOccurrences(batch);
    batch = [];
    if (ctx.signal?.aborted) throw aborted(ctx.what);
    const encoded = await ctx.encoder.encode(
      unique.map((u) => u.text),
      encodeOptions,
    );
    if (!Array.isArray(encoded) || encoded.length !== unique.length) {
      throw new M3Error('INVALID_ARGUMENT', `the encoder returned ${Array.isArray(encoded) ? encoded.length : 'no'} results for ${unique.length} texts`);
    }
    const entries = unique.map((u, i) => ({ ...u, encoding: checkEncoding(encoded[i], { ...ctx.model, colbert: ctx.colbert !== false }, `encoding of document ${JSON.stringify(u.id)}`) }));
    if (!waited) {
      await turn.ready;
      waited = true;
    }
    if (ctx.signal?.aborted) throw aborted(ctx.what);
    await ctx.apply(entries);
    stored += entries.length;
  };
  try {
    let i = 0;
    const take = async (doc: M3Document) => {
      const checked = checkDocument(doc, `docs[${i++}]`);
      ids.push(checked.id);
      batch.push(checked);
      if (batch.length >= ctx.batchSize) await flush();
    };
    if (docs === null || typeof docs !== 'object') {
      throw new M3Error('INVALID_ARGUMENT', `${ctx.what}: docs must be an array or an iterable of documents`);
    }
    if (Symbol.asyncIterator in docs) {
      for await (const doc of docs as AsyncIterable<M3Document>) await take(doc);
    } else if (Symbol.iterator in docs) {
      for (const doc of docs as Iterable<M3Document>) await take(doc);
    } else {
      throw new M3Error('INVALID_ARGUMENT', `${ctx.what}: docs must be an array or an iterable of documents`);
    }
    await flush();
    return ids;
  } catch (err) {
    if (stored > 0 && err instanceof M3Error) {
      err.message += ` (${stored} documents of this call were stored before the failure)`;
    }
    throw err;
  } finally {
    turn.release();
  }
}

/**
 * The checks of `addEncoded`: every document and encoding checked (and copied) before any is
 * stored; the last occurrence of each id wins. Returns the ids in input order and the entries.
 */
export function checkEncodedDocuments(docs: Iterable<M3EncodedDocument>, model: M3StoreModel & { colbert?: boolean }, what: string): { ids: string[]; entries: EncodedEntry[] } {
  if (docs === null || typeof docs !== 'object' || !(Symbol.iterator in docs)) {
    throw new M3Error('INVALID_ARGUMENT', `${what}: docs must be an array or an iterable of encoded documents`);
  }
  const ids: string[] = [];
  const all: EncodedEntry[] = [];
  let i = 0;
  for (const doc of docs) {
    const checked = checkDocument(doc, `docs[${i}]`);
    const encoding = checkEncoding((doc as M3EncodedDocument).encoding, model, `docs[${i}].encoding`);
    ids.push(checked.id);
    all.push({ ...checked, encoding });
    i++;
  }
  return { ids, entries: lastOccurrences(all) };
}
