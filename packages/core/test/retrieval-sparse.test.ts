import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { bytesView, crc32, crc32Portable, encodeContainer, concatChunks, sectionOf } from '../src/retrieval/binary-format.js';
import { SparseIndex, SparseLoadBuffer } from '../src/retrieval/sparse-index.js';
import type { SparseVector } from '../src/types.js';

const dir = mkdtempSync(join(tmpdir(), 'bgem3-sparse-'));
after(() => rmSync(dir, { recursive: true, force: true }));

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

// Zipf(s) over `vocab` token ids (id = rank, shuffled), with weights either continuous or on a
// coarse grid (coarse weights make equal scores common, which exercises the id tie-break).
function generator(seed: number, vocab: number, s: number, coarse: boolean) {
  const rand = rng(seed);
  const cdf = new Float64Array(vocab);
  let acc = 0;
  for (let r = 0; r < vocab; r++) cdf[r] = acc += 1 / Math.pow(r + 1, s);
  for (let r = 0; r < vocab; r++) cdf[r] /= acc;
  const perm = Array.from({ length: vocab }, (_, i) => i);
  for (let i = vocab - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const token = () => {
    const u = rand();
    let lo = 0;
    let hi = vocab - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return perm[lo];
  };
  return (len: number): SparseVector => {
    const set = new Set<number>();
    for (let i = 0; i < len; i++) set.add(token());
    const indices = Uint32Array.from([...set].sort((a, b) => a - b));
    const values = new Float32Array(indices.length);
    for (let i = 0; i < values.length; i++) values[i] = coarse ? (1 + Math.floor(rand() * 4)) / 8 : 0.01 + 0.34 * rand();
    return { indices, values };
  };
}

// The reference: FlagEmbedding's lexical matching score, brute force over every document.
function bruteForce(docs: Map<string, SparseVector>, q: SparseVector, k: number) {
  const hits: { id: string; score: number }[] = [];
  for (const [id, d] of docs) {
    let s = 0;
    let shared = false;
    let a = 0;
    let b = 0;
    while (a < q.indices.length && b < d.indices.length) {
      if (q.indices[a] === d.indices[b]) {
        if (q.values[a] > 0 && d.values[b] > 0) {
          s += q.values[a] * d.values[b];
          shared = true;
        }
        a++;
        b++;
      } else if (q.indices[a] < d.indices[b]) a++;
      else b++;
    }
    if (shared) hits.push({ id, score: s });
  }
  hits.sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  return hits.slice(0, k);
}

function vec(pairs: [number, number][]): SparseVector {
  return { indices: Uint32Array.from(pairs.map((p) => p[0])), values: Float32Array.from(pairs.map((p) => p[1])) };
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof M3Error ? err.code : `not M3Error: ${String(err)}`;
  }
  return undefined;
}

