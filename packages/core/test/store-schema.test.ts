/**
 * A crafted index database is refused before anything runs on it: triggers and views (plain SQL
 * that would run on our own writes), foreign tables and indexes, and our tables redefined. Found
 * by the second hostile review: a trigger deleting rows used to run on the next add.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { M3Error } from '../src/errors.js';
import { M3Index } from '../src/retrieval/m3-index.js';
import { FakeEncoder, corpus } from './helpers/fake-m3.js';

const tmp = mkdtempSync(join(tmpdir(), 'bgem3-schema-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;

async function makeIndex(): Promise<string> {
  const dir = join(tmp, `ix-${n++}`);
  const index = await M3Index.open(dir, { encoder: new FakeEncoder('fake/m3', 16, 5000) });
  await index.add(corpus(5, 1));
  await index.close();
  return dir;
}

const refused = (re: RegExp) => (e: unknown) => e instanceof M3Error && e.code === 'INDEX_INVALID' && re.test(e.message);

test('an untouched index opens; one with a trigger, a view, a foreign table or index, or a redefined table is INDEX_INVALID', async () => {
  const plain = await makeIndex();
  const ok = await M3Index.load(plain, { encoder: new FakeEncoder('fake/m3', 16, 5000) });
  assert.equal(await ok.count(), 5);
  await ok.close();

  const crafted: [string, RegExp][] = [
    ['CREATE TRIGGER wipe AFTER INSERT ON docs BEGIN DELETE FROM docs WHERE rid < NEW.rid; END', /unexpected trigger "wipe"/],
    ['CREATE VIEW v AS SELECT id FROM docs', /unexpected view "v"/],
    ['CREATE TABLE extra(x)', /unexpected table "extra"/],
    ['CREATE INDEX by_crc ON docs(crc)', /unexpected index "by_crc"/],
    ['ALTER TABLE texts ADD COLUMN note TEXT', /table texts has another definition/],
  ];
  for (const [sql, re] of crafted) {
    const dir = await makeIndex();
    const db = new Database(join(dir, 'index.sqlite'));
    db.exec(sql);
    db.close();
    for (const readOnly of [false, true]) {
      await assert.rejects(M3Index.load(dir, { encoder: new FakeEncoder('fake/m3', 16, 5000), readOnly }), refused(re), `${sql} (readOnly ${readOnly})`);
    }
  }
});
