/**
 * Several connections and processes on a real PostgreSQL server, which PGlite (one connection)
 * cannot give: concurrent connects (extension and schema creation), the catalog read right
 * after the creation lock and eight connections creating one store 40 times, a non-superuser
 * owner, opposite-order upserts, a deadlock retried, two writer processes, and a restart under
 * load.
 *
 * These tests need a server: they are REGISTERED only when BGEM3_PG_URL is set (a connection
 * string of a superuser, or a user with CREATEDB and CREATEROLE, on a server with pgvector
 * installed), so a run without a server counts none of them as passed. The restart under load
 * goes through a TCP proxy this test runs in front of the server (every connection is cut and
 * the port refuses for 3 s, as a restart looks to clients); with BGEM3_PG_RESTART_CMD (a shell
 * command that restarts the server, e.g. `pg_ctlcluster 15 main restart`) it is also run with a
 * real restart.
 */
import assert from 'node:assert/strict';
import { execFile, execSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { M3Error, type M3EncodedDocument } from '@bgem3/core';
import pg from 'pg';
import { PgM3Store, isConflictError, parseTableName, pgClient, type SqlQueryable } from '../src/index.js';
import { withRetries, checkRetryPolicy } from '../src/retry.js';
import { SCHEMA_VERSION, ensureSchema, relationExists } from '../src/schema.js';
import { PG_URL, RUN, dropRunTables, syntheticEncoding } from './helpers.js';

const run = promisify(execFile);
const MODEL = { modelId: 'server-test', dim: 8, vocabSize: 300 } as const;

/** The URL with another database (and optionally another user). */
function urlFor(database: string, user?: { name: string; password: string }): string {
  const u = new URL(PG_URL as string);
  u.pathname = `/${database}`;
  if (user) {
    u.username = user.name;
    u.password = user.password;
  }
  return u.toString();
}

function docs(ids: number[], label: string, seed = 0): M3EncodedDocument[] {
  return ids.map((i) => ({ id: `d${i}`, text: `${label} ${i}`, metadata: { label }, encoding: syntheticEncoding(MODEL.dim, MODEL.vocabSize, 10, 3, i + seed) }));
}

if (PG_URL) {
  let admin: pg.Pool;
  const pools: pg.Pool[] = [];
  const newPool = (url = PG_URL as string, max = 4) => {
    const p = new pg.Pool({ connectionString: url, max });
    pools.push(p);
    return p;
  };

  before(() => {
    admin = newPool();
  });
  after(async () => {
    await dropRunTables(pgClient(admin));
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  });

  describe('concurrent connects', () => {
    it('four connections to a database without the extension: it is created once, every connect succeeds (3 trials)', async () => {
      for (let trial = 0; trial < 3; trial++) {
        const database = `${RUN}_ext_${trial}`;
        await admin.query(`CREATE DATABASE ${database}`);
        const local: pg.Pool[] = [];
        try {
          const stores = await Promise.all(
            Array.from({ length: 4 }, () => {
              const p = new pg.Pool({ connectionString: urlFor(database), max: 2 });
              local.push(p);
              return PgM3Store.connect({ client: pgClient(p), table: 'docs', ...MODEL });
            }),
          );
          await stores[0].addEncoded(docs([1, 2], 'x'));
          for (const s of stores) assert.equal(await s.count(), 2);
          const ext = await local[0].query(`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'vector'`);
          assert.equal(ext.rows[0].n, 1);
        } finally {
          await Promise.all(local.map((p) => p.end()));
          await admin.query(`DROP DATABASE IF EXISTS ${database}`);
        }
      }
    });

    it('four connections creating the same new table at once, 15 trials: no "exists but has no _meta", no duplicate errors', async () => {
      const clients = Array.from({ length: 4 }, () => pgClient(newPool(PG_URL, 1)));
      for (let trial = 0; trial < 15; trial++) {
        const table = `${RUN}_race_${trial}`;
        const stores = await Promise.all(clients.map((client) => PgM3Store.connect({ client, table, ...MODEL })));
        assert.equal(new Set(stores.map((s) => s.table)).size, 1);
        await stores[trial % 4].addEncoded(docs([trial], 'y'));
        assert.equal(await stores[(trial + 1) % 4].count(), 1);
      }
    });
  });

  describe('the catalog after the lock', () => {
    it("a table created by the lock's previous holder is seen right after the lock is granted, though this session's cache had missed it", async (t) => {
      const table = parseTableName(`${RUN}_after_lock`);
      const name = table.name;
      const a = await admin.connect();
      const b = await admin.connect();
      try {
        // A looks the name up first (and misses): its catalog cache now says "no such relation".
        assert.equal((await a.query('SELECT to_regclass($1)::text AS r', [name])).rows[0].r, null);
        await b.query('BEGIN');
        await b.query('SELECT pg_advisory_xact_lock(4242)');
        await b.query(`CREATE TABLE ${name} (i int)`);
        await a.query('BEGIN');
        const waiting = a.query('SELECT pg_advisory_xact_lock(4242)');
        await new Promise((resolve) => setTimeout(resolve, 200));
        await b.query('COMMIT');
        await waiting;
        // The first catalog statement after the wait: the store's check reads pg_class itself.
        const cached = (await a.query('SELECT to_regclass($1)::text AS r', [name])).rows[0].r;
        const viaA: SqlQueryable = { query: async (text, params) => (await a.query(text, params as unknown[])).rows };
        assert.equal(await relationExists(viaA, table), true);
        t.diagnostic(`to_regclass right after the lock: ${cached === null ? 'NULL (the stale cached miss)' : cached}`);
        await a.query('COMMIT');
      } finally {
        await a.query('ROLLBACK').catch(() => undefined);
        a.release();
        b.release();
      }
    });

    it('eight connections, each after a cached miss of the name, creating the same new store at once (40 trials): no retry, no error, one meta', async () => {
      const pools = Array.from({ length: 8 }, () => newPool(PG_URL, 1));
      const clients = pools.map((p) => pgClient(p));
      const meta = { schemaVersion: SCHEMA_VERSION, modelId: MODEL.modelId, dim: MODEL.dim, vocabSize: MODEL.vocabSize, colbertPrecision: 'int8', denseType: 'halfvec', sparseIndex: 'postings', sparseIndexNnz: 16000 } as const;
      const retries: unknown[] = [];
      for (let trial = 0; trial < 40; trial++) {
        const table = parseTableName(`${RUN}_stress_${trial}`);
        await Promise.all(pools.map((p) => p.query('SELECT to_regclass($1), to_regclass($2)', [table.name, `${table.name}_meta`])));
        const results = await Promise.all(
          clients.map((client) =>
            ensureSchema(client, table, { create: async () => ({ ...meta }), hnsw: { m: 16, efConstruction: 64 }, withIndexes: trial % 4 === 0, createExtension: true, onRetry: (err) => retries.push(err) }),
          ),
        );
        for (const r of results) assert.deepEqual(r.meta, meta);
      }
      assert.deepEqual(retries.map(String), [], 'no attempt saw a stale catalog');
    });
  });

  describe('ColBERT bytes by binary COPY', () => {
    const COLBERT_MODEL = { modelId: 'copy-test', dim: 16, vocabSize: 300 } as const;
    const colbertDocs = (ids: number[], seed = 0): M3EncodedDocument[] =>
      ids.map((i) => ({ id: `c${i}`, text: `doc ${i}`, metadata: { i }, encoding: syntheticEncoding(COLBERT_MODEL.dim, COLBERT_MODEL.vocabSize, 12, 40, i + seed) }));
    const query = (seed: number) => syntheticEncoding(COLBERT_MODEL.dim, COLBERT_MODEL.vocabSize, 6, 8, 10_000 + seed);
    const sameHits = (a: { id: string; score: number }[], b: { id: string; score: number }[], what: string) =>
      assert.deepEqual(a.map((h) => [h.id, h.score]), b.map((h) => [h.id, h.score]), what);

    it('search and rescore give the same results by COPY (pool: 1, 2, 4 connections; one pg.Client) as by base64', async () => {
      const table = `${RUN}_copy`;
      const pool = newPool(PG_URL, 6);
      const base64 = await PgM3Store.connect({ client: pgClient(pool), table, ...COLBERT_MODEL, colbertPrecision: 'int8', colbertTransfer: 'base64' });
      await base64.addEncoded(colbertDocs(Array.from({ length: 120 }, (_, i) => i)));
      const single = new pg.Client({ connectionString: PG_URL });
      await single.connect();
      try {
        const stores = [
          ...(await Promise.all([1, 2, 4].map((colbertConnections) => PgM3Store.connect({ client: pgClient(pool), table, colbertConnections })))),
          await PgM3Store.connect({ client: pgClient(single), table }),
        ];
        for (let i = 0; i < 6; i++) {
          const q = query(i);
          for (const rerankDepth of [3, 17, 40, 200]) {
            const want = await base64.search(q, { k: 10, fetchK: 60, rerankDepth });
            for (const [j, s] of stores.entries()) sameHits(await s.search(q, { k: 10, fetchK: 60, rerankDepth }), want, `query ${i}, R ${rerankDepth}, store ${j}`);
          }
          const ids = Array.from({ length: 30 }, (_, k) => `c${(k * 7 + i) % 130}`);
          const want = await base64.rescore(q, ids);
          for (const s of stores) sameHits(await s.rescore(q, ids), want, `rescore ${i}`);
          // Only ColBERT weighs (every candidate ranked, then R fetched), and a function filter.
          sameHits(await stores[1].search(q, { k: 5, weights: [0, 0, 1] }), await base64.search(q, { k: 5, weights: [0, 0, 1] }), 'ColBERT only');
          const filter = (m: { i?: unknown }) => Number(m.i) % 2 === 0;
          sameHits(await stores[2].search(q, { k: 5, filter }), await base64.search(q, { k: 5, filter }), 'function filter');
        }
      } finally {
        await single.end();
      }
    });

    it('a row updated or deleted between the ranking statement and its COPY: the search is redone in one statement, never mixing versions', async () => {
      const table = `${RUN}_copy_race`;
      const pool = newPool(PG_URL, 4);
      const writer = await PgM3Store.connect({ client: pgClient(pool), table, ...COLBERT_MODEL, colbertPrecision: 'int8', colbertTransfer: 'base64' });
      await writer.addEncoded(colbertDocs(Array.from({ length: 60 }, (_, i) => i)));
      const base = pgClient(pool);
      let beforeCopy: (() => Promise<void>) | undefined;
      let copies = 0;
      const racing = {
        ...base,
        async copyBinary(sql: string, onRow: (fields: readonly (Buffer | null)[]) => void) {
          copies++;
          const hook = beforeCopy;
          beforeCopy = undefined;
          if (hook) await hook(); // another connection commits a write right now
          return (base.copyBinary as NonNullable<typeof base.copyBinary>)(sql, onRow);
        },
      };
      const store = await PgM3Store.connect({ client: racing, table, colbertConnections: 2 });
      for (const [i, change] of (['update', 'delete', 'update'] as const).entries()) {
        const q = query(100 + i);
        const top = (await writer.search(q, { k: 10, fetchK: 60, rerankDepth: 20 }))[0].id;
        beforeCopy = async () => {
          if (change === 'delete') await writer.delete(top);
          // Other dense, sparse and ColBERT vectors (same rowid): a read mixing the ranked version's
          // dense and sparse scores with the new ColBERT bytes would score it differently.
          else await writer.addEncoded([{ id: top, text: 'changed', metadata: { i: -1 }, encoding: syntheticEncoding(COLBERT_MODEL.dim, COLBERT_MODEL.vocabSize, 12, 40, 777 + i) }]);
        };
        const before = copies;
        const got = await store.search(q, { k: 10, fetchK: 60, rerankDepth: 20 });
        assert.ok(copies > before && beforeCopy === undefined, 'the write happened between the statement and the COPY');
        sameHits(got, await writer.search(q, { k: 10, fetchK: 60, rerankDepth: 20 }), `${change} ${i}`);
        if (change === 'delete') assert.ok(!got.some((h) => h.id === top));
      }
    });
  });

  describe('privileges', () => {
    it("a database owner who is not a superuser gets the server's hint (pgvector is not a trusted extension)", async () => {
      const role = { name: `${RUN}_owner`, password: 'owner-pw' };
      const database = `${RUN}_owned`;
      await admin.query(`CREATE ROLE ${role.name} LOGIN PASSWORD '${role.password}'`);
      await admin.query(`CREATE DATABASE ${database} OWNER ${role.name}`);
      const p = new pg.Pool({ connectionString: urlFor(database, role), max: 1 });
      try {
        await assert.rejects(PgM3Store.connect({ client: pgClient(p), table: 'docs', ...MODEL }), (e: M3Error) => {
          assert.equal(e.code, 'INVALID_ARGUMENT');
          assert.match(e.message, /permission denied to create extension "vector"/);
          assert.match(e.message, /HINT: Must be superuser to create this extension/);
          assert.match(e.message, /not a trusted extension: a superuser/);
          return true;
        });
        // Once a superuser created it, the owner's store works.
        const su = new pg.Pool({ connectionString: urlFor(database), max: 1 });
        await su.query('CREATE EXTENSION vector');
        await su.end();
        const store = await PgM3Store.connect({ client: pgClient(p), table: 'docs', ...MODEL });
        await store.addEncoded(docs([1], 'z'));
        assert.equal(await store.count(), 1);
      } finally {
        await p.end();
        await admin.query(`DROP DATABASE IF EXISTS ${database}`);
        await admin.query(`DROP ROLE IF EXISTS ${role.name}`);
      }
    });
  });

  describe('writers', () => {
    it('two connections upserting the same 300 ids in opposite orders: no deadlock, each call atomic (10 rounds)', async () => {
      const table = `${RUN}_opposite`;
      const a = await PgM3Store.connect({ client: pgClient(newPool()), table, ...MODEL, writeBatchSize: 20 });
      const b = await PgM3Store.connect({ client: pgClient(newPool()), table, ...MODEL, writeBatchSize: 20 });
      const ids = Array.from({ length: 300 }, (_, i) => i);
      for (let round = 0; round < 10; round++) {
        await Promise.all([a.addEncoded(docs(ids, `A${round}`)), b.addEncoded(docs([...ids].reverse(), `B${round}`)), round % 3 === 2 ? b.delete(ids.slice(0, 50).reverse().map((i) => `d${i}`)) : undefined]);
        const labels = await admin.query(`SELECT metadata->>'label' AS l, count(*)::int AS n FROM ${table} GROUP BY 1`);
        assert.equal(labels.rows.length, 1, `one writer's call is entirely visible: ${JSON.stringify(labels.rows)}`);
      }
    });

    it('a transaction that loses a deadlock is retried and succeeds', async () => {
      const table = `${RUN}_deadlock`;
      await admin.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int)`);
      await admin.query(`INSERT INTO ${table} VALUES (1, 0), (2, 0)`);
      const c1 = await admin.connect();
      const c2 = await admin.connect();
      let attempts = 0;
      try {
        await c1.query('BEGIN');
        await c1.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`);
        const second = withRetries(checkRetryPolicy(undefined, 3), async () => {
          attempts++;
          await c2.query('BEGIN');
          try {
            await c2.query(`UPDATE ${table} SET v = v + 10 WHERE id = 2`);
            await c2.query(`UPDATE ${table} SET v = v + 10 WHERE id = 1`);
            await c2.query('COMMIT');
          } catch (err) {
            await c2.query('ROLLBACK');
            throw err;
          }
        });
        await new Promise((resolve) => setTimeout(resolve, 200));
        // c1 now waits for c2's row 2 while c2 waits for c1's row 1: one of them is the deadlock victim.
        let c1Lost = false;
        try {
          await c1.query(`UPDATE ${table} SET v = v + 1 WHERE id = 2`);
          await c1.query('COMMIT');
        } catch (err) {
          assert.ok(isConflictError(err), String(err));
          c1Lost = true;
          await c1.query('ROLLBACK');
        }
        await second;
        const rows = (await admin.query(`SELECT v FROM ${table} ORDER BY id`)).rows.map((r) => r.v);
        assert.deepEqual(rows, c1Lost ? [10, 10] : [11, 11]);
        if (!c1Lost) assert.equal(attempts, 2, 'the store side lost and was retried once');
      } finally {
        c1.release();
        c2.release();
      }
    });

    it('two writer processes (opposite orders, deletes in between) both finish without error', async () => {
      const table = `${RUN}_procs`;
      // Create the store first so both processes open it (creation races are tested above).
      await PgM3Store.connect({ client: pgClient(admin), table, modelId: 'writer-test', dim: 8, vocabSize: 300, colbertPrecision: 'int8' });
      const script = fileURLToPath(new URL('./writer-process.ts', import.meta.url));
      const start = (name: string, order: string) => run(process.execPath, ['--import', 'tsx', script, PG_URL as string, table, name, order, '3'], { timeout: 120_000 });
      const results = await Promise.all([start('p1', 'asc'), start('p2', 'desc')]);
      for (const r of results) assert.deepEqual(JSON.parse(r.stdout.trim()), { ok: true, writes: 12 });
      const n = await admin.query(`SELECT count(*)::int AS n, count(DISTINCT metadata->>'writer')::int AS w FROM ${table}`);
      assert.ok(n.rows[0].n >= 190 && n.rows[0].n <= 200, `${n.rows[0].n} rows`);
    });
  });

  describe('restarts', () => {
    /** A TCP proxy in front of the server that can "restart": cut every connection and refuse for a while. */
    async function proxy(): Promise<{ url: string; restart(downMs: number): Promise<void>; close(): Promise<void> }> {
      const target = new URL(PG_URL as string);
      const sockets = new Set<net.Socket>();
      const serve = () =>
        net.createServer((client) => {
          const upstream = net.connect(Number(target.port || 5432), target.hostname);
          for (const s of [client, upstream]) {
            sockets.add(s);
            s.on('error', () => undefined);
            s.on('close', () => sockets.delete(s));
          }
          client.pipe(upstream).pipe(client);
          client.on('close', () => upstream.destroy());
          upstream.on('close', () => client.destroy());
        });
      let server = serve();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as net.AddressInfo).port;
      const url = new URL(PG_URL as string);
      url.hostname = '127.0.0.1';
      url.port = String(port);
      const stop = () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const s of sockets) s.destroy();
        });
      return {
        url: url.toString(),
        async restart(downMs) {
          await stop();
          await new Promise((resolve) => setTimeout(resolve, downMs));
          server = serve();
          await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
        },
        close: stop,
      };
    }

    async function underLoad(url: string, restart: () => Promise<void>): Promise<void> {
      const table = `${RUN}_load_${Math.floor(Math.random() * 1e6)}`;
      const store = await PgM3Store.connect({ client: pgClient(newPool(url, 4)), table, ...MODEL, reconnect: { maxWaitMs: 60_000 } });
      await store.addEncoded(docs([0, 1, 2, 3], 'base'));
      const query = syntheticEncoding(MODEL.dim, MODEL.vocabSize, 10, 3, 99);
      let stop = false;
      const done: string[] = [];
      const worker = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const id = 1000 * (w + 1) + i;
          await store.addEncoded(docs([id], `w${w}`));
          done.push(`d${id}`);
          assert.ok((await store.search(query, { k: 3 })).length > 0);
          assert.equal(await store.has(`d${id}`), true);
        }
      };
      const workers = [0, 1, 2].map(worker);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const before = done.length;
      await restart();
      await new Promise((resolve) => setTimeout(resolve, 500));
      stop = true;
      await Promise.all(workers); // no operation failed
      assert.ok(done.length > before, 'work continued after the restart');
      assert.deepEqual((await store.getMany(done)).map((d) => d.id), done, 'every acknowledged write is there');
    }

    it('a restart under load (proxy: connections cut, port refused for 3 s): every operation succeeds', async () => {
      const p = await proxy();
      try {
        await underLoad(p.url, () => p.restart(3000));
      } finally {
        await p.close();
      }
    });

    if (process.env.BGEM3_PG_RESTART_CMD) {
      it('a real server restart under load (BGEM3_PG_RESTART_CMD): every operation succeeds', async () => {
        await underLoad(PG_URL as string, async () => {
          execSync(process.env.BGEM3_PG_RESTART_CMD as string, { stdio: 'ignore' });
        });
      });
    }
  });
}
