/** `bgem3 index` builds an embedded M3Index from JSON Lines; `bgem3 search` queries one. */
import { existsSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { M3Error } from '../../errors.js';
import { COLBERT_STORAGES, DEFAULT_COLBERT_STORAGE, type ColbertStorage } from '../../store/colbert-codec.js';
import { M3Index, type M3IndexOptions } from '../../retrieval/m3-index.js';
import type { M3Document } from '../../store/types.js';
import { DEFAULT_RERANK_DEPTH } from '../../store/options.js';
import type { M3Encoder } from '../../inference/encoder.js';
import { parseWeights } from '../flag-values.js';
import { modelSourceOf, readIndexInfo, writeModelSource, type IndexInfo, type ModelSource } from '../index-info.js';
import { checkInput, chunks, readJsonLines, sourceName } from '../jsonl.js';
import { addEncodeOptions, addModelOptions, loadEncoder, positiveInt, type ModelFlags } from '../model-options.js';
import { assertWritableDirectory } from '../output-target.js';
import { UserError } from '../user-error.js';


function toDocument(obj: Record<string, unknown>, line: number, source: string): M3Document {
  if (typeof obj.text !== 'string') throw new UserError(`${source} line ${line}: "text" must be a string`);
  if (typeof obj.id === 'number') {
    // JSON numbers above 2^53 lose digits (9007199254740993 reads as 9007199254740992), so two
    // documents could silently become one: ids are strings, written as written.
    throw new UserError(`${source} line ${line}: "id" must be a string; quote numeric ids ("id": "42"), since JSON numbers can lose digits`);
  }
  if (obj.id !== undefined && typeof obj.id !== 'string') throw new UserError(`${source} line ${line}: "id" must be a string`);
  if (obj.metadata !== undefined && (obj.metadata === null || typeof obj.metadata !== 'object' || Array.isArray(obj.metadata))) {
    throw new UserError(`${source} line ${line}: "metadata" must be an object`);
  }
  return {
    text: obj.text,
    ...(obj.id !== undefined ? { id: obj.id } : {}),
    ...(obj.metadata ? { metadata: obj.metadata as Record<string, unknown> } : {}),
  };
}

/** True when `dir` holds nothing (or does not exist): a place for a new index. */
function isEmptyOrMissing(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}

/** What `bgem3 index` records of the model so that `bgem3 search` can load it again. */
function sourceOfFlags(flags: ModelFlags, encoder: M3Encoder): ModelSource {
  const local = existsSync(flags.model);
  const hub = /^hub:[^@]+@([0-9a-f]{40}):/.exec(encoder.modelId);
  return {
    model: local ? resolve(flags.model) : flags.model,
    ...(hub ? { revision: hub[1] } : flags.revision ? { revision: flags.revision } : {}),
    ...(flags.onnx ? { onnx: local ? resolve(flags.model, flags.onnx) : flags.onnx } : {}),
    ...(flags.dtype ? { dtype: flags.dtype } : {}),
  };
}

function flagsOfSource(s: ModelSource): ModelFlags {
  return { model: s.model, ...(s.revision ? { revision: s.revision } : {}), ...(s.onnx ? { onnx: s.onnx } : {}), ...(s.dtype ? { dtype: s.dtype } : {}) };
}

/**
 * Loads the model an index records, or fails in one line saying to pass `-m`; never a
 * default model (that would be a download the user did not ask for).
 */
async function loadIndexModel(dir: string, info: IndexInfo, extra: Partial<ModelFlags>, workers?: number): Promise<M3Encoder> {
  const source = modelSourceOf(info);
  if (!source) throw new UserError(`the index ${dir} does not record where its model is (model id ${JSON.stringify(info.modelId)}): pass -m <dir|repo>`);
  try {
    return await loadEncoder({ ...flagsOfSource(source), ...extra }, workers !== undefined ? { workers } : {});
  } catch (err) {
    if (err instanceof M3Error && err.code === 'MODEL_NOT_FOUND') {
      throw new UserError(`the model the index ${dir} was built with (${source.model}) cannot be loaded: ${err.message}. Pass -m with its location`);
    }
    throw err;
  }
}

interface IndexFlags extends ModelFlags {
  input?: string;
  out: string;
  colbertPrecision?: string;
  append?: boolean;
}

export function registerIndex(program: Command): void {
  const cmd = program
    .command('index')
    .description('build an embedded M3 index (dense + sparse + ColBERT) from JSON Lines {"id", "text", "metadata"} (stdin by default); ids are strings')
    .option('-i, --input <file>', 'JSON Lines documents (default stdin)')
    .requiredOption('--out <dir>', 'index directory (created; an existing index there is replaced atomically)')
    .option('--max-length <n>', 'max tokens per document (default 8192; with --append, the index\'s)', positiveInt('--max-length'))
    .option('--colbert-precision <p>', `how ColBERT vectors are stored: ${COLBERT_STORAGES.join(', ')} (default ${DEFAULT_COLBERT_STORAGE}; with --append, the index's)`)
    .option('--append', 'add to the index already in --out, keeping its model and options unless flags are given');
  addEncodeOptions(addModelOptions(cmd)).action(async (flags: IndexFlags, command: Command) => {
    if (flags.colbertPrecision !== undefined && !COLBERT_STORAGES.includes(flags.colbertPrecision as ColbertStorage)) {
      throw new UserError(`--colbert-precision must be one of ${COLBERT_STORAGES.join(', ')}, got ${JSON.stringify(flags.colbertPrecision)}`);
    }
    const given = (key: string) => command.getOptionValueSource(key) === 'cli';
    // Before the model loads: an unwritable --out must not cost a model load and an encode.
    await checkInput(flags.input);
    await assertWritableDirectory(flags.out, '--out');
    const appending = !!flags.append && !isEmptyOrMissing(flags.out);
    const info = appending ? await readIndexInfo(flags.out) : undefined;
    if (info && flags.colbertPrecision !== undefined && info.colbertPrecision !== undefined && flags.colbertPrecision !== info.colbertPrecision) {
      throw new UserError(
        `--colbert-precision ${flags.colbertPrecision} differs from the index ${flags.out}, which stores ColBERT vectors as ${info.colbertPrecision}: drop the flag, or build a new index without --append`,
      );
    }
    const modelGiven = ['model', 'onnx', 'dtype', 'revision'].some(given);
    const extra = { ...(flags.offline ? { offline: true } : {}), ...(flags.batchSize ? { batchSize: flags.batchSize } : {}), ...(flags.threads ? { threads: flags.threads } : {}) };
    const encoder = info && !modelGiven ? await loadIndexModel(flags.out, info, extra) : await loadEncoder(flags);
    const bar = process.stderr.isTTY
      ? new cliProgress.SingleBar({ format: 'indexing {bar} {value} docs | {speed} docs/s', stream: process.stderr }, cliProgress.Presets.shades_classic)
      : undefined;
    try {
      let index: M3Index;
      if (info) {
        // The saved maxLength unless --max-length was given; the encoder's model id is checked by load.
        index = await M3Index.load(flags.out, { encoder, ...(given('maxLength') && flags.maxLength ? { maxLength: flags.maxLength } : {}) });
      } else {
        // modelSource: where `bgem3 search` finds the model again (kept by stores that support it).
        const options: M3IndexOptions & { modelSource?: string } = {
          encoder,
          maxLength: flags.maxLength ?? 8192,
          ...(flags.colbertPrecision ? { colbertPrecision: flags.colbertPrecision as 'fp16' } : {}),
          modelSource: JSON.stringify(sourceOfFlags(flags, encoder)),
        };
        index = await M3Index.create(options);
      }
      try {
        const source = sourceName(flags.input);
        const started = Date.now();
        let done = 0;
        bar?.start(0, 0, { speed: '0' });
        for await (const batch of chunks(readJsonLines(flags.input), 256)) {
          await index.add(batch.map(([line, obj]) => toDocument(obj, line, source)));
          done += batch.length;
          bar?.setTotal(done);
          bar?.update(done, { speed: (done / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1) });
        }
        bar?.stop();
        await index.save(flags.out);
        // Where `bgem3 search` finds the model again (model ids of local models are content hashes).
        const recorded = info ? modelSourceOf(info) : undefined;
        await writeModelSource(flags.out, info && !modelGiven && recorded ? recorded : sourceOfFlags(flags, encoder));
        process.stdout.write(`${JSON.stringify({ index: flags.out, documents: index.size, model: encoder.modelId })}\n`);
      } finally {
        await index.close();
      }
    } finally {
      bar?.stop();
      await encoder.close();
    }
  });
}

interface SearchFlags {
  index: string;
  query: string;
  k: number;
  fetchK: number;
  rerankDepth: number;
  weights: [number, number, number];
  model?: string;
  onnx?: string;
  offline?: boolean;
}

export function registerSearch(program: Command): void {
  program
    .command('search')
    .description('search an index built by `bgem3 index`: dense + sparse candidates, M3 All-score rerank; prints JSON')
    .requiredOption('--index <dir>', 'index directory')
    .requiredOption('-q, --query <text>', 'query text')
    .option('-k, --k <n>', 'results', positiveInt('--k'), 10)
    .option('--fetch-k <n>', 'candidates from each of dense and sparse search', positiveInt('--fetch-k'), 100)
    .option('--rerank-depth <n>', 'best candidates by dense + sparse that get the ColBERT rerank', positiveInt('--rerank-depth'), DEFAULT_RERANK_DEPTH)
    .option('--weights <w>', 'dense,sparse,colbert weights of the rerank', parseWeights, [0.4, 0.2, 0.4] as [number, number, number])
    .option('-m, --model <dir|repo>', 'model (default: the one the index was built with)')
    .option('--onnx <file>', 'ONNX file inside the model directory/repo')
    .option('--offline', 'use only the local Hugging Face cache')
    .action(async (flags: SearchFlags) => {
      if (!existsSync(flags.index)) throw new UserError(`index directory not found: ${flags.index}`);
      // The index first: a directory that is not an index is one line, and never a model load.
      const info = await readIndexInfo(flags.index);
      const offline = flags.offline ? { offline: true } : {};
      const encoder = flags.model
        ? await loadEncoder({ model: flags.model, ...(flags.onnx ? { onnx: flags.onnx } : {}), ...offline }, { workers: 0 })
        : await loadIndexModel(flags.index, info, { ...(flags.onnx ? { onnx: flags.onnx } : {}), ...offline }, 0);
      try {
        const index = await M3Index.load(flags.index, { encoder });
        try {
          const results = await index.search(flags.query, { k: flags.k, fetchK: flags.fetchK, rerankDepth: flags.rerankDepth, weights: flags.weights });
          process.stdout.write(`${JSON.stringify({ query: flags.query, results })}\n`);
        } finally {
          await index.close();
        }
      } finally {
        await encoder.close();
      }
    });
}
