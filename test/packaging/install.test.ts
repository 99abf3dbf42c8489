/**
 * The path of a user outside this repository, kept true: the four packages are packed
 * (scripts/pack.mjs, as `pnpm pack:all` does), installed with plain `npm install` from the
 * tarballs into one temporary project, and used from it as ESM, CommonJS, strict TypeScript
 * (node16 and bundler resolution), the `bgem3` bin, and esbuild bundles, each run against the
 * fixture model (test/fixtures/tiny-m3-A) and compared with its golden outputs.
 *
 * The install uses only the npm registry (through the local npm cache, `--prefer-offline`) and
 * no NuGet: the project's `.npmrc` has `onnxruntime-node-install=skip`, as the READMEs say, the
 * environment carries no npm or onnxruntime setting of ours, and onnxruntime-node's install
 * script would reach NuGet only through a proxy on a closed port (so it fails if it tries).
 *
 * One project serves every check (a single install of the dependency set, ~520 MB on disk), with
 * one entry file per module format in test/packaging/newcomer-app/. From a warm npm cache the
 * install takes ~15 s plus better-sqlite3's install script: where GitHub (its prebuilt binaries)
 * cannot be reached, as in CI, that compiles SQLite, about 3 minutes on 2 cores. The first test
 * prints both times (`# pack … ms, npm install … ms`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PACKAGES, packAll, readTarball } from '../../scripts/pack.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/tiny-m3-A');
const APP_SRC = fileURLToPath(new URL('./newcomer-app', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const golden = JSON.parse(readFileSync(join(FIXTURE, 'golden.json'), 'utf8')) as { texts: string[]; dense: number[][] };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment of a user's shell: none of the npm/pnpm/onnxruntime/Hub settings this test run inherited. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|NPM_|PNPM_|pnpm_|ONNXRUNTIME_NODE_INSTALL|HF_|HUGGING_FACE_|BGEM3_|NODE_OPTIONS$|INIT_CWD$)/.test(k)) continue;
    env[k] = v;
  }
  // onnxruntime-node's install script uses global-agent: NuGet only through a closed port.
  return { ...env, GLOBAL_AGENT_HTTPS_PROXY: 'http://127.0.0.1:9', GLOBAL_AGENT_HTTP_PROXY: 'http://127.0.0.1:9', ...extra };
}

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; input?: string; timeout?: number }): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { cwd: options.cwd, env: options.env ?? userEnv(), timeout: options.timeout ?? 120_000, maxBuffer: 64 * 2 ** 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}

const node = (app: string, args: string[], env?: NodeJS.ProcessEnv) => run(process.execPath, args, { cwd: app, env });

/** The JSON line an app printed (its last stdout line). */
function output(r: Run): Record<string, unknown> {
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}\n${r.stdout}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
}

/** Asserts a dense vector equals the golden one of golden.texts[0] (FlagEmbedding's output). */
function assertGoldenDense(dense: unknown, what: string) {
  const d = dense as number[];
  assert.equal(d.length, golden.dense[0].length, what);
  const maxDiff = Math.max(...d.map((x, i) => Math.abs(x - golden.dense[0][i])));
  assert.ok(maxDiff < 1e-5, `${what}: max |diff| ${maxDiff} from golden`);
}

