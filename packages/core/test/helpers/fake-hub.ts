/**
 * A local stand-in for the Hugging Face Hub: a real node:http server on 127.0.0.1 that answers
 * `/{repo}/resolve/{revision}/{path}` the way huggingface.co does (HEAD metadata headers, 302 to
 * a CDN for LFS files, Range, 401/404 with X-Error-Code), plus fault injection for tests:
 * dropped connections, stalls, corrupted bytes, header overrides, ignored Range, a gate that
 * holds every content response, and a log of every request.
 *
 * Hostile modes (a broken or malicious Hub or CDN): `slow` (a trickle of bytes), `endless` (a
 * body that never ends), `sizes` (lying or missing sizes in HEAD and GET, a body shorter or
 * longer than announced), `etag` (an etag that is not a content hash) and `gzipRange` (resumed
 * parts sent as a range of a gzip stream, as a misconfigured proxy does).
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, relative } from 'node:path';

/** One file the fake Hub serves. */
export interface FakeFile {
  repo: string;
  path: string;
  content: Buffer;
  /** Served like an LFS file: X-Linked-Etag/X-Linked-Size and a 302 to the CDN. */
  lfs: boolean;
  sha256: string;
  gitSha1: string;
  /** The name huggingface_hub gives the blob: sha256 for LFS, git sha1 otherwise. */
  etag: string;
}

/** One request the server saw. */
export interface RequestRecord {
  method: string;
  url: string;
  /** The repo file the request is about (also for CDN requests), when known. */
  file?: string;
  repo?: string;
  range?: string;
  authorization?: string;
  status?: number;
  /** True when the response carried file content (a GET of content, not a redirect). */
  body: boolean;
}

export interface FakeHubOptions {
  /** repo id → (repo path → local file path or content). */
  repos: Record<string, Record<string, string | Buffer>>;
  /** When set, resolve requests without `Authorization: Bearer <token>` get 401. */
  token?: string;
  /** Location of LFS redirects: absolute CDN URL (default, like the Hub), relative, or absolute to a hop that redirects relatively. */
  lfsRedirect?: 'absolute' | 'relative' | 'chain';
  /** Base URL of the CDN (e.g. another FakeHub, a different host:port); default this server. */
  cdnBase?: string;
}

