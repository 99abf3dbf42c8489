/** JSON Lines input and output for the CLI: streamed, with errors that name the line number. */
import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { UserError } from './user-error.js';

/** Yields `[lineNumber, parsedObject]` for each non-blank line of a file or stdin (`-` or undefined). */
export async function* readJsonLines(path: string | undefined): AsyncGenerator<[number, Record<string, unknown>]> {
  const input = path && path !== '-' ? createReadStream(path) : process.stdin;
  if (path && path !== '-') {
    await new Promise<void>((resolve, reject) => {
      (input as ReturnType<typeof createReadStream>).once('open', () => resolve());
      input.once('error', (e: NodeJS.ErrnoException) => reject(new UserError(`cannot read ${path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`)));
    });
  }
  const rl = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new UserError(`${path && path !== '-' ? path : 'stdin'} line ${n}: invalid JSON (${(e as Error).message})`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      throw new UserError(`${path && path !== '-' ? path : 'stdin'} line ${n}: expected a JSON object`);
    }
    yield [n, v as Record<string, unknown>];
  }
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

/** A line writer to a file or stdout that respects back-pressure. */
export class LineWriter {
  private readonly out: Writable;
  private readonly ownsStream: boolean;
  constructor(path: string | undefined) {
    this.ownsStream = !!path && path !== '-';
    this.out = this.ownsStream ? createWriteStream(path as string) : process.stdout;
  }
  async write(obj: unknown): Promise<void> {
    if (!this.out.write(`${JSON.stringify(obj)}\n`)) await once(this.out, 'drain');
  }
  async close(): Promise<void> {
    if (this.ownsStream) {
      this.out.end();
      await once(this.out, 'finish');
    }
  }
}
