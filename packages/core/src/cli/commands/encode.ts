/** `bgem3 encode`: JSON Lines `{"text": …}` in, one `{"dense", "sparse", "colbert"}` line out per input. */
import type { Command } from 'commander';
import { sparseToRecord } from '../../scoring/sparse-convert.js';
import type { EncodeResult } from '../../types.js';
import { checkInput, chunks, LineWriter, readJsonLines, sourceName, stringField } from '../jsonl.js';
import { addEncodeOptions, addModelOptions, loadEncoder, positiveInt, type ModelFlags } from '../model-options.js';
import { UserError } from '../user-error.js';

/** One encoding as plain JSON (ColBERT as rows of numbers). */
export function encodingToJson(r: EncodeResult): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (r.dense) o.dense = Array.from(r.dense);
  if (r.sparse) o.sparse = sparseToRecord(r.sparse);
  if (r.colbert) {
    const { data, count, dim } = r.colbert;
    o.colbert = Array.from({ length: count }, (_, i) => Array.from(data.subarray(i * dim, (i + 1) * dim)));
  }
  return o;
}

export function registerEncode(program: Command): void {
  const cmd = program
    .command('encode')
    .description('encode texts: reads JSON Lines {"text": "..."} (stdin by default), writes {"dense", "sparse", "colbert"} per line')
    .option('-i, --input <file>', 'JSON Lines input (default stdin)')
    .option('-o, --output <file>', 'output file (default stdout)')
    .option('--max-length <n>', 'max tokens per text, <s> and </s> included', positiveInt('--max-length'), 8192)
    .option('--outputs <list>', 'which outputs, comma-separated', 'dense,sparse,colbert');
  addEncodeOptions(addModelOptions(cmd)).action(async (flags: ModelFlags & { input?: string; output?: string; outputs: string }) => {
    const outs = new Set(flags.outputs.split(',').map((s) => s.trim()));
    for (const o of outs) if (!['dense', 'sparse', 'colbert'].includes(o)) throw new UserError(`--outputs: unknown output "${o}" (use dense, sparse, colbert)`);
    // Before the model loads: a bad --output must not cost a model load (or a download).
    await checkInput(flags.input, '--input');
    const writer = await LineWriter.open(flags.output, '--output', flags.input);
    try {
      const encoder = await loadEncoder(flags);
      const source = sourceName(flags.input);
      try {
        for await (const batch of chunks(readJsonLines(flags.input), 256)) {
          const texts = batch.map(([line, obj]) => stringField(obj, 'text', line, source));
          const results = await encoder.encode(texts, {
            dense: outs.has('dense'),
            sparse: outs.has('sparse'),
            colbert: outs.has('colbert'),
            maxLength: flags.maxLength,
          });
          for (const r of results) await writer.write(encodingToJson(r));
        }
      } finally {
        await encoder.close();
      }
    } finally {
      await writer.close();
    }
  });
}
