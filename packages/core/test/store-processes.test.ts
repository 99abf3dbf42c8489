/**
 * The embedded store across processes (real child processes, SIGKILL): one writer per index,
 * readers that never block and follow the writer, and kill -9 at any moment — during commits,
 * during compaction — leaving the last committed state loadable with nothing committed lost.
 *
 * This file is also the child: with BGEM3_STORE_CHILD set it runs the role it names.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { M3Error } from '../src/errors.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { FakeEncoder, corpus } from './helpers/fake-m3.js';

const self = fileURLToPath(import.meta.url);
const encoder = new FakeEncoder('fake/m3', 32);

/**
 * The operation sequence of the crash children, deterministic: op i adds batch i (30 documents,
 * long texts so a commit takes a while) and, from i = 2, deletes half of batch i - 2; with
 * `compact`, every third op also compacts.
 */
function batch(i: number) {
  return corpus(30, 1000 + i).map((d, j) => ({ ...d, id: `b${i}-${j}`, text: `${d.text} ${'lorem ipsum dolor '.repeat(60)}`, metadata: { i, j } }));
}
function expectedIds(ops: number): Set<string> {
  const ids = new Set<string>();
  for (let i = 0; i < ops; i++) {
    for (const d of batch(i)) ids.add(d.id);
    if (i >= 2) for (let j = 0; j < 15; j++) ids.delete(`b${i - 2}-${j}`);
  }
  return ids;
}
async function runOp(index: M3Index, i: number, compact: boolean): Promise<void> {
  await index.add(batch(i));
  if (i >= 2) await index.delete(Array.from({ length: 15 }, (_, j) => `b${i - 2}-${j}`));
  if (compact && i % 3 === 2) await index.compact();
}

