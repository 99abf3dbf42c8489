/**
 * Reader of the directory layout written by releases before the SQLite store (format
 * `bgem3-m3index` version 1): a `CURRENT` pointer naming a complete generation directory
 *
 *     CURRENT                     {"format":"bgem3-m3index","generation":"gen-000007-9f3a1c"}
 *     gen-000007-9f3a1c/manifest.json
 *     gen-000007-9f3a1c/docs.jsonl     one {"id","text","metadata"} object per line
 *     gen-000007-9f3a1c/dense.bin      DenseIndex file   (magic BGM3DENS)
 *     gen-000007-9f3a1c/sparse.bin     SparseIndex file  (magic BGM3SPRS)
 *     gen-000007-9f3a1c/colbert.bin    ColbertStore file (magic BGM3COLB)
 *
 * `M3Index.load` migrates such a directory to the current database on load (see m3-index.ts);
 * this module only reads it, with every check the old loader made (CRCs, sizes before
 * allocation, the four parts describing the same documents).
 */
import { createReadStream } from 'node:fs';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { M3Error } from '../errors.js';
import type { JsonObject } from '../store/types.js';
import { crc32 } from './binary-format.js';
import { ColbertStore, type ColbertPrecision } from './colbert-store.js';
import { DenseIndex } from './dense-index.js';
import { SparseIndex } from './sparse-index.js';

const FORMAT = 'bgem3-m3index';
const FORMAT_VERSION = 1;
/** The pointer file of a legacy index directory. */
export const LEGACY_POINTER = 'CURRENT';
const GEN_RE = /^gen-(\d{6,})-[0-9a-f]{6,}$/;

interface Manifest {
  format: string;
  version: number;
  modelId: string;
  dim: number;
  vocabSize: number;
  colbertPrecision: ColbertPrecision;
  count: number;
  maxLength: number | null;
  files: { docs: string; dense: string; sparse: string; colbert: string };
  docsBytes: number;
  docsCrc32: number;
  createdAt: string;
}

function isPlainObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A legacy index read whole into memory. */
export interface LegacyIndex {
  modelId: string;
  dim: number;
  vocabSize: number;
  colbertPrecision: ColbertPrecision;
  maxLength: number | null;
  docs: Map<string, { text: string; metadata: JsonObject }>;
  dense: DenseIndex;
  sparse: SparseIndex;
  colbert: ColbertStore;
}

/** Whether `dir` holds a legacy index (a `CURRENT` pointer file). */
export async function hasLegacyIndex(dir: string): Promise<boolean> {
  try {
    return (await stat(join(dir, LEGACY_POINTER))).isFile();
  } catch {
    return false;
  }
}

/** Removes the legacy files of `dir` (after its migration has committed). */
export async function removeLegacyFiles(dir: string): Promise<void> {
  await rm(join(dir, LEGACY_POINTER), { force: true });
  for (const name of await readdir(dir)) if (GEN_RE.test(name)) await rm(join(dir, name), { recursive: true, force: true });
}

/** Reads the legacy index of `dir` (INDEX_INVALID naming the file for anything damaged). */
export async function readLegacyIndex(dir: string): Promise<LegacyIndex> {
  const gen = await readPointer(dir);
  const genDir = join(dir, gen);
  const manifestPath = join(genDir, 'manifest.json');
  const manifest = await readManifest(manifestPath);
  const expect = { modelId: manifest.modelId };
  const part = async <T>(name: string, fn: (path: string) => Promise<T>): Promise<T> => {
    const path = join(genDir, name);
    try {
      return await fn(path);
    } catch (err) {
      if (err instanceof M3Error && err.code === 'INDEX_MISMATCH') throw new M3Error('INDEX_INVALID', `${err.message} (the manifest says otherwise)`, { file: path, cause: err });
      throw err;
    }
  };
  const dense = await part(manifest.files.dense, (p) => DenseIndex.load(p, { ...expect, dim: manifest.dim }));
  const sparse = await part(manifest.files.sparse, (p) => SparseIndex.load(p, { ...expect, vocabSize: manifest.vocabSize }));
  const colbert = await part(manifest.files.colbert, (p) => ColbertStore.load(p, { ...expect, dim: manifest.dim, precision: manifest.colbertPrecision }));
  const docs = new Map<string, { text: string; metadata: JsonObject }>();
  const docsPath = join(genDir, manifest.files.docs);
  await readDocs(docsPath, manifest, (id, text, metadata: JsonObject) => {
    if (docs.has(id)) corruptFile(docsPath, `duplicate id ${JSON.stringify(id)}`);
    docs.set(id, { text, metadata });
  });
  if (docs.size !== manifest.count) corruptFile(docsPath, `${docs.size} documents, the manifest says ${manifest.count}`);
  for (const [name, store] of [
    [manifest.files.dense, dense],
    [manifest.files.sparse, sparse],
    [manifest.files.colbert, colbert],
  ] as const) {
    if (store.size !== manifest.count) corruptFile(join(genDir, name), `${store.size} documents, the manifest says ${manifest.count}`);
    for (const id of docs.keys()) if (!store.has(id)) corruptFile(join(genDir, name), `document ${JSON.stringify(id)} is missing`);
  }
  return { modelId: manifest.modelId, dim: manifest.dim, vocabSize: manifest.vocabSize, colbertPrecision: manifest.colbertPrecision, maxLength: manifest.maxLength, docs, dense, sparse, colbert };
}

