// The same app in CommonJS: require() gets each package's CJS build (dist/index.cjs).
const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const { M3Encoder, computeScore } = require('@bgem3/core');
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
  console.log(
    JSON.stringify({
      format: 'cjs',
      dense: Array.from(r.dense),
      colbertCount: r.colbert.count,
      scores,
      langchain,
      llamaindex,
      pgvector: typeof PgM3Store.connect,
    }),
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
