// Plain-text tables for a terminal: columns padded to their widest cell.
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** Progress lines on stderr (stdout carries the result), with the time since `start`. */
export function progressPrinter(enabled: boolean): (msg: string) => void {
  const t0 = Date.now();
  return (msg) => {
    if (enabled) process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
  };
}
