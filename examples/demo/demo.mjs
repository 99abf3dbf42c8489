#!/usr/bin/env node
/**
 * bgem3-js demo: BGE-M3's three outputs from one forward pass, in a hybrid search.
 *
 * Indexes a small multilingual corpus (corpus.jsonl, 31 passages in 8 languages) with core's
 * M3Index, then answers queries in several languages. For each query it prints the top passages
 * with the dense, sparse (lexical) and ColBERT scores side by side, and the fused score that ranks
 * them: (0.4·dense + 0.2·sparse + 0.4·colbert) / 1.0, FlagEmbedding's combined score.
 *
 *   pnpm demo                                         # BAAI/bge-m3 (downloaded once, ~2.3 GB)
 *   pnpm demo -- --model test/fixtures/tiny-m3-A      # any local model directory
 *   pnpm demo -- --dtype q8                           # the int8 model (~570 MB)
 *   pnpm demo -- --query "Quel est le plus long fleuve de France ?" --query "長江"
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL, M3Encoder, M3Error, M3Index, checkModel, createCliProgress, defaultCacheDir, isRepoId } from '@bgem3/core';

const USAGE = `Usage: pnpm demo -- [--model <dir|repo>] [--dtype fp32|q8] [--k N] [--query "…" …]

  --model <dir|repo>  a local model directory or a Hugging Face repo id (default ${DEFAULT_MODEL},
                      downloaded once into the Hugging Face cache, about 2.3 GB)
  --dtype fp32|q8     q8 = the int8 backbone (about 570 MB for ${DEFAULT_MODEL}; default fp32)
  --k N               results per query (default 3)
  --query "…"         a query of your own (repeatable); default: six queries in six languages`;

/** The default queries: several languages, several of them answered by a passage in another one. */
const DEFAULT_QUERIES = [
  { lang: 'en', text: 'Which is the deepest lake in the world?' },
  { lang: 'zh', text: '世界上最高的山是哪座？' },
  { lang: 'ja', text: '日本で一番高い山はどこですか？' },
  { lang: 'ar', text: 'ما هو أطول نهر في أفريقيا؟' },
  { lang: 'de', text: 'Wer hat den Buchdruck mit beweglichen Lettern erfunden?' },
  { lang: 'es', text: '¿Quién recibió dos premios Nobel?' },
];
const WEIGHTS = /** @type {[number, number, number]} */ ([0.4, 0.2, 0.4]);

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv[0] === '--' ? argv.slice(1) : argv,
      options: {
        model: { type: 'string', default: DEFAULT_MODEL },
        dtype: { type: 'string' },
        k: { type: 'string', default: '3' },
        query: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    usageError(err.message);
  }
  const { values } = parsed;
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.dtype !== undefined && values.dtype !== 'fp32' && values.dtype !== 'q8') usageError(`--dtype must be fp32 or q8, got ${values.dtype}`);
  const k = Number(values.k);
  if (!Number.isInteger(k) || k < 1) usageError(`--k must be a positive integer, got ${values.k}`);
  return { model: localPath(values.model), dtype: values.dtype, k, queries: values.query?.map((text) => ({ lang: '', text })) ?? DEFAULT_QUERIES };
}

function usageError(message) {
  console.error(`demo: ${message}\n\n${USAGE}`);
  process.exit(1);
}

/**
 * A relative directory is taken from where you ran the command: `pnpm --filter … start` runs the
 * script inside the example's folder, while INIT_CWD keeps the directory pnpm was started in.
 */
function localPath(model) {
  if (existsSync(model)) return resolve(model);
  const initCwd = process.env.INIT_CWD;
  if (initCwd && existsSync(resolve(initCwd, model))) return resolve(initCwd, model);
  return model;
}

// ---------------------------------------------------------------------------------------------
// Table printing: plain padded columns. CJK characters take two terminal cells and combining
// marks none, so widths are counted in cells, not in UTF-16 code units.

const WIDE = /[\u1100-\u115F\u2E80-\u303E\u3041-\u33FF\u3400-\u4DBF\u4E00-\u9FFF\uA000-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6\u{1F300}-\u{1FAFF}\u{20000}-\u{3FFFD}]/u;
const ZERO = /[\p{Mn}\p{Me}\u200B-\u200F\uFEFF]/u;

