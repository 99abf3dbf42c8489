// A newcomer's ES module app: every package imported by name from node_modules (installed from
// the packed tarballs with plain npm), the encoder run on the fixture model given as argv[2].
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { M3Encoder, M3Index, computeScore } from '@bgem3/core';
import { BGEM3Embeddings } from '@bgem3/langchain';
import { BGEM3Embedding } from '@bgem3/llamaindex';
import { PgM3Store } from '@bgem3/pgvector';

const model = process.argv[2];
const golden = JSON.parse(readFileSync(join(model, 'golden.json'), 'utf8'));
const encoder = await M3Encoder.load(model); // worker thread: the packed dist/inference/encoder-worker.js
const [r] = await encoder.encode([golden.texts[0]], { dense: true, sparse: true, colbert: true });
const [scores] = await computeScore(encoder, [golden.pairs[0]]);
const langchain = await new BGEM3Embeddings({ encoder }).embedQuery(golden.texts[0]);
const llamaindex = await new BGEM3Embedding({ encoder }).getTextEmbedding(golden.texts[0]);
// The embedded store is SQLite (better-sqlite3, a native addon built at install): a durable index in ./index-esm.
const index = await M3Index.open(join(process.cwd(), 'index-esm'), { encoder });
await index.add([{ id: 'a', text: golden.texts[0] }, { id: 'b', text: golden.texts[1] }]);
const hits = await index.search(golden.texts[0], { k: 2 });
await index.close();
console.log(
  JSON.stringify({
    format: 'esm',
    dense: Array.from(r.dense),
    colbertCount: r.colbert.count,
    scores,
    langchain,
    llamaindex,
    pgvector: typeof PgM3Store.connect,
    indexHits: hits.map((h) => h.id).sort(),
  }),
);
