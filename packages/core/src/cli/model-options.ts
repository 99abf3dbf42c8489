/** The model options shared by every CLI command, and loading an encoder from them. */
import { Command, Option } from 'commander';
import { M3Encoder, type LoadOptions } from '../inference/encoder.js';
import { DEFAULT_MODEL } from '../model/resolve.js';
import { createCliProgress } from '../hub/cli-progress.js';
import { positiveInt } from './flag-values.js';

export interface ModelFlags {
  model: string;
  onnx?: string;
  dtype?: 'fp32' | 'q8';
  revision?: string;
  offline?: boolean;
  maxLength?: number;
  batchSize?: number;
  threads?: number;
}

export { positiveInt };

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('-m, --model <dir|repo>', 'model directory or Hugging Face repo id', DEFAULT_MODEL)
    .option('--onnx <file>', 'ONNX file inside the model directory/repo (default: detected)')
    .addOption(new Option('--dtype <dtype>', 'fp32 or q8 (int8 backbone)').choices(['fp32', 'q8']))
    .option('--revision <rev>', 'Hub revision (branch, tag or commit)')
    .option('--offline', 'use only the local Hugging Face cache (also HF_HUB_OFFLINE=1)');
}

export function addEncodeOptions(cmd: Command): Command {
  return cmd
    .option('--batch-size <n>', 'texts per forward pass', positiveInt('--batch-size'))
    .option('--threads <n>', 'onnxruntime intra-op threads', positiveInt('--threads'));
}

/** Loads the encoder, with a download progress bar on a terminal. */
export async function loadEncoder(flags: ModelFlags, extra: LoadOptions = {}): Promise<M3Encoder> {
  const progress = createCliProgress();
  try {
    return await M3Encoder.load(flags.model, {
      ...extra,
      ...(flags.onnx ? { onnxFile: flags.onnx } : {}),
      ...(flags.dtype ? { dtype: flags.dtype } : {}),
      ...(flags.batchSize ? { batchSize: flags.batchSize } : {}),
      ...(flags.threads ? { intraOpNumThreads: flags.threads } : {}),
      cache: false,
      hub: {
        onProgress: progress.onProgress,
        ...(flags.revision ? { revision: flags.revision } : {}),
        ...(flags.offline ? { offline: true } : {}),
      },
    });
  } finally {
    progress.stop();
  }
}
