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
}

/** Weights of BAAI/bge-m3: `fp32` (the BAAI ONNX export) or `q8` (Xenova's int8 export). */
export type ModelDtype = 'fp32' | 'q8';
