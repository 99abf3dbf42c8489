/** Parts that need no database: version and extension checks on a scripted client, identifiers, codecs, error classes. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ColbertCodec, ColbertStore, M3Error, maxSimPacked, maxSimStored, type TextEncoder3 } from '@bgem3/core';
import type { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { PgM3Store, isConnectionError, parseTableName, pgClient, pgliteClient, projectSparse, type SqlClient, type SqlRow } from '../src/index.js';
import { formatDense, formatSparse } from '../src/codec.js';
import { versionAtLeast } from '../src/schema.js';
import { BinaryCopyParser } from '../src/sql-client.js';
import { inlineParams } from '../src/store.js';
import { rng, unitVector } from './helpers.js';

// Compile-time: the adapters accept the drivers' own types.
export const adapters: [(db: PGlite) => SqlClient, (db: pg.Pool | pg.Client | pg.PoolClient) => SqlClient] = [pgliteClient, pgClient];

const encoder: TextEncoder3 = { modelId: 'm', dim: 4, vocabSize: 10, encode: async () => [] };

/** A client answering the extension queries from a script, recording statements. */
function scripted(version: string | undefined, createFails = false): SqlClient & { log: string[] } {
  const log: string[] = [];
  const client = {
    log,
    async query<R extends SqlRow>(text: string): Promise<R[]> {
      log.push(text);
      if (text.includes('pg_advisory_xact_lock')) return [];
      if (text.includes('FROM pg_extension')) return (version === undefined ? [] : [{ v: version }]) as unknown as R[];
      if (text.includes('FROM pg_available_extensions')) return [{ installable: 1 }] as unknown as R[]; // the files are on this server
      if (text.startsWith('CREATE EXTENSION')) {
        if (createFails) throw Object.assign(new Error('permission denied to create extension "vector"'), { code: '42501', hint: 'Must be superuser to create this extension.' });
        version = '0.8.0';
        return [];
      }
      throw new Error(`unexpected statement: ${text}`);
    },
    transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
      return fn(client);
    },
  };
  return client;
}

describe('pgvector availability', () => {
  it('pgvector older than 0.7 is refused: sparsevec needs 0.7', async () => {
    await assert.rejects(PgM3Store.connect({ client: scripted('0.6.2'), encoder }), (e: M3Error) => {
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /pgvector 0\.6\.2 is installed/);
      assert.match(e.message, /sparsevec.*0\.7\.0/);
      return true;
    });
  });

  it("a missing extension is created inside the schema lock; a refused CREATE EXTENSION keeps the server's hint", async () => {
    const ok = scripted(undefined);
    await assert.rejects(PgM3Store.connect({ client: ok, encoder }), /unexpected statement/); // got past the extension
    const lock = ok.log.findIndex((s) => s.includes('pg_advisory_xact_lock'));
    const create = ok.log.findIndex((s) => s.startsWith('CREATE EXTENSION IF NOT EXISTS vector'));
    assert.ok(lock >= 0 && create > lock, 'CREATE EXTENSION issued after taking the lock');
    await assert.rejects(PgM3Store.connect({ client: scripted(undefined, true), encoder }), (e: M3Error) => {
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /permission denied/);
      assert.match(e.message, /HINT: Must be superuser to create this extension\./);
      assert.match(e.message, /not a trusted extension/);
      assert.match(e.message, /CREATE EXTENSION vector/);
      assert.match(e.message, /rds_superuser/);
      return true;
    });
    await assert.rejects(PgM3Store.connect({ client: scripted(undefined), encoder, createSchema: false }), /not enabled/);
  });

  it('version comparison', () => {
    assert.ok(versionAtLeast('0.7.0', '0.7.0'), '0.7.0 ≥ 0.7.0');
    assert.ok(versionAtLeast('0.10.1', '0.7.0'), '0.10.1 ≥ 0.7.0');
    assert.ok(versionAtLeast('1.0', '0.8.0'), '1.0 ≥ 0.8.0');
    assert.ok(!versionAtLeast('0.6.2', '0.7.0'), '0.6.2 < 0.7.0');
  });

  it('adapters refuse what is not a driver', () => {
    assert.throws(() => pgClient({} as never), /pg.Pool or a connected pg.Client/);
    assert.throws(() => pgliteClient({ query() {} } as never), /PGlite instance/);
  });

  it('options are checked before the database is touched', async () => {
    const client = scripted('0.8.0');
    for (const [options, re] of [
      [{ table: 'a b' }, /table name/],
      [{ colbertPrecision: 'fp8' }, /colbertPrecision/],
      [{ denseType: 'bit' }, /denseType/],
      [{ sparseIndexNnz: 1001 }, /sparseIndexNnz/],
      [{ hnsw: { m: 16, efConstruction: 16 } }, /efConstruction/],
      [{ dim: 8 }, /disagree with the encoder/],
    ] as const) {
      await assert.rejects(PgM3Store.connect({ client, encoder, ...(options as object) }), re);
    }
    assert.deepEqual(client.log, []);
  });
});

