/** The human-readable form of a {@link CheckResult} (what `bgem3 check` prints). */
import { OUTPUT_NAMES } from './check-model.js';
import type { CheckResult } from './types.js';

function num(x: number | undefined): string {
  if (x === undefined) return '—';
  if (!Number.isFinite(x)) return String(x);
  return x === 0 ? '0' : Number(x.toPrecision(5)).toString();
}

function dev(x: number | undefined): string {
  if (x === undefined) return '—';
  if (!Number.isFinite(x)) return String(x);
  return x === 0 ? '0' : x.toExponential(1);
}

/** Width in terminal cells, good enough for the check's ASCII and quoted tokens. */
const width = (s: string) => [...s].length;
const pad = (s: string, w: number, right = false) => (right ? ' '.repeat(Math.max(0, w - width(s))) + s : s + ' '.repeat(Math.max(0, w - width(s))));

/**
 * Formats a check result as a table (each figure beside the published one, with deviation and
 * verdict), the universal checks, and the summary line last.
 */
export function formatCheckReport(result: CheckResult): string {
  const lines: string[] = [];
  lines.push(`model:      ${result.modelId} (${result.dtype})`);
  if (result.reference) {
    lines.push(`reference:  ${result.reference.model}, ${result.reference.precision} (${result.reference.source})`);
    lines.push(`applies:    ${result.reason}`);
    if (result.tolerance) lines.push(`tolerance:  dense ${result.tolerance.dense}, weights ${result.tolerance.weights} (${result.tolerance.basis})`);
  } else {
    lines.push(`reference:  none applies (${result.reason})`);
  }
  lines.push('');
  if (result.figures.length > 0) {
    const rows = result.figures.map((f) => [
      OUTPUT_NAMES[f.output],
      f.label,
      num(f.value),
      num(f.published),
      dev(f.deviation),
      f.ok === undefined ? '—' : f.ok ? 'ok' : 'OFF',
      f.note ?? '',
    ]);
    const head = ['output', 'figure', 'ours', 'published', 'deviation', 'verdict', ''];
    const w = head.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i]))));
    const right = [false, false, true, true, true, false, false];
    const fmt = (r: string[]) => `  ${r.map((c, i) => pad(c, w[i], right[i])).join('  ')}`.trimEnd();
    lines.push(fmt(head), fmt(w.map((n) => '─'.repeat(n))), ...rows.map(fmt), '');
  }
  lines.push('universal checks:');
  for (const u of result.universal) lines.push(`  ${u.status === 'pass' ? 'pass' : u.status === 'fail' ? 'FAIL' : 'skip'}  ${u.name}: ${u.detail}`);
  lines.push('', result.summary);
  return `${lines.join('\n')}\n`;
}
