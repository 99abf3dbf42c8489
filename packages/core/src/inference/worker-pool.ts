/**
 * A pool of encoder worker threads (one model load each) behind the BatchRunner interface, so
 * `M3Encoder.encode` keeps its API while onnxruntime runs off the caller's event loop.
 *
 * Lifecycle: idle workers are `unref`'d, so a script ends when its work is done without calling
 * `close()`; a busy worker is `ref`'d so pending work keeps the process alive. A worker that dies
 * is replaced; the batch it was running is retried once on the new worker, then rejected with
 * WORKER_FAILED. Nothing waits forever.
 */
import { existsSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { M3Error } from '../errors.js';
import type { OutputSelection } from '../types.js';
import type { BatchRunner } from './encoder.js';
import type { EngineSpec, RawOutputs } from './engine.js';
import type { WorkerReply, WorkerRequest } from './encoder-worker.js';

type EngineInfo = Extract<WorkerReply, { type: 'ready' }>['info'];

interface Job {
  batch: Int32Array[];
  want: OutputSelection;
  resolve: (r: RawOutputs[]) => void;
  reject: (e: Error) => void;
  attempts: number;
  /** Asked when a worker is free: false drops the batch unrun (every caller waiting for it aborted). */
  wanted: (() => boolean) | undefined;
}

/** Fault injection for tests: dispatch numbers (1-based, pool-wide) whose worker exits instead of running. */
export interface WorkerFaults {
  crashOnDispatch?: number[];
}

interface Slot {
  worker: Worker;
  isReady: boolean;
  ready: Promise<EngineInfo>;
  job: (Job & { id: number }) | undefined;
}

/**
 * The environment variable that names the encoder worker script (a path, or a file: URL) when it
 * is not next to this module: in an app bundle that includes @bgem3/core, point it at a copy of
 * @bgem3/core's `dist/inference/encoder-worker.js` (see "Bundling" in the core README).
 */
export const WORKER_SCRIPT_ENV = 'BGEM3_WORKER_SCRIPT';

/**
 * Finds the built worker entry (dist/inference/encoder-worker.js): `$BGEM3_WORKER_SCRIPT` if set,
 * else next to the library or CLI bundle (or next to an app bundle that includes this module).
 */
function workerEntry(): URL {
  const configured = process.env[WORKER_SCRIPT_ENV];
  if (configured) {
    const u = /^file:/i.test(configured) ? new URL(configured) : pathToFileURL(resolvePath(configured));
    if (existsSync(fileURLToPath(u))) return u;
    throw new M3Error(
      'WORKER_FAILED',
      `encoder worker script not found: ${WORKER_SCRIPT_ENV}=${configured} names no file; point it at a copy of ` +
        `@bgem3/core's dist/inference/encoder-worker.js, or unset it`,
    );
  }
  // An app bundle in CommonJS form of this ES module has no import.meta.url: look next to the
  // script node runs (the bundle, when run as `node bundle.cjs`). (Not __filename: tsup would
  // then shim it in the ESM build from import.meta.url, which throws at load in such a bundle.)
  const here: string | undefined = import.meta.url || (process.argv[1] ? pathToFileURL(resolvePath(process.argv[1])).href : undefined);
  if (here) {
    for (const rel of ['./inference/encoder-worker.js', './encoder-worker.js', '../inference/encoder-worker.js']) {
      const u = new URL(rel, here);
      if (existsSync(fileURLToPath(u))) return u;
    }
  }
  const where = here ? fileURLToPath(here) : 'this module';
  if (here && /[\\/]packages[\\/]core[\\/]src[\\/]/.test(where)) {
    // Running core's TypeScript sources from a clone of the repository.
    throw new M3Error(
      'WORKER_FAILED',
      `encoder worker script not found next to ${where}: worker threads run the built package ` +
        `(run \`pnpm build\`), or pass workers: 0 to encode on the calling thread`,
    );
  }
  throw new M3Error(
    'WORKER_FAILED',
    `encoder worker script not found next to ${where}: @bgem3/core runs the model in worker threads started from its file ` +
      `dist/inference/encoder-worker.js. If your app is bundled, mark @bgem3/core as external (esbuild --external:@bgem3/core), ` +
      `or copy node_modules/@bgem3/core/dist/inference/encoder-worker.js next to the bundle or set ${WORKER_SCRIPT_ENV} to its path; ` +
      `workers: 0 encodes on the calling thread instead`,
  );
}

export class WorkerPoolRunner implements BatchRunner {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private passes = 0;
  private closed = false;

  private dispatched = 0;

  private constructor(
    private readonly spec: EngineSpec,
    size: number,
    private readonly faults: WorkerFaults = {},
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  /** Starts `size` workers and waits until each has loaded the model. */
  static async create(spec: EngineSpec, size: number, faults?: WorkerFaults): Promise<{ pool: WorkerPoolRunner; info: EngineInfo }> {
    const pool = new WorkerPoolRunner(spec, size, faults);
    try {
      const infos = await Promise.all(pool.slots.map((s) => s.ready));
      return { pool, info: infos[0] };
    } catch (e) {
      await pool.close();
      throw e;
    }
  }

  get forwardPasses(): number {
    return this.passes;
  }

  run(batch: readonly Int32Array[], want: OutputSelection, wanted?: () => boolean): Promise<RawOutputs[]> {
    if (this.closed) return Promise.reject(new M3Error('INVALID_ARGUMENT', 'this encoder was closed; create a new one'));
    return new Promise((resolve, reject) => {
      this.queue.push({ batch: [...batch], want, resolve, reject, attempts: 0, wanted });
      this.pump();
    });
  }

  private spawn(): Slot {
    const worker = new Worker(workerEntry(), { workerData: this.spec });
    const slot: Slot = { worker, isReady: false, ready: undefined as unknown as Promise<EngineInfo>, job: undefined };
    slot.ready = new Promise<EngineInfo>((resolve, reject) => {
      worker.on('message', (msg: WorkerReply) => {
        if (msg.type === 'ready') {
          slot.isReady = true;
          resolve(msg.info);
          if (!slot.job) worker.unref(); // a job posted before 'ready' keeps it ref'd
          this.pump();
        } else if (msg.type === 'init-error') {
          reject(new M3Error((msg.code as never) ?? 'MODEL_FILE_INVALID', msg.message, msg.file ? { file: msg.file } : undefined));
        } else {
          this.finish(slot, msg);
        }
      });
      worker.on('error', (err) => {
        reject(err);
        this.onWorkerDeath(slot, err);
      });
      worker.on('exit', (code) => {
        const err = new M3Error('WORKER_FAILED', `encoder worker exited with code ${code}`);
        reject(err);
        this.onWorkerDeath(slot, err);
      });
    });
    slot.ready.catch(() => undefined); // observed through create() or pump()
    return slot;
  }

  private finish(slot: Slot, msg: Extract<WorkerReply, { type: 'result' | 'error' }>): void {
    const job = slot.job;
    if (!job || job.id !== msg.id) return;
    slot.job = undefined;
    slot.worker.unref();
    if (msg.type === 'result') {
      this.passes += msg.forwardPasses;
      job.resolve(msg.results);
    } else {
      job.reject(new M3Error((msg.code as never) ?? 'WORKER_FAILED', msg.message, msg.file ? { file: msg.file } : undefined));
    }
    this.pump();
  }

  private onWorkerDeath(slot: Slot, err: Error): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return; // already handled (error then exit)
    this.slots.splice(i, 1);
    const job = slot.job;
    slot.job = undefined;
    if (this.closed) {
      job?.reject(new M3Error('WORKER_FAILED', 'encoder closed while a batch was running'));
      return;
    }
    if (!slot.isReady) {
      // The model failed to load in the worker: respawning would fail the same way.
      this.closed = true;
      const e = err instanceof M3Error ? err : new M3Error('WORKER_FAILED', `encoder worker failed to start: ${err.message}`, { cause: err });
      job?.reject(e);
      for (const j of this.queue.splice(0)) j.reject(e);
      void Promise.all(this.slots.map((s) => s.worker.terminate()));
      return;
    }
    if (job) {
      if (job.attempts < 1) {
        job.attempts++;
        this.queue.unshift(job); // retry once on the replacement
      } else {
        job.reject(new M3Error('WORKER_FAILED', `encoder worker died while running a batch (${err.message}); it was retried once`, { cause: err }));
      }
    }
    this.slots.push(this.spawn());
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const slot = this.slots.find((s) => !s.job);
      if (!slot) return;
      const job = this.queue.shift() as Job;
      if (job.wanted && !job.wanted()) {
        job.reject(new M3Error('ABORTED', 'encode aborted before the batch ran'));
        continue;
      }
      const id = this.nextId++;
      slot.job = { ...job, id };
      slot.worker.ref();
      // Posting before 'ready' is fine: messages queue until the worker listens.
      const crash = this.faults.crashOnDispatch?.includes(++this.dispatched) ?? false;
      slot.worker.postMessage({ id, batch: job.batch, want: job.want, ...(crash ? { crash } : {}) } satisfies WorkerRequest);
    }
  }

  /**
   * Rejects queued batches, lets running ones finish (terminating a thread inside onnxruntime's
   * native run aborts the whole process), then stops the workers.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new M3Error('WORKER_FAILED', 'encoder closed before the batch ran'));
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.job) {
          const job = s.job;
          await new Promise<void>((done) => {
            const settle = () => done();
            const { resolve, reject } = job;
            job.resolve = (r) => (resolve(r), settle());
            job.reject = (e) => (reject(e), settle());
          });
        }
        await s.worker.terminate();
      }),
    );
  }
}
