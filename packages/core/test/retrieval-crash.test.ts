/**
 * A process SIGKILLed in the middle of SparseIndex.save must leave the previous file loadable.
 *
 * This file is also the child: with BGEM3_CRASH_CHILD set it builds a small index A and a large
 * index B, saves B, reports their fingerprints, then saves A, B, A, … over the same path until
 * killed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { SparseIndex } from '../src/retrieval/sparse-index.js';
import type { SparseVector } from '../src/types.js';

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomVector(rand: () => number, vocab: number, len: number): SparseVector {
  const set = new Set<number>();
  // squaring the uniform skews ids towards small ones: a crude Zipf
  for (let i = 0; i < len; i++) set.add(Math.floor(rand() * rand() * vocab));
  const indices = Uint32Array.from([...set].sort((a, b) => a - b));
  return { indices, values: Float32Array.from(indices, () => 0.01 + rand()) };
}

const VOCAB = 30000;

function buildIndex(seed: number, docs: number, len: number): SparseIndex {
  const rand = rng(seed);
  const index = new SparseIndex({ vocabSize: VOCAB, modelId: `crash-${seed}` });
  for (let i = 0; i < docs; i++) index.upsert(`s${seed}-${i}`, randomVector(rand, VOCAB, len));
  return index;
}

function fingerprint(index: SparseIndex): string {
  const rand = rng(99);
  const hits = [0, 1, 2].map(() => index.search(randomVector(rand, VOCAB, 12), 5));
  return JSON.stringify({ model: index.modelId, size: index.size, postings: index.postingCount, hits });
}

const SMALL: [number, number, number] = [1, 200, 20];
const LARGE: [number, number, number] = [2, 6000, 60];

if (process.env.BGEM3_CRASH_CHILD) {
  const path = process.env.BGEM3_CRASH_CHILD;
  const a = buildIndex(...SMALL);
  const b = buildIndex(...LARGE);
  b.compact();
  const fps = JSON.stringify({ a: fingerprint(a), b: fingerprint(b) });
  await b.save(path);
  process.stdout.write(`READY ${fps}\n`);
  for (let i = 0; ; i++) await (i % 2 === 0 ? a : b).save(path);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-crash-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const self = fileURLToPath(import.meta.url);
  const root = join(dirname(self), '..', '..', '..');

  async function killMidSave(path: string, delayMs: number): Promise<{ a: string; b: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', relative(root, self)], {
      cwd: root,
      env: { ...process.env, BGEM3_CRASH_CHILD: path },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
    let out = '';
    const ready = await new Promise<{ a: string; b: string }>((res, rej) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /READY (.*)\n/.exec(out);
        if (m) res(JSON.parse(m[1]));
      });
      child.on('exit', () => rej(new Error(`child exited before it was ready: ${out}`)));
    });
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    return ready;
  }

  test('SIGKILL in the middle of a save leaves the old index (or the new one) loadable', async (t) => {
    const old = buildIndex(...SMALL);
    const rand = rng(Date.now() & 0xffff);
    const runs = [0, 1].map(async (i) => {
      const path = join(dir, `index-${i}.bin`);
      await old.save(path);
      const fps = await killMidSave(path, Math.floor(rand() * 120));
      assert.equal(fps.a, fingerprint(old), 'the child built the same small index');
      const loaded = await SparseIndex.load(path);
      const fp = fingerprint(loaded);
      assert.ok(fp === fps.a || fp === fps.b, `run ${i}: loaded content is neither the old nor the new index`);
      return fp === fps.a ? 'A' : 'B';
    });
    const outcomes = await Promise.all(runs);
    // Temporary files of the killed writer may remain; the index file itself is always whole.
    const leftovers = readdirSync(dir).filter((f) => f.endsWith('.tmp'));
    t.diagnostic(`outcomes: ${outcomes.join(', ')}; temporary files left by killed writers: ${leftovers.length}`);
  });
}
