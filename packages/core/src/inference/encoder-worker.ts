/**
 * Worker-thread entry: owns one EncoderEngine (one model load) and runs the batches the pool
 * sends. onnxruntime-node's `session.run` blocks the thread it runs on, so running it here keeps
 * the caller's event loop free.
 */
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { EncoderEngine, type AttentionMode, type EngineSpec, type RawOutputs } from './engine.js';
import type { OutputSelection } from '../types.js';

export interface WorkerRequest {
  id: number;
  batch: Int32Array[];
  want: OutputSelection;
  /** Fault injection (tests): the worker thread exits instead of running this batch. */
  crash?: boolean;
}

export type WorkerReply =
  | {
      type: 'ready';
      info: {
        hidden: number;
        colbertDim: number;
        maxPositions: number;
        configVocabSize: number | undefined;
        vocabRows: number | undefined;
        attention: AttentionMode;
      };
    }
  | { type: 'result'; id: number; results: RawOutputs[]; forwardPasses: number }
  | { type: 'error'; id: number; message: string; code?: string; file?: string }
  | { type: 'init-error'; message: string; code?: string; file?: string };

function transferables(results: RawOutputs[]): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (const r of results) {
    if (r.dense) out.push(r.dense.buffer as ArrayBuffer);
    if (r.sparse) out.push(r.sparse.indices.buffer as ArrayBuffer, r.sparse.values.buffer as ArrayBuffer);
    if (r.colbert) out.push(r.colbert.data.buffer as ArrayBuffer);
  }
  return out;
}

const port = parentPort;
if (!port) throw new Error('encoder-worker must run in a worker thread');

function errorFields(e: unknown): { message: string; code?: string; file?: string } {
  const err = e as { message?: string; code?: string; file?: string };
  return { message: err?.message ?? String(e), ...(err?.code ? { code: err.code } : {}), ...(err?.file ? { file: err.file } : {}) };
}

/**
 * On Linux the nice value is per thread, and threads inherit it from the thread that creates them:
 * lowering it here, before the session exists, lowers this thread and onnxruntime's pool threads
 * and leaves the caller's event-loop thread as it is. When encoding saturates every core, the
 * scheduler then runs the event loop first. (Elsewhere it would renice the whole process: skipped.)
 */
function lowerPriority(increment: number | undefined): void {
  if (!increment || process.platform !== 'linux') return;
  try {
    setPriority(0, Math.min(19, getPriority(0) + increment));
  } catch {
    // not permitted in this sandbox/container: run at the caller's priority
  }
}

let engine: EncoderEngine | undefined;
try {
  lowerPriority((workerData as EngineSpec).workerNice);
  engine = await EncoderEngine.create(workerData as EngineSpec);
  port.postMessage({
    type: 'ready',
    info: {
      hidden: engine.hidden,
      colbertDim: engine.colbertDim,
      maxPositions: engine.maxPositions,
      configVocabSize: engine.configVocabSize,
      vocabRows: engine.vocabRows,
      attention: engine.attention,
    },
  } satisfies WorkerReply);
} catch (e) {
  // No process.exit() here: it could end the thread before the message is delivered, and the
  // pool would then see a bare exit (WORKER_FAILED) instead of the load error. Without a message
  // listener the thread ends by itself once the message is out.
  port.postMessage({ type: 'init-error', ...errorFields(e) } satisfies WorkerReply);
  process.exitCode = 1;
}

const loaded = engine;
if (loaded) {
  port.on('message', async (req: WorkerRequest) => {
    if (req.crash) process.exit(70); // ends this thread only, as a crash would
    try {
      const results = await loaded.run(req.batch, req.want);
      port.postMessage({ type: 'result', id: req.id, results, forwardPasses: 1 } satisfies WorkerReply, transferables(results));
    } catch (e) {
      port.postMessage({ type: 'error', id: req.id, ...errorFields(e) } satisfies WorkerReply);
    }
  });
}
