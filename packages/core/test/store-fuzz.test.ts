/**
 * Fuzz test of the index loader: random mutations of a saved index under a fixed seed (bit flips,
 * overwritten runs, truncations, page-sized garbage), each loaded and read in full (every
 * document, searches of all three modes). Every mutation must load identically or fail with
 * M3Error INDEX_INVALID — never another exception, a hang, or a huge allocation. Bounded in time.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { FakeEncoder, corpus } from './helpers/fake-m3.js';

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

const tmp = mkdtempSync(join(tmpdir(), 'bgem3-store-fuzz-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const encoder = new FakeEncoder('fake/m3', 16);
const QUERIES = ['apple river', 'music history fire', 'cloud'];

async function snapshot(dir: string): Promise<string> {
  const index = await M3Index.load(dir, { encoder, readOnly: true });
  try {
    const ids = [...index.ids()].sort();
    const out: unknown[] = [index.settings, await index.getMany(ids)];
    for (const q of QUERIES) {
      out.push(await index.search(q, { k: 8, fetchK: 40 }));
      out.push(await index.searchDense(q, { k: 5 }));
      out.push(await index.searchSparse(q, { k: 5 }));
    }
    return JSON.stringify(out);
  } finally {
    await index.close();
  }
}

test('every random mutation of a saved index loads identically or is INDEX_INVALID', async (t) => {
  const src = join(tmp, 'src');
  const index = await M3Index.open(src, { encoder, colbertPrecision: 'int8', maxLength: 64 });
  await index.add(corpus(40, 3));
  await index.delete(['doc-1', 'doc-7']); // a deletion log and free space
  await index.add(corpus(5, 4).map((d) => ({ ...d, id: `late-${d.id}` })));
  await index.close(); // checkpointed: the whole index is in index.sqlite
  const original = readFileSync(join(src, 'index.sqlite'));
  const want = await snapshot(src);
  const rand = rng(0x5eed);
  const dir = join(tmp, 'mutant');
  const deadline = Date.now() + 4000;
  const tally = { identical: 0, invalid: 0 };
  let i = 0;
  for (; i < 400 && Date.now() < deadline; i++) {
    const bytes = Buffer.from(original);
    const kind = Math.floor(rand() * 4);
    let mutant: Buffer = bytes;
    const at = Math.floor(rand() * bytes.length);
    if (kind === 0) {
      for (let f = 1 + Math.floor(rand() * 4); f > 0; f--) {
        const p = Math.floor(rand() * bytes.length);
        bytes[p] ^= 1 << Math.floor(rand() * 8);
      }
    } else if (kind === 1) {
      for (let j = 0; j < 1 + rand() * 64 && at + j < bytes.length; j++) bytes[at + j] = Math.floor(rand() * 256);
    } else if (kind === 2) {
      mutant = bytes.subarray(0, at);
    } else {
      const page = 16384 * Math.floor(rand() * (bytes.length / 16384));
      for (let j = 0; j < 16384 && page + j < bytes.length; j++) bytes[page + j] = Math.floor(rand() * 256);
    }
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, 'index.sqlite'), mutant);
    const started = Date.now();
    try {
      const got = await snapshot(dir);
      assert.equal(got, want, `mutation ${i} (kind ${kind} at ${at}) loaded with different content`);
      tally.identical++;
    } catch (err) {
      if (!(err instanceof M3Error) || err.code !== 'INDEX_INVALID') {
        assert.fail(`mutation ${i} (kind ${kind} at ${at}): ${err instanceof M3Error ? err.code : (err as Error)?.name}: ${(err as Error)?.message} ${(err as Error)?.stack}`);
      }
      tally.invalid++;
    }
    assert.ok(Date.now() - started < 2000, `mutation ${i} took ${Date.now() - started} ms`);
  }
  t.diagnostic(`${i} mutations: ${tally.identical} loaded identically, ${tally.invalid} INDEX_INVALID`);
  assert.ok(tally.invalid > 0 && i >= 50);
});
