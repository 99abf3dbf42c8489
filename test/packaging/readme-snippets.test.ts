/**
 * README code blocks marked runnable are run as written, so the READMEs cannot drift from the API.
 *
 * The convention (for every README.md of the repository: the root, packages/*, examples/*):
 *
 * - A fenced code block whose info string is `js run` or `ts run` (the opening fence reads
 *   ```js run or ```ts run) is extracted verbatim and executed as an ES module: `node` for js,
 *   `node --import tsx` for ts. Top-level await works. Blocks without `run` are never executed.
 * - Each runnable block is self-contained: it imports what it uses and loads its own model or
 *   encoder (blocks do not see each other's variables). It must exit 0 (an uncaught error or
 *   a non-zero exit fails the test) and should end on its own (close what keeps the process alive).
 * - Packages resolve as inside the workspace: every package installed anywhere in the workspace
 *   (the @bgem3/* packages built, from packages/*) can be imported by name.
 * - `BAAI/bge-m3` (and `Xenova/bge-m3` for `dtype: "q8"`) resolve to the fixture model
 *   test/fixtures/tiny-m3-A, served by a fake Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT) into an
 *   empty cache (HF_HUB_CACHE in a temporary directory): no network is used. Any other repo id
 *   fails. There are no OPENAI_* / HF_TOKEN / DATABASE_URL settings.
 * - The working directory is an empty temporary directory per block, so relative paths a snippet
 *   writes (`./my-index`, `./rag-db`) go there.
 * - `ts run` blocks are also type-checked together by tsc under `strict` (ES2022, bundler
 *   resolution), so a snippet that only runs because JavaScript is lax fails here.
 *
 * The fixture has BGE-M3's architecture with random weights: snippets run, their rankings mean
 * nothing, so a snippet must not assert a particular ranking.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ensureBuilt } from '../../examples/ensure-built.mjs';
import { FakeHub, fixtureRepos } from '../../packages/core/test/helpers/fake-hub.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

export interface Snippet {
  /** README path relative to the repository root. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: 'js' | 'ts';
  code: string;
}

/** The README files the convention covers. */
function readmes(): string[] {
  const out = ['README.md'];
  for (const dir of ['packages', 'examples']) {
    for (const name of readdirSync(join(ROOT, dir))) {
      if (existsSync(join(ROOT, dir, name, 'README.md'))) out.push(`${dir}/${name}/README.md`);
    }
  }
  return out;
}

/** The `js run` / `ts run` blocks of a Markdown text (CommonMark fences: ``` or ~~~, 3 or more). */
export function runnableBlocks(markdown: string, file: string): Snippet[] {
  const lines = markdown.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*([^`]*)$/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const info = open[2].trim().split(/\s+/);
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j]);
    }
    if ((info[0] === 'js' || info[0] === 'ts') && info.includes('run')) out.push({ file, line: i + 1, lang: info[0], code: `${body.join('\n')}\n` });
    i = j;
  }
  return out;
}

/**
 * A node_modules that links every package installed in the workspace (packages/* first, then
 * test/, examples/*, the root), and @bgem3/* to packages/*: what "inside the workspace" resolves.
 */
function linkWorkspacePackages(target: string): void {
  mkdirSync(target, { recursive: true });
  const link = (name: string, to: string) => {
    const at = join(target, name);
    if (existsSync(at)) return;
    mkdirSync(join(at, '..'), { recursive: true });
    symlinkSync(to, at, 'dir');
  };
  for (const name of readdirSync(join(ROOT, 'packages'))) {
    const pkg = join(ROOT, 'packages', name, 'package.json');
    if (existsSync(pkg)) link(JSON.parse(readFileSync(pkg, 'utf8')).name, join(ROOT, 'packages', name));
  }
  const dirs = [
    ...readdirSync(join(ROOT, 'packages')).map((n) => join(ROOT, 'packages', n)),
    join(ROOT, 'test'),
    ...readdirSync(join(ROOT, 'examples')).map((n) => join(ROOT, 'examples', n)),
    ROOT,
  ];
  for (const dir of dirs) {
    const nm = join(dir, 'node_modules');
    if (!existsSync(nm)) continue;
    for (const entry of readdirSync(nm)) {
      if (entry.startsWith('.')) continue;
      if (entry.startsWith('@')) for (const sub of readdirSync(join(nm, entry))) link(`${entry}/${sub}`, join(nm, entry, sub));
      else link(entry, join(nm, entry));
    }
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, env, timeout: 180_000, maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const snippets = readmes().flatMap((f) => runnableBlocks(readFileSync(join(ROOT, f), 'utf8'), f));
const idOf = (s: Snippet) => `${s.file.replace(/[/.]/g, '_')}_L${s.line}`;

describe('README snippets marked `js run` / `ts run`', () => {
  let work: string;
  let hub: FakeHub;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    assert.ok(ensureBuilt(['core', 'langchain', 'llamaindex', 'pgvector']), 'the packages build');
    work = mkdtempSync(join(tmpdir(), 'bgem3-snippets-'));
    linkWorkspacePackages(join(work, 'node_modules'));
    hub = await FakeHub.start({ repos: fixtureRepos() });
    env = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (/^(HF_|HUGGING_FACE_|TRANSFORMERS_|OPENAI_|CHAT_MODEL|BGEM3_|DATABASE_URL$|PG[A-Z]+$|NODE_OPTIONS$)/.test(k)) continue;
      env[k] = v;
    }
    Object.assign(env, { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, 'hf-cache') });
    for (const s of snippets) {
      mkdirSync(join(work, 'snippets', idOf(s)), { recursive: true });
      writeFileSync(join(work, 'snippets', idOf(s), `snippet.${s.lang === 'ts' ? 'mts' : 'mjs'}`), s.code);
    }
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', lib: ['ES2023'], types: ['node'], strict: true, skipLibCheck: true, noEmit: true },
        include: ['snippets/**/*.mts'],
      }),
    );
  });
  after(async () => {
    await hub?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the root and core READMEs have runnable snippets', () => {
    for (const f of ['README.md', 'packages/core/README.md']) assert.ok(snippets.some((s) => s.file === f), `${f} has a \`js run\`/\`ts run\` block`);
  });

  test('`ts run` snippets type-check under strict', async () => {
    if (!snippets.some((s) => s.lang === 'ts')) return;
    const r = await run([TSC, '-p', 'tsconfig.json'], work, env);
    assert.equal(r.code, 0, `tsc:\n${r.stdout.replaceAll(`snippets/`, '')}${r.stderr}`);
  });

  for (const s of snippets) {
    test(`${s.file}:${s.line} (${s.lang} run)`, async () => {
      const dir = join(work, 'snippets', idOf(s));
      const file = `snippet.${s.lang === 'ts' ? 'mts' : 'mjs'}`;
      const cwd = join(work, 'cwd', idOf(s));
      mkdirSync(cwd, { recursive: true });
      const args = s.lang === 'ts' ? ['--import', 'tsx', join(dir, file)] : [join(dir, file)];
      const r = await run(args, cwd, env);
      assert.equal(r.code, 0, `${s.file}:${s.line} exited ${r.code}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}\n--- snippet (${s.file})\n${s.code}`);
    });
  }
});
