/** `bgem3 download`: fetch a model into the Hugging Face cache and print where it is. */
import type { Command } from 'commander';
import { Option } from 'commander';
import { createCliProgress } from '../../hub/cli-progress.js';
import { resolveModel } from '../../model/resolve.js';

export function registerDownload(program: Command): void {
  program
    .command('download')
    .description('download a model (default BAAI/bge-m3) into the Hugging Face cache; prints its local files as JSON')
    .argument('[repo]', 'Hugging Face repo id', 'BAAI/bge-m3')
    .addOption(new Option('--dtype <dtype>', 'fp32 or q8 (int8 backbone)').choices(['fp32', 'q8']).default('fp32'))
    .option('--revision <rev>', 'branch, tag or commit')
    .option('--onnx <file>', 'ONNX file in the repo (default: detected)')
    .action(async (repo: string, flags: { dtype: 'fp32' | 'q8'; revision?: string; onnx?: string }) => {
      const progress = createCliProgress();
      try {
        const r = await resolveModel(repo, {
          dtype: flags.dtype,
          ...(flags.onnx ? { onnxFile: flags.onnx } : {}),
          hub: { onProgress: progress.onProgress, ...(flags.revision ? { revision: flags.revision } : {}) },
        });
        progress.stop();
        process.stdout.write(`${JSON.stringify({ model: r.modelId, files: r.paths })}\n`);
      } finally {
        progress.stop();
      }
    });
}