describe('the packed packages, installed with plain npm outside the repository', () => {
  let work: string;
  let app: string;
  let packed: { name: string; version: string; file: string }[];
  let install: Run;
  const took = { packMs: 0, installMs: 0 };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'bgem3-newcomer-'));
    const t0 = Date.now();
    packed = packAll(join(work, 'packed'));
    took.packMs = Date.now() - t0;
    app = join(work, 'app');
    cpSync(APP_SRC, app, { recursive: true });
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'bgem3-newcomer-app', private: true, type: 'module' }, null, 2)}\n`);
    writeFileSync(join(app, '.npmrc'), 'onnxruntime-node-install=skip\n');
    // The README's commands: the four tarballs (npm adds their peers @langchain/core and
    // llamaindex), plus the types a TypeScript user adds (@types/node, and @types/pg for pgvector).
    install = await run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', ...packed.map((p) => p.file), '@types/node@20', '@types/pg@8'],
      { cwd: app, timeout: 600_000 },
    );
    took.installMs = Date.now() - t0 - took.packMs;
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test('pack: four tarballs, no workspace: range left, every file their package.json points at inside', (t) => {
    t.diagnostic(`pack (build if stale + pnpm pack x4) ${took.packMs} ms, npm install ${took.installMs} ms`);
    assert.deepEqual(
      packed.map((p) => p.name),
      PACKAGES.map((n: string) => `@bgem3/${n}`),
    );
    for (const p of packed) {
      const files = readTarball(p.file) as Map<string, Buffer>;
      const pkg = JSON.parse(files.get('package/package.json')!.toString('utf8'));
      assert.doesNotMatch(JSON.stringify(pkg), /workspace:/, p.name);
      if (p.name !== '@bgem3/core') assert.equal(pkg.dependencies['@bgem3/core'], `^${p.version}`);
      assert.ok(files.has('package/LICENSE'), `${p.name} has LICENSE`);
      assert.equal(pkg.repository.directory, `packages/${p.name.slice('@bgem3/'.length)}`);
      assert.ok(pkg.homepage && pkg.bugs.url, `${p.name} has homepage and bugs`);
      for (const f of files.keys()) assert.match(f, /^package\/(dist\/|bin\/|README\.md$|LICENSE$|package\.json$)/, `${p.name}: ${f} is not meant to ship`);
    }
  });

  test('npm install succeeds with NuGet unreachable: the .npmrc line skips onnxruntime-node’s download', () => {
    assert.equal(install.code, 0, `npm install failed:\n${install.stderr}\n${install.stdout}`);
    const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8'));
    for (const p of packed) assert.match(lock.packages[`node_modules/${p.name}`].resolved, /^file:/, p.name);
    assert.ok(lock.packages['node_modules/@langchain/core'], 'npm installed the @langchain/core peer');
    assert.ok(lock.packages['node_modules/llamaindex'], 'npm installed the llamaindex peer');
    if (process.platform === 'linux' && process.arch === 'x64') {
      // What the install script would fetch from NuGet; the CPU binaries ship in the package.
      const bin = join(app, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64');
      assert.ok(existsSync(join(bin, 'onnxruntime_binding.node')));
      assert.ok(!existsSync(join(bin, 'libonnxruntime_providers_cuda.so')), 'the CUDA provider was not downloaded');
    }
  });

  test('ESM: import from every package, encode the fixture model = golden, a durable M3Index', async () => {
    const out = output(await node(app, ['esm.mjs', FIXTURE]));
    assert.deepEqual(out.indexHits, ['a', 'b'], 'M3Index (SQLite through better-sqlite3) stored and found both documents');
    assertGoldenDense(out.dense, 'esm');
    assert.equal(out.colbertCount, 11);
    assert.deepEqual(out.langchain, out.dense);
    assert.deepEqual(out.llamaindex, out.dense);
    assert.equal(out.pgvector, 'function');
  });

  test('CommonJS: require() of every package, same outputs, a durable M3Index', async () => {
    const out = output(await node(app, ['cjs.cjs', FIXTURE]));
    assert.deepEqual(out.indexHits, ['a', 'b'], 'M3Index (SQLite through better-sqlite3) stored and found both documents');
    assertGoldenDense(out.dense, 'cjs');
    assert.deepEqual(out.langchain, out.dense);
    assert.deepEqual(out.llamaindex, out.dense);
    assert.equal(out.pgvector, 'function');
  });

  // The configs have skipLibCheck: true, as `tsc --init` writes them: llamaindex 0.12's own
  // declarations do not pass a full check (ajv, html-to-text and, in CommonJS, @llamaindex/env).
  // Ours are checked in full by the third test.
  test('TypeScript strict, node16 resolution (ESM .mts and CommonJS .cts): tsc compiles, both run', async () => {
    const tsc = await node(app, [TSC, '-p', 'tsconfig.node16.json']);
    assert.equal(tsc.code, 0, `tsc (node16):\n${tsc.stdout}${tsc.stderr}`);
    const esm = output(await node(app, ['out-ts/esm.mjs', FIXTURE]));
    assertGoldenDense(esm.dense, 'ts-esm');
    assert.ok((esm.self as number) > 0);
    assert.deepEqual(esm.llamaindex, esm.dense);
    const cjs = output(await node(app, ['out-ts/cjs.cjs', FIXTURE]));
    assertGoldenDense(cjs.dense, 'ts-cjs');
    assert.deepEqual(cjs.langchain, cjs.dense);
  });

  test('TypeScript strict, bundler resolution: tsc --noEmit', async () => {
    const tsc = await node(app, [TSC, '-p', 'tsconfig.bundler.json']);
    assert.equal(tsc.code, 0, `tsc (bundler):\n${tsc.stdout}${tsc.stderr}`);
  });

  test('TypeScript with skipLibCheck: false: no error in @bgem3 declarations (node16, ESM and CommonJS)', async () => {
    const tsc = await node(app, [TSC, '-p', 'tsconfig.node16.json', '--noEmit', '--skipLibCheck', 'false']);
    const ours = tsc.stdout.split('\n').filter((l) => /^(node_modules\/@bgem3\/|ts\/)/.test(l));
    assert.deepEqual(ours, [], tsc.stdout);
  });

  test('the bgem3 bin: --help, encode a line, and one bgem3: line for an error', async () => {
    const bin = join(app, 'node_modules/.bin/bgem3');
    const help = await run(bin, ['--help'], { cwd: app });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: bgem3/);
    const enc = await run(bin, ['encode', '--model', FIXTURE, '--outputs', 'dense'], { cwd: app, input: `${JSON.stringify({ text: golden.texts[0] })}\n` });
    assert.equal(enc.code, 0, enc.stderr);
    assertGoldenDense(JSON.parse(enc.stdout).dense, 'bgem3 encode');
    const bad = await run(bin, ['encode', '--model', join(work, 'no-such-model')], { cwd: app });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^bgem3: model not found: .*no-such-model/);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  });

  describe('esbuild bundles', () => {
    // esbuild as the workspace has it (tsup's), the version tsup builds these packages with.
    const esbuild = createRequire(createRequire(join(ROOT, 'package.json')).resolve('tsup')) ('esbuild') as typeof import('esbuild');
    // Native addons stay in node_modules; everything else of core may be bundled.
    const native = ['onnxruntime-node', 'tokenizers'];
    const options = (format: 'esm' | 'cjs', external: string[]) => ({
      absWorkingDir: app,
      bundle: true,
      platform: 'node' as const,
      target: 'node20',
      format,
      external,
      logLevel: 'silent' as const,
      // CommonJS dependencies bundled into ESM call require(): give them one (the README's banner).
      banner: format === 'esm' ? { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" } : undefined,
    });
    const bundle = (outfile: string, format: 'esm' | 'cjs', external: string[]) => esbuild.build({ ...options(format, external), entryPoints: ['bundle-app.mjs'], outfile });
    const worker = () => join(app, 'node_modules/@bgem3/core/dist/inference/encoder-worker.js');

    test('@bgem3/core marked external: the bundle runs, the worker comes from node_modules', async () => {
      await bundle('out-external/app.mjs', 'esm', ['@bgem3/core']);
      assert.doesNotMatch(readFileSync(join(app, 'out-external/app.mjs'), 'utf8'), /encoder worker script not found/, 'core is not inside the bundle');
      assertGoldenDense(output(await node(app, ['out-external/app.mjs', FIXTURE])).dense, 'external');
    });

    test('core bundled in, its worker next to the bundle: bundled from the package (ESM) or copied (CommonJS)', async () => {
      for (const [dir, format, file] of [['out-inline-esm', 'esm', 'app.mjs'], ['out-inline-cjs', 'cjs', 'app.cjs']] as const) {
        await bundle(`${dir}/${file}`, format, native);
        assert.match(readFileSync(join(app, dir, file), 'utf8'), /encoder worker script not found/, 'core is inside the bundle');
        if (format === 'esm') {
          // The README's second entry point: the worker bundled too (only the native addon stays outside).
          await esbuild.build({ ...options('esm', ['onnxruntime-node']), entryPoints: [worker()], outfile: join(dir, 'encoder-worker.js') });
          assert.doesNotMatch(readFileSync(join(app, dir, 'encoder-worker.js'), 'utf8'), /from ["']onnx-proto["']/, 'onnx-proto is inside the worker bundle');
        } else {
          cpSync(worker(), join(app, dir, 'encoder-worker.js'));
        }
        assertGoldenDense(output(await node(app, [`${dir}/${file}`, FIXTURE])).dense, `${format} bundle with the worker next to it`);
      }
    });

    test('core bundled in, the worker elsewhere: named by BGEM3_WORKER_SCRIPT (a path or a file: URL)', async () => {
      await bundle('out-env/app.mjs', 'esm', native);
      mkdirSync(join(app, 'vendor'), { recursive: true });
      cpSync(worker(), join(app, 'vendor/bgem3-worker.js'));
      assertGoldenDense(output(await node(app, ['out-env/app.mjs', FIXTURE], userEnv({ BGEM3_WORKER_SCRIPT: 'vendor/bgem3-worker.js' }))).dense, 'env path');
      const url = new URL(`file://${join(app, 'vendor/bgem3-worker.js')}`).href;
      assertGoldenDense(output(await node(app, ['out-env/app.mjs', FIXTURE], userEnv({ BGEM3_WORKER_SCRIPT: url }))).dense, 'env URL');
      const wrong = await node(app, ['out-env/app.mjs', FIXTURE], userEnv({ BGEM3_WORKER_SCRIPT: 'vendor/missing.js' }));
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /^WORKER_FAILED: .*BGEM3_WORKER_SCRIPT=vendor\/missing\.js names no file/m);
    });

    test('core bundled in without its worker: WORKER_FAILED says how to bundle (not "run pnpm build")', async () => {
      await bundle('out-noworker/app.mjs', 'esm', native);
      const r = await node(app, ['out-noworker/app.mjs', FIXTURE]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^WORKER_FAILED: encoder worker script not found next to .*out-noworker\/app\.mjs/m);
      assert.match(r.stderr, /mark @bgem3\/core as external/);
      assert.match(r.stderr, /copy node_modules\/@bgem3\/core\/dist\/inference\/encoder-worker\.js next to the bundle or set BGEM3_WORKER_SCRIPT/);
      assert.doesNotMatch(r.stderr, /pnpm build/);
    });
  });
});
