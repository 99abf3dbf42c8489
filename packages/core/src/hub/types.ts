/**
 * Public types of the Hub downloader. Kept apart from the code so that the model loader (and
 * the package index) can import them without pulling in the HTTP or file-system modules.
 */

/** Where the files of a model are on disk, after download or from a local folder. */
export interface ResolvedModelFiles {
  /**
   * The directory holding the files: a local model folder, or for a Hub download the snapshot
   * directory (`<cache>/models--org--name/snapshots/<commit>`) of the first requested repo.
   * Files of other repos (e.g. the q8 preset mixes two repos) live elsewhere: use `files`.
   */
  dir: string;
  /** Logical path (the repo path, e.g. `onnx/model.onnx`) → absolute local path. */
  files: Record<string, string>;
  /** The Hub repo id, when the files come from the Hub. */
  repo?: string;
  /** The revision asked for (branch, tag or commit), when the files come from the Hub. */
  revision?: string;
  /** The commit the revision resolved to, when the files come from the Hub. */
  commit?: string;
}

/** One file to fetch from a Hub repo. */
export interface ModelFileSpec {
  /** Repo id, `org/name` (a bare `name` is accepted too, as on the Hub). */
  repo: string;
  /** Branch, tag or commit; default {@link HubOptions.revision} (itself default `main`). */
  revision?: string;
  /** POSIX path of the file inside the repo, e.g. `onnx/model.onnx`. */
  path: string;
  /** When true a file the repo does not have is skipped instead of being an error. */
  optional?: boolean;
}

/** A progress report for one file being downloaded. */
export interface DownloadProgress {
  /** The repo path of the file (e.g. `onnx/model.onnx_data`). */
  file: string;
  /** Bytes on disk so far, including bytes kept from an earlier interrupted download. */
  bytesDone: number;
  /** Expected size, when the server said. */
  bytesTotal: number | undefined;
  /** The repo the file comes from. */
  repo: string;
}

/** Options of the Hub downloader. Every field has a default taken from the environment. */
export interface HubOptions {
  /** Hub base URL; default `process.env.HF_ENDPOINT ?? 'https://huggingface.co'`. */
  endpoint?: string;
  /**
   * Access token sent as `Authorization: Bearer …` to the endpoint's origin only; default
   * `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`. Pass `''` to send no token even when one is set.
   */
  token?: string;
  /** Cache root; default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Use only the cache, never the network; default true when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is `1`/`true`/`yes`/`on`. */
  offline?: boolean;
  /** Default revision of specs that name none; default `main`. */
  revision?: string;
  /**
   * Called while a file downloads (throttled to about 10 calls a second per file, plus the last).
   * If it throws, it is not called again for that file and the download goes on.
   */
  onProgress?: (p: DownloadProgress) => void;
  /** Stops the download; the partial file is kept so the next call resumes it. */
  signal?: AbortSignal;
  /** The fetch implementation; default the global `fetch` (undici). */
  fetch?: typeof fetch;
  /**
   * Bounds of each file's download (see {@link HubTransferLimits}); each field defaults to its
   * environment variable, else to the documented default.
   */
  limits?: HubTransferLimits;
}

/**
 * Bounds that keep a slow, stalled or hostile server from holding a download forever. `0`
 * disables a bound. A download that trips the idle or rate bound is retried (resuming); the
 * deadline and the size bound end it.
 */
export interface HubTransferLimits {
  /** Longest wait for the next byte, ms; default `HF_HUB_DOWNLOAD_TIMEOUT` (s), else 10 s. */
  idleTimeoutMs?: number;
  /** Minimum average rate over each window of {@link rateWindowMs}, bytes/s; default `BGEM3_HUB_MIN_RATE`, else 1024. */
  minBytesPerSecond?: number;
  /** The window of the minimum rate, ms; default `BGEM3_HUB_RATE_WINDOW` (s), else 30 s. */
  rateWindowMs?: number;
  /** Longest time for one file's transfer, all attempts together, ms; default `BGEM3_HUB_DEADLINE` (s), else 3 hours. The partial file is kept for the next call. */
  deadlineMs?: number;
  /** Largest body accepted when the server gives no size, bytes; default `BGEM3_HUB_MAX_UNKNOWN_SIZE`, else 4 GiB. */
  maxUnknownSizeBytes?: number;
}

/** Weights of BAAI/bge-m3: `fp32` (the BAAI ONNX export) or `q8` (Xenova's int8 export). */
export type ModelDtype = 'fp32' | 'q8';