function cellWidth(s) {
  let w = 0;
  for (const ch of s) w += ZERO.test(ch) ? 0 : WIDE.test(ch) ? 2 : 1;
  return w;
}

function truncate(s, width) {
  if (cellWidth(s) <= width) return s;
  let out = '';
  let w = 0;
  for (const ch of s) {
    const cw = ZERO.test(ch) ? 0 : WIDE.test(ch) ? 2 : 1;
    if (w + cw > width - 1) break;
    out += ch;
    w += cw;
  }
  return `${out}…`;
}

function pad(s, width, align = 'left') {
  const fill = ' '.repeat(Math.max(0, width - cellWidth(s)));
  return align === 'left' ? s + fill : fill + s;
}

/** Prints rows under a header; the last column is cut to the terminal's width. */
function printTable(columns, rows) {
  const widths = columns.map((c, i) => Math.max(c.min ?? 0, cellWidth(c.title), ...rows.map((r) => cellWidth(r[i]))));
  const fixed = widths.slice(0, -1).reduce((a, b) => a + b + 2, 2);
  const last = Math.max(24, (process.stdout.columns || 120) - fixed);
  widths[widths.length - 1] = Math.min(widths[widths.length - 1], last);
  const line = (cells) =>
    `  ${cells.map((c, i) => (i === cells.length - 1 ? truncate(c, widths[i]) : pad(c, widths[i], columns[i].align))).join('  ')}`.trimEnd();
  console.log(line(columns.map((c) => c.title)));
  console.log(line(widths.map((w) => '─'.repeat(w))));
  for (const r of rows) console.log(line(r));
}

// ---------------------------------------------------------------------------------------------

/** Exits with a short explanation when the model cannot be had; other errors are rethrown. */
function explainLoadError(err, model) {
  if (!(err instanceof M3Error)) throw err;
  const firstLine = String(err.message).split('\n')[0];
  if (err.code === 'HUB_ERROR' || err.code === 'OFFLINE_MISS') {
    const cache = defaultCacheDir();
    const what =
      err.code === 'OFFLINE_MISS'
        ? [`offline mode (HF_HUB_OFFLINE) is on and ${model} is not in the Hugging Face cache (${cache}).`]
        : [
            `${model} could not be downloaded from the Hugging Face Hub, and the cache (${cache}) has no complete copy.`,
            // core's message names the endpoint and the cause; its first sentence is enough here
            `  ${firstLine.split(/(?<=\.) /)[0]}`,
          ];
    console.error(
      [
        `demo: cannot load the model: ${what[0]}`,
        ...what.slice(1),
        '',
        `${DEFAULT_MODEL} is downloaded from the Hugging Face Hub on first use (about 2.3 GB; about 570 MB with --dtype q8), then cached. Without network:`,
        '  - point --model at a local model directory (a copy of BAAI/bge-m3, or the tiny test model):',
        '      pnpm demo -- --model test/fixtures/tiny-m3-A',
        '  - or use a mirror of the Hub:            HF_ENDPOINT=https://<mirror> pnpm demo',
        '  - once downloaded, work from the cache:  HF_HUB_OFFLINE=1 pnpm demo',
      ].join('\n'),
    );
    process.exit(1);
  }
  if (err.code === 'MODEL_NOT_FOUND' || err.code === 'MODEL_FILE_INVALID' || err.code === 'LAYOUT_UNSUPPORTED' || err.code === 'INTEGRITY') {
    console.error(`demo: cannot load the model ${model}: ${firstLine}`);
    console.error('  --model takes a model directory (e.g. test/fixtures/tiny-m3-A) or a Hugging Face repo id (default BAAI/bge-m3).');
    process.exit(1);
  }
  throw err;
}

/**
 * `bgem3 check` once: BAAI/bge-m3 from the Hub is checked right after its download (the first
 * run) against BAAI's published example; a cached copy was checked then and is not again. Any
 * other model is checked every run, against what holds for every model (no published figures
 * are its own). Returns the line to print, or undefined when there is nothing to check.
 */
async function verifyOnce(encoder, opts, { remote, downloaded }) {
  const bgeM3 = remote && opts.model.toLowerCase() === DEFAULT_MODEL.toLowerCase();
  if (bgeM3 && !downloaded) return undefined;
  const result = await checkModel(encoder, opts.dtype ? { dtype: opts.dtype } : {});
  if (result.verified && result.reference?.model === 'BAAI/bge-m3') return "model verified against BAAI's published example";
  if (!result.ok) return `${result.summary} (every figure: pnpm -s bgem3 check --model ${opts.model}${opts.dtype ? ` --dtype ${opts.dtype}` : ''})`;
  return result.summary; // the universal checks' verdict: no published figures apply to this model
}

