/**
 * PgM3Store as the store behind the LangChain and LlamaIndex adapters. Both ensembles accept any
 * retriever, so a few lines wrapping `searchDense` / `searchSparse` (or the whole `search`
 * pipeline) plug the database in; these tests are those lines, checked against `store.search`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { M3Encoder } from '@bgem3/core';
import { BGEM3EnsembleRetriever as LcEnsemble } from '@bgem3/langchain';
import { BGEM3EnsembleRetriever as LiEnsemble } from '@bgem3/llamaindex';
import { Document } from '@langchain/core/documents';
import { BaseRetriever as LcBaseRetriever } from '@langchain/core/retrievers';
import { BaseRetriever as LiBaseRetriever, MetadataMode, TextNode, extractText, type NodeWithScore, type QueryBundle } from 'llamaindex';
import { PgM3Store, type OpenedPglite } from '../src/index.js';
import { CORPUS, QUERIES, loadEncoder, sharedPglite } from './helpers.js';

type Mode = 'dense' | 'sparse' | 'hybrid';

/** A LangChain retriever over a PgM3Store: one mode's top-k, or the whole M3 pipeline. */
class PgLangChainRetriever extends LcBaseRetriever {
  lc_namespace = ['bgem3', 'pgvector'];
  constructor(
    private readonly store: PgM3Store,
    private readonly mode: Mode,
    private readonly k: number,
  ) {
    super();
  }

  override async _getRelevantDocuments(query: string): Promise<Document[]> {
    const hits =
      this.mode === 'dense'
        ? await this.store.searchDense(query, { k: this.k })
        : this.mode === 'sparse'
          ? await this.store.searchSparse(query, { k: this.k })
          : await this.store.search(query, { k: this.k });
    return hits.map((h) => new Document({ id: h.id, pageContent: h.text, metadata: { ...h.metadata, score: h.score } }));
  }
}

/** The LlamaIndex equivalent. */
class PgLlamaIndexRetriever extends LiBaseRetriever {
  constructor(
    private readonly store: PgM3Store,
    private readonly mode: Mode,
    private readonly k: number,
  ) {
    super();
  }

  async _retrieve(params: QueryBundle): Promise<NodeWithScore[]> {
    const query = extractText(params.query);
    const hits =
      this.mode === 'dense'
        ? await this.store.searchDense(query, { k: this.k })
        : this.mode === 'sparse'
          ? await this.store.searchSparse(query, { k: this.k })
          : await this.store.search(query, { k: this.k });
    return hits.map((h) => ({ node: new TextNode({ id_: h.id, text: h.text, metadata: h.metadata }), score: h.score }));
  }
}

let encoder: M3Encoder;
let pg: OpenedPglite;
let store: PgM3Store;

before(async () => {
  [encoder, pg] = await Promise.all([loadEncoder(), sharedPglite()]);
  store = await PgM3Store.connect({ client: pg.client, encoder, table: 'adapter_docs', denseType: 'vector', colbertPrecision: 'fp16' });
  await store.add(CORPUS);
});
after(async () => {
  await pg.close();
});

/** Same ids in order and scores within `tol` (the ensembles rerank with float32 ColBERT, the store with fp16). */
function assertSame(got: { id: string; score: number }[], want: { id: string; score: number }[], tol: number, what: string): void {
  assert.deepEqual(got.map((g) => g.id), want.map((w) => w.id), what);
  got.forEach((g, i) => assert.ok(Math.abs(g.score - want[i].score) <= tol, `${what}: ${g.id} ${g.score} vs ${want[i].score}`));
}

describe('LangChain', () => {
  it('BGEM3EnsembleRetriever over PgM3Store dense + sparse retrievers equals store.search', async () => {
    const ensemble = new LcEnsemble({
      denseRetriever: new PgLangChainRetriever(store, 'dense', 100),
      sparseRetriever: new PgLangChainRetriever(store, 'sparse', 100),
      encoder,
      k: 5,
    });
    for (const q of QUERIES) {
      const docs = await ensemble.invoke(q);
      const want = await store.search(q, { k: 5, fetchK: 100 });
      assertSame(
        docs.map((d) => ({ id: d.id as string, score: d.metadata.relevanceScore as number })),
        want,
        1e-4,
        q,
      );
      assert.equal(docs[0].pageContent, want[0].text);
      assert.equal(docs[0].metadata.lang, want[0].metadata.lang);
    }
  });

  it('the whole pipeline as one retriever', async () => {
    const retriever = new PgLangChainRetriever(store, 'hybrid', 3);
    const docs = await retriever.invoke(QUERIES[0]);
    assert.deepEqual(docs.map((d) => d.id), (await store.search(QUERIES[0], { k: 3 })).map((h) => h.id));
  });
});

describe('LlamaIndex', () => {
  it('BGEM3EnsembleRetriever over PgM3Store dense + sparse retrievers equals store.search', async () => {
    const ensemble = new LiEnsemble({
      retrievers: [new PgLlamaIndexRetriever(store, 'dense', 100), new PgLlamaIndexRetriever(store, 'sparse', 100)],
      encoder,
      topK: 5,
      // The store encodes the plain text; LlamaIndex would prepend metadata with EMBED.
      metadataMode: MetadataMode.NONE,
    });
    for (const q of QUERIES) {
      const nodes = await ensemble.retrieve(q);
      const want = await store.search(q, { k: 5, fetchK: 100 });
      assertSame(
        nodes.map((n) => ({ id: n.node.id_, score: n.score as number })),
        want,
        1e-4,
        q,
      );
    }
  });

  it('the whole pipeline as one retriever', async () => {
    const nodes = await new PgLlamaIndexRetriever(store, 'hybrid', 3).retrieve(QUERIES[1]);
    assert.deepEqual(nodes.map((n) => n.node.id_), (await store.search(QUERIES[1], { k: 3 })).map((h) => h.id));
  });
});