describe('identifiers', () => {
  it('accepts table and schema.table; refuses anything that would need quoting tricks', () => {
    assert.deepEqual(parseTableName('docs'), { name: 'docs' });
    assert.deepEqual(parseTableName('rag.Docs_2'), { schema: 'rag', name: 'Docs_2' });
    for (const bad of ['', 'a-b', 'a"b', 'a;b', 'a.b.c', '.a', 'a.', '9a', 'ä', 'x'.repeat(52)]) {
      assert.throws(() => parseTableName(bad), (e: M3Error) => e.code === 'INVALID_ARGUMENT', bad);
    }
  });
});

describe('codecs', () => {
  it('projectSparse keeps the largest weights (ties: lower id), ids ascending', () => {
    const s = { indices: Uint32Array.from([1, 3, 5, 7, 9]), values: Float32Array.from([0.5, 0.1, 0.5, 0.9, 0.2]) };
    assert.equal(projectSparse(s, 5), s);
    assert.deepEqual(projectSparse(s, 3), { indices: Uint32Array.from([1, 5, 7]), values: Float32Array.from([0.5, 0.5, 0.9]) });
    assert.deepEqual(projectSparse(s, 2), { indices: Uint32Array.from([1, 7]), values: Float32Array.from([0.5, 0.9]) });
  });

  it('vector literals: 1-based sparse indices, zeros left out, float32 round trip', () => {
    assert.equal(formatSparse({ indices: Uint32Array.from([0, 4, 6]), values: Float32Array.from([0.25, 0, 1]) }, 10), '{1:0.250000000,7:1.00000000}/10');
    const v = unitVector(64, rng(3));
    const parsed = Float32Array.from(formatDense(v).slice(1, -1).split(','), Number);
    assert.deepEqual(parsed, v);
  });

  for (const precision of ['fp32', 'fp16', 'int8'] as const) {
    it(`ColBERT ${precision} bytes pack into the same MaxSim as core's ColbertStore`, async () => {
      const rand = rng(11);
      const dim = 16;
      const docs = [5, 0, 3].map((count) => {
        const data = new Float32Array(count * dim);
        for (let i = 0; i < count; i++) data.set(unitVector(dim, rand), i * dim);
        return { data, count, dim };
      });
      const query = { data: new Float32Array(2 * dim), count: 2, dim };
      query.data.set(unitVector(dim, rand), 0);
      query.data.set(unitVector(dim, rand), dim);
      const codec = new ColbertCodec(precision, dim);
      const bytes = docs.map((d) => codec.encode(d));
      assert.deepEqual(bytes.map((b) => codec.count(b)), [5, 0, 3]);
      const store = new ColbertStore({ dim, precision });
      docs.forEach((d, i) => store.upsert(`d${i}`, d));
      const want = await maxSimStored(query, store, ['d0', 'd1', 'd2']);
      assert.deepEqual(await maxSimPacked(query, codec.pack(bytes)), want);
      assert.throws(() => codec.count(new Uint8Array(7)), (e: M3Error) => e.code === 'INDEX_INVALID');
    });
  }
});

