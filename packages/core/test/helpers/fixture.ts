// Paths to the tiny-m3-A fixture (a BGE-M3-shaped model with FlagEmbedding's outputs) and its golden data.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const FIXTURE = fileURLToPath(new URL('../../../../test/fixtures/tiny-m3-A', import.meta.url));

let cached: any;
/** golden.json, parsed once per process. */
export function golden(): any {
  cached ??= JSON.parse(readFileSync(`${FIXTURE}/golden.json`, 'utf8'));
  return cached;
}
