/** `bgem3 index` builds an embedded M3Index from JSON Lines; `bgem3 search` queries one. */
import { dirname } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { M3Index } from '../../retrieval/m3-index.js';
import type { M3Document } from '../../store/types.js';
import { chunks, readJsonLines } from '../jsonl.js';
import { addEncodeOptions, addModelOptions, loadEncoder, positiveInt, type ModelFlags } from '../model-options.js';
import { UserError } from '../user-error.js';

function parseWeights(v: string): [number, number, number] {
  const w = v.split(',').map(Number);
  if (w.length !== 3 || w.some((x) => !Number.isFinite(x) || x < 0) || w.every((x) => x === 0)) {
    throw new InvalidArgumentError('expected three non-negative numbers "dense,sparse,colbert", not all zero');
  }
  return w as [number, number, number];
}

function toDocument(obj: Record<string, unknown>, line: number, source: string): M3Document {
  if (typeof obj.text !== 'string') throw new UserError(`${source} line ${line}: "text" must be a string`);
  if (obj.id !== undefined && typeof obj.id !== 'string' && typeof obj.id !== 'number') {
    throw new UserError(`${source} line ${line}: "id" must be a string or a number`);
  }
  if (obj.metadata !== undefined && (obj.metadata === null || typeof obj.metadata !== 'object' || Array.isArray(obj.metadata))) {
    throw new UserError(`${source} line ${line}: "metadata" must be an object`);
  }
  return {
    text: obj.text,
    ...(obj.id !== undefined ? { id: String(obj.id) } : {}),
    ...(obj.metadata ? { metadata: obj.metadata as Record<string, unknown> } : {}),
  };
}

export function registerIndex(program: Command): void {
  const cmd = program
    .command('index')
    .description('build an embedded M3 index (dense + sparse + ColBERT) from JSON Lines {"id", "text", "metadata"}')
    .requiredOption('-i, --input <file>', 'JSON Lines documents ("-" for stdin)')
    .requiredOption('--out <dir>', 'index directory (created; an existing index there is replaced atomically)')
    .option('--max-length <n>', 'max tokens per document', positiveInt('--max-length'), 8192)
    .option('--colbert-precision <p>', 'fp32, fp16 or int8', 'fp16')
    .option('--append', 'add to the index already in --out instead of starting a new one');
  addEncodeOptions(addModelOptions(cmd)).action(
    async (flags: ModelFlags & { input: string; out: string; colbertPrecision: string; append?: boolean }) => {
      if (!['fp32', 'fp16', 'int8'].includes(flags.colbertPrecision)) throw new UserError('--colbert-precision must be fp32, fp16 or int8');
      const encoder = await loadEncoder(flags);
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar({ format: 'indexing {bar} {value} docs | {speed} docs/s', stream: process.stderr }, cliProgress.Presets.shades_classic)
        : undefined;
      try {
        const index =
          flags.append && existsSync(flags.out)
            ? await M3Index.load(flags.out, { encoder, maxLength: flags.maxLength })
            : await M3Index.create({ encoder, colbertPrecision: flags.colbertPrecision as 'fp16', maxLength: flags.maxLength });
        const source = flags.input === '-' ? 'stdin' : flags.input;
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
        process.stdout.write(`${JSON.stringify({ index: flags.out, documents: index.size, model: encoder.modelId })}\n`);
      } finally {
        bar?.stop();
        await encoder.close();
      }
    },
  );
}

/** The model an index was built with, from its manifest: `hub:repo@commit:file` or `local:/path/file.onnx`. */
function modelOfIndex(dir: string): Pick<ModelFlags, 'model' | 'onnx' | 'revision'> | undefined {
  try {
    const pointer = JSON.parse(readFileSync(join(dir, 'CURRENT'), 'utf8')) as { generation?: string };
    const manifest = JSON.parse(readFileSync(join(dir, String(pointer.generation), 'manifest.json'), 'utf8')) as { modelId?: string };
    const id = manifest.modelId ?? '';
    const hub = /^hub:([^@]+)@([^:]+):(.+)$/.exec(id);
    if (hub) return { model: hub[1], revision: hub[2], onnx: hub[3] };
    if (id.startsWith('local:')) return { model: dirname(id.slice(6)), onnx: id.slice(6) };
  } catch {
    // fall through: M3Index.load reports what is wrong with the directory
  }
  return undefined;
}

export function registerSearch(program: Command): void {
  program
    .command('search')
    .description('search an index built by `bgem3 index`: dense + sparse candidates, M3 All-score rerank; prints JSON')
    .requiredOption('--index <dir>', 'index directory')
    .requiredOption('-q, --query <text>', 'query text')
    .option('-k, --k <n>', 'results', positiveInt('--k'), 10)
    .option('--fetch-k <n>', 'candidates from each of dense and sparse search', positiveInt('--fetch-k'), 100)
    .option('--weights <w>', 'dense,sparse,colbert weights of the rerank', parseWeights, [0.4, 0.2, 0.4] as [number, number, number])
    .option('-m, --model <dir|repo>', 'model (default: the one the index was built with)')
    .option('--onnx <file>', 'ONNX file inside the model directory/repo')
    .option('--offline', 'use only the local Hugging Face cache')
    .action(
      async (flags: { index: string; query: string; k: number; fetchK: number; weights: [number, number, number]; model?: string; onnx?: string; offline?: boolean }) => {
        if (!existsSync(flags.index)) throw new UserError(`index directory not found: ${flags.index}`);
        const fromIndex = modelOfIndex(flags.index);
        const model: ModelFlags = flags.model
          ? { model: flags.model, ...(flags.onnx ? { onnx: flags.onnx } : {}), ...(flags.offline ? { offline: true } : {}) }
          : { ...(fromIndex ?? { model: 'BAAI/bge-m3' }), ...(flags.offline ? { offline: true } : {}) };
        const encoder = await loadEncoder(model, { workers: 0 });
        try {
          const index = await M3Index.load(flags.index, { encoder });
          const results = await index.search(flags.query, { k: flags.k, fetchK: flags.fetchK, weights: flags.weights });
          process.stdout.write(`${JSON.stringify({ query: flags.query, results })}\n`);
        } finally {
          await encoder.close();
        }
      },
    );
}
