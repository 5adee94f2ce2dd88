// The `twill explain` subcommand: reads this node's network (or a named
// namespace's) and writes the explanation to stdout or --out.
import { writeFileSync } from 'node:fs';
import { explain } from '../inspect/explain.js';
import { EXPLAIN_FORMATS, render, type ExplainFormat } from '../inspect/render.js';

export interface ExplainCliOptions {
  netns?: string;
  format: string;
  out?: string;
  subnetFile?: string;
  cniDataDir?: string;
}

export class ExplainUsageError extends Error {}

export async function explainCommand(opts: ExplainCliOptions): Promise<void> {
  if (!EXPLAIN_FORMATS.includes(opts.format as ExplainFormat)) {
    throw new ExplainUsageError(`--format must be one of ${EXPLAIN_FORMATS.join(', ')}, got "${opts.format}"`);
  }
  const e = await explain({ netns: opts.netns, subnetFile: opts.subnetFile, cniDataDir: opts.cniDataDir });
  const text = render(e, opts.format as ExplainFormat);
  if (opts.out) writeFileSync(opts.out, text);
  else process.stdout.write(text);
}
