/**
 * PgM3Store through a real network socket, exactly as against a remote server: PGlite served
 * over the PostgreSQL wire protocol on 127.0.0.1 (`PGLiteSocketServer`), reached with `pg`.
 * Agreement with M3Index, concurrency, writes, a single pg.Client, and reconnecting across a
 * server restart on the same port.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { M3Error, M3Index, type M3Encoder } from '@bgem3/core';
import type { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import pg from 'pg';
import { PgM3Store, isConnectionError, pgClient, type OpenedPglite } from '../src/index.js';
import { CORPUS, QUERIES, assertSameResults, loadEncoder, sharedPglite } from './helpers.js';

let encoder: M3Encoder;
let local: OpenedPglite;
let server: PGLiteSocketServer;
let port: number;
let pool: pg.Pool;
let store: PgM3Store;
let index: M3Index;

async function startServer(onPort = 0): Promise<number> {
  server = new PGLiteSocketServer({ db: local.db as unknown as PGlite, host: '127.0.0.1', port: onPort, maxConnections: 8 });
  await server.start();
  return Number(server.getServerConn().split(':').pop());
}

before(async () => {
  [encoder, local] = await Promise.all([loadEncoder(), sharedPglite()]);
  port = await startServer();
  pool = new pg.Pool({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', max: 4, connectionTimeoutMillis: 5000 });
  store = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_docs', denseType: 'vector' });
  index = await M3Index.create({ encoder });
  await Promise.all([store.add(CORPUS), index.add(CORPUS)]);
});

after(async () => {
  await pool.end();
  await server.stop();
  await local.close();
});

describe('over the wire protocol with pg', () => {
  it('search, searchDense and searchSparse agree with M3Index', async () => {
    assert.ok(pool.totalCount > 0, 'the pool holds socket connections');
    for (const q of QUERIES) {
      assertSameResults(await store.search(q, { k: 8, fetchK: 100 }), await index.search(q, { k: 8, fetchK: 100 }), 1e-5, q);
      assert.deepEqual((await store.searchDense(q, { k: 5 })).map((h) => h.id), (await index.searchDense(q, { k: 5 })).map((h) => h.id), q);
      assert.deepEqual((await store.searchSparse(q, { k: 5 })).map((h) => h.id), (await index.searchSparse(q, { k: 5 })).map((h) => h.id), q);
    }
  });

  it('rows written over the network are the rows the in-process client reads', async () => {
    const viaSocket = await store.get('ja-tokyo');
    const inProcess = await PgM3Store.connect({ client: local.client, table: 'net_docs' });
    assert.deepEqual(await inProcess.get('ja-tokyo'), viaSocket);
    assert.deepEqual(await inProcess.search((await encoder.encode([QUERIES[2]], { dense: true, sparse: true, colbert: true }))[0], { k: 4 }), await store.search(QUERIES[2], { k: 4 }));
  });

  it('concurrent searches and writes on the pool', async () => {
    const sequential = [];
    for (const q of QUERIES) sequential.push(await store.search(q, { k: 5 }));
    const extra = [{ id: 'extra-1', text: 'An extra document written while others search.' }];
    const [parallel] = await Promise.all([Promise.all(QUERIES.map((q) => store.search(q, { k: 5, where: { lang: 'en' } }))), store.add(extra)]);
    const filtered = await Promise.all(QUERIES.map((q) => index.search(q, { k: 5, filter: (m) => m.lang === 'en' })));
    parallel.forEach((r, i) => assertSameResults(r, filtered[i], 1e-5, QUERIES[i]));
    assert.equal(await store.count(), CORPUS.length + 1);
    assert.equal(await store.delete('extra-1'), 1);
    for (const [i, q] of QUERIES.entries()) assertSameResults(await store.search(q, { k: 5 }), sequential[i], 0, q);
  });

  it('the COPY search (ranking and ColBERT bytes in one COPY, MaxSim by groups) equals the base64 search, at any rerankDepth and weights', async () => {
    const base64 = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_docs', colbertTransfer: 'base64' });
    const cases: { k?: number; fetchK?: number; rerankDepth?: number; weights?: [number, number, number] }[] = [
      { k: 8, fetchK: 100 },
      { k: 5, rerankDepth: 1 },
      { k: 5, rerankDepth: 3 },
      { k: 10, rerankDepth: 7, fetchK: 6 },
      { k: 24, rerankDepth: 23 },
      { k: 3, weights: [0.4, 0.2, 0] },
      { k: 6, weights: [0, 1, 0.5] },
      { k: 6, weights: [1, 0, 1] },
    ];
    for (const q of QUERIES) {
      for (const options of cases) assert.deepEqual(await store.search(q, options), await base64.search(q, options), `${q} ${JSON.stringify(options)}`);
    }
  });

  it('a row changed or deleted after the dense stage nominated it is scored and returned as it is now (the COPY search)', async () => {
    const writer = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_race' });
    await writer.add(CORPUS);
    const base = pgClient(pool);
    let afterDenseStage: (() => Promise<unknown>) | undefined;
    const copyBinary = base.copyBinary as NonNullable<typeof base.copyBinary>;
    const racing = {
      ...base,
      async copyBinary(sql: string, onRow: (fields: readonly (Buffer | null)[]) => void) {
        await copyBinary(sql, onRow);
        const hook = afterDenseStage;
        if (hook && /ORDER BY dense <#>/.test(sql) && !/WITH c AS/.test(sql)) {
          afterDenseStage = undefined;
          await hook(); // another connection commits a write before the ranking statement
        }
      },
    };
    const store2 = await PgM3Store.connect({ client: racing, encoder, table: 'net_race' });
    const q = QUERIES[0];
    for (const change of ['updated', 'deleted'] as const) {
      const top = (await writer.search(q, { k: 5 }))[0].id;
      afterDenseStage = () => (change === 'deleted' ? writer.delete(top) : writer.add([{ id: top, text: 'Something else entirely: tea gardens.', metadata: { changed: true } }]));
      const got = await store2.search(q, { k: 5 });
      assert.equal(afterDenseStage, undefined, 'the write ran between the first stages and the ranking');
      assert.deepEqual(got, await writer.search(q, { k: 5 }), change);
      const hit = got.find((h) => h.id === top);
      if (change === 'deleted') assert.equal(hit, undefined);
      else if (hit) assert.deepEqual(hit.metadata, { changed: true });
    }
    await writer.drop();
  });

  it('searchConnections: the first stages run side by side on two connections by default, one at a time with 1', async () => {
    const base = pgClient(pool);
    let inFlight = 0;
    let most = 0;
    const track = async <T>(p: () => Promise<T>): Promise<T> => {
      most = Math.max(most, ++inFlight);
      try {
        return await p();
      } finally {
        inFlight--;
      }
    };
    const counting = {
      ...base,
      query: ((sql: string, params?: unknown[]) => track(() => base.query(sql, params))) as typeof base.query,
      transaction: ((fn: Parameters<typeof base.transaction>[0]) => track(() => base.transaction(fn))) as typeof base.transaction,
      copyBinary: (sql: string, onRow: (fields: readonly (Buffer | null)[]) => void) => track(() => (base.copyBinary as NonNullable<typeof base.copyBinary>)(sql, onRow)),
    };
    for (const [searchConnections, want] of [[undefined, 2], [1, 1]] as const) {
      const s = await PgM3Store.connect({ client: counting, encoder, table: 'net_docs', ...(searchConnections ? { searchConnections } : {}) });
      for (const where of [undefined, { lang: 'en' }]) {
        most = 0;
        const got = await s.search(QUERIES[1], { k: 5, ...(where ? { where } : {}) });
        assert.deepEqual(got, await store.search(QUERIES[1], { k: 5, ...(where ? { where } : {}) }));
        assert.equal(most, want, `searchConnections ${searchConnections}, where ${JSON.stringify(where)}`);
      }
    }
  });

  it('a corrupt ColBERT value read by COPY fails the search with INDEX_INVALID naming it, on both paths; the store keeps working', async () => {
    const s = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_corrupt' });
    await s.add(CORPUS);
    const q = QUERIES[0];
    const top = (await s.search(q, { k: 3 }))[0].id;
    await pool.query(`UPDATE "net_corrupt" SET colbert = '\\x010203'::bytea WHERE id = $1`, [top]);
    const base64 = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_corrupt', colbertTransfer: 'base64' });
    for (const [store, where] of [[s, undefined], [s, { lang: { $ne: 'none' } }], [base64, undefined]] as const) {
      await assert.rejects(store.search(q, { k: 3, ...(where ? { where } : {}) }), (e: M3Error) => {
        assert.equal(e.code, 'INDEX_INVALID', String(e));
        assert.match(e.message, new RegExp(`^document "${top}": ColBERT bytes: 3 is not a multiple`));
        return true;
      });
    }
    // Without ColBERT the row still ranks; the others are untouched.
    assert.ok((await s.search(q, { k: CORPUS.length, weights: [0.4, 0.2, 0] })).some((h) => h.id === top));
    // NULL (a row written outside the store): INDEX_INVALID naming it on every path, never a MaxSim of 0.
    await pool.query(`UPDATE "net_corrupt" SET colbert = NULL WHERE id = $1`, [top]);
    const nullColbert = (e: M3Error) => {
      assert.equal(e.code, 'INDEX_INVALID', String(e));
      assert.match(e.message, new RegExp(`^document "${top}": no ColBERT vectors stored \\(colbert is NULL\\)`));
      return true;
    };
    for (const [store, where] of [[s, undefined], [s, { lang: { $ne: 'none' } }], [base64, undefined]] as const) {
      await assert.rejects(store.search(q, { k: 3, ...(where ? { where } : {}) }), nullColbert);
      await assert.rejects(store.rescore(q, [top, CORPUS[0].id === top ? CORPUS[1].id : CORPUS[0].id]), nullColbert);
    }
    assert.ok((await s.search(q, { k: CORPUS.length, weights: [0.4, 0.2, 0] })).some((h) => h.id === top));
    await s.delete(top);
    assert.equal((await s.search(q, { k: 3 })).length, 3);
    await s.drop();
  });

  it('upsert and delete over the network', async () => {
    const doc = { id: 'en-rust', text: 'Rust and PostgreSQL: a replaced document.', metadata: { lang: 'en', v: 2 } };
    await Promise.all([store.add([doc]), index.add([doc])]);
    assert.deepEqual(await store.get('en-rust'), doc);
    assert.equal(await store.delete(['ru-tea', 'missing']), 1);
    await index.delete(['ru-tea']);
    for (const q of [...QUERIES, doc.text]) assertSameResults(await store.search(q, { k: 6 }), await index.search(q, { k: 6 }), 1e-5, q);
  });

  it('a single pg.Client: statements and transactions are serialised on its one connection', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try {
      const single = await PgM3Store.connect({ client: pgClient(client), encoder, table: 'net_single', colbertPrecision: 'int8' });
      const ref = await M3Index.create({ encoder, colbertPrecision: 'int8' });
      await Promise.all([single.add(CORPUS.slice(0, 12)), ref.add(CORPUS.slice(0, 12)), single.search(QUERIES[0])]);
      const results = await Promise.all(QUERIES.map((q) => single.search(q, { k: 4 })));
      for (const [i, q] of QUERIES.entries()) {
        assert.deepEqual(results[i].map((h) => h.id), (await ref.search(q, { k: 4 })).map((h) => h.id), q);
      }
      await single.drop();
    } finally {
      await client.end();
    }
  });

  it('a query issued while the server is down waits for it (reconnect backoff); with reconnect.maxWaitMs short it fails', async () => {
    const before = await store.search(QUERIES[0], { k: 5 });
    const impatient = await PgM3Store.connect({ client: pgClient(pool), encoder, table: 'net_docs', reconnect: { maxWaitMs: 300 } });
    await server.stop();
    await assert.rejects(impatient.search(QUERIES[0], { k: 5 }), (err) => {
      assert.ok(isConnectionError(err), `a connection error, got ${String(err)}`);
      return true;
    });
    // Issued while the server is down; the server comes back 1.5 s later on the same port.
    const during = store.search(QUERIES[0], { k: 5 });
    const write = store.add([{ id: 'during-restart', text: 'Written while the server restarted.' }]);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(await startServer(port), port);
    assert.deepEqual(await during, before);
    assert.deepEqual(await write, ['during-restart']);
    assert.equal(await store.count(), CORPUS.length);
    assert.equal((await store.get('during-restart'))?.text, 'Written while the server restarted.');
  });
});
