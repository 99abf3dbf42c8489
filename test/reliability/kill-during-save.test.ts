/**
 * A process SIGKILLed while the LangChain or LlamaIndex sparse retriever is saving must leave the
 * previous file loadable (core's M3Index and SparseIndex have such tests; the adapters' own file
 * formats did not). The subject is the save path, not the model, so a fast deterministic fake
 * encoder stands in for BGE-M3.
 *
 * This file is also the child: with BGEM3_REL_SAVE_CHILD set it builds a small retriever A and a
 * large one B (~5 MB file), reports their fingerprints, then saves B, A, B, … over one path,
 * printing `SAVING x` / `SAVED x` around each save. The parent kills it 0 or 5 ms after the first
 * save of B has created its temporary file, i.e. while the large file is being written over the
 * small one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { EncodeOptions, EncodeResult, TextEncoder3 } from '@bgem3/core';
import type { BGEM3SparseRetriever as LangChainSparse } from '@bgem3/langchain';
import type { BGEM3SparseRetriever as LlamaSparse } from '@bgem3/llamaindex';
import { tempDir } from './helpers.ts';

// Each framework is imported only by the runs that use it (a child needs one: startup time).
const langchain = async () => ({ ...(await import('@bgem3/langchain')), ...(await import('@langchain/core/documents')) });
const llamaindex = async () => ({ ...(await import('@bgem3/llamaindex')), ...(await import('./llamaindex.ts')) });

function hash(s: string, seed = 0): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Words → token ids by hash, a weight per word: sparse vectors only, instantly. */
class FakeSparseEncoder implements TextEncoder3 {
  readonly modelId = 'fake/sparse-for-kill-test';
  readonly dim = 8;
  readonly vocabSize = 30000;
  async encode(texts: readonly string[], _options?: EncodeOptions): Promise<EncodeResult[]> {
    return texts.map((t) => {
      const w = new Map<number, number>();
      for (const word of t.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean)) {
        const id = 4 + (hash(word) % (this.vocabSize - 4));
        w.set(id, Math.max(w.get(id) ?? 0, Math.fround(0.05 + (hash(word, 7) % 500) / 1000)));
      }
      const indices = Uint32Array.from([...w.keys()].sort((a, b) => a - b));
      return { tokens: w.size + 2, truncated: false, sparse: { indices, values: Float32Array.from(indices, (i) => w.get(i) as number) } };
    });
  }
}

const WORDS = 'apple banana cherry river mountain ocean forest desert city village music painting science history energy water fire stone cloud wind'.split(' ');
function texts(n: number, seed: number, words: number): string[] {
  return Array.from({ length: n }, (_, i) => Array.from({ length: words }, (_, j) => WORDS[hash(`${i}:${j}`, seed) % WORDS.length]).join(' ') + ` doc${seed}x${i}`);
}
const SMALL = { n: 30, seed: 1, words: 8 };
const LARGE = { n: 2500, seed: 2, words: 300 }; // ~4.5 MB of text in the saved file
const QUERIES = ['apple river', 'music fire stone', 'doc1x7 cloud'];

type Adapter = 'langchain' | 'llamaindex';
interface Built {
  size: number;
  save(path: string): Promise<void>;
  fingerprint(): Promise<string>;
}

async function build(adapter: Adapter, spec: typeof SMALL, encoder: TextEncoder3): Promise<Built> {
  const all = texts(spec.n, spec.seed, spec.words);
  if (adapter === 'langchain') {
    const { BGEM3SparseRetriever, Document } = await langchain();
    const r = await BGEM3SparseRetriever.fromDocuments(all.map((pageContent, i) => new Document({ id: `s${spec.seed}-${i}`, pageContent })), { encoder, k: 5 });
    return wrapLangChain(r);
  }
  const { BGEM3SparseRetriever, TextNode } = await llamaindex();
  const r = await BGEM3SparseRetriever.fromNodes(all.map((text, i) => new TextNode({ id_: `s${spec.seed}-${i}`, text })), { encoder, topK: 5 });
  return wrapLlama(r);
}

function wrapLangChain(r: LangChainSparse): Built {
  return {
    size: r.size,
    save: (p) => r.save(p),
    fingerprint: async () => JSON.stringify({ size: r.size, hits: await Promise.all(QUERIES.map(async (q) => (await r.invoke(q)).map((d) => [d.id, d.metadata.sparseScore]))) }),
  };
}

function wrapLlama(r: LlamaSparse): Built {
  return {
    size: r.size,
    save: (p) => r.save(p),
    fingerprint: async () => JSON.stringify({ size: r.size, hits: await Promise.all(QUERIES.map(async (q) => (await r.retrieve(q)).map((h) => [h.node.id_, h.score]))) }),
  };
}