describe('isConnectionError', () => {
  it('tells connection failures from statement failures', () => {
    for (const e of [
      Object.assign(new Error('x'), { code: 'ECONNREFUSED' }),
      Object.assign(new Error('x'), { code: 'ECONNRESET' }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      Object.assign(new Error('x'), { code: '08006' }),
      new Error('Connection terminated unexpectedly'),
      new AggregateError([Object.assign(new Error('a'), { code: 'ECONNREFUSED' }), Object.assign(new Error('b'), { code: 'ECONNREFUSED' })]),
    ]) {
      assert.equal(isConnectionError(e), true, String(e));
    }
    for (const e of [Object.assign(new Error('syntax error'), { code: '42601' }), Object.assign(new Error('dup'), { code: '23505' }), new Error('other'), null, 'x']) {
      assert.equal(isConnectionError(e), false, String(e));
    }
  });
});

describe('binary COPY stream', () => {
  /** A stream as PostgreSQL writes it: signature, flags, header extension, rows, trailer. */
  function stream(rows: (Buffer | null)[][], extension = Buffer.alloc(0)): Buffer {
    const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.from([0, 0, 0, 0]), Buffer.alloc(4), extension];
    parts[2].writeUInt32BE(extension.length);
    for (const row of rows) {
      const n = Buffer.alloc(2);
      n.writeInt16BE(row.length);
      parts.push(n);
      for (const f of row) {
        const len = Buffer.alloc(4);
        len.writeInt32BE(f === null ? -1 : f.length);
        parts.push(len, ...(f === null ? [] : [f]));
      }
    }
    parts.push(Buffer.from([0xff, 0xff]));
    return Buffer.concat(parts);
  }
  const int8 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(v);
    return b;
  };
  const rows = [
    [int8(1n), Buffer.from('12345'), Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256))],
    [int8(9007199254740993n), Buffer.from('7'), null],
    [int8(3n), Buffer.from(''), Buffer.alloc(0)],
  ];
  const parse = (chunks: Buffer[]) => {
    const got: (string | null)[][] = [];
    const parser = new BinaryCopyParser((f) => got.push(f.map((x) => (x === null ? null : x.toString('hex')))));
    for (const c of chunks) parser.push(c);
    return { got, ended: parser.ended };
  };
  const want = rows.map((r) => r.map((x) => (x === null ? null : x.toString('hex'))));

  it('parses rows, NULLs and empty fields, whole or split at every byte', () => {
    const whole = stream(rows, Buffer.from('ext'));
    assert.deepEqual(parse([whole]), { got: want, ended: true });
    for (let cut = 1; cut < whole.length; cut++) assert.deepEqual(parse([whole.subarray(0, cut), whole.subarray(cut)]), { got: want, ended: true }, `cut at ${cut}`);
    assert.deepEqual(parse([...whole].map((b) => Buffer.from([b]))), { got: want, ended: true }, 'one byte per chunk');
  });

  it('a held partial row is a copy: the caller may reuse its buffer', () => {
    const whole = stream(rows);
    const cut = whole.length - 20;
    const first = Buffer.from(whole.subarray(0, cut));
    const got: string[] = [];
    const parser = new BinaryCopyParser((f) => got.push(f.map((x) => x?.toString('hex') ?? 'null').join('|')));
    parser.push(first);
    first.fill(0); // what the driver may do to its read buffer
    parser.push(whole.subarray(cut));
    assert.equal(got.length, 3);
    assert.equal(parser.ended, true);
  });

  it('refuses a stream without the signature; reports a missing trailer', () => {
    assert.throws(() => new BinaryCopyParser(() => undefined).push(Buffer.alloc(40)), /PGCOPY signature/);
    assert.equal(parse([stream(rows).subarray(0, -2)]).ended, false);
  });
});

describe('inlineParams (the literals of a COPY statement)', () => {
  it('writes numbers and numeric text forms in, skips quoted identifiers, refuses anything else', () => {
    const dense = formatDense(Float32Array.from([0.5, -1.25e-7, 3]));
    const sparse = formatSparse({ indices: Uint32Array.from([0, 7]), values: Float32Array.from([0.25, 1e-3]) }, 250002);
    assert.equal(
      inlineParams(`SELECT "a$1""b", $1::vector, $2::sparsevec, $3::bigint[], $10 FROM t LIMIT $4`, [dense, sparse, '{1,22,333}', 40, 0, 0, 0, 0, 0, 0.5]),
      `SELECT "a$1""b", '${dense}'::vector, '${sparse}'::sparsevec, '{1,22,333}'::bigint[], 0.5 FROM t LIMIT 40`,
    );
    for (const bad of ["x'; DROP TABLE t; --", 'abc', '1 2', '$$', '1e5)', NaN, Infinity, 1n, null, undefined, {}, ['1']]) {
      assert.throws(() => inlineParams('SELECT $1', [bad]), /not a number or a numeric text form/, String(bad));
    }
  });
});