async function codeAsync(fn: () => Promise<unknown>): Promise<M3Error> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof M3Error, `expected M3Error, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a rejection');
}

describe('SparseIndex: exact top-k equals brute force', () => {
  const cases = [
    { seed: 1, vocab: 3000, s: 1.0, coarse: false },
    { seed: 2, vocab: 20000, s: 1.1, coarse: false },
    { seed: 3, vocab: 500, s: 0.8, coarse: true },
    { seed: 4, vocab: 8000, s: 1.2, coarse: true },
  ];
  for (const c of cases) {
    test(`seed ${c.seed}, vocab ${c.vocab}, zipf ${c.s}${c.coarse ? ', tied weights' : ''}`, () => {
      const make = generator(c.seed, c.vocab, c.s, c.coarse);
      const rand = rng(c.seed * 7919);
      const index = new SparseIndex({ vocabSize: c.vocab });
      const truth = new Map<string, SparseVector>();
      const queries = Array.from({ length: 15 }, () => make(2 + Math.floor(rand() * 14)));
      const check = (stage: string) => {
        for (const q of queries) {
          const all = bruteForce(truth, q, truth.size);
          for (const k of [1, 3, 10, 50, truth.size + 10]) {
            assert.deepEqual(index.search(q, k), all.slice(0, k), `${stage}, k=${k}`);
          }
        }
      };
      // 1. documents only in the append buffer
      for (let i = 0; i < 1200; i++) {
        const v = make(10 + Math.floor(rand() * 120));
        index.upsert(`d${i}`, v);
        truth.set(`d${i}`, v);
      }
      check('append buffer');
      // 2. after the CSR rebuild
      index.compact();
      check('compacted');
      // 3. tombstones in the CSR (deletes and replacements) plus new appended documents
      for (let i = 0; i < 400; i++) {
        const id = `d${Math.floor(rand() * 1200)}`;
        if (rand() < 0.5) {
          index.delete([id]);
          truth.delete(id);
        } else {
          const v = make(10 + Math.floor(rand() * 60));
          index.upsert(id, v);
          truth.set(id, v);
        }
      }
      for (let i = 1200; i < 1400; i++) {
        const v = make(5 + Math.floor(rand() * 80));
        index.upsert(`d${i}`, v);
        truth.set(`d${i}`, v);
      }
      assert.equal(index.size, truth.size);
      check('mixed');
      // 4. scoreIds agrees with search, for CSR and buffered documents alike
      const ids = [...truth.keys()].slice(0, 300);
      for (const q of queries.slice(0, 5)) {
        const scores = index.scoreIds(q, ids);
        const all = new Map(bruteForce(truth, q, truth.size).map((h) => [h.id, h.score]));
        ids.forEach((id, j) => assert.equal(scores[j], all.get(id) ?? 0));
      }
    });
  }

  test('a filter still yields the exact top k among the accepted documents', () => {
    const make = generator(9, 2000, 1.0, false);
    const index = new SparseIndex({ vocabSize: 2000 });
    const truth = new Map<string, SparseVector>();
    for (let i = 0; i < 800; i++) {
      const v = make(40);
      index.upsert(`d${i}`, v);
      truth.set(`d${i}`, v);
    }
    index.compact();
    const even = new Map([...truth].filter(([id]) => Number(id.slice(1)) % 2 === 0));
    for (let i = 0; i < 10; i++) {
      const q = make(6);
      assert.deepEqual(
        index.search(q, 7, { filter: (id) => Number(id.slice(1)) % 2 === 0 }),
        bruteForce(even, q, 7),
      );
    }
  });
});

describe('SparseIndex: updates and edge cases', () => {
  test('upsert replaces, delete counts removed ids and ignores unknown ones', () => {
    const index = new SparseIndex({ vocabSize: 100 });
    index.upsert('a', vec([[1, 0.5], [2, 0.25]]));
    index.upsert('b', vec([[2, 0.5]]));
    assert.equal(index.size, 2);
    assert.deepEqual(index.search(vec([[1, 1]]), 10), [{ id: 'a', score: 0.5 }]);
    index.upsert('a', vec([[3, 1]])); // replaces: token 1 no longer matches a
    assert.equal(index.size, 2);
    assert.deepEqual(index.search(vec([[1, 1]]), 10), []);
    assert.deepEqual(index.search(vec([[3, 2]]), 10), [{ id: 'a', score: 2 }]);
    assert.equal(index.delete(['a', 'nope', 'a']), 1);
    assert.equal(index.has('a'), false);
    assert.equal(index.size, 1);
    assert.deepEqual(index.search(vec([[2, 1], [3, 1]]), 10), [{ id: 'b', score: 0.5 }]);
    assert.equal(index.delete('b'), 1);
    assert.deepEqual(index.search(vec([[2, 1]]), 10), []);
  });

  test('the same id twice in one batch: the last one wins', () => {
    const index = new SparseIndex({ vocabSize: 100 });
    index.upsertMany([
      { id: 'x', vector: vec([[5, 1]]) },
      { id: 'y', vector: vec([[5, 0.5]]) },
      { id: 'x', vector: vec([[6, 1]]) },
    ]);
    assert.equal(index.size, 2);
    assert.deepEqual(index.search(vec([[5, 1]]), 5), [{ id: 'y', score: 0.5 }]);
    assert.deepEqual(index.search(vec([[6, 1]]), 5), [{ id: 'x', score: 1 }]);
  });

  test('empty index, empty query and no shared token return [] (never zero scores)', () => {
    const index = new SparseIndex({ vocabSize: 100 });
    assert.deepEqual(index.search(vec([[1, 1]]), 3), []);
    index.upsert('a', vec([[1, 0.5]]));
    index.upsert('empty', vec([]));
    assert.deepEqual(index.search(vec([]), 3), []);
    assert.deepEqual(index.search(vec([[2, 1]]), 3), []);
    assert.deepEqual(index.search(vec([[1, 0]]), 3), []); // zero query weight shares nothing
    index.compact();
    assert.deepEqual(index.search(vec([[2, 1]]), 3), []);
    assert.equal(index.size, 2);
    assert.deepEqual(index.search(vec([[1, 1]]), 1000), [{ id: 'a', score: 0.5 }]);
  });

  test('invalid k and invalid vectors throw INVALID_ARGUMENT and change nothing', () => {
    const index = new SparseIndex({ vocabSize: 100 });
    index.upsert('a', vec([[1, 0.5]]));
    for (const k of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3' as unknown as number]) {
      assert.equal(code(() => index.search(vec([[1, 1]]), k)), 'INVALID_ARGUMENT', `k=${String(k)}`);
    }
    const bad: SparseVector[] = [
      vec([[2, 1], [1, 1]]), // not ascending
      vec([[1, 1], [1, 1]]), // repeated
      vec([[100, 1]]), // outside the vocabulary
      vec([[1, Number.NaN]]),
      vec([[1, -0.5]]),
      vec([[1, Number.POSITIVE_INFINITY]]),
      { indices: new Uint32Array([1, 2]), values: new Float32Array([1]) },
    ];
    for (const v of bad) {
      assert.equal(code(() => index.upsertMany([{ id: 'b', vector: vec([[3, 1]]) }, { id: 'c', vector: v }])), 'INVALID_ARGUMENT');
      assert.equal(code(() => index.search(v, 1)), 'INVALID_ARGUMENT');
    }
    assert.equal(code(() => index.upsert('', vec([[1, 1]]))), 'INVALID_ARGUMENT');
    assert.equal(index.size, 1);
    assert.equal(index.has('b'), false);
  });

  test('lazy rebuild keeps results and drops dead postings', () => {
    const make = generator(5, 1000, 1.0, false);
    const index = new SparseIndex({ vocabSize: 1000 });
    const truth = new Map<string, SparseVector>();
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 700; i++) {
        const v = make(80);
        const id = `d${(round * 331 + i * 7) % 2000}`;
        index.upsert(id, v);
        truth.set(id, v);
      }
      const q = make(8);
      assert.deepEqual(index.search(q, 20), bruteForce(truth, q, 20));
    }
    let postings = 0;
    for (const v of truth.values()) postings += v.indices.length;
    assert.equal(index.postingCount, postings);
  });
});

describe('SparseIndex: bulk load (what a store does when it loads)', () => {
  // The stored form M3Index keeps: n uint32 token ids, then n float32 weights.
  const storedBytes = (v: SparseVector): Uint8Array => {
    const b = new Uint8Array(8 * v.indices.length);
    b.set(new Uint8Array(v.indices.buffer, v.indices.byteOffset, 4 * v.indices.length), 0);
    b.set(new Uint8Array(v.values.buffer, v.values.byteOffset, 4 * v.values.length), 4 * v.indices.length);
    return b;
  };

  test('loadChecked builds the same index as upserts, which then takes upserts and deletes', () => {
    const make = generator(21, 4000, 1.05, true);
    const truth = new Map<string, SparseVector>();
    const buffer = new SparseLoadBuffer(4000);
    for (let i = 0; i < 900; i++) {
      const v = make(1 + (i % 90));
      if (i % 10 === 0) v.values[0] = 0; // a zero weight is dropped, as by upsert
      truth.set(`d${i}`, v);
      // Misaligned bytes (an odd offset) are copied, aligned ones used in place.
      const bytes = storedBytes(v);
      const shifted = i % 2 ? new Uint8Array(bytes.length + 1) : Buffer.alloc(bytes.length + 1); // Buffer#slice is a view: a copy must still be made
      shifted.set(bytes, 1);
      assert.equal(buffer.push(i % 3 === 0 ? shifted.subarray(1) : bytes), true);
    }
    const loaded = new SparseIndex({ vocabSize: 4000 });
    loaded.loadChecked([...truth.keys()], buffer);
    const upserted = new SparseIndex({ vocabSize: 4000 });
    upserted.upsertMany([...truth].map(([id, vector]) => ({ id, vector })));
    upserted.compact();
    assert.equal(loaded.size, 900);
    assert.equal(loaded.postingCount, upserted.postingCount);
    assert.deepEqual(loaded.vectors(), upserted.vectors());
    for (let i = 0; i < 20; i++) {
      const q = make(3 + i);
      assert.deepEqual(loaded.search(q, 15), bruteForce(truth, q, 15));
      const ids = [...truth.keys()].filter((_, j) => j % 37 === i);
      assert.deepEqual(loaded.scoreIds(q, ids), upserted.scoreIds(q, ids));
    }
    // Mutations after the load: replace, delete, add, with rebuilds, still exact.
    for (let i = 0; i < 400; i++) {
      const id = `d${(i * 7) % 1300}`;
      const v = make(40);
      loaded.upsert(id, v);
      truth.set(id, v);
    }
    loaded.delete(['d1', 'd2', 'd500']);
    for (const id of ['d1', 'd2', 'd500']) truth.delete(id);
    loaded.compact();
    for (let i = 0; i < 10; i++) {
      const q = make(6);
      assert.deepEqual(loaded.search(q, 25), bruteForce(truth, q, 25));
    }
    assert.throws(() => loaded.loadChecked([], new SparseLoadBuffer(4000)), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT' && /empty index/.test(e.message));
  });

  test('SparseLoadBuffer refuses what readSparse refuses, adding nothing', () => {
    const buffer = new SparseLoadBuffer(100);
    const bad = [
      vec([[5, 0.1], [5, 0.2]]), // not strictly ascending
      vec([[9, 0.1], [3, 0.2]]),
      vec([[100, 0.1]]), // beyond the vocabulary
      vec([[1, -0.1]]),
      vec([[1, Number.NaN]]),
      vec([[1, Infinity]]),
    ];
    for (const v of bad) assert.equal(buffer.push(storedBytes(v)), false);
    assert.equal(buffer.push(new Uint8Array(12)), false); // not a multiple of 8
    assert.equal(buffer.count, 0);
    assert.equal(buffer.push(storedBytes(vec([[1, 0.5], [99, 0]]))), true);
    const index = new SparseIndex({ vocabSize: 100 });
    assert.throws(() => index.loadChecked(['a', 'b'], buffer), (e: unknown) => e instanceof M3Error && e.code === 'INVALID_ARGUMENT');
    index.loadChecked(['a'], buffer);
    assert.equal(index.postingCount, 1);
    assert.deepEqual(index.search(vec([[1, 1]]), 5), [{ id: 'a', score: 0.5 }]);
  });
});

describe('SparseIndex: persistence', () => {
  const make = generator(11, 5000, 1.0, false);
  const build = () => {
    const index = new SparseIndex({ vocabSize: 5000, modelId: 'test/model' });
    for (let i = 0; i < 300; i++) index.upsert(`doc-${i}-é`, make(30));
    index.delete(['doc-3-é', 'doc-7-é']);
    return index;
  };

  test('save/load and toBytes/fromBytes round trip', async () => {
    const index = build();
    const queries = Array.from({ length: 10 }, () => make(6));
    const before = queries.map((q) => index.search(q, 15));
    const path = join(dir, 'roundtrip.bin');
    await index.save(path);
    const loaded = await SparseIndex.load(path, { vocabSize: 5000, modelId: 'test/model' });
    assert.equal(loaded.size, index.size);
    assert.equal(loaded.modelId, 'test/model');
    assert.equal(loaded.vocabSize, 5000);
    assert.equal(loaded.postingCount, index.postingCount);
    assert.deepEqual([...loaded.ids()].sort(), [...index.ids()].sort());
    assert.deepEqual(queries.map((q) => loaded.search(q, 15)), before);
    const fromBytes = SparseIndex.fromBytes(index.toBytes());
    assert.deepEqual(queries.map((q) => fromBytes.search(q, 15)), before);
    // A loaded index stays writable.
    loaded.upsert('new', make(10));
    loaded.delete('doc-1-é');
    assert.equal(loaded.size, index.size);
    assert.deepEqual(readFileSync(path), Buffer.from(index.toBytes()));
    // Empty index.
    const empty = SparseIndex.fromBytes(new SparseIndex({ vocabSize: 10 }).toBytes());
    assert.equal(empty.size, 0);
    assert.deepEqual(empty.search(vec([[1, 1]]), 1), []);
  });

  test('a different expected model or vocabulary is INDEX_MISMATCH', async () => {
    const path = join(dir, 'mismatch.bin');
    await build().save(path);
    assert.equal((await codeAsync(() => SparseIndex.load(path, { modelId: 'other' }))).code, 'INDEX_MISMATCH');
    assert.equal((await codeAsync(() => SparseIndex.load(path, { vocabSize: 250002 }))).code, 'INDEX_MISMATCH');
  });

  test('truncated, corrupted or foreign files are INDEX_INVALID naming the file', async () => {
    const bytes = build().toBytes();
    const cuts = [0, 7, 23, 40, 100, bytes.length >> 1, bytes.length - 1];
    for (const cut of cuts) {
      const path = join(dir, `cut-${cut}.bin`);
      writeFileSync(path, bytes.subarray(0, cut));
      const err = await codeAsync(() => SparseIndex.load(path));
      assert.equal(err.code, 'INDEX_INVALID', `cut at ${cut}`);
      assert.equal(err.file, path);
      assert.match(err.message, new RegExp(path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    }
    // Every single-byte corruption past the header is caught (CRC or a structural check).
    const r = rng(3);
    for (let i = 0; i < 40; i++) {
      const copy = bytes.slice();
      const at = 8 + Math.floor(r() * (copy.length - 8));
      copy[at] ^= 1 + Math.floor(r() * 255);
      assert.equal(code(() => SparseIndex.fromBytes(copy)), 'INDEX_INVALID', `flip at ${at}`);
    }
    const foreign = bytes.slice();
    foreign.set(new TextEncoder().encode('NOTMAGIC'), 0);
    assert.equal(code(() => SparseIndex.fromBytes(foreign)), 'INDEX_INVALID');
    const trailing = new Uint8Array(bytes.length + 8);
    trailing.set(bytes);
    assert.equal(code(() => SparseIndex.fromBytes(trailing)), 'INDEX_INVALID');
    const missing = join(dir, 'does-not-exist.bin');
    const err = await codeAsync(() => SparseIndex.load(missing));
    assert.equal(err.code, 'INDEX_INVALID');
    assert.equal(err.file, missing);
  });

  test('a crafted header with huge counts fails before allocating', () => {
    const mem0 = process.memoryUsage().arrayBuffers;
    // 1. A section length of 2^40 bytes in the table (the CRC is not even reached).
    const bytes = build().toBytes();
    const huge = bytes.slice();
    new DataView(huge.buffer).setBigUint64(24 + 8 * 4, 1n << 40n, true);
    assert.equal(code(() => SparseIndex.fromBytes(huge)), 'INDEX_INVALID');
    new DataView(huge.buffer).setBigUint64(24 + 8 * 4, 1n << 62n, true);
    assert.equal(code(() => SparseIndex.fromBytes(huge)), 'INDEX_INVALID');
    // 2. A well-formed container (valid CRC) whose meta claims 2^31 documents and 2^31 postings.
    for (const meta of [
      { docCount: 2 ** 31 - 2, termCount: 1, postingCount: 1 },
      { docCount: 1, termCount: 1, postingCount: 2 ** 31 - 1 },
      { docCount: 1, termCount: 250001, postingCount: 1 },
      { docCount: 1e300, termCount: 1, postingCount: 1 },
      { docCount: -1, termCount: 1, postingCount: 1 },
    ]) {
      const small = sectionOf(new Uint8Array(4));
      const c = encodeContainer('BGM3SPRS', 1, { kind: 'sparse', modelId: '', vocabSize: 250002, ...meta }, [small, small, small, small, small, small]);
      const err = code(() => SparseIndex.fromBytes(concatChunks(c.byteLength, c.chunks())));
      assert.equal(err, 'INDEX_INVALID', JSON.stringify(meta));
    }
    // 3. A meta length over the limit.
    const bigMeta = bytes.slice();
    new DataView(bigMeta.buffer).setUint32(16, 0xffffffff, true);
    assert.equal(code(() => SparseIndex.fromBytes(bigMeta)), 'INDEX_INVALID');
    assert.ok(process.memoryUsage().arrayBuffers - mem0 < 64 << 20, 'no large allocation');
  });

  test('mutations during a pending save are refused', async () => {
    const index = build();
    const pending = index.save(join(dir, 'pending.bin'));
    assert.equal(code(() => index.upsert('z', vec([[1, 1]]))), 'INVALID_ARGUMENT');
    await pending;
    index.upsert('z', vec([[1, 1]]));
    assert.ok(index.has('z'));
  });

  test('crc32: node:zlib and the portable fallback agree', () => {
    const data = new Uint8Array(10000).map((_, i) => (i * 31 + 7) & 0xff);
    assert.equal(crc32Portable(data), crc32(data));
    assert.equal(crc32Portable(data.subarray(5000), crc32Portable(data.subarray(0, 5000))), crc32(data));
    assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
    assert.equal(crc32Portable(bytesView(new Uint32Array(0))), 0);
  });
});
