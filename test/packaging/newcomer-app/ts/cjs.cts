// The app in strict TypeScript compiled to CommonJS (node16 resolution picks the .d.cts types).
import { M3Encoder } from '@bgem3/core';
import { BGEM3Embeddings } from '@bgem3/langchain';
import { BGEM3Embedding } from '@bgem3/llamaindex';
import { PgM3Store } from '@bgem3/pgvector';

async function main(model: string): Promise<void> {
  const encoder = await M3Encoder.load(model);
  const [r] = await encoder.encode(['What is BGE M3?'], { dense: true });
  const langchain: number[] = await new BGEM3Embeddings({ encoder }).embedQuery('What is BGE M3?');
  const llamaindex: number[] = await new BGEM3Embedding({ encoder }).getTextEmbedding('What is BGE M3?');
  console.log(JSON.stringify({ format: 'ts-cjs', dense: Array.from(r.dense ?? []), langchain, llamaindex, pgvector: typeof PgM3Store.connect }));
}
void main(process.argv[2]);