async function load(adapter: Adapter, path: string, encoder: TextEncoder3): Promise<Built> {
  if (adapter === 'langchain') return wrapLangChain(await (await langchain()).BGEM3SparseRetriever.load(path, { encoder }));
  return wrapLlama(await (await llamaindex()).BGEM3SparseRetriever.load(path, { encoder, topK: 5 })); // (topK is an option of load, not stored)
}

const childSpec = process.env.BGEM3_REL_SAVE_CHILD;
if (childSpec) {
  const { adapter, path } = JSON.parse(childSpec) as { adapter: Adapter; path: string };
  const encoder = new FakeSparseEncoder();
  const a = await build(adapter, SMALL, encoder);
  const b = await build(adapter, LARGE, encoder);
  process.stdout.write(`READY ${JSON.stringify({ a: await a.fingerprint(), b: await b.fingerprint() })}\n`);
  for (let i = 0; ; i++) {
    const [name, r] = i % 2 === 0 ? ['B', b] : ['A', a];
    process.stdout.write(`SAVING ${name}\n`);
    await r.save(path);
    process.stdout.write(`SAVED ${name}\n`);
  }
} else {
  const self = fileURLToPath(import.meta.url);

  /**
   * Runs a child until its first save of B (over the A the parent wrote) has created its
   * temporary file, i.e. is writing, then kills it `delayMs` later. Returns the fingerprints and
   * whether the kill came before that save finished.
   */
  async function killMidWrite(adapter: Adapter, path: string, delayMs: number): Promise<{ a: string; b: string; midSave: boolean }> {
    // Watch for the save's temporary file from before the child starts (inotify: no polling
    // delay, so the kill lands inside the write even where the disk is fast). The child's first
    // save is B's, so the first temporary file to appear is B's.
    const tmpPrefix = `.${basename(path)}.`;
    let killNow: () => void = () => undefined;
    const tmpSeen = new Promise<void>((res) => (killNow = res));
    const watcher = watch(dirname(path), (_event, name) => {
      if (name && String(name).startsWith(tmpPrefix) && String(name).endsWith('.tmp')) killNow();
    });
    const child = spawn(process.execPath, ['--import', 'tsx', self], {
      cwd: dirname(self),
      env: { ...process.env, BGEM3_REL_SAVE_CHILD: JSON.stringify({ adapter, path }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    // 'close' (not 'exit'): fires once stdout is drained, so the READY line has been read.
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('close', (_c, sig) => res(sig)));
    let out = '';
    let fps: { a: string; b: string } | undefined;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = /READY (.*)\n/.exec(out);
      if (ready && !fps) fps = JSON.parse(ready[1]);
    });
    try {
      await Promise.race([
        tmpSeen,
        exited.then(() => {
          throw new Error(`child exited early: ${out}`);
        }),
      ]);
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      child.kill('SIGKILL');
    } finally {
      watcher.close();
    }
    assert.equal(await exited, 'SIGKILL');
    assert.ok(fps, `the child reported its fingerprints before saving: ${out}`);
    return { ...fps, midSave: !out.includes('SAVED B') };
  }

  describe('BGEM3SparseRetriever.save under SIGKILL', { concurrency: true }, () => {
    for (const adapter of ['langchain', 'llamaindex'] as const) {
      test(`${adapter}: the file always loads as the complete old or the complete new retriever (2 kills while the file is written)`, async (t) => {
        const dir = tempDir(`bgem3-rel-kill-${adapter}-`);
        const encoder = new FakeSparseEncoder();
        const a = await build(adapter, SMALL, encoder);
        const aPrint = await a.fingerprint();
        const outcomes: string[] = [];
        for (const delay of [0, 5]) {
          const path = join(dir, `sparse-${delay}.bin`);
          await a.save(path); // the previous file: A
          const fps = await killMidWrite(adapter, path, delay);
          assert.equal(fps.a, aPrint, 'the child built the same small retriever');
          const loaded = await load(adapter, path, encoder);
          const fp = await loaded.fingerprint();
          assert.ok(fp === fps.a || fp === fps.b, `kill ${delay} ms into saving B: the file is neither A nor B`);
          outcomes.push(`${delay} ms after the temporary file appeared: ${fps.midSave ? 'mid-write' : 'after the save'} → ${fp === fps.a ? 'A (old)' : 'B (new)'}`);
        }
        // The killed writer may leave its temporary file (`.<name>.<pid>.<random>.tmp`) beside the target.
        const leftovers = readdirSync(dir).filter((f) => f.endsWith('.tmp'));
        t.diagnostic(`${outcomes.join('; ')}; temporary files left by killed writers: ${leftovers.length}`);
        assert.ok(outcomes.some((o) => o.includes('mid-write')), 'at least one kill landed while the file was being written');
      });
    }
  });
}

