/** `bgem3 score`: FlagEmbedding `compute_score` for `{"query", "passage"}` lines. */
import type { Command } from 'commander';
import { computeScore } from '../../scoring/compute-score.js';
import type { M3Weights as ModeWeights } from '../../scoring/weights.js';
import { parseWeights } from '../flag-values.js';
import { checkInput, chunks, LineWriter, readJsonLines, sourceName, stringField } from '../jsonl.js';
import { addEncodeOptions, addModelOptions, loadEncoder, positiveInt, type ModelFlags } from '../model-options.js';

export function registerScore(program: Command): void {
  const cmd = program
    .command('score')
    .description('score pairs: reads {"query", "passage"} lines, writes dense, sparse, colbert, sparse+dense, colbert+sparse+dense')
    .option('--pairs <file>', 'JSON Lines pairs (default stdin)')
    .option('-o, --output <file>', 'output file (default stdout)')
    .option('--weights <w>', 'dense,sparse,colbert weights', (v: string) => parseWeights(v) as unknown as ModeWeights, [1, 1, 1] as unknown as ModeWeights)
    .option('--max-query-length <n>', 'query max tokens', positiveInt('--max-query-length'), 512)
    .option('--max-passage-length <n>', 'passage max tokens', positiveInt('--max-passage-length'), 8192);
  addEncodeOptions(addModelOptions(cmd)).action(
    async (flags: ModelFlags & { pairs?: string; output?: string; weights: ModeWeights; maxQueryLength: number; maxPassageLength: number }) => {
      // Before the model loads: a bad --output must not cost a model load (or a download).
      await checkInput(flags.pairs, '--pairs');
      const writer = await LineWriter.open(flags.output, '--output', flags.pairs);
      try {
        const encoder = await loadEncoder(flags);
        const source = sourceName(flags.pairs);
        try {
          for await (const batch of chunks(readJsonLines(flags.pairs), 256)) {
            const pairs = batch.map(([line, o]) => [stringField(o, 'query', line, source), stringField(o, 'passage', line, source)] as const);
            const scores = await computeScore(encoder, pairs, {
              weights: flags.weights,
              maxQueryLength: flags.maxQueryLength,
              maxPassageLength: flags.maxPassageLength,
            });
            for (const s of scores) await writer.write(s);
          }
        } finally {
          await encoder.close();
        }
      } finally {
        await writer.close();
      }
    },
  );
}
