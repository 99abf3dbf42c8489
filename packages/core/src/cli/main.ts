#!/usr/bin/env node
/**
 * The `bgem3` command line. Prints JSON on stdout; user errors print one line on stderr and exit
 * with status 1 (set BGEM3_DEBUG=1 for stack traces).
 */
import { Command, CommanderError } from 'commander';
import { M3Error } from '../errors.js';
import { registerCheck } from './commands/check.js';
import { registerDownload } from './commands/download.js';
import { registerEncode } from './commands/encode.js';
import { registerIndex, registerSearch } from './commands/index-search.js';
import { registerScore } from './commands/score.js';
import { registerServe } from './commands/serve.js';
import { UserError } from './user-error.js';

const program = new Command('bgem3')
  .description('BGE-M3 dense, sparse and ColBERT encodings and retrieval, on onnxruntime')
  .configureOutput({
    // Commander's own usage errors get the same one-line "bgem3: …" form as ours.
    outputError: (str, write) => write(`bgem3: ${str.replace(/^error: /, '').trimEnd()} (see bgem3 --help)\n`),
  })
  .exitOverride();

registerEncode(program);
registerScore(program);
registerIndex(program);
registerSearch(program);
registerDownload(program);
registerCheck(program);
registerServe(program);

function fail(message: string, err?: unknown): never {
  process.stderr.write(`bgem3: ${message.split('\n')[0]}\n`);
  if (process.env.BGEM3_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode); // commander already printed its message (or help/version)
  }
  if (err instanceof UserError || err instanceof M3Error || err instanceof TypeError || err instanceof RangeError) {
    fail(err.message, err);
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EPIPE') process.exit(0);
  fail(`unexpected error: ${e?.message ?? String(err)} (set BGEM3_DEBUG=1 for details)`, err);
}
