/**
 * A process SIGKILLed while an M3Index commits a large batch (its write-ahead log being written)
 * must leave the index loadable as exactly the state before the batch or exactly the state
 * after it. (The framework adapters keep no files of their own any more: they are views of a
 * store, so the store's commit is the one save path.) A fast deterministic fake encoder stands in
 * for BGE-M3: the subject is the commit, not the model.
 *
 * This file is also the child: with BGEM3_REL_SAVE_CHILD set it opens the index as its writer,
 * encodes a large batch B up front, prints READY, then commits B in one transaction and prints
 * COMMITTED. The parent kills it 0 or 5 ms after the log file first changes, i.e. while B is
 * being written; store-processes.test.ts in core covers kills at random moments in loops.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { M3Index, type EncodeOptions, type EncodeResult, type TextEncoder3 } from '@bgem3/core';
import { tempDir } from './helpers.ts';

function hash(s: string, seed = 0): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Words → token ids and vectors by hash: all three outputs, instantly. */
class FakeEncoder implements TextEncoder3 {
  readonly modelId = 'fake/m3-for-kill-test';
  readonly dim = 64;
  readonly vocabSize = 30000;
  async encode(texts: readonly string[], options?: EncodeOptions): Promise<EncodeResult[]> {
    return texts.map((t) => {
      const words = t.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
      const w = new Map<number, number>();
      for (const word of words) w.set(4 + (hash(word) % (this.vocabSize - 4)), Math.fround(0.05 + (hash(word, 7) % 500) / 1000));
      const indices = Uint32Array.from([...w.keys()].sort((a, b) => a - b));
      const dense = new Float32Array(this.dim);
      for (const word of words) dense[hash(word, 3) % this.dim] += 1;
      const norm = Math.hypot(...dense) || 1;
      const rows = Math.min(words.length, 64) + 1;
      const colbert = new Float32Array(rows * this.dim);
      for (let r = 0; r < rows; r++) colbert[r * this.dim + (hash(words[r] ?? '</s>', 5) % this.dim)] = 1;
      return {
        tokens: words.length + 2,
        truncated: false,
        dense: dense.map((x) => x / norm),
        sparse: { indices, values: Float32Array.from(indices, (i) => w.get(i) as number) },
        ...(options?.colbert ? { colbert: { data: colbert, count: rows, dim: this.dim } } : {}),
      };
    });
  }
}

const WORDS = 'apple banana cherry river mountain ocean forest desert city village music painting science history energy water fire stone cloud wind'.split(' ');
function docs(n: number, seed: number, words: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `s${seed}-${i}`,
    text: Array.from({ length: words }, (_, j) => WORDS[hash(`${i}:${j}`, seed) % WORDS.length]).join(' ') + ` doc${seed}x${i}`,
    metadata: { seed, i },
  }));
}
const SMALL = { n: 30, seed: 1, words: 8 };
const LARGE = { n: 1500, seed: 2, words: 300 }; // ~15 MB committed in one transaction
const QUERIES = ['apple river', 'music fire stone', 'doc1x7 cloud'];

async function fingerprint(index: M3Index): Promise<string> {
  return JSON.stringify({ size: index.size, hits: await Promise.all(QUERIES.map(async (q) => (await index.search(q, { k: 5 })).map((h) => [h.id, h.score, h.text]))) });
}

const encoder = new FakeEncoder();
const childDir = process.env.BGEM3_REL_SAVE_CHILD;
if (childDir) {
  const index = await M3Index.open(childDir, { encoder });
  const big = docs(LARGE.n, LARGE.seed, LARGE.words);
  const encoded = (await encoder.encode(big.map((d) => d.text), { dense: true, sparse: true, colbert: true })).map((encoding, i) => ({ ...big[i], encoding }));
  process.stdout.write('READY\n');
  await index.addEncoded(encoded);
  process.stdout.write('COMMITTED\n');
  await new Promise(() => undefined); // wait to be killed
} else {
  const self = fileURLToPath(import.meta.url);

  /** Runs a child, kills it `delayMs` after its commit starts writing the log; returns whether it had finished. */
  async function killMidCommit(dir: string, delayMs: number): Promise<{ midCommit: boolean }> {
    const child = spawn(process.execPath, ['--import', 'tsx', self], {
      env: { ...process.env, BGEM3_REL_SAVE_CHILD: dir },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('close', (_c, sig) => res(sig)));
    let out = '';
    let ready: () => void = () => undefined;
    const isReady = new Promise<void>((res) => (ready = res));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('READY\n')) ready();
    });
    await Promise.race([isReady, exited.then(() => assert.fail(`child exited early: ${out}`))]);
    // inotify on the directory: the first change of the log after READY is B's commit writing.
    let writing: () => void = () => undefined;
    const isWriting = new Promise<void>((res) => (writing = res));
    const watcher = watch(dir, (_e, name) => {
      if (String(name) === 'index.sqlite-wal') writing();
    });
    try {
      await Promise.race([isWriting, exited.then(() => assert.fail(`child exited early: ${out}`))]);
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      child.kill('SIGKILL');
    } finally {
      watcher.close();
    }
    assert.equal(await exited, 'SIGKILL');
    return { midCommit: !out.includes('COMMITTED') };
  }

  describe('M3Index commit under SIGKILL', () => {
    test('the index always loads as the complete state before or after the batch (kills while the log is written)', async (t) => {
      const outcomes: string[] = [];
      let sizes: number[] = [];
      for (const delay of [0, 5]) {
        const dir = join(tempDir('bgem3-rel-kill-m3index-'), 'index');
        const a = await M3Index.open(dir, { encoder });
        await a.add(docs(SMALL.n, SMALL.seed, SMALL.words));
        const aPrint = await fingerprint(a);
        await a.close();
        const { midCommit } = await killMidCommit(dir, delay);
        const loaded = await M3Index.load(dir, { encoder, readOnly: true });
        const fp = await fingerprint(loaded);
        sizes = [SMALL.n, SMALL.n + LARGE.n];
        assert.ok(sizes.includes(loaded.size), `kill ${delay} ms into the commit: ${loaded.size} documents`);
        if (loaded.size === SMALL.n) assert.equal(fp, aPrint, 'the state before the batch, intact');
        else {
          assert.equal((await loaded.get(`s2-${LARGE.n - 1}`))?.metadata.i, LARGE.n - 1, 'the whole batch');
          assert.equal((await loaded.search('doc2x17', { k: 1 }))[0]?.id, 's2-17');
        }
        await loaded.close();
        // The killed writer's lock is gone with it: the index opens for writing again.
        const again = await M3Index.open(dir, { encoder });
        await again.add([{ id: 'after', text: 'apple after the kill' }]);
        await again.close();
        outcomes.push(`${delay} ms after the log first changed: ${midCommit ? 'mid-commit' : 'after the commit'} → ${loaded.size === SMALL.n ? 'before (old)' : 'after (new)'}`);
      }
      t.diagnostic(outcomes.join('; '));
      assert.ok(outcomes.some((o) => o.includes('mid-commit')), 'at least one kill landed while the batch was being committed');
    });
  });
}