function corruptFile(file: string, what: string): never {
  throw new M3Error('INDEX_INVALID', `${file}: ${what}`, { file });
}

async function readPointer(dir: string): Promise<string> {
  const path = join(dir, LEGACY_POINTER);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new M3Error('INDEX_INVALID', `${dir} is not an M3Index directory (cannot read ${LEGACY_POINTER}: ${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file: path, cause: err });
  }
  let gen: unknown;
  try {
    const p = JSON.parse(text) as { format?: unknown; generation?: unknown };
    if (p.format !== FORMAT) throw new Error(`format ${JSON.stringify(p.format)}`);
    gen = p.generation;
  } catch (err) {
    corruptFile(path, `not an M3Index pointer file (${(err as Error).message})`);
  }
  // A strict pattern: the pointer can never lead outside the index directory.
  if (typeof gen !== 'string' || !GEN_RE.test(gen)) corruptFile(path, `invalid generation ${JSON.stringify(gen)}`);
  return gen;
}

async function readManifest(path: string): Promise<Manifest> {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new M3Error('INDEX_INVALID', `${path}: unreadable manifest (${(err as Error).message})`, { file: path, cause: err });
  }
  const bad = (field: string) => corruptFile(path, `invalid manifest field ${field}: ${JSON.stringify(m?.[field])}`);
  if (m?.format !== FORMAT) bad('format');
  if (m.version !== FORMAT_VERSION) corruptFile(path, `unsupported M3Index format version ${JSON.stringify(m.version)} (this build reads ${FORMAT_VERSION})`);
  if (typeof m.modelId !== 'string') bad('modelId');
  for (const f of ['dim', 'vocabSize', 'count', 'docsBytes', 'docsCrc32'] as const) {
    if (typeof m[f] !== 'number' || !Number.isSafeInteger(m[f]) || (m[f] as number) < 0) bad(f);
  }
  if ((m.dim as number) === 0 || (m.vocabSize as number) === 0) bad('dim');
  if (!['fp32', 'fp16', 'int8'].includes(m.colbertPrecision as string)) bad('colbertPrecision');
  if (m.maxLength !== null && (typeof m.maxLength !== 'number' || !Number.isSafeInteger(m.maxLength) || m.maxLength <= 0)) bad('maxLength');
  const files = m.files as Record<string, unknown> | undefined;
  for (const f of ['docs', 'dense', 'sparse', 'colbert']) {
    // plain file names only: a manifest can never point outside its generation directory
    if (typeof files?.[f] !== 'string' || !/^[\w.-]+$/.test(files[f] as string) || files[f] === '..' || files[f] === '.') bad('files');
  }
  return m as unknown as Manifest;
}

async function readDocs(path: string, manifest: Manifest, onDoc: (id: string, text: string, metadata: JsonObject) => void): Promise<void> {
  let crc = 0;
  let bytes = 0;
  let lineNo = 0;
  let pending: Buffer[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const handle = (line: Buffer) => {
    lineNo++;
    let doc: { id?: unknown; text?: unknown; metadata?: unknown };
    try {
      doc = JSON.parse(decoder.decode(line)) as typeof doc;
    } catch (err) {
      corruptFile(path, `line ${lineNo} is not valid JSON (${(err as Error).message})`);
    }
    if (typeof doc?.id !== 'string' || doc.id.length === 0 || typeof doc.text !== 'string' || !isPlainObject(doc.metadata)) {
      corruptFile(path, `line ${lineNo} is not a {id, text, metadata} document`);
    }
    onDoc(doc.id, doc.text, doc.metadata);
  };
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      crc = crc32(chunk, crc);
      bytes += chunk.byteLength;
      if (bytes > manifest.docsBytes) corruptFile(path, `longer than the ${manifest.docsBytes} bytes the manifest records`);
      let start = 0;
      for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
        pending.push(chunk.subarray(start, nl));
        handle(Buffer.concat(pending));
        pending = [];
        start = nl + 1;
      }
      if (start < chunk.byteLength) pending.push(chunk.subarray(start));
    }
  } catch (err) {
    if (err instanceof M3Error) throw err;
    throw new M3Error('INDEX_INVALID', `${path}: cannot read documents (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file: path, cause: err });
  }
  if (pending.length > 0) corruptFile(path, 'truncated (the last line has no newline)');
  if (bytes !== manifest.docsBytes) corruptFile(path, `truncated: ${bytes} bytes, the manifest records ${manifest.docsBytes}`);
  if (crc !== manifest.docsCrc32) corruptFile(path, 'checksum mismatch: the file is corrupt');
}
