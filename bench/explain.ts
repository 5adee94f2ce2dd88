// npm run bench -- explain: `twill explain --format json` on a node with many pods
// (each its own namespace, as in test/inspect/fixture.ts), in-process and as the
// command a person runs (a new process each time). Target: ≤ 1 s for 200 pods.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { explain } from '../src/inspect/explain.js';
import { renderJson } from '../src/inspect/render.js';
import { buildExplainNode } from '../test/inspect/fixture.js';
import { percentile, round, table } from './stats.js';

const execFileP = promisify(execFile);

export interface ExplainBenchOptions {
  pods: number;
  iterations: number;
}

export interface ExplainBenchResult {
  bench: 'explain';
  pods: number;
  iterations: number;
  buildS: number;
  inProcessMs: { p50: number; max: number };
  cliMs: { p50: number; max: number };
  jsonBytes: number;
  targetMs: number;
  withinTarget: boolean;
}

const TARGET_MS = 1000;

export async function explainBench(opts: ExplainBenchOptions): Promise<ExplainBenchResult> {
  const t0 = performance.now();
  // Pod addresses come from one /24 in the fixture: more than 253 pods would leave it.
  if (opts.pods > 253) throw new Error('--pods must be at most 253 (one /24 of pod addresses)');
  const n = await buildExplainNode(opts.pods);
  const buildS = (performance.now() - t0) / 1000;
  try {
    const read = { netns: n.node.name, subnetFile: n.subnetFile, cniDataDir: n.dataDir };
    const inProcess: number[] = [];
    let jsonBytes = 0;
    for (let i = 0; i < opts.iterations; i++) {
      const s = performance.now();
      const e = await explain(read);
      const json = renderJson(e);
      inProcess.push(performance.now() - s);
      jsonBytes = json.length;
      const pods = e.namespaces.filter((x) => x.role === 'pod').length;
      if (pods !== opts.pods) throw new Error(`explain found ${pods} pod namespaces, not ${opts.pods}`);
    }
    const bin = new URL('../../bin/twill', import.meta.url).pathname;
    const cli: number[] = [];
    for (let i = 0; i < opts.iterations; i++) {
      const s = performance.now();
      await execFileP(bin, ['explain', '--netns', n.node.name, '--format', 'json', '--subnet-file', n.subnetFile, '--cni-data-dir', n.dataDir], { maxBuffer: 256 << 20 });
      cli.push(performance.now() - s);
    }
    const stat = (xs: number[]) => ({ p50: round(percentile(xs, 50), 1), max: round(Math.max(...xs), 1) });
    const result: ExplainBenchResult = {
      bench: 'explain',
      pods: opts.pods,
      iterations: opts.iterations,
      buildS: round(buildS, 1),
      inProcessMs: stat(inProcess),
      cliMs: stat(cli),
      jsonBytes,
      targetMs: TARGET_MS,
      withinTarget: percentile(cli, 50) <= TARGET_MS,
    };
    console.log(`node with ${opts.pods} pods built in ${result.buildS} s; ${opts.iterations} runs each; JSON ${jsonBytes} bytes\n`);
    console.log(
      table([
        ['twill explain --format json', 'p50 ms', 'max ms'],
        ['in-process (read + diagnose + render)', result.inProcessMs.p50, result.inProcessMs.max],
        ['bin/twill (new process)', result.cliMs.p50, result.cliMs.max],
      ]),
    );
    console.log(`\ntarget ≤ ${TARGET_MS} ms (CLI p50): ${result.withinTarget ? 'met' : 'NOT met'}\n`);
    return result;
  } finally {
    await n.cleanup();
  }
}
