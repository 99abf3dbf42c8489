// Child process of cold-process.test.ts: a fresh process opens a persisted store and runs one
// query through each store-backed LlamaIndex path; prints how many texts went through the model.
import { M3Encoder, M3Index } from '@bgem3/core';
import { BGEM3ColbertReranker, BGEM3EnsembleRetriever, BGEM3SparseRetriever, BGEM3VectorStore } from '@bgem3/llamaindex';
import { BaseLLM, Settings, VectorStoreIndex, VectorStoreQueryMode } from 'llamaindex';

class EchoLLM extends BaseLLM {
  metadata = { model: 'echo', temperature: 0, topP: 1, contextWindow: 32768, tokenizer: undefined, structuredOutput: false };
  async chat() {
    return { message: { role: 'assistant', content: 'ok' }, raw: null };
  }
}

const [dir, model, withEncoder] = process.argv.slice(2);
const encoder = await M3Encoder.load(model);
const store = await M3Index.load(dir, withEncoder === 'yes' ? { encoder, readOnly: true } : { readOnly: true });
const given = withEncoder === 'yes' ? {} : { encoder };
const vs = new BGEM3VectorStore({ store, ...given });
Settings.embedModel = vs.embedModel;
Settings.llm = new EchoLLM();
const index = await VectorStoreIndex.fromVectorStore(vs);
const out = {};
const run = async (name, fn) => {
  const before = encoder.stats.textsEncoded;
  const nodes = await fn(`query for ${name}`);
  out[name] = { texts: encoder.stats.textsEncoded - before, results: nodes.length };
};
await run('default', (q) => index.asRetriever({ similarityTopK: 5 }).retrieve(q));
await run('sparse', (q) => index.asRetriever({ mode: VectorStoreQueryMode.SPARSE, similarityTopK: 5 }).retrieve(q));
await run('hybrid', (q) => index.asRetriever({ mode: VectorStoreQueryMode.HYBRID, similarityTopK: 5 }).retrieve(q));
await run('query engine', async (q) => (await index.asQueryEngine({ retriever: index.asRetriever({ mode: VectorStoreQueryMode.HYBRID, similarityTopK: 5 }) }).query({ query: q })).sourceNodes);
await run('sparse retriever', (q) => new BGEM3SparseRetriever({ store, topK: 5, ...given }).retrieve(q));
await run('ensemble', (q) => new BGEM3EnsembleRetriever({ store, topK: 5, ...given }).retrieve(q));
await run('reranker', async (q) => new BGEM3ColbertReranker({ store, topN: 3, ...given }).postprocessNodes(await index.asRetriever({ similarityTopK: 10 }).retrieve(q), q));
console.log(JSON.stringify(out));
await store.close();
await encoder.close();
