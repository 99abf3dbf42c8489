// The same app in CommonJS: require() gets each package's CJS build (dist/index.cjs).
const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const { M3Encoder, M3Index, computeScore } = require('@bgem3/core');
const { BGEM3Embeddings } = require('@bgem3/langchain');
const { BGEM3Embedding } = require('@bgem3/llamaindex');
const { PgM3Store } = require('@bgem3/pgvector');

async function main() {
  const model = process.argv[2];
  const golden = JSON.parse(readFileSync(join(model, 'golden.json'), 'utf8'));
  const encoder = await M3Encoder.load(model);
  const [r] = await encoder.encode([golden.texts[0]], { dense: true, sparse: true, colbert: true });
  const [scores] = await computeScore(encoder, [golden.pairs[0]]);
  const langchain = await new BGEM3Embeddings({ encoder }).embedQuery(golden.texts[0]);
  const llamaindex = await new BGEM3Embedding({ encoder }).getTextEmbedding(golden.texts[0]);
  // The embedded store is SQLite (better-sqlite3, a native addon built at install): a durable index in ./index-cjs.
  const index = await M3Index.open(join(process.cwd(), 'index-cjs'), { encoder });
  await index.add([{ id: 'a', text: golden.texts[0] }, { id: 'b', text: golden.texts[1] }]);
  const hits = await index.search(golden.texts[0], { k: 2 });
  await index.close();
  console.log(
    JSON.stringify({
      format: 'cjs',
      dense: Array.from(r.dense),
      colbertCount: r.colbert.count,
      scores,
      langchain,
      llamaindex,
      pgvector: typeof PgM3Store.connect,
      indexHits: hits.map((h) => h.id).sort(),
    }),
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
