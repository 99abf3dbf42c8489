/** Shared test helpers: the tiny fixture model and a small multilingual corpus. */
import { fileURLToPath } from 'node:url';
import { Document } from '@langchain/core/documents';

/** BGE-M3's architecture with hidden size 32 and random weights: plumbing and exactness, not relevance. */
export const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/tiny-m3-A', import.meta.url));

/** Twelve short passages in English, Chinese, Japanese, Arabic and Russian, with stable ids. */
export const CORPUS: { id: string; lang: string; text: string }[] = [
  { id: 'en-paris', lang: 'en', text: 'Paris is the capital of France and sits on the Seine.' },
  { id: 'en-bge', lang: 'en', text: 'BGE-M3 computes dense, sparse and ColBERT vectors in one pass.' },
  { id: 'en-tea', lang: 'en', text: 'Green tea is popular in Japan and China.' },
  { id: 'zh-beijing', lang: 'zh', text: '北京是中国的首都，有很多历史古迹。' },
  { id: 'zh-tea', lang: 'zh', text: '绿茶在中国非常受欢迎。' },
  { id: 'ja-tokyo', lang: 'ja', text: '東京は日本の首都で、人口が多い都市です。' },
  { id: 'ja-fuji', lang: 'ja', text: '富士山は日本で一番高い山です。' },
  { id: 'ar-cairo', lang: 'ar', text: 'القاهرة هي عاصمة مصر وأكبر مدنها.' },
  { id: 'ar-nile', lang: 'ar', text: 'نهر النيل هو أطول نهر في أفريقيا.' },
  { id: 'ru-moscow', lang: 'ru', text: 'Москва — столица России и крупнейший город страны.' },
  { id: 'ru-volga', lang: 'ru', text: 'Волга — самая длинная река в Европе.' },
  { id: 'en-rag', lang: 'en', text: 'Retrieval augmented generation grounds answers in retrieved documents.' },
];

/** The corpus as LangChain Documents (fresh objects each call). */
export function corpusDocs(): Document[] {
  return CORPUS.map((c) => new Document({ id: c.id, pageContent: c.text, metadata: { lang: c.lang, source: c.id } }));
}

/** Asserts two numbers agree to float32 rounding. */
export function close(a: number, b: number, tol = 1e-6): boolean {
  return Math.abs(a - b) <= tol * Math.max(1, Math.abs(a), Math.abs(b));
}

/** Wraps an encoder and counts the texts of every encode call (what a query costs). */
export class CountingEncoder {
  texts: string[] = [];
  calls = 0;
  constructor(readonly inner: import('@bgem3/core').TextEncoder3) {}
  get modelId(): string {
    return this.inner.modelId;
  }
  get dim(): number {
    return this.inner.dim;
  }
  get vocabSize(): number {
    return this.inner.vocabSize;
  }
  encode(texts: readonly string[], options?: import('@bgem3/core').EncodeOptions): Promise<import('@bgem3/core').EncodeResult[]> {
    this.calls++;
    this.texts.push(...texts);
    return this.inner.encode(texts, options);
  }
  reset(): void {
    this.texts = [];
    this.calls = 0;
  }
}
