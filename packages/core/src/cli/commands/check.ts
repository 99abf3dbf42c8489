/**
 * `bgem3 check`: runs BAAI's model-card example through the model and prints each figure beside
 * the published one (or a `--reference` file's), with deviation and verdict. Exit 0 when all are
 * within tolerance and the universal checks pass, 1 with one `bgem3: check failed: …` line on
 * stderr otherwise.
 */
import { existsSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { checkModel } from '../../check/check-model.js';
import { loadCheckReference } from '../../check/reference.js';
import { formatCheckReport } from '../../check/report.js';
import { resolveModelPaths, type ModelDtype } from '../../model/layout.js';
import { addModelOptions, loadEncoder, type ModelFlags } from '../model-options.js';

const QUANTISED = /quantized|int8|q8/i;

/**
 * The dtype to judge by: `--dtype`; else q8 when the graph to load is a quantised one by name
 * (`--onnx`, or the file a local directory resolves to: a directory holding only
 * `onnx/model_quantized.onnx` loads it); else the library's default (from the model id).
 */
function dtypeOf(flags: ModelFlags): ModelDtype | undefined {
  if (flags.dtype) return flags.dtype;
  if (flags.onnx && QUANTISED.test(basename(flags.onnx))) return 'q8';
  if (existsSync(flags.model) && statSync(flags.model).isDirectory()) {
    return QUANTISED.test(basename(resolveModelPaths(flags.model, flags.onnx ? { onnxFile: flags.onnx } : {}).onnx)) ? 'q8' : 'fp32';
  }
  return undefined;
}

export function registerCheck(program: Command): void {
  const cmd = program
    .command('check')
    .description(
      "verify the model: BAAI's published example for BAAI/bge-m3 (or --reference F for another model) plus checks every model must pass; exit 1 when a figure is off",
    )
    .option('--json', 'print the result as JSON')
    .option('--reference <file>', 'JSON file of reference figures for another model (format: see the @bgem3/core README, "Verify your installation")');
  addModelOptions(cmd).action(async (flags: ModelFlags & { json?: boolean; reference?: string }) => {
    // Before the model loads: a bad reference file must not cost a model load (or a download).
    const reference = flags.reference !== undefined ? loadCheckReference(flags.reference) : 'auto';
    const encoder = await loadEncoder(flags);
    let result;
    try {
      const dtype = dtypeOf(flags);
      result = await checkModel(encoder, { reference, ...(dtype ? { dtype } : {}) });
    } finally {
      await encoder.close();
    }
    process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : formatCheckReport(result));
    if (!result.ok) {
      process.stderr.write(`bgem3: ${result.summary}\n`);
      process.exitCode = 1;
    }
  });
}
