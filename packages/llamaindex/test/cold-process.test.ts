/**
 * A query in a fresh process over a store persisted on disk encodes exactly one text, the query,
 * through VectorStoreIndex.fromVectorStore (default, sparse and hybrid retrievers, the query
 * engine) and the store-backed classes: candidates' vectors come from the store. A real child
 * process (test/cold-query.child.mjs) opens the store and counts the texts the model ran on.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { M3Encoder, M3Index } from '@bgem3/core';
import { BGEM3VectorStore } from '../src/index.ts';
import { FIXTURE, corpusNodes } from './helpers.ts';

const CHILD = fileURLToPath(new URL('./cold-query.child.mjs', import.meta.url));
const run = promisify(execFile);

describe('a cold process queries a persisted store (LlamaIndex)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bgem3-li-cold-'));
    const encoder = await M3Encoder.load(FIXTURE);
    const store = await M3Index.open(join(dir, 'index'), { encoder });
    await new BGEM3VectorStore({ store }).add(corpusNodes());
    await store.close();
    await encoder.close();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const withEncoder of ['yes', 'no']) {
    test(`each path encodes one text per query (store opened ${withEncoder === 'yes' ? 'with' : 'without'} its encoder)`, async () => {
      const { stdout } = await run(process.execPath, [CHILD, join(dir, 'index'), FIXTURE, withEncoder], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
      const out = JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, { texts: number; results: number }>;
      assert.equal(Object.keys(out).length, 7);
      for (const [name, r] of Object.entries(out)) {
        assert.equal(r.texts, 1, `${name}: ${r.texts} texts encoded`);
        assert.ok(r.results > 0 && r.results <= 5, `${name}: ${r.results} results`);
      }
    });
  }
});
