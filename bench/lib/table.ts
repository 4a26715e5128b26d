/** Markdown tables and number formatting for the report. */

export type Align = 'left' | 'right';

/** A GitHub-flavoured markdown table with padded columns (readable as plain text too). */
export function markdownTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  align?: readonly Align[],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length), 3));
  const pad = (s: string, i: number) =>
    (align?.[i] ?? 'left') === 'right' ? s.padStart(widths[i]!) : s.padEnd(widths[i]!);
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => pad(c, i)).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => ((align?.[i] ?? 'left') === 'right' ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(headers), rule, ...rows.map((r) => line(headers.map((_, i) => r[i] ?? '')))].join('\n');
}

export function fmtInt(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? 'n/a' : Math.round(n).toLocaleString('en-US');
}

export function fmtMs(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return 'n/a';
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

export function fmtNum(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits);
}

/** An ISO time as a file-name stamp: seconds, no colons (`2026-12-04T23-29-21Z`). */
export function fileStamp(iso: string = new Date().toISOString()): string {
  return iso.replace(/\.\d+Z$/, 'Z').replaceAll(':', '-');
}
