/**
 * One model per process: classes of both adapters, from their ESM and their CJS builds, in one
 * process, given the same model, share one load and one encode cache (core's adapter registry on
 * globalThis), and M3Error.isInstance recognises errors of either build. Runs the built dists.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FIXTURE } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const dist = (pkg: string, file: string) => join(ROOT, 'packages', pkg, 'dist', file);
const require = createRequire(import.meta.url);

describe('one model per process, across the ESM and CJS builds of both adapters', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-share-'));
  const model = join(dir, 'model');
  symlinkSync(FIXTURE, model); // a path of its own: a registry entry of its own
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('ESM LangChain, CJS LlamaIndex and CJS LangChain classes share one encoder; errors are recognised across builds', async () => {
    for (const f of [dist('langchain', 'index.js'), dist('langchain', 'index.cjs'), dist('llamaindex', 'index.cjs'), dist('core', 'adapter/index.js'), dist('core', 'adapter/index.cjs')]) {
      assert.ok(existsSync(f), `build first: ${f}`);
    }
    const lcEsm = (await import(pathToFileURL(dist('langchain', 'index.js')).href)) as typeof import('../src/index.ts');
    const lcCjs = require(dist('langchain', 'index.cjs')) as typeof import('../src/index.ts');
    const liCjs = require(dist('llamaindex', 'index.cjs')) as typeof import('../../llamaindex/src/index.ts');
    const kitEsm = (await import(pathToFileURL(dist('core', 'adapter/index.js')).href)) as typeof import('@bgem3/core/adapter');
    const kitCjs = require(dist('core', 'adapter/index.cjs')) as typeof import('@bgem3/core/adapter');
    const coreEsm = (await import(pathToFileURL(dist('core', 'index.js')).href)) as typeof import('@bgem3/core');
    const coreCjs = require(dist('core', 'index.cjs')) as typeof import('@bgem3/core');
    assert.notEqual(coreEsm.M3Encoder, coreCjs.M3Encoder, 'two module graphs');

    const before = kitEsm.sharedEncoderCount();
    assert.equal(kitCjs.sharedEncoderCount(), before, 'one registry seen from both builds');
    const a = new lcEsm.BGEM3Embeddings({ model });
    const b = new liCjs.BGEM3Embedding({ model });
    const c = new lcCjs.BGEM3SparseRetriever({ model, docs: [] });
    const text = 'one text, three classes, two builds';
    const [va, vb] = await Promise.all([a.embedQuery(text), b.getTextEmbedding(text)]);
    await c.invoke(text);
    assert.deepEqual(va, vb);
    assert.equal(kitEsm.sharedEncoderCount(), before + 1, 'one model load');
    const encA = kitEsm.sourceOf<{ loaded: unknown }>(a)!.loaded;
    const encB = kitCjs.sourceOf<{ loaded: unknown }>(b)!.loaded;
    const encC = kitCjs.sourceOf<{ loaded: unknown }>(c)!.loaded;
    assert.ok(encA && encA === encB && encB === encC, 'the same encoder object');
    const stats = (encA as { stats: { textsEncoded: number } }).stats;
    assert.equal(stats.textsEncoded, 1, 'the text went through the model once for all three');

    // Errors of either build are M3Errors to both.
    const esmErr = await a.embedDocuments([42 as never]).catch((e) => e);
    assert.ok(esmErr instanceof TypeError);
    const cjsErr = (() => {
      try {
        new liCjs.BGEM3Embedding({ model, encoder: encA as never });
      } catch (e) {
        return e;
      }
    })();
    assert.ok(!(cjsErr instanceof coreEsm.M3Error), 'instanceof fails across the builds');
    assert.ok(coreEsm.M3Error.isInstance(cjsErr) && coreCjs.M3Error.isInstance(cjsErr));
    assert.ok(coreCjs.M3Error.isInstance(new coreEsm.M3Error('INVALID_ARGUMENT', 'x')));
    assert.ok(!coreEsm.M3Error.isInstance(new Error('x')));

    // A closed encoder leaves the registry; the next use loads the model again.
    await (encA as { close(): Promise<void> }).close();
    assert.equal(kitCjs.sharedEncoderCount(), before);
    assert.equal((await b.getTextEmbedding('again')).length, va.length);
    assert.notEqual(kitCjs.sourceOf<{ loaded: unknown }>(b)!.loaded, encA);
    await (kitCjs.sourceOf<{ loaded: { close(): Promise<void> } }>(b)!.loaded).close();
  });
});
