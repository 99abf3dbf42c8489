/**
 * `bgem3 serve`: one loaded model shared over HTTP (see src/server). Binds 127.0.0.1 unless told
 * otherwise; SIGTERM or SIGINT stops accepting, drains the requests in flight, then exits 0.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { readApiKeyFile } from '../../server/auth.js';
import { createServer } from '../../server/server.js';
import { addEncodeOptions, addModelOptions, loadEncoder, positiveInt, type ModelFlags } from '../model-options.js';
import { UserError } from '../user-error.js';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  index: string[];
  apiKeyFile?: string;
  workers: number;
  maxLength?: number;
  maxBatchTokens?: number;
  maxWaitMs: number;
  maxQueueTokens?: number;
  maxTexts?: number;
  maxTokens?: number;
  bodyLimit?: number;
  drainTimeout: number;
  modelCheck: boolean;
}

function port(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('--port must be an integer from 0 to 65535');
  return n;
}

function indexSpec(v: string, prev: string[]): string[] {
  if (!/^[^=]+=.+$/.test(v)) throw new InvalidArgumentError(`--index takes NAME=DIR, got "${v}"`);
  return [...prev, v];
}

function nonNegative(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number ≥ 0`);
    return n;
  };
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the model over HTTP: OpenAI /v1/embeddings, TEI /embed /embed_sparse /rerank /info, /v1/m3/encode, /v1/m3/score, indexes, /health, /metrics')
    .option('--host <addr>', 'address to bind (0.0.0.0 exposes the server to the network)', '127.0.0.1')
    .option('--port <n>', 'port (0: any free port)', port, 8080)
    .option('--index <NAME=DIR>', 'serve an index under /v1/indexes/NAME (created when DIR is missing or empty); repeatable', indexSpec, [])
    .option('--api-key-file <file>', 'require Authorization: Bearer <the first line of this file> on every route but GET /health')
    .option('--workers <n>', 'encoder worker threads (each loads the model)', positiveInt('--workers'), 1)
    .option('--max-length <n>', 'max tokens per text, <s> and </s> included (default: the model limit, 8192)', positiveInt('--max-length'))
    .option('--max-batch-tokens <n>', 'padded tokens per batch (default 16384)', positiveInt('--max-batch-tokens'))
    .option('--max-wait-ms <n>', 'longest wait for a batch to fill, ms', nonNegative('--max-wait-ms'), 2)
    .option('--max-queue-tokens <n>', 'tokens waiting beyond which requests get 429 (default 262144)', positiveInt('--max-queue-tokens'))
    .option('--max-texts <n>', 'texts per request (default 2048)', positiveInt('--max-texts'))
    .option('--max-tokens <n>', 'tokens per request (default 131072)', positiveInt('--max-tokens'))
    .option('--body-limit <bytes>', 'request body bytes (default 16 MiB)', positiveInt('--body-limit'))
    .option('--drain-timeout <ms>', 'on SIGTERM, how long to wait for requests in flight', positiveInt('--drain-timeout'), 30_000)
    .option('--no-model-check', 'skip the model check at start-up');
  addEncodeOptions(addModelOptions(cmd)).action(async (flags: ServeFlags) => {
    const indexes: Record<string, string> = {};
    for (const spec of flags.index) {
      const at = spec.indexOf('=');
      const name = spec.slice(0, at);
      if (indexes[name] !== undefined) throw new UserError(`--index ${name} is given twice`);
      indexes[name] = spec.slice(at + 1);
    }
    // Read the key before loading the model: a wrong path fails at once.
    const apiKey = flags.apiKeyFile !== undefined ? readApiKeyFile(flags.apiKeyFile) : undefined;
    const encoder = await loadEncoder(flags, { workers: flags.workers, ...(flags.maxLength ? { maxLength: flags.maxLength } : {}) });
    const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    let server;
    try {
      server = await createServer({
        encoder,
        host: flags.host,
        port: flags.port,
        indexes,
        ...(apiKey !== undefined ? { apiKey } : {}),
        modelCheck: flags.modelCheck,
        modelDtype: flags.dtype === 'q8' ? 'int8' : 'float32',
        drainTimeoutMs: flags.drainTimeout,
        batching: {
          maxWaitMs: flags.maxWaitMs,
          ...(flags.batchSize ? { maxBatchTexts: flags.batchSize } : {}),
          ...(flags.maxBatchTokens ? { maxBatchTokens: flags.maxBatchTokens } : {}),
          ...(flags.maxQueueTokens ? { maxQueueTokens: flags.maxQueueTokens } : {}),
        },
        limits: {
          ...(flags.maxTexts ? { maxTexts: flags.maxTexts } : {}),
          ...(flags.maxTokens ? { maxTokens: flags.maxTokens } : {}),
          ...(flags.bodyLimit ? { bodyLimit: flags.bodyLimit } : {}),
        },
        log,
      });
      await server.listen();
      if (!['127.0.0.1', 'localhost', '::1'].includes(flags.host) && apiKey === undefined) {
        log(`warning: listening on ${flags.host} without --api-key-file: anyone who can reach this address can use the model${Object.keys(indexes).length ? ' and write the indexes' : ''}`);
      }
    } catch (e) {
      await server?.close().catch(() => undefined);
      await encoder.close();
      throw e;
    }
    const s = server;
    await new Promise<void>((resolve, reject) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log(`${signal}: shutting down`);
        s.close()
          .then(() => encoder.close())
          .then(resolve, reject);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
  });
}
