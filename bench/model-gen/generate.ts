#!/usr/bin/env node
/**
 * CLI of the benchmark model generator.
 *
 *   node --import tsx bench/model-gen/generate.ts --out bench/.models/m3-full \
 *     [--variant backbone|three-output] [--dtype fp32|int8] [--attention unfused|fused] \
 *     [--layers 24 --hidden 1024 --heads 16 --ffn 4096 --vocab 250002 --positions 8194] \
 *     [--seed 1] [--std 0.02] [--tiny] [--no-extras] [--external-data | --single-file]
 *
 * Defaults are the real BGE-M3 shape; `--tiny` starts from the test shape (2 × 32, 4 heads, FFN 64,
 * vocab 3002). Several variants can be written into the same --out directory.
 */
import { parseArgs } from 'node:util';
import { fullConfig, generateModel, tinyConfig, type Attention, type Dtype, type Variant } from './index.ts';

function usage(msg?: string): never {
  if (msg) console.error(`error: ${msg}\n`);
  console.error(
    'usage: generate.ts --out DIR [--variant backbone|three-output] [--dtype fp32|int8] [--attention unfused|fused]\n' +
      '       [--layers N --hidden N --heads N --ffn N --vocab N --positions N] [--seed N] [--std X] [--tiny]\n' +
      '       [--no-extras] [--external-data|--single-file]',
  );
  process.exit(msg ? 2 : 0);
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) usage(`--${name} must be a number, got ${v}`);
  return n;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      variant: { type: 'string', default: 'backbone' },
      dtype: { type: 'string', default: 'fp32' },
      attention: { type: 'string', default: 'unfused' },
      layers: { type: 'string' },
      hidden: { type: 'string' },
      heads: { type: 'string' },
      ffn: { type: 'string' },
      vocab: { type: 'string' },
      positions: { type: 'string' },
      seed: { type: 'string' },
      std: { type: 'string' },
      tiny: { type: 'boolean', default: false },
      'no-extras': { type: 'boolean', default: false },
      'external-data': { type: 'boolean' },
      'single-file': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) usage();
  if (!values.out) usage('--out is required');
  if (!['backbone', 'three-output'].includes(values.variant!)) usage(`bad --variant ${values.variant}`);
  if (!['fp32', 'int8'].includes(values.dtype!)) usage(`bad --dtype ${values.dtype}`);
  if (!['unfused', 'fused'].includes(values.attention!)) usage(`bad --attention ${values.attention}`);
  const overrides = Object.fromEntries(
    (['layers', 'hidden', 'heads', 'ffn', 'vocab', 'positions', 'seed', 'std'] as const)
      .map((k) => [k, int(k, values[k])])
      .filter(([, v]) => v !== undefined),
  );
  const config = values.tiny ? tinyConfig(overrides) : fullConfig(overrides);
  const externalData = values['external-data'] ? true : values['single-file'] ? false : undefined;
  console.error(
    `generating ${values.variant} ${values.dtype} ${values.attention}: ${config.layers} layers × ${config.hidden}, ` +
      `${config.heads} heads, FFN ${config.ffn}, vocab ${config.vocab}, positions ${config.positions}, seed ${config.seed}`,
  );
  const res = generateModel({
    out: values.out,
    config,
    variant: values.variant as Variant,
    dtype: values.dtype as Dtype,
    attention: values.attention as Attention,
    extras: !values['no-extras'],
    externalData,
    log: (m) => console.error(m),
  });
  for (const f of res.files) console.error(`  ${f.path}  ${(f.bytes / 1e6).toFixed(1)} MB`);
  console.error(`${(res.parameters / 1e6).toFixed(1)}M backbone parameters, ${res.seconds.toFixed(1)} s`);
  console.log(JSON.stringify({ model: res.modelPath, seconds: res.seconds, files: res.files }));
}

main();
