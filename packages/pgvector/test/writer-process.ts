/**
 * A writer process for the multi-process test (store.server.test.ts):
 *
 *   node --import tsx writer-process.ts <url> <table> <name> <order: asc|desc> <rounds>
 *
 * Upserts documents w0…w199 in `order`, in calls of 50 (each call one transaction), `rounds`
 * times, deleting w0…w9 in between; prints one JSON line { ok, writes } and exits 0, or prints the
 * error and exits 1.
 */
import pg from 'pg';
import { PgM3Store, pgClient } from '../src/index.js';
import { syntheticEncoding } from './helpers.js';

const [url, table, name, order, rounds] = process.argv.slice(2);
const pool = new pg.Pool({ connectionString: url, max: 2 });
try {
  const store = await PgM3Store.connect({ client: pgClient(pool), table, modelId: 'writer-test', dim: 8, vocabSize: 300, colbertPrecision: 'int8' });
  const ids = Array.from({ length: 200 }, (_, i) => i);
  if (order === 'desc') ids.reverse();
  let writes = 0;
  for (let r = 0; r < Number(rounds); r++) {
    for (let s = 0; s < ids.length; s += 50) {
      await store.addEncoded(
        ids.slice(s, s + 50).map((i) => ({ id: `w${i}`, text: `${name} round ${r}`, metadata: { writer: name, round: r }, encoding: syntheticEncoding(8, 300, 12, 3, i + 1000 * r) })),
      );
      writes++;
    }
    await store.delete(Array.from({ length: 10 }, (_, i) => `w${i}`));
  }
  process.stdout.write(`${JSON.stringify({ ok: true, writes })}\n`);
  await pool.end();
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String((err as Error)?.stack ?? err) })}\n`);
  await pool.end().catch(() => undefined);
  process.exit(1);
}