const role = process.env.BGEM3_STORE_CHILD;
if (role) {
  const { kind, dir, from } = JSON.parse(role) as { kind: string; dir: string; from?: number };
  if (kind === 'hold') {
    // Holds the writer lock, adds documents when told (a line on stdin), exits on "exit".
    const index = await M3Index.open(dir, { encoder });
    let next = 0;
    process.stdout.write('READY\n');
    process.stdin.setEncoding('utf8');
    for await (const chunk of process.stdin) {
      for (const line of String(chunk).split('\n').filter(Boolean)) {
        if (line === 'exit') {
          await index.close();
          process.exit(0);
        }
        await index.add(corpus(Number(line), 50 + next).map((d, j) => ({ ...d, id: `c${next}-${j}` })));
        next++;
        process.stdout.write(`ADDED ${index.size}\n`);
      }
    }
  } else {
    // kind 'commit' / 'compact': ops from `from` on, announcing each one once it resolved.
    const index = await M3Index.open(dir, { encoder, batchSize: 64 }); // one commit per add
    for (let i = from ?? 0; ; i++) {
      await runOp(index, i, kind === 'compact');
      process.stdout.write(`DONE ${i + 1}\n`);
    }
  }
} else {
  const tmp = mkdtempSync(join(tmpdir(), 'bgem3-store-proc-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  interface Child {
    proc: ChildProcess;
    lines: string[];
    waitFor(re: RegExp): Promise<RegExpExecArray>;
    exited: Promise<NodeJS.Signals | null>;
  }
  function child(spec: object): Child {
    const proc = spawn(process.execPath, ['--import', 'tsx', self], {
      env: { ...process.env, BGEM3_STORE_CHILD: JSON.stringify(spec) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    const waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
    let buf = '';
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        for (const w of [...waiters]) {
          const m = w.re.exec(line);
          if (m) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(m);
          }
        }
      }
    });
    const exited = new Promise<NodeJS.Signals | null>((res) => proc.on('close', (_c, sig) => res(sig)));
    return {
      proc,
      lines,
      exited,
      waitFor: (re) =>
        new Promise((resolve, reject) => {
          for (const line of lines) {
            const m = re.exec(line);
            if (m) return resolve(m);
          }
          waiters.push({ re, resolve });
          void exited.then(() => reject(new Error(`child exited before ${re}: ${lines.join(' | ')}`)));
        }),
    };
  }

  describe('one writer per index across processes; readers follow', () => {
    test('a second writer gets INDEX_LOCKED naming the lock; readers never block; a killed writer leaves no stale lock', async () => {
      const dir = join(tmp, 'two-writers');
      const first = await M3Index.open(dir, { encoder });
      await first.add(corpus(10, 1));
      await first.close();
      const holder = child({ kind: 'hold', dir });
      await holder.waitFor(/^READY$/);
      const locked = (e: unknown) => e instanceof M3Error && e.code === 'INDEX_LOCKED' && e.file === join(dir, 'writer.lock') && e.message.includes(join(dir, 'writer.lock'));
      await assert.rejects(M3Index.open(dir, { encoder }), locked);
      // load() without readOnly takes the lock at its first mutation.
      const lazy = await M3Index.load(dir, { encoder });
      assert.equal(lazy.size, 10);
      await assert.rejects(lazy.add([{ id: 'mine', text: 'apple' }]), locked);
      await assert.rejects(lazy.delete('doc-1'), locked);
      assert.equal(await lazy.has('doc-1'), true);
      // A reader follows the other process's commits, without blocking it.
      const reader = await M3Index.load(dir, { encoder, readOnly: true });
      holder.proc.stdin?.write('25\n');
      await holder.waitFor(/^ADDED 35$/);
      assert.equal(reader.size, 35);
      assert.equal((await reader.get('c0-3'))?.id, 'c0-3');
      assert.ok((await reader.search('apple river', { k: 50 })).length > 0);
      // Waiting for the lock: the holder exits while we wait.
      setTimeout(() => holder.proc.stdin?.write('exit\n'), 300);
      const waited = await M3Index.open(dir, { encoder, lockTimeoutMs: 10_000 });
      assert.equal(waited.size, 35);
      await waited.add([{ id: 'after', text: 'apple' }]);
      assert.equal(reader.size, 36);
      await waited.close();
      // kill -9 of a lock holder: the OS releases its lock, nothing is left behind.
      const killed = child({ kind: 'hold', dir });
      await killed.waitFor(/^READY$/);
      await assert.rejects(M3Index.open(dir, { encoder }), locked);
      killed.proc.kill('SIGKILL');
      assert.equal(await killed.exited, 'SIGKILL');
      const again = await M3Index.open(dir, { encoder });
      assert.equal(again.size, 36);
      await again.close();
      await lazy.close();
      await reader.close();
    });
  });

  describe('kill -9 at any moment leaves the last committed state', () => {
    for (const kind of ['commit', 'compact'] as const) {
      test(`in a loop during ${kind === 'commit' ? 'commits' : 'commits and compactions'}`, async (t) => {
        const dir = join(tmp, `kill-${kind}`);
        let ops = 0;
        const outcomes: string[] = [];
        for (let round = 0; round < 3; round++) {
          const c = child({ kind, dir, from: ops });
          await c.waitFor(new RegExp(`^DONE ${ops + 1}$`));
          await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40))); // lands inside the next op's commit or delete most of the time
          c.proc.kill('SIGKILL');
          assert.equal(await c.exited, 'SIGKILL');
          const done = Math.max(...c.lines.map((l) => Number(/^DONE (\d+)$/.exec(l)?.[1] ?? 0)));
          const index = await M3Index.load(dir, { encoder, readOnly: true });
          const ids = new Set(index.ids());
          // Every op announced is there; the op in flight may or may not have committed, whole.
          const now = expectedIds(done);
          const next = expectedIds(done + 1);
          const sameAs = (want: Set<string>) => want.size === ids.size && [...want].every((id) => ids.has(id));
          // An op is an add then a delete: after the kill the add may be in and the delete not.
          const partial = new Set([...now, ...batch(done).map((d) => d.id)]);
          assert.ok(sameAs(now) || sameAs(next) || sameAs(partial), `round ${round}: ${ids.size} documents, expected the state after op ${done} (${now.size}) or the next one`);
          ops = sameAs(now) ? done : sameAs(next) ? done + 1 : -1;
          if (ops === -1) {
            // Finish the half-done op (its delete) so the next child starts from a known state.
            const w = await M3Index.open(dir, { encoder });
            await w.delete(Array.from({ length: 15 }, (_, j) => `b${done - 2}-${j}`));
            await w.close();
            ops = done + 1;
          }
          // What is there is intact: texts, metadata and search.
          const any = [...ids][ids.size - 1];
          const doc = await index.get(any);
          const [, bi, bj] = /^b(\d+)-(\d+)$/.exec(any) as RegExpExecArray;
          assert.deepEqual(doc?.metadata, { i: Number(bi), j: Number(bj) });
          assert.equal(doc?.text, batch(Number(bi))[Number(bj)].text);
          assert.ok((await index.search('apple river', { k: 5 })).length > 0);
          await index.close();
          outcomes.push(`${done} ops announced → state of ${ops}`);
        }
        t.diagnostic(outcomes.join('; '));
      });
    }
  });
}
