/**
 * A model's identity from its files, not from where they are: the same model copied to another
 * directory has the same id, and a different model (other weights, heads, tokenizer or config)
 * has another. Indexes record it (`modelId`) to refuse being searched with another model.
 *
 * Cheap by design: small files (config, tokenizer, heads, graphs up to {@link WHOLE_FILE_LIMIT})
 * are hashed whole; a larger file (the multi-GB external weights) contributes its size and
 * {@link SAMPLES} evenly spread 64 KiB samples, its first and last bytes included, so that load
 * reads a few MB, not gigabytes. Two weight files of the same size that differ only between samples
 * would share an id; a fine-tuned model differs everywhere.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, existsSync, openSync, readSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ModelPaths } from './layout.js';

/** Files up to this size are hashed whole. */
const WHOLE_FILE_LIMIT = 64 * 2 ** 20;
const SAMPLES = 32;
const SAMPLE_BYTES = 64 * 2 ** 10;
/** Bump when the recipe changes (ids then change once, for every model). */
const RECIPE = 'bgem3-model-id/1';

function addFile(h: Hash, role: string, path: string | undefined): void {
  h.update(`\n${role}:`);
  if (!path || !existsSync(path)) {
    h.update('absent');
    return;
  }
  const size = statSync(path).size;
  h.update(`${size}:`);
  if (size <= WHOLE_FILE_LIMIT) {
    h.update(readFileSync(path));
    return;
  }
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(SAMPLE_BYTES);
    for (let i = 0; i < SAMPLES; i++) {
      const at = Math.floor(((size - SAMPLE_BYTES) * i) / (SAMPLES - 1));
      const n = readSync(fd, buf, 0, SAMPLE_BYTES, at);
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The content identity of a local model: `local:sha256-<24 hex digits>` over config.json,
 * tokenizer.json (+ tokenizer_config.json beside it), the ONNX graph and its external-data file,
 * and both head files (see the module comment for what is hashed whole and what is sampled).
 */
export function localModelId(paths: ModelPaths): string {
  const h = createHash('sha256').update(RECIPE);
  addFile(h, 'config', paths.config);
  addFile(h, 'tokenizer', paths.tokenizer);
  addFile(h, 'tokenizer_config', join(dirname(paths.tokenizer), 'tokenizer_config.json'));
  addFile(h, 'graph', paths.onnx);
  // The external weights beside the graph, under either name exporters use.
  const data = [`${paths.onnx}_data`, `${paths.onnx}.data`].find((p) => existsSync(p));
  addFile(h, 'graph_data', data);
  addFile(h, 'colbert_head', paths.colbertHead);
  addFile(h, 'sparse_head', paths.sparseHead);
  return `local:sha256-${h.digest('hex').slice(0, 24)}`;
}


