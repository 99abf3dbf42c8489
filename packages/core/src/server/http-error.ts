/**
 * Errors a route answers with, and their JSON bodies. Two shapes, each the one its clients parse:
 * - OpenAI's `{"error": {"message", "type", "param", "code"}}` for every route under `/v1` (the
 *   `openai` package and LangChain's OpenAIEmbeddings read `error.message`), and for unknown routes;
 * - TEI's `{"error": "...", "error_type": "..."}` for `/embed`, `/embed_sparse`, `/rerank`, `/info`.
 * No response ever carries a stack trace: unexpected errors are logged and answered with a
 * generic message.
 */
/**
 * The code of a core M3Error. Checked by shape, not `instanceof`: the encoder may come from the
 * main bundle (`@bgem3/core`) and the server from its own (`@bgem3/core/server`), each with its
 * own copy of the class.
 */
export function m3ErrorCode(err: unknown): string | undefined {
  if (!(err instanceof Error) || err.name !== 'M3Error') return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** An error with its HTTP status and a stable snake_case code (also the `bgem3_errors_total` label). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** The request field at fault, when there is one (OpenAI's `param`). */
  readonly param: string | null;
  /** Seconds for the `Retry-After` header (429/503). */
  readonly retryAfter: number | undefined;
  constructor(status: number, code: string, message: string, options: { param?: string; retryAfter?: number } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.param = options.param ?? null;
    this.retryAfter = options.retryAfter;
  }
}

/** 400 invalid_argument naming the field. */
export function badRequest(message: string, param?: string): ApiError {
  return new ApiError(400, 'invalid_argument', message, param !== undefined ? { param } : {});
}

/** OpenAI's error `type` for a status. */
function openAiType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return status === 503 ? 'service_unavailable_error' : 'server_error';
  return 'invalid_request_error';
}

/** TEI's `error_type` for a status (its router's `ErrorType`). */
function teiType(status: number): string {
  if (status === 413) return 'Validation';
  if (status === 429) return 'Overloaded';
  if (status === 401) return 'Unauthorized';
  if (status >= 500) return status === 503 ? 'Unhealthy' : 'Backend';
  return 'Validation';
}

/** Which error body a route speaks. */
export type ErrorDialect = 'openai' | 'tei';

export function errorBody(err: ApiError, dialect: ErrorDialect): unknown {
  if (dialect === 'tei') return { error: err.message, error_type: teiType(err.status), code: err.code };
  return { error: { message: err.message, type: openAiType(err.status), param: err.param, code: err.code } };
}

/** Core errors that are the caller's fault, mapped to 4xx; anything else is a 500. */
const M3_STATUS: Partial<Record<string, number>> = {
  INVALID_ARGUMENT: 400,
  INDEX_MISMATCH: 400,
  ABORTED: 499,
};

/**
 * Turns anything thrown while serving into an {@link ApiError}: fastify's own 4xx errors (bad JSON,
 * body too large, wrong content type) keep their status and message; core's argument errors are
 * 400; everything else becomes a 500 whose message says nothing about internals.
 */
export function toApiError(err: unknown): { api: ApiError; unexpected: boolean } {
  if (err instanceof ApiError) return { api: err, unexpected: false };
  const code = m3ErrorCode(err);
  if (code !== undefined) {
    const status = M3_STATUS[code];
    if (status !== undefined) return { api: new ApiError(status, code.toLowerCase(), (err as Error).message), unexpected: false };
    return { api: new ApiError(500, code.toLowerCase(), `the server failed to handle the request (${code})`), unexpected: true };
  }
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const code = fastifyCode(String(e.code ?? ''), e.statusCode);
    const message = e.statusCode === 413 ? 'request body is larger than the server accepts (see bodyLimit)' : String(e.message ?? 'bad request');
    return { api: new ApiError(e.statusCode, code, message), unexpected: false };
  }
  return { api: new ApiError(500, 'internal_error', 'internal server error'), unexpected: true };
}

function fastifyCode(code: string, status: number): string {
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'body_too_large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'unsupported_media_type';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return 'invalid_json';
    default:
      return status === 400 ? 'invalid_json' : `http_${status}`;
  }
}
