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
import { toCliWords } from './vocabulary.js';
import { describeFsError, FileSystemError, isErrnoError } from '../util/fs-errors.js';

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
  process.stderr.write(`bgem3: ${toCliWords(message.split('\n')[0])}\n`);
  if (process.env.BGEM3_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

// stdout redirected to a full disk, or a closed pipe: one line (or a quiet exit), not an
// "Unhandled 'error' event" with a stack.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  fail(`cannot write stdout: ${describeFsError(err)}`, err);
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode); // commander already printed its message (or help/version)
  }
  if (err instanceof UserError || err instanceof M3Error || err instanceof TypeError || err instanceof RangeError || err instanceof FileSystemError) {
    fail(err.message, err);
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EPIPE') process.exit(0);
  // A system error that no layer described: say what happened, and to which file.
  if (isErrnoError(err)) fail(`${e.path ? `cannot use ${e.path}: ` : ''}${describeFsError(err)}${e.syscall ? ` (during ${e.syscall})` : ''}`, err);
  fail(`unexpected error: ${e?.message ?? String(err)} (set BGEM3_DEBUG=1 for details)`, err);
}
