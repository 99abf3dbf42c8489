/**
 * Shared helpers of the cross-package reliability tests (docs/RELIABILITY.md): the fixture model,
 * a second real model of another shape, damaged model copies, the CLI as a child process, and
 * temporary directories that are removed when the test file ends.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { M3Error } from '@bgem3/core';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The tiny BGE-M3-shaped fixture: hidden 32, vocabulary 3002, BAAI's fp32 backbone layout + heads. */
export const FIXTURE = join(ROOT, 'test/fixtures/tiny-m3-A');
/** The built CLI (tests run after `pnpm build`). */
export const CLI = join(ROOT, 'packages/core/dist/cli/main.js');

/** The files of the fixture's BAAI-style layout (backbone graph + external data, heads, tokenizer, config). */
export const MODEL_FILES = ['onnx/model.onnx', 'onnx/model.onnx_data', 'tokenizer.json', 'tokenizer_config.json', 'config.json', 'colbert_linear.pt', 'sparse_linear.pt'];

const roots: string[] = [];
after(() => {
  for (const d of roots.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed after the test file. */
export function tempDir(prefix = 'bgem3-rel-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  roots.push(d);
  return d;
}

/** A private copy of the fixture model (only the files a BAAI-layout load uses). */
export function copyModel(): string {
  const dir = join(tempDir('bgem3-rel-model-'), 'model');
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of MODEL_FILES) cpSync(join(FIXTURE, f), join(dir, f));
  return dir;
}

let other: Promise<string> | undefined;
/**
 * A second real model in the same layout but another shape (hidden 48, vocabulary 4000), written
 * by the benchmark model generator (~0.5 s): "an index built by a different model".
 */
export function otherModel(): Promise<string> {
  other ??= (async () => {
    const { generateModel, tinyConfig } = await import('../../bench/model-gen/index.ts');
    const out = join(tempDir('bgem3-rel-other-'), 'model');
    generateModel({ out, config: tinyConfig({ seed: 5, hidden: 48, heads: 4, vocab: 4000 }) });
    return out;
  })();
  return other;
}

/** Odd but legal strings every text input must handle. */
export const ODD = {
  empty: '',
  whitespace: ' \t\n\u00a0\u3000 ',
  nul: 'before\u0000after',
  loneHigh: 'x\uD800y',
  loneLow: '\uDC00 trailing low surrogate',
  oneMegabyte: 'lorem ipsum dolor sit amet '.repeat(Math.ceil(2 ** 20 / 27)).slice(0, 2 ** 20),
};

/** Predicate for assert.throws/rejects: an M3Error with this code (and message pattern). */
export function m3(code: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof M3Error, `expected an M3Error ${code}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

/** Predicate: a TypeError whose message matches. */
export function typeError(pattern: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof TypeError, `expected a TypeError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.match(e.message, pattern);
    return true;
  };
}

export interface CliRun {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `bgem3` CLI with `args`, `input` on stdin and extra environment. */
export function runCli(args: string[], input = '', env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT', 'BGEM3_DEBUG']) delete base[k];
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 256 << 20, env: { ...base, ...env } }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.on('error', () => undefined); // the CLI may exit before reading all input
    child.stdin!.end(input);
  });
}

/** A user error as the CLI must print it: exit 1, exactly one stderr line matching, no stack trace. */
export function assertOneLineError(r: CliRun, pattern: RegExp, what: string): void {
  assert.equal(r.status, 1, `${what}: exit status 1 (stderr: ${r.stderr})`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one stderr line, got:\n${r.stderr}`);
  assert.match(lines[0], /^bgem3: /, what);
  assert.match(lines[0], pattern, what);
  assert.doesNotMatch(r.stderr, /\n\s+at |^\s+at /m, `${what}: no stack trace`);
}

/** Runs `jobs` with at most `limit` in flight (child processes on a 2-core machine). */
export async function pool<T>(jobs: (() => Promise<T>)[], limit = 3): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]();
      }
    }),
  );
  return out;
}

/**
 * A sparse retriever file in the single-file format of @bgem3/langchain / @bgem3/llamaindex 0.1
 * (removed since): `magic` (`BGM3LCSP` / `BGM3LISP`), u32 version 1, u32 header length, the UTF-8
 * JSON header, then `body` (what was core's SparseIndex bytes). The format as 0.1's `save` wrote it.
 */
export function legacySparseFile(magic: 'BGM3LCSP' | 'BGM3LISP', header: unknown, body: Uint8Array = new Uint8Array(0)): Buffer {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const head = Buffer.alloc(16);
  head.write(magic, 0, 'latin1');
  head.writeUInt32LE(1, 8);
  head.writeUInt32LE(h.length, 12);
  return Buffer.concat([head, h, body]);
}

/** A zip archive with stored (uncompressed) entries, as torch.save writes them. */
export function storedZip(entries: Record<string, Uint8Array>): Buffer {
  const crc32 = (zlib as unknown as { crc32: (d: Uint8Array) => number }).crc32;
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(entries)) {
    const n = Buffer.from(name, 'utf8');
    const crc = crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    locals.push(local, n, Buffer.from(data));
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(data.length, 20);
    c.writeUInt32LE(data.length, 24);
    c.writeUInt16LE(n.length, 28);
    c.writeUInt32LE(offset, 42);
    central.push(c, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(entries).length, 8);
  end.writeUInt16LE(Object.keys(entries).length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}
