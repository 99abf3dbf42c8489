// The app in strict TypeScript (ESM). Type-checked with node16 and with bundler resolution, then
// compiled (node16) and run. The annotations check the published types, not just that they load.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { M3Encoder, computeScore, lexicalMatchingScore, type EncodeResult, type SparseVector } from '@bgem3/core';
import { BGEM3Embeddings } from '@bgem3/langchain';
import { BGEM3Embedding } from '@bgem3/llamaindex';
import { PgM3Store } from '@bgem3/pgvector';

interface Golden {
  texts: string[];
  pairs: [string, string][];
}

const model = process.argv[2];
const golden = JSON.parse(readFileSync(join(model, 'golden.json'), 'utf8')) as Golden;
const encoder: M3Encoder = await M3Encoder.load(model);
const [r]: EncodeResult[] = await encoder.encode([golden.texts[0]], { dense: true, sparse: true, colbert: true });
const sparse: SparseVector | undefined = r.sparse;
const self: number = sparse ? lexicalMatchingScore(sparse, sparse) : NaN;
const [scores] = await computeScore(encoder, [golden.pairs[0]]);
const langchain: number[] = await new BGEM3Embeddings({ encoder }).embedQuery(golden.texts[0]);
const llamaindex: number[] = await new BGEM3Embedding({ encoder }).getTextEmbedding(golden.texts[0]);
const connect: typeof PgM3Store.connect = PgM3Store.connect;
console.log(
  JSON.stringify({
    format: 'ts-esm',
    dense: Array.from(r.dense ?? []),
    colbertCount: r.colbert?.count,
    scores,
    self,
    langchain,
    llamaindex,
    pgvector: typeof connect,
  }),
);
