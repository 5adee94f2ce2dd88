// npm run bench -- lab: how long `twill lab up` takes for 3 nodes × 2 pods, and
// what the pod network costs in throughput: iperf3 TCP from a pod on n1 to a pod
// on n2 against the same from node n1 to node n2 over the underlay, as a ratio,
// per backend. One lab per backend, the real CLI (its Node start included).
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packageRoot } from '../src/kernel/native.js';
import { labDir } from '../src/lab/layout.js';
import type { LabState } from '../src/lab/state.js';
import { round, table } from './stats.js';

const execFileP = promisify(execFile);
const BIN_TWILL = join(packageRoot(), 'bin', 'twill');

export interface LabBenchOptions {
  backends: ('vxlan' | 'host-gw')[];
  seconds: number;
}

async function twillLab(args: string[]): Promise<void> {
  await execFileP(process.execPath, [BIN_TWILL, 'lab', ...args], { maxBuffer: 16 << 20 });
}

/** iperf3 client in `from` against a server in `to` at `ip`: the received rate, Gbit/s. */
async function iperf(to: string, ip: string, from: string, seconds: number): Promise<number> {
  const server = spawn('ip', ['netns', 'exec', to, 'iperf3', '-s', '-1', '-B', ip], { stdio: 'ignore' });
  try {
    for (let attempt = 0; ; attempt++) {
      let failure: string;
      try {
        const out = (await execFileP('ip', ['netns', 'exec', from, 'iperf3', '-J', '-c', ip, '-t', String(seconds)], { maxBuffer: 16 << 20 })).stdout;
        // iperf3 -J exits 0 even when it could not connect: the JSON says so.
        const report = JSON.parse(out) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
        if (report.end?.sum_received && !report.error) return report.end.sum_received.bits_per_second / 1e9;
        failure = report.error ?? 'no sum_received in its report';
      } catch (e) {
        failure = (e as Error).message;
      }
      // The server may not listen yet.
      if (attempt >= 20) throw new Error(`iperf3 from ${from} to ${ip} (${to}) failed: ${failure}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    server.kill();
  }
}

export async function labBench(opts: LabBenchOptions): Promise<Record<string, unknown>> {
  if (!existsSync('/usr/bin/iperf3')) throw new Error('the lab benchmark needs iperf3: apt-get install iperf3 (.ci/run installs it)');
  const rows: (string | number)[][] = [['backend', 'lab up 3×2 (s)', 'pod→pod across nodes (Gbit/s)', 'node→node underlay (Gbit/s)', 'ratio']];
  const results: Record<string, unknown> = {};
  for (const backend of opts.backends) {
    const name = `bench-${process.pid}-${backend}`;
    try {
      process.stderr.write(`lab bench (${backend}): lab up 3×2\n`);
      const t0 = performance.now();
      await twillLab(['up', '--name', name, '--nodes', '3', '--pods-per-node', '2', '--backend', backend, '-q']);
      const upSeconds = (performance.now() - t0) / 1000;
      const state = JSON.parse(readFileSync(join(labDir(name), 'state.json'), 'utf8')) as LabState;
      const [n1, n2] = state.nodes as [LabState['nodes'][number], LabState['nodes'][number]];
      const p1 = state.pods.find((p) => p.node === 'n1')!;
      const p2 = state.pods.find((p) => p.node === 'n2')!;
      process.stderr.write(`lab bench (${backend}): iperf3 ${opts.seconds} s, ${p1.name} → ${p2.name}, then ${n1.name} → ${n2.name}\n`);
      const podGbps = await iperf(p2.netns, p2.ip!, p1.netns, opts.seconds);
      const nodeGbps = await iperf(n2.netns, n2.publicIp, n1.netns, opts.seconds);
      const ratio = podGbps / nodeGbps;
      rows.push([backend, round(upSeconds, 2), round(podGbps, 2), round(nodeGbps, 2), round(ratio, 2)]);
      results[backend] = { upSeconds: round(upSeconds, 2), podGbps: round(podGbps, 2), nodeGbps: round(nodeGbps, 2), ratio: round(ratio, 2) };
    } finally {
      await twillLab(['down', '--name', name, '-q']);
    }
  }
  console.log(table(rows));
  return { bench: 'lab', seconds: opts.seconds, ...results };
}
