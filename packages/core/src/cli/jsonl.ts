/** JSON Lines input and output for the CLI: streamed, with errors that name the line number and the file. */
import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describeFsError } from '../util/fs-errors.js';
import { UserError } from './user-error.js';

/** The name of an input in messages: the file, or `stdin`. */
export function sourceName(path: string | undefined): string {
  return path && path !== '-' ? path : 'stdin';
}

/**
 * Checks an input file before any expensive work (loading the model): missing, a directory or
 * unreadable is one line naming it. stdin (`-` or undefined) is always fine; on a terminal a
 * hint says that input is expected, instead of a silent wait.
 */
export async function checkInput(path: string | undefined, flag = '--input'): Promise<void> {
  if (!path || path === '-') {
    if (process.stdin.isTTY) process.stderr.write(`bgem3: reading JSON Lines from stdin (end with Ctrl-D; ${flag} <file> reads a file)\n`);
    return;
  }
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw new UserError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : describeFsError(err)}`);
  }
  if (st.isDirectory()) throw new UserError(`cannot read ${path}: it is a directory`);
}

/**
 * Yields `[lineNumber, parsedObject]` for each non-blank line of a file or stdin (`-` or
 * undefined). A UTF-8 byte order mark at the start (Windows editors write one) is skipped.
 */
export async function* readJsonLines(path: string | undefined): AsyncGenerator<[number, Record<string, unknown>]> {
  const fromFile = !!path && path !== '-';
  const input = fromFile ? createReadStream(path as string) : process.stdin;
  const source = sourceName(path);
  if (fromFile) {
    await new Promise<void>((resolve, reject) => {
      (input as ReturnType<typeof createReadStream>).once('open', () => resolve());
      input.once('error', (e: NodeJS.ErrnoException) =>
        reject(new UserError(`cannot read ${path}: ${e.code === 'ENOENT' ? 'no such file' : describeFsError(e)}`)),
      );
    });
  }
  // A read error after the open (EISDIR, EIO) must become a line naming the file, not a crash.
  let readError: Error | undefined;
  input.on('error', (e: NodeJS.ErrnoException) => {
    readError = new UserError(`cannot read ${source}: ${describeFsError(e)}`);
  });
  const rl = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (let line of rl) {
      n++;
      if (n === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
      if (line.trim() === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new UserError(`${source} line ${n}: invalid JSON (${(e as Error).message})`);
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        throw new UserError(`${source} line ${n}: expected a JSON object`);
      }
      yield [n, v as Record<string, unknown>];
    }
  } catch (err) {
    throw readError ?? err;
  }
  if (readError) throw readError;
}

/** Reads a string field, or fails naming the line. */
export function stringField(obj: Record<string, unknown>, key: string, line: number, source: string): string {
  const v = obj[key];
  if (typeof v !== 'string') throw new UserError(`${source} line ${line}: "${key}" must be a string`);
  return v;
}

/** Groups an async iterable into arrays of `size`. */
export async function* chunks<T>(it: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let buf: T[] = [];
  for await (const x of it) {
    buf.push(x);
    if (buf.length >= size) {
      yield buf;
      buf = [];
    }
  }
  if (buf.length) yield buf;
}

const FLUSH_BYTES = 1 << 16;

/**
 * A line writer to a file or stdout. Open it with {@link LineWriter.open} before any expensive
 * work (loading the model): a path that cannot be written (missing directory, a directory, a
 * read-only file system) fails at once with one line naming it. Write errors later (ENOSPC) name
 * the file too. Writes go through a FileHandle, never a stream whose 'error' event could go
 * unhandled.
 */
export class LineWriter {
  private pending: string[] = [];
  private pendingBytes = 0;

  private constructor(
    private readonly fh: FileHandle | undefined,
    private readonly path: string | undefined,
  ) {}

  /**
   * Opens `path` for writing (created or truncated), or stdout for `-` / undefined. `input` is
   * the command's input file: writing onto it would truncate it before it is read.
   */
  static async open(path: string | undefined, flag = '--output', input?: string): Promise<LineWriter> {
    if (!path || path === '-') return new LineWriter(undefined, undefined);
    const st = await stat(path).catch(() => undefined);
    if (st?.isDirectory()) throw new UserError(`cannot write ${flag} ${path}: it is a directory`);
    if (st && input && input !== '-') {
      const inSt = await stat(input).catch(() => undefined);
      if (inSt && inSt.dev === st.dev && inSt.ino === st.ino) {
        throw new UserError(`${flag} ${path} is the input file: writing it would destroy the input before it is read; choose another ${flag}`);
      }
    }
    try {
      return new LineWriter(await open(path, 'w'), path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new UserError(`cannot write ${flag} ${path}: its directory does not exist`);
      throw new UserError(`cannot write ${flag} ${path}: ${describeFsError(err)}`);
    }
  }

  async write(obj: unknown): Promise<void> {
    const line = `${JSON.stringify(obj)}\n`;
    if (!this.fh) {
      if (!process.stdout.write(line)) await once(process.stdout, 'drain');
      return;
    }
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes >= FLUSH_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.fh || this.pending.length === 0) return;
    const data = this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    try {
      await this.fh.writeFile(data);
    } catch (err) {
      throw new UserError(`cannot write ${this.path}: ${describeFsError(err)}`);
    }
  }

  /** Flushes and closes the file (nothing for stdout). */
  async close(): Promise<void> {
    if (!this.fh) return;
    try {
      await this.flush();
    } finally {
      await this.fh.close().catch(() => undefined);
    }
  }
}
