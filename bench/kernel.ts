// npm run bench -- kernel: veth pairs created into namespaces (peer named, up,
// with an address) and deleted again, three ways in one run: twill's kernel
// layer, one `ip` process per operation, and `ip -batch` (the kernel's floor).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Handle } from '../src/kernel/index.js';
import { TestHosts, type TestHost } from '../test/support/hosts.js';
import { percentile, round, table } from './stats.js';

const execFileP = promisify(execFile);
const ip = (args: string[]) => execFileP('ip', args);

export interface KernelBenchOptions {
  pairs: number;
  namespaces: number;
}

interface Phase {
  totalMs: number;
  perPairMs: number[];
}

interface Way {
  name: string;
  create(l: Layout, opts: KernelBenchOptions): Promise<Phase>;
  remove(l: Layout, opts: KernelBenchOptions): Promise<Phase>;
}

interface Layout {
  host: TestHost;
  pods: TestHost[];
  dir: string;
}

const hostEnd = (i: number) => `tvb${i}`;
const podEnd = (i: number) => `eth${i}`;
const podAddr = (i: number) => `10.200.${i >> 8}.${(i & 0xff) + 1}/16`;

async function layout(hosts: TestHosts, way: string, opts: KernelBenchOptions, dir: string): Promise<Layout> {
  const host = await hosts.host(`${way}-h`);
  const pods: TestHost[] = [];
  for (let p = 0; p < opts.namespaces; p++) pods.push(await hosts.host(`${way}-p${p}`));
  return { host, pods, dir };
}

/** Runs step(0..n-1) in order, timing each into perPairMs (added to what is there). */
async function timed(n: number, step: (i: number) => Promise<unknown>, perPairMs: number[] = new Array<number>(n).fill(0)): Promise<Phase> {
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await step(i);
    perPairMs[i]! += performance.now() - t;
  }
  return { totalMs: performance.now() - start, perPairMs };
}

/** Pair indices whose peer lives in pod namespace p, in creation order. */
const pairsOf = (p: number, opts: KernelBenchOptions): number[] =>
  Array.from({ length: opts.pairs }, (_, i) => i).filter((i) => i % opts.namespaces === p);

// All ways do the same operations in the same order, the order `ip -batch`
// imposes: every pair from the host namespace first, then each pod namespace
// brings its peers up and addresses them. (Interleaving create / up / address
// per pair measured 20-50 % slower for twill on this kernel: each request then
// waits behind the kernel's deferred work for the link just created.)
const twill: Way = {
  name: 'twill',
  async create(l, opts) {
    const start = performance.now();
    // Opening the handles is part of the cost.
    const host = Handle.open(l.host.netns);
    const pods = l.pods.map((p) => Handle.open(p.netns));
    const made = await timed(opts.pairs, (i) =>
      host.addLink({ kind: 'veth', name: hostEnd(i), up: true, peer: { name: podEnd(i), netns: l.pods[i % l.pods.length]!.netns } }),
    );
    for (let p = 0; p < pods.length; p++) {
      for (const i of pairsOf(p, opts)) {
        const t = performance.now();
        const peer = await pods[p]!.getLink(podEnd(i));
        await pods[p]!.setLinkUp(peer);
        await pods[p]!.addAddr(peer, podAddr(i));
        made.perPairMs[i]! += performance.now() - t;
      }
    }
    host.close();
    for (const h of pods) h.close();
    return { totalMs: performance.now() - start, perPairMs: made.perPairMs };
  },
  async remove(l, opts) {
    const host = Handle.open(l.host.netns);
    const phase = await timed(opts.pairs, (i) => host.deleteLink(hostEnd(i)));
    host.close();
    return phase;
  },
};

const ipPerOp: Way = {
  name: 'ip per op',
  async create(l, opts) {
    const start = performance.now();
    const made = await timed(opts.pairs, (i) =>
      ip(['-n', l.host.name, 'link', 'add', hostEnd(i), 'up', 'type', 'veth', 'peer', 'name', podEnd(i), 'netns', l.pods[i % l.pods.length]!.name]),
    );
    for (let p = 0; p < l.pods.length; p++) {
      for (const i of pairsOf(p, opts)) {
        const t = performance.now();
        await ip(['-n', l.pods[p]!.name, 'link', 'set', podEnd(i), 'up']);
        await ip(['-n', l.pods[p]!.name, 'addr', 'add', podAddr(i), 'dev', podEnd(i)]);
        made.perPairMs[i]! += performance.now() - t;
      }
    }
    return { totalMs: performance.now() - start, perPairMs: made.perPairMs };
  },
  remove: (l, opts) => timed(opts.pairs, (i) => ip(['-n', l.host.name, 'link', 'del', hostEnd(i)])),
};

