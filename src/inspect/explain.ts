// `twill explain`: read the node, diagnose it, render it.
import { diagnose } from './findings.js';
import type { Explanation } from './model.js';
import { readNode, type ReadOptions } from './read.js';

export async function explain(opts: ReadOptions = {}): Promise<Explanation> {
  const model = await readNode(opts);
  return { ...model, findings: diagnose(model) };
}
