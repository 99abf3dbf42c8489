/**
 * What the CLI needs to know of a saved index before it loads a model: that it is an index at
 * all, the model it was built with (its identity and where to find it) and its saved options.
 *
 * `bgem3 search` reads this first, so that a directory that is not an index is one line and
 * never a model download, and `bgem3 index --append` keeps the saved options. Model identity is
 * never decided here: `M3Index.load(dir, { encoder })` compares the encoder's `modelId` with the
 * index's. `modelSource` is only a hint of where the model was loaded from.
 */
import { M3Index } from '../retrieval/m3-index.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** The saved settings of an index, as far as the CLI uses them. */
export interface IndexInfo {
  /** The `modelId` of the encoder that built the index. */
  modelId: string;
  colbertPrecision?: string;
  /** The saved `maxLength` (null: the encoder's). */
  maxLength?: number | null;
  /** Where the model was loaded from, as recorded by `bgem3 index` (see {@link ModelSource}). */
  modelSource?: string;
}

/** Where a model comes from, as `bgem3 index` records it in the index (JSON in `modelSource`). */
export interface ModelSource {
  /** A Hub repo id or an absolute model directory. */
  model: string;
  revision?: string;
  onnx?: string;
  dtype?: 'fp32' | 'q8';
}

/**
 * The file `bgem3 index` writes next to the store's files to record where the model is, for
 * stores that do not keep `modelSource` themselves. Read only when the store has no source.
 */
export const MODEL_SOURCE_FILE = 'bgem3-model-source.json';

/** Records where the model of the index in `dir` was loaded from (see {@link MODEL_SOURCE_FILE}). */
export async function writeModelSource(dir: string, source: ModelSource): Promise<void> {
  await writeFileAtomic(join(dir, MODEL_SOURCE_FILE), `${JSON.stringify(source)}\n`);
}

async function readModelSourceFile(dir: string): Promise<string | undefined> {
  try {
    const text = await readFile(join(dir, MODEL_SOURCE_FILE), 'utf8');
    JSON.parse(text);
    return text.trim();
  } catch {
    return undefined;
  }
}

/** The accessor the store is asked to provide (see the file comment); used when present. */
type InfoReader = { readInfo?: (dir: string) => Promise<IndexInfo> };

/** The settings from the manifest of the current generation, or undefined when unreadable. */
async function fromManifest(dir: string): Promise<IndexInfo | undefined> {
  try {
    const pointer = JSON.parse(await readFile(join(dir, 'CURRENT'), 'utf8')) as { generation?: unknown };
    if (typeof pointer.generation !== 'string' || !/^[\w.-]+$/.test(pointer.generation)) return undefined;
    const m = JSON.parse(await readFile(join(dir, pointer.generation, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    if (typeof m.modelId !== 'string') return undefined;
    return {
      modelId: m.modelId,
      ...(typeof m.colbertPrecision === 'string' ? { colbertPrecision: m.colbertPrecision } : {}),
      ...(typeof m.maxLength === 'number' || m.maxLength === null ? { maxLength: m.maxLength } : {}),
      ...(typeof m.modelSource === 'string' ? { modelSource: m.modelSource } : {}),
    };
  } catch {
    return undefined;
  }
}

/**
 * Reads an index's settings without loading a model. Throws the store's own error (e.g.
 * INDEX_INVALID "not an M3Index directory") when `dir` is not a readable index.
 */
export async function readIndexInfo(dir: string): Promise<IndexInfo> {
  const info = await readStoreInfo(dir);
  if (info.modelSource) return info;
  const recorded = await readModelSourceFile(dir);
  return recorded ? { ...info, modelSource: recorded } : info;
}

async function readStoreInfo(dir: string): Promise<IndexInfo> {
  const reader = M3Index as unknown as InfoReader;
  if (typeof reader.readInfo === 'function') return reader.readInfo(dir);
  const info = await fromManifest(dir);
  if (info) return info;
  // Not readable as we know it: let the store say what is wrong (it throws), without a model.
  const index = await M3Index.load(dir);
  try {
    const settings = (index as unknown as { settings?: { maxLength?: number; colbertPrecision?: string; modelSource?: string } }).settings;
    return {
      modelId: index.modelId,
      colbertPrecision: settings?.colbertPrecision ?? index.colbertPrecision,
      ...(settings && 'maxLength' in settings ? { maxLength: settings.maxLength ?? null } : {}),
      ...(typeof settings?.modelSource === 'string' ? { modelSource: settings.modelSource } : {}),
    };
  } finally {
    await index.close();
  }
}

/** The model to load for an index: its recorded source, else what its model id says (older indexes). */
export function modelSourceOf(info: IndexInfo): ModelSource | undefined {
  if (info.modelSource) {
    try {
      const s = JSON.parse(info.modelSource) as ModelSource;
      if (s && typeof s.model === 'string' && s.model) return s;
    } catch {
      // fall through to the model id
    }
  }
  const hub = /^hub:([^@]+)@([^:]+):(.+)$/.exec(info.modelId);
  if (hub) return { model: hub[1], revision: hub[2], onnx: hub[3] };
  const local = /^local:(.+\.onnx)$/.exec(info.modelId);
  if (local) return { model: dirname(local[1]), onnx: local[1] };
  return undefined;
}
