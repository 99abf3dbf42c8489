// Shared by the server*.test.ts files: a real server on 127.0.0.1 (port 0) over the fixture model.
import { fileURLToPath } from 'node:url';
import { M3Encoder } from '../src/inference/encoder.js';
import { createServer, type M3Server, type ServerEncoder, type ServerOptions } from '../src/server/index.js';
import type { EncodeOptions, EncodeResult } from '../src/types.js';
import { FIXTURE } from './helpers/fixture.ts';

export { FIXTURE };
export const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

export interface Running {
  encoder: M3Encoder;
  server: M3Server;
  url: string;
  close(): Promise<void>;
}

/** Loads the fixture model in this thread and serves it on a free port. */
export async function start(options: Omit<ServerOptions, 'encoder'> & { encoder?: ServerEncoder } = {}, encoder?: M3Encoder): Promise<Running> {
  const enc = encoder ?? (await M3Encoder.load(FIXTURE, { workers: 0, cache: false }));
  const server = await createServer({ encoder: enc, port: 0, ...options });
  const url = await server.listen();
  return {
    encoder: enc,
    server,
    url,
    close: async () => {
      await server.close();
      if (!encoder) await enc.close();
    },
  };
}

export interface JsonResponse {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

export async function request(url: string, path: string, init: { method?: string; body?: unknown; raw?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<JsonResponse> {
  const hasBody = init.body !== undefined || init.raw !== undefined;
  const res = await fetch(url + path, {
    method: init.method ?? (hasBody ? 'POST' : 'GET'),
    headers: { ...(hasBody ? { 'content-type': 'application/json' } : {}), ...init.headers },
    ...(hasBody ? { body: init.raw ?? JSON.stringify(init.body) } : {}),
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/**
 * The real fixture encoder behind a gate: `encode` calls wait until `open()`, so a test can
 * place requests in one batch, or fill the queue, deterministically. Counts what reached the model.
 */
export class GatedEncoder implements ServerEncoder {
  readonly calls: string[][] = [];
  private gate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => undefined;
  constructor(readonly inner: M3Encoder) {}
  get modelId() {
    return this.inner.modelId;
  }
  get dim() {
    return this.inner.dim;
  }
  get vocabSize() {
    return this.inner.vocabSize;
  }
  get colbertDim() {
    return this.inner.colbertDim;
  }
  get maxLength() {
    return this.inner.maxLength;
  }
  tokenize(texts: readonly string[], maxLength?: number) {
    return this.inner.tokenize(texts, maxLength);
  }
  /** Makes later encode calls wait. */
  hold(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }
  open(): void {
    this.openGate();
  }
  async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    this.calls.push([...texts]);
    await this.gate;
    return this.inner.encode(texts, options);
  }
}

/** Resolves when `cond()` holds (polled), or rejects after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
