/**
 * What every route shares: the encoder behind the batcher, the per-request limits, and each
 * request's own AbortSignal (aborted when its client disconnects before the answer is sent).
 */
import { createRequire } from 'node:module';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { EncodeResult, OutputSelection } from '../types.js';
import type { BatcherOptions, EncodeBatcher } from './batcher.js';
import { ApiError } from './http-error.js';
import type { ServerMetrics } from './metrics.js';
import type { RequestLimits, ServerEncoder } from './options.js';
import type { IndexRegistry } from './routes/indexes.js';

/** The package version, reported by `GET /info` (the package resolves its own package.json). */
const PACKAGE_VERSION: string = (() => {
  try {
    return (createRequire(import.meta.url)('@bgem3/core/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

export interface EncodeRequest {
  /** Max tokens per text (default: the encoder's maxLength). */
  maxLength?: number;
  want: Required<OutputSelection>;
  signal: AbortSignal;
  /** `false`: a text over `maxLength` is a 413 instead of being cut (TEI's `truncate: false`). */
  truncate?: boolean;
  /** The request field the texts came from, for error messages. */
  field?: string;
  /**
   * Apply the per-request text and token limits (default true). The indexes' own encode calls
   * (a store batch of one request whose documents were already counted) skip them; the queue's
   * bounds still apply.
   */
  perRequestLimits?: boolean;
}

export class ServeContext {
  readonly encoder: ServerEncoder;
  readonly limits: Required<RequestLimits>;
  readonly batcher: EncodeBatcher;
  readonly batcherOptions: BatcherOptions;
  readonly metrics: ServerMetrics;
  readonly modelName: string;
  readonly modelDtype: string;
  readonly autoTruncate: boolean;
  readonly indexes: IndexRegistry;
  readonly version = PACKAGE_VERSION;

  constructor(args: {
    encoder: ServerEncoder;
    limits: Required<RequestLimits>;
    batcher: EncodeBatcher;
    batching: BatcherOptions;
    metrics: ServerMetrics;
    modelName: string;
    modelDtype: string;
    autoTruncate: boolean;
    indexes: IndexRegistry;
  }) {
    this.encoder = args.encoder;
    this.limits = args.limits;
    this.batcher = args.batcher;
    this.batcherOptions = args.batching;
    this.metrics = args.metrics;
    this.modelName = args.modelName;
    this.modelDtype = args.modelDtype;
    this.autoTruncate = args.autoTruncate;
    this.indexes = args.indexes;
  }

  /** Names of the served indexes. */
  indexNames(): string[] {
    return this.indexes.names();
  }

  /** Checks the limits, tokenises, and encodes through the shared batcher. */
  async encode(texts: readonly string[], r: EncodeRequest): Promise<EncodeResult[]> {
    const field = r.field ?? 'input';
    const limited = r.perRequestLimits !== false;
    if (limited && texts.length > this.limits.maxTexts) {
      throw new ApiError(413, 'too_many_texts', `${field} has ${texts.length} texts; this server takes at most ${this.limits.maxTexts} per request`, { param: field });
    }
    const maxLength = r.maxLength ?? this.encoder.maxLength;
    if (maxLength > this.encoder.maxLength) {
      throw new ApiError(400, 'invalid_argument', `max_length must be at most ${this.encoder.maxLength} (the server's limit), got ${maxLength}`, { param: 'max_length' });
    }
    const tokenized = await this.encoder.tokenize(texts, maxLength);
    let total = 0;
    for (let i = 0; i < tokenized.length; i++) {
      total += tokenized[i].ids.length;
      if (r.truncate === false && tokenized[i].truncated) {
        throw new ApiError(413, 'text_too_long', `${field}[${i}] is longer than ${maxLength} tokens and truncate is false`, { param: field });
      }
    }
    if (limited && total > this.limits.maxTokens) {
      throw new ApiError(413, 'too_many_tokens', `${field} has ${total} tokens; this server takes at most ${this.limits.maxTokens} per request`, { param: field });
    }
    return this.batcher.submit(
      // The encoder takes these tokenisations as they are: each text is tokenised once.
      texts.map((text, i) => ({ text, tokens: tokenized[i].ids.length, tokenized: tokenized[i] })),
      { maxLength, want: r.want, signal: r.signal },
    );
  }
}

/** An AbortSignal that fires when the client goes away before its response is complete. */
export function clientSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort(new Error('client disconnected'));
  };
  reply.raw.once('close', onClose);
  request.raw.once('aborted', onClose);
  return controller.signal;
}

/** Sum of tokens, for `usage`. */
export function usage(results: readonly EncodeResult[]): { prompt_tokens: number; total_tokens: number } {
  const n = results.reduce((s, r) => s + r.tokens, 0);
  return { prompt_tokens: n, total_tokens: n };
}