/** Fault injection; each fault matches a repo path (`file`). */
export interface Faults {
  /** Send `bytes` bytes of the body, then destroy the connection (`times` times, default 1). */
  dropAfter?: { file: string; bytes: number; times?: number };
  /** Send `bytes` bytes, then hang until the client goes away; `reached` is called once they are written. */
  stall?: { file: string; bytes: number; reached?: () => void };
  /** Flip the byte at `offset` of the served content (`times` times, default 1). */
  corrupt?: { file: string; offset: number; times?: number };
  /** Override headers of resolve responses (HEAD and GET) for a file. */
  headers?: { file: string; set: Record<string, string> };
  /** Answer Range requests with 200 and the whole file. */
  ignoreRange?: boolean;
  /** Every content response waits for this promise. */
  gate?: Promise<void>;
  /** Sends the content `bytes` bytes (default 1) every `intervalMs` ms, until done or the client leaves. */
  slow?: { file: string; intervalMs: number; bytes?: number };
  /** The GET body never ends: chunks of `chunkBytes` (default 16 KiB) of garbage, no Content-Length. */
  endless?: { file: string; chunkBytes?: number };
  /**
   * Lying or missing sizes. `head`: the size the HEAD announces (X-Linked-Size for LFS files,
   * Content-Length otherwise), `null` to send none. `contentLength`: the GET's Content-Length,
   * `null` to send none (chunked). `rangeTotal`: the total in a 206's Content-Range. `body`: the
   * number of bytes actually sent (the content cut, or padded with `x`).
   */
  sizes?: { file: string; head?: number | null; contentLength?: number | null; rangeTotal?: number; body?: number };
  /** An etag that is not a content hash: replaces X-Linked-Etag (LFS) or ETag (regular file). */
  etag?: { file: string; value: string };
  /** Answers Range requests with that range of the gzipped file and `Content-Encoding: gzip`. */
  gzipRange?: { file: string };
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
/** git's blob id: sha1("blob <len>\0" + content). */
export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

const LFS_EXT = /\.(onnx|onnx_data|pt|bin|safetensors|model)$|Constant_\d+_attr__value$/;

/** The fixture model of the workspace. */
export const FIXTURE_DIR = new URL('../../../../test/fixtures/tiny-m3-A/', import.meta.url).pathname;

/**
 * The fixture served as BAAI/bge-m3 (with extra files the presets must not download) and as
 * Xenova/bge-m3 (int8 graph plus a tokenizer/config of its own that must not be used).
 */
export function fixtureRepos(dir = FIXTURE_DIR): Record<string, Record<string, string>> {
  const f = (p: string) => join(dir, p);
  return {
    'BAAI/bge-m3': {
      'onnx/model.onnx': f('onnx/model.onnx'),
      'onnx/model.onnx_data': f('onnx/model.onnx_data'),
      'colbert_linear.pt': f('colbert_linear.pt'),
      'sparse_linear.pt': f('sparse_linear.pt'),
      'tokenizer.json': f('tokenizer.json'),
      'tokenizer_config.json': f('tokenizer_config.json'),
      'config.json': f('config.json'),
      'sentencepiece.bpe.model': f('sentencepiece.bpe.model'),
      'README.md': f('README.md'),
    },
    'Xenova/bge-m3': {
      'onnx/model_quantized.onnx': f('onnx/model_quantized.onnx'),
      'config.json': f('fixture_meta.json'),
      'tokenizer_config.json': f('fixture_meta.json'),
    },
  };
}

function lfsPointerSha1(file: { sha256: string; content: Buffer }): string {
  return gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${file.sha256}\nsize ${file.content.length}\n`));
}

export class FakeHub {
  readonly requests: RequestRecord[] = [];
  faults: Faults = {};
  cdnBase: string | undefined;
  private readonly files = new Map<string, FakeFile>(); // `${repo}\n${path}` → file
  private readonly bySha = new Map<string, FakeFile>();
  private readonly server: http.Server;
  url = '';

  private constructor(private readonly options: FakeHubOptions) {
    for (const [repo, entries] of Object.entries(options.repos)) {
      for (const [path, src] of Object.entries(entries)) {
        const content = typeof src === 'string' ? readFileSync(src) : src;
        const lfs = LFS_EXT.test(path) || content.length > 10 * 1024 * 1024;
        const s256 = sha256(content);
        const g1 = gitBlobSha1(content);
        const file: FakeFile = { repo, path, content, lfs, sha256: s256, gitSha1: g1, etag: lfs ? s256 : g1 };
        this.files.set(`${repo}\n${path}`, file);
        if (!this.bySha.has(s256)) this.bySha.set(s256, file);
      }
    }
    this.cdnBase = options.cdnBase;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
  }

  /** Starts a server on 127.0.0.1 with a free port. */
  static async start(options: FakeHubOptions): Promise<FakeHub> {
    const hub = new FakeHub(options);
    await new Promise<void>((resolve) => hub.server.listen(0, '127.0.0.1', resolve));
    hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
    return hub;
  }

  /** The commit every revision of `repo` resolves to. */
  commit(repo: string): string {
    return createHash('sha1').update(`commit:${repo}`).digest('hex');
  }

  file(repo: string, path: string): FakeFile {
    const f = this.files.get(`${repo}\n${path}`);
    if (!f) throw new Error(`fake hub has no ${repo}/${path}`);
    return f;
  }

  /** All files of `repo`. */
  filesOf(repo: string): FakeFile[] {
    return [...this.files.values()].filter((f) => f.repo === repo);
  }

  /** Requests matching all given fields. */
  find(match: Partial<RequestRecord>): RequestRecord[] {
    return this.requests.filter((r) => Object.entries(match).every(([k, v]) => r[k as keyof RequestRecord] === v));
  }

  /** How many responses carried the content of `path` (of `repo`, when given). */
  contentGets(path: string, repo?: string): number {
    return this.requests.filter((r) => r.method === 'GET' && r.body && r.file === path && (repo === undefined || r.repo === repo)).length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const rec: RequestRecord = {
      method: req.method ?? 'GET',
      url: url.pathname,
      range: req.headers.range,
      authorization: req.headers.authorization,
      body: false,
    };
    this.requests.push(rec);
    const send = (status: number, headers: Record<string, string | number> = {}, body = '') => {
      rec.status = status;
      res.writeHead(status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    };

    const cdn = /^\/(cdn|cdn-hop)\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      const file = this.bySha.get(cdn[2]);
      if (!file) return send(404);
      rec.file = file.path;
      rec.repo = file.repo;
      if (cdn[1] === 'cdn-hop') return send(307, { Location: `/cdn/${cdn[2]}` });
      return this.serveContent(req, res, file, rec, {});
    }

    const m = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!m) return send(404, { 'X-Error-Code': 'RepoNotFound' });
    const repo = `${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}`;
    const revision = decodeURIComponent(m[3]);
    const path = m[4].split('/').map(decodeURIComponent).join('/');
    rec.repo = repo;
    rec.file = path;
    if (this.options.token !== undefined && req.headers.authorization !== `Bearer ${this.options.token}`) {
      return send(401, { 'X-Error-Code': 'GatedRepo', 'X-Error-Message': 'Access to this model is restricted.' }, 'Unauthorized');
    }
    if (!Object.hasOwn(this.options.repos, repo)) {
      return send(404, { 'X-Error-Code': 'RepoNotFound', 'X-Error-Message': 'Repository not found' }, 'Repository not found');
    }
    const commit = this.commit(repo);
    if (revision !== 'main' && revision !== commit) {
      return send(404, { 'X-Error-Code': 'RevisionNotFound', 'X-Error-Message': 'Invalid rev id' }, 'Revision not found');
    }
    const file = this.files.get(`${repo}\n${path}`);
    if (!file) {
      return send(404, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': commit, 'X-Error-Message': 'Entry not found' }, 'Entry not found');
    }
    const override: Record<string, string | number> = this.faults.headers?.file === path ? { ...this.faults.headers.set } : {};
    if (this.faults.etag?.file === path) override[file.lfs ? 'X-Linked-Etag' : 'ETag'] = `"${this.faults.etag.value}"`;
    const lie = this.faults.sizes?.file === path ? this.faults.sizes : undefined;
    if (file.lfs) {
      const base = this.cdnBase ?? this.url;
      const mode = this.options.lfsRedirect ?? 'absolute';
      const location =
        mode === 'relative' ? `/cdn/${file.sha256}` : mode === 'chain' ? `${base}/cdn-hop/${file.sha256}` : `${base}/cdn/${file.sha256}`;
      const head: Record<string, string | number> = {
        Location: location,
        'X-Repo-Commit': commit,
        'X-Linked-Etag': `"${file.sha256}"`,
        'X-Linked-Size': file.content.length,
        ETag: `"${lfsPointerSha1(file)}"`,
        ...override,
      };
      if (lie?.head === null) delete head['X-Linked-Size'];
      else if (lie?.head !== undefined) head['X-Linked-Size'] = lie.head;
      return send(302, head);
    }
    return this.serveContent(req, res, file, rec, { 'X-Repo-Commit': commit, ETag: `"${file.gitSha1}"`, ...override });
  }

  /** Content with Range support and the faults that apply to this file. */
  private async serveContent(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    file: FakeFile,
    rec: RequestRecord,
    headers: Record<string, string | number>,
  ): Promise<void> {
    const f = this.faults;
    let content = file.content;
    const size = content.length;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && !f.ignoreRange) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) {
        rec.status = 416;
        res.writeHead(416, { 'Content-Range': `bytes */${size}`, ...headers });
        res.end();
        return;
      }
      status = 206;
      headers = { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}` };
    }
    headers = { ...headers, 'Content-Length': end - start + 1, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    const lie = f.sizes?.file === file.path ? f.sizes : undefined;
    rec.status = status;
    if (req.method === 'HEAD') {
      if (lie?.head === null) delete headers['Content-Length'];
      else if (lie?.head !== undefined) headers['Content-Length'] = lie.head;
      res.writeHead(status, headers);
      // Without a Content-Length, Node would announce chunked encoding; a HEAD has no body anyway.
      res.end();
      return;
    }
    rec.body = true;
    if (f.endless?.file === file.path) {
      delete headers['Content-Length'];
      if (f.gate) await f.gate;
      res.writeHead(status, headers);
      const chunk = Buffer.alloc(f.endless.chunkBytes ?? 16 * 1024, 0x78);
      let open = true;
      res.on('close', () => (open = false));
      while (open) {
        if (!res.write(chunk)) await new Promise<void>((r) => (res.once('drain', r), res.once('close', r)));
      }
      return;
    }
    if (f.corrupt && f.corrupt.file === file.path) {
      content = Buffer.from(content);
      content[f.corrupt.offset] ^= 0xff;
      if ((f.corrupt.times = (f.corrupt.times ?? 1) - 1) <= 0) f.corrupt = undefined;
    }
    let body = content.subarray(start, end + 1);
    if (f.gzipRange?.file === file.path && status === 206) {
      // A range of the compressed representation, as a proxy that compresses and then serves
      // ranges of its own output does: not a range of the file.
      const gz = gzipSync(content);
      body = gz.subarray(Math.min(start, gz.length - 1));
      headers = { ...headers, 'Content-Encoding': 'gzip', 'Content-Length': body.length, 'Content-Range': `bytes ${start}-${start + body.length - 1}/${size}` };
    }
    if (lie?.contentLength === null) delete headers['Content-Length'];
    else if (lie?.contentLength !== undefined) headers['Content-Length'] = lie.contentLength;
    if (lie?.rangeTotal !== undefined && status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${lie.rangeTotal}`;
    if (lie?.body !== undefined && status === 200) {
      body = lie.body <= body.length ? body.subarray(0, lie.body) : Buffer.concat([body, Buffer.alloc(lie.body - body.length, 0x78)]);
    }
    if (f.gate) await f.gate;
    res.writeHead(status, headers);
    if (f.slow && f.slow.file === file.path) {
      const { intervalMs, bytes = 1 } = f.slow;
      let off = 0;
      let open = true;
      res.on('close', () => (open = false));
      while (open && off < body.length) {
        res.write(body.subarray(off, off + bytes));
        off += bytes;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
      if (open) res.end();
      return;
    }
    if (f.dropAfter && f.dropAfter.file === file.path) {
      const n = f.dropAfter.bytes;
      if ((f.dropAfter.times = (f.dropAfter.times ?? 1) - 1) <= 0) f.dropAfter = undefined;
      res.write(body.subarray(0, n), () => req.socket.destroy());
      return;
    }
    if (f.stall && f.stall.file === file.path) {
      const { bytes, reached } = f.stall;
      f.stall = undefined;
      res.write(body.subarray(0, bytes), () => reached?.());
      return; // never ends: the client has to give up
    }
    res.end(body);
  }
}

/**
 * Writes a cache by hand exactly as huggingface_hub lays it out (blobs named by etag, relative
 * symlinks in `snapshots/<commit>/`, `refs/<revision>`), as if Python had downloaded the files.
 */
export function writeHfCache(
  cacheDir: string,
  files: FakeFile[],
  options: { commit: string; revision?: string; withSnapshot?: boolean },
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of files) {
    const root = join(cacheDir, `models--${f.repo.replace('/', '--')}`);
    const blob = join(root, 'blobs', f.etag);
    mkdirSync(dirname(blob), { recursive: true });
    writeFileSync(blob, f.content);
    mkdirSync(join(root, 'refs'), { recursive: true });
    writeFileSync(join(root, 'refs', options.revision ?? 'main'), options.commit);
    if (options.withSnapshot === false) continue;
    const pointer = join(root, 'snapshots', options.commit, ...f.path.split('/'));
    mkdirSync(dirname(pointer), { recursive: true });
    symlinkSync(relative(dirname(pointer), blob), pointer);
    out[f.path] = pointer;
  }
  return out;
}
