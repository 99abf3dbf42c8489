/**
 * The process-wide encoder registry of the adapters: one loaded model per (model, load options)
 * in the process, whichever adapter, class or build asks for it.
 *
 * The registry lives on `globalThis` under a `Symbol.for` key, so the ESM and the CJS builds of
 * @bgem3/core (two module graphs, two M3Encoder classes) find the same one: a LangChain class
 * imported with `import` and a LlamaIndex class loaded with `require` share one model load. An
 * encoder that is closed leaves the registry; the next request loads the model again. A failed
 * load is not kept (the next request retries).
 */
import { M3Encoder, type LoadOptions, type TextEncoder3 } from './core.js';

const REGISTRY = Symbol.for('@bgem3/core/adapter:encoders@1');
const HOOKED = Symbol.for('@bgem3/core/adapter:registered@1');
const BY_ID = Symbol.for('@bgem3/core/adapter:encoders-by-model-id@1');

type Registry = Map<string, Promise<TextEncoder3>>;

function registry(): Registry {
  const g = globalThis as unknown as Record<symbol, Registry | undefined>;
  let r = g[REGISTRY];
  if (!r) {
    r = new Map();
    Object.defineProperty(globalThis, REGISTRY, { value: r, configurable: false, enumerable: false, writable: false });
  }
  return r;
}

function loadedById(): Map<string, TextEncoder3> {
  const g = globalThis as unknown as Record<symbol, Map<string, TextEncoder3> | undefined>;
  let m = g[BY_ID];
  if (!m) {
    m = new Map();
    Object.defineProperty(globalThis, BY_ID, { value: m, configurable: false, enumerable: false, writable: false });
  }
  return m;
}

/** A registered encoder of this model id that is loaded now, if any (for a store saved without its encoder). */
export function loadedEncoderOf(modelId: string): TextEncoder3 | undefined {
  return loadedById().get(modelId);
}

/** The registry key of a model and its load options (callbacks and signals do not count). */
export function registryKey(model: string, options: LoadOptions = {}): string {
  const { hub, ...rest } = options;
  return JSON.stringify([model, rest, hub ? { ...hub, onProgress: undefined, signal: undefined, fetch: undefined } : null]);
}

/**
 * The process-wide encoder of `model` loaded with `options` (loaded on first request). Concurrent
 * first requests share one load.
 */
export function sharedEncoder(model: string, options: LoadOptions = {}): Promise<TextEncoder3> {
  const reg = registry();
  const key = registryKey(model, options);
  let p = reg.get(key);
  if (!p) {
    const loading: Promise<TextEncoder3> = M3Encoder.shared(model, options).then((enc) => {
      const byId = loadedById();
      if (!byId.has(enc.modelId)) byId.set(enc.modelId, enc);
      hookClose(enc, () => {
        if (reg.get(key) === loading) reg.delete(key);
        if (byId.get(enc.modelId) === enc) byId.delete(enc.modelId);
      });
      return enc;
    });
    p = loading;
    reg.set(key, loading);
    loading.catch(() => {
      if (reg.get(key) === loading) reg.delete(key);
    });
  }
  return p;
}

// An encoder closed by anyone leaves the registry (an own `close` that forgets it first).
function hookClose(enc: TextEncoder3 & { close?: () => Promise<void> }, forget: () => void): void {
  const e = enc as TextEncoder3 & { close?: () => Promise<void>; [HOOKED]?: (() => void)[] };
  if (typeof e.close !== 'function') return;
  const hooks = e[HOOKED];
  if (hooks) {
    hooks.push(forget);
    return;
  }
  const list = [forget];
  const close = e.close.bind(e);
  Object.defineProperty(e, HOOKED, { value: list });
  Object.defineProperty(e, 'close', {
    configurable: true,
    writable: true,
    value: () => {
      for (const f of list.splice(0)) f();
      return close();
    },
  });
}

/** Number of models the registry holds (loaded or loading): for tests and monitoring. */
export function sharedEncoderCount(): number {
  return registry().size;
}

/**
 * The model (and load options) a store's `modelId` names, to load it again for a store saved
 * without its encoder: `hub:REPO@COMMIT:FILE` gives the repo (its preset files for BAAI/bge-m3,
 * else FILE). Undefined for other ids: a local directory's id is a hash of its files
 * (`local:sha256-…`), which says nothing of where they are, and a custom encoder's id is its own;
 * those stores need an explicit model (or an encoder of that id loaded in this process, see
 * {@link loadedEncoderOf}).
 */
export function modelFromId(modelId: string): { model: string; options: LoadOptions } | undefined {
  const hub = /^hub:([^@]+)@[^:]+:(.+)$/.exec(modelId);
  if (!hub) return undefined;
  const [, repo, file] = hub as unknown as [string, string, string];
  // The BAAI/bge-m3 presets: fp32 from BAAI's repo, q8 from Xenova's (with BAAI's heads).
  if (repo.toLowerCase() === 'baai/bge-m3') return { model: 'BAAI/bge-m3', options: {} };
  if (repo.toLowerCase() === 'xenova/bge-m3') return { model: 'BAAI/bge-m3', options: { dtype: 'q8' } };
  return { model: repo, options: { onnxFile: file } };
}