async function main() {
  const opts = parseCli(process.argv.slice(2));
  const corpusUrl = new URL('./corpus.jsonl', import.meta.url);
  const docs = readFileSync(corpusUrl, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));

  const remote = !existsSync(opts.model) && isRepoId(opts.model);
  console.log('BGE-M3 demo: dense + sparse + ColBERT from one forward pass, hybrid search with rerank');
  if (remote) {
    const size = opts.model.toLowerCase() !== DEFAULT_MODEL.toLowerCase() ? '' : opts.dtype === 'q8' ? ' (about 570 MB)' : ' (about 2.3 GB)';
    console.error(`Loading ${opts.model}${opts.dtype === 'q8' ? ' (q8)' : ''}: the first run downloads it from the Hugging Face Hub${size} into ${defaultCacheDir()}; later runs use that cache.`);
  }

  const progress = createCliProgress();
  let downloaded = false; // files came from the network in this run (the first run, or a new revision)
  const onProgress = (p) => {
    downloaded = true;
    progress.onProgress(p);
  };
  let encoder;
  try {
    encoder = await M3Encoder.load(opts.model, { ...(opts.dtype ? { dtype: opts.dtype } : {}), hub: { onProgress } });
  } catch (err) {
    progress.stop();
    explainLoadError(err, opts.model);
  }
  progress.stop();

  try {
    const check = await verifyOnce(encoder, opts, { remote, downloaded });
    const t0 = performance.now();
    const index = await M3Index.create({ encoder });
    await index.add(docs.map((d) => ({ id: d.id, text: d.text, metadata: { lang: d.lang, title: d.title } })));
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    const langs = new Set(docs.map((d) => d.lang));
    console.log(`model:   ${opts.model}${opts.dtype ? ` (${opts.dtype})` : ''}  [${encoder.modelId}]`);
    if (check) console.log(`check:   ${check}`);
    console.log(`corpus:  ${index.size} passages in ${langs.size} languages (${[...langs].join(', ')}), indexed in ${seconds} s`);
    console.log(`ranking: dense top-100 ∪ sparse top-100, rescored by all three; fused = (${WEIGHTS[0]}·dense + ${WEIGHTS[1]}·sparse + ${WEIGHTS[2]}·colbert) / ${WEIGHTS.reduce((a, b) => a + b, 0).toFixed(1)}`);

    const columns = [
      { title: '#', align: 'right' },
      { title: 'id', align: 'left', min: Math.max(...docs.map((d) => cellWidth(d.id))) },
      { title: 'lang', align: 'left' },
      { title: 'dense', align: 'right', min: 7 },
      { title: 'sparse', align: 'right', min: 7 },
      { title: 'colbert', align: 'right', min: 7 },
      { title: 'fused', align: 'right', min: 7 },
      { title: 'passage', align: 'left' },
    ];
    for (const q of opts.queries) {
      const hits = await index.search(q.text, { k: opts.k, fetchK: 100, weights: WEIGHTS });
      console.log(`\nQuery${q.lang ? ` (${q.lang})` : ''}: ${q.text}`);
      if (hits.length === 0) {
        console.log('  (no results)');
        continue;
      }
      printTable(
        columns,
        hits.map((h, i) => [
          String(i + 1),
          h.id,
          String(h.metadata.lang ?? ''),
          h.scores.dense.toFixed(4),
          h.scores.sparse.toFixed(4),
          h.scores.colbert.toFixed(4),
          h.score.toFixed(4),
          h.text,
        ]),
      );
    }
    if (encoder.dim !== 1024) {
      console.log(`\nNote: this model's dense vectors have ${encoder.dim} dimensions (BGE-M3's have 1024), so it is a test model;`);
      console.log('its rankings mean nothing, but the pipeline and the scores shown are the same as with BAAI/bge-m3.');
    }
  } finally {
    await encoder.close();
  }
}

main().catch((err) => {
  console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env.BGEM3_DEBUG && err instanceof Error) console.error(err.stack);
  process.exit(1);
});