// One process per namespace: `ip -batch` takes no per-line -n.
const ipBatch: Way = {
  name: 'ip -batch',
  async create(l, opts) {
    const start = performance.now();
    const hostLines: string[] = [];
    const podLines: string[][] = l.pods.map(() => []);
    for (let i = 0; i < opts.pairs; i++) {
      const p = i % l.pods.length;
      hostLines.push(`link add ${hostEnd(i)} up type veth peer name ${podEnd(i)} netns ${l.pods[p]!.name}`);
      podLines[p]!.push(`link set ${podEnd(i)} up`, `addr add ${podAddr(i)} dev ${podEnd(i)}`);
    }
    writeFileSync(join(l.dir, 'host'), `${hostLines.join('\n')}\n`);
    await ip(['-n', l.host.name, '-batch', join(l.dir, 'host')]);
    for (let p = 0; p < l.pods.length; p++) {
      writeFileSync(join(l.dir, `pod${p}`), `${podLines[p]!.join('\n')}\n`);
      await ip(['-n', l.pods[p]!.name, '-batch', join(l.dir, `pod${p}`)]);
    }
    return { totalMs: performance.now() - start, perPairMs: [] };
  },
  async remove(l, opts) {
    const start = performance.now();
    writeFileSync(join(l.dir, 'del'), `${Array.from({ length: opts.pairs }, (_, i) => `link del ${hostEnd(i)}`).join('\n')}\n`);
    await ip(['-n', l.host.name, '-batch', join(l.dir, 'del')]);
    return { totalMs: performance.now() - start, perPairMs: [] };
  },
};

/** Every way must have done the same work: all peers present, up and addressed. */
async function verify(l: Layout, opts: KernelBenchOptions, way: string): Promise<void> {
  let found = 0;
  for (const pod of l.pods) {
    const { stdout } = await ip(['-n', pod.name, '-j', 'addr', 'show']);
    const peers = (JSON.parse(stdout) as { ifname: string; flags: string[]; addr_info: { family: string }[] }[]).filter((x) => x.ifname.startsWith('eth'));
    found += peers.filter((x) => x.flags.includes('UP') && x.addr_info.some((a) => a.family === 'inet')).length;
  }
  if (found !== opts.pairs) throw new Error(`${way}: expected ${opts.pairs} peers up with an address, found ${found}`);
  const { stdout } = await ip(['-n', l.host.name, '-j', 'link', 'show', 'type', 'veth']);
  const up = (JSON.parse(stdout) as { flags: string[] }[]).filter((x) => x.flags.includes('UP')).length;
  if (up !== opts.pairs) throw new Error(`${way}: expected ${opts.pairs} host ends up, found ${up}`);
}

export async function kernelBench(opts: KernelBenchOptions): Promise<Record<string, unknown>> {
  const hosts = new TestHosts();
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-'));
  try {
    process.stderr.write(`kernel bench: ${opts.pairs} veth pairs into ${opts.namespaces} namespaces, three ways\n`);
    const results: Record<string, { create: Phase; delete: Phase }> = {};
    for (const way of [twill, ipPerOp, ipBatch]) {
      const l = await layout(hosts, way.name.replace(/\W+/g, ''), opts, dir);
      process.stderr.write(`  ${way.name}: creating ${opts.pairs} pairs... `);
      const create = await way.create(l, opts);
      await verify(l, opts, way.name);
      process.stderr.write(`${round(create.totalMs, 0)} ms; deleting... `);
      const del = await way.remove(l, opts);
      process.stderr.write(`${round(del.totalMs, 0)} ms\n`);
      results[way.name] = { create, delete: del };
    }
    const t = results.twill!;
    const i = results['ip per op']!;
    const b = results['ip -batch']!;
    const rows: (string | number)[][] = [['phase', 'way', 'total ms', 'per pair ms', 'p50 ms', 'p95 ms']];
    for (const phase of ['create', 'delete'] as const) {
      for (const [name, w] of Object.entries(results)) {
        const ph = w[phase];
        rows.push([
          phase,
          name,
          round(ph.totalMs, 0),
          round(ph.totalMs / opts.pairs),
          ph.perPairMs.length ? round(percentile(ph.perPairMs, 50)) : '-',
          ph.perPairMs.length ? round(percentile(ph.perPairMs, 95)) : '-',
        ]);
      }
    }
    console.log(table(rows));
    return {
      bench: 'kernel',
      ratio: round(i.create.totalMs / t.create.totalMs),
      vsBatch: round(b.create.totalMs / t.create.totalMs),
      pairs: opts.pairs,
      namespaces: opts.namespaces,
      createMs: { twill: round(t.create.totalMs, 0), ip: round(i.create.totalMs, 0), batch: round(b.create.totalMs, 0) },
      deleteMs: { twill: round(t.delete.totalMs, 0), ip: round(i.delete.totalMs, 0), batch: round(b.delete.totalMs, 0) },
      deleteRatio: round(i.delete.totalMs / t.delete.totalMs),
      deleteVsBatch: round(b.delete.totalMs / t.delete.totalMs),
    };
  } finally {
    await hosts.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}
