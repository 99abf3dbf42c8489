// Child process of cold-process.test.ts: a fresh process opens a persisted store and runs one
// query through each store-backed LangChain class; prints how many texts went through the model.
import { M3Encoder, M3Index } from '@bgem3/core';
import { BGEM3ColbertReranker, BGEM3EnsembleRetriever, BGEM3SparseRetriever, BGEM3VectorStore } from '@bgem3/langchain';

const [dir, model, withEncoder] = process.argv.slice(2);
const encoder = await M3Encoder.load(model);
const store = await M3Index.load(dir, withEncoder === 'yes' ? { encoder, readOnly: true } : { readOnly: true });
// Without an encoder in the store, the classes are given the model (which must match the store's).
const given = withEncoder === 'yes' ? {} : { encoder };
const out = {};
const run = async (name, fn) => {
  const before = encoder.stats.textsEncoded;
  const docs = await fn(`query for ${name}`);
  out[name] = { texts: encoder.stats.textsEncoded - before, results: docs.length };
};
const vs = new BGEM3VectorStore(undefined, { store, ...given });
await run('hybrid', (q) => vs.asRetriever({ k: 5 }).invoke(q));
await run('dense', (q) => vs.asRetriever({ k: 5, mode: 'dense' }).invoke(q));
await run('similaritySearch', (q) => vs.similaritySearch(q, 5));
await run('sparse', (q) => new BGEM3SparseRetriever({ store, k: 5, ...given }).invoke(q));
await run('ensemble', (q) => new BGEM3EnsembleRetriever({ store, k: 5, ...given }).invoke(q));
await run('ensemble over retrievers', (q) => new BGEM3EnsembleRetriever({ retrievers: [vs.asRetriever({ k: 8, mode: 'dense' }), new BGEM3SparseRetriever({ vectorStore: vs, k: 8 })], k: 5 }).invoke(q));
await run('reranker', async (q) => new BGEM3ColbertReranker({ store, topN: 3, ...given }).compressDocuments(await vs.asRetriever({ k: 10, mode: 'dense' }).invoke(q), q));
console.log(JSON.stringify(out));
await store.close();
await encoder.close();
