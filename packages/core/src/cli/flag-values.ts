/**
 * Parsers of CLI flag values. Strict on purpose: `Number()` reads `''` as 0, `'0x10'` as 16 and
 * `' 5 '` as 5, so `--weights 1,,1` became `1,0,1` and `--k 0x10` became 16. A value is
 * accepted only when it is written as a plain decimal number.
 */
import { InvalidArgumentError } from 'commander';

/** A plain decimal number: optional sign, digits with an optional fraction, optional exponent. */
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^\+?\d+$/;

/** `v` as a finite number, or undefined when it is not written as a plain decimal number. */
export function parseDecimal(v: string): number | undefined {
  const s = v.trim();
  if (!DECIMAL.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** Parser of a positive integer flag (`--k 3`); `0`, `1.5`, `0x10`, `1e3` and `''` are refused. */
export function positiveInt(name: string) {
  return (v: string): number => {
    const s = v.trim();
    const n = INTEGER.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
}

/**
 * Parses a comma-separated list of exactly `length` numbers, naming the entry that is wrong:
 * an empty entry (`1,,1`), a non-number, a non-finite number or a wrong count.
 */
export function numberList(v: string, length: number, example: string): number[] {
  const parts = v.split(',');
  if (parts.length !== length) {
    throw new InvalidArgumentError(`expected ${length} comma-separated numbers (e.g. ${example}), got ${parts.length} entries in ${JSON.stringify(v)}`);
  }
  return parts.map((p, i) => {
    if (p.trim() === '') throw new InvalidArgumentError(`entry ${i + 1} of ${JSON.stringify(v)} is empty: expected ${length} comma-separated numbers (e.g. ${example})`);
    const n = parseDecimal(p);
    if (n === undefined) throw new InvalidArgumentError(`entry ${i + 1} of ${JSON.stringify(v)} is not a finite decimal number: ${JSON.stringify(p.trim())}`);
    return n;
  });
}

/**
 * Parser of `--weights dense,sparse,colbert`: three non-negative numbers, not all zero. The
 * library checks the weights again (range, sum); this gives the CLI's own wording first.
 */
export function parseWeights(v: string): [number, number, number] {
  const expected = 'expected three non-negative numbers "dense,sparse,colbert", not all zero (e.g. 0.4,0.2,0.4)';
  let w: number[];
  try {
    w = numberList(v, 3, '0.4,0.2,0.4');
  } catch (err) {
    throw new InvalidArgumentError(`${expected}; ${(err as Error).message.replace(/: expected .*$/, '').replace(/^expected .*, got/, 'got')}`);
  }
  if (w.some((x) => x < 0) || w.every((x) => x === 0)) throw new InvalidArgumentError(`${expected}, got ${JSON.stringify(v)}`);
  return w as [number, number, number];
}
