// npm run bench -- cni: bridge + host-local ADD and DEL as a runtime runs them
// (one process per call), twill vs the reference plugins v1.10.0 in the same
// run, alternating, with where twill's time goes.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { Netns } from '../src/kernel/index.js';
import { TestHosts, type TestHost } from '../test/support/hosts.js';
import { REFERENCE_V1_10, requireReference } from '../test/support/cni.js';
import { percentile, round, table } from './stats.js';

export interface CniBenchOptions {
  iterations: number;
  ipMasq: boolean;
}

export interface Call {
  ms: number;
  code: number;
  stdout: string;
  trace: Record<string, number> | null;
}

/** Runs one plugin process inside `host` (forked from a thread inside it: no `ip netns exec` in the timing). */
export function call(host: Netns, exe: string, env: Record<string, string>, stdin: string): Promise<Call> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = host.run(() => spawn(exe, [], { env, stdio: ['pipe', 'pipe', 'pipe'] }));
    const err: Buffer[] = [];
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - start;
      const line = Buffer.concat(err).toString('utf8').split('\n').find((l) => l.startsWith('twill-trace '));
      resolve({ ms, code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), trace: line ? (JSON.parse(line.slice('twill-trace '.length)) as Record<string, number>) : null });
    });
    child.stdin.end(stdin);
  });
}

const BIN_TWILL = fileURLToPath(new URL('../../bin/twill', import.meta.url));

/**
 * Start-up alone: Node itself and each implementation's `plugin` answering VERSION,
 * alternating, `rounds` times; all with the same minimal environment (a variable such
 * as NODE_EXTRA_CA_CERTS would slow every Node start).
 */
export function startUpAlone(impls: { name: string; dir: string }[], nativeDir: string, rounds: number, plugin = 'bridge'): Record<string, number[]> {
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', TWILL_NATIVE_DIR: nativeDir };
  const starts: Record<string, number[]> = { 'node -e 0': [] };
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    execFileSync(process.execPath, ['-e', '0'], { env });
    starts['node -e 0']!.push(performance.now() - t);
    for (const impl of impls) {
      t = performance.now();
      execFileSync(join(impl.dir, plugin), [], { env: { ...env, CNI_COMMAND: 'VERSION' }, input: '' });
      (starts[`${impl.name} ${plugin} VERSION`] ??= []).push(performance.now() - t);
    }
  }
  return starts;
}

export const startUpRows = (starts: Record<string, number[]>): (string | number)[][] => [
  ['start-up alone (process round trip)', 'p50 ms'],
  ...Object.entries(starts).map(([k, v]) => [k, round(percentile(v, 50), 1)]),
];

/** twill's plugins as a node gets them: `twill cni install` (the SEA binary). */
export function installTwill(dir: string): string {
  mkdirSync(dir);
  execFileSync(BIN_TWILL, ['cni', 'install', '--dir', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

interface Impl {
  name: string;
  dir: string;
  host: TestHost;
  data: string;
  add: Call[];
  del: Call[];
}

export async function cniBench(opts: CniBenchOptions): Promise<Record<string, unknown>> {
  const hosts = new TestHosts();
  const tmp = mkdtempSync(join(tmpdir(), 'twill-bench-cni-'));
  try {
    process.stderr.write(`cni bench: ${opts.iterations} ADD + DEL of bridge + host-local${opts.ipMasq ? ' with ipMasq (iptables)' : ''}, twill vs reference v1.10.0, alternating\n`);
    const twillDir = installTwill(join(tmp, 'twill'));
    const refDir = requireReference(REFERENCE_V1_10);
    const impls: Impl[] = [];
    for (const [name, dir] of [['twill', twillDir], ['reference', refDir]] as const) {
      const data = join(tmp, `data-${name}`);
      impls.push({ name, dir, host: await hosts.host(`cb-${name}`), data, add: [], del: [] });
    }
    const pods: TestHost[][] = [[], []];
    for (let i = 0; i < opts.iterations; i++) for (const k of [0, 1]) pods[k]!.push(await hosts.host(`cb${k}-${i}`, {}));

    const conf = (impl: Impl) =>
      JSON.stringify({
        cniVersion: '1.0.0', name: 'benchnet', type: 'bridge', bridge: 'cni0', isGateway: true, isDefaultGateway: true, hairpinMode: true, ipMasq: opts.ipMasq,
        ipam: { type: 'host-local', subnet: '10.244.0.0/16', dataDir: impl.data },
      });
    const env = (impl: Impl, command: string, i: number, pod: TestHost): Record<string, string> => ({
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command, CNI_CONTAINERID: `bench-${i}`, CNI_NETNS: pod.netns.path, CNI_IFNAME: 'eth0', CNI_PATH: impl.dir,
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench', TWILL_CNI_TRACE: '1',
      // The installed binary unpacks its native addons here, not in the machine's /var/lib/twill.
      TWILL_NATIVE_DIR: join(tmp, 'native'),
    });
    const run = async (command: 'ADD' | 'DEL') => {
      for (let i = 0; i < opts.iterations; i++) {
        // Alternate who goes first, so drift in the machine's load hits both alike.
        const order = i % 2 === 0 ? [0, 1] : [1, 0];
        for (const k of order) {
          const impl = impls[k]!;
          const r = await call(impl.host.netns, join(impl.dir, 'bridge'), env(impl, command, i, pods[k]![i]!), conf(impl));
          if (r.code !== 0) throw new Error(`${impl.name} ${command} #${i} failed (exit ${r.code})`);
          (command === 'ADD' ? impl.add : impl.del).push(r);
        }
      }
    };
    process.stderr.write('  ADD...\n');
    await run('ADD');
    process.stderr.write('  DEL...\n');
    await run('DEL');

    const starts = startUpAlone(impls, join(tmp, 'native'), Math.max(10, Math.floor(opts.iterations / 2)));

    const p = (xs: number[], q: number) => round(percentile(xs, q), 1);
    const ms = (calls: Call[]) => calls.map((c) => c.ms);
    const rows: (string | number)[][] = [['call', 'twill p50', 'twill p95', 'reference p50', 'reference p95', 'ratio p50']];
    const [tw, ref] = impls as [Impl, Impl];
    for (const cmd of ['add', 'del'] as const) {
      rows.push([cmd.toUpperCase(), p(ms(tw[cmd]), 50), p(ms(tw[cmd]), 95), p(ms(ref[cmd]), 50), p(ms(ref[cmd]), 95), round(percentile(ms(tw[cmd]), 50) / percentile(ms(ref[cmd]), 50), 2)]);
    }
    console.log(table(rows));
    console.log();
    console.log(table(startUpRows(starts)));

    // Where twill's ADD goes (medians of its own trace, ms since process start).
    const field = (calls: Call[], k: string) => calls.map((c) => c.trace?.[k] ?? 0);
    const breakdown = (calls: Call[]) => {
      const entry = percentile(field(calls, 'entry'), 50);
      const loaded = percentile(field(calls, 'loaded'), 50);
      const stdin = percentile(field(calls, 'stdin'), 50);
      const done = percentile(field(calls, 'done'), 50);
      const ipam = percentile(field(calls, 'ipam:ms'), 50);
      const fw = percentile(field(calls, 'firewall:ms'), 50);
      const wall = percentile(ms(calls), 50);
      return {
        'process start + runtime + bundle (to main)': round(entry, 1),
        'plugin modules': round(loaded - entry, 1),
        'stdin + config': round(stdin - loaded, 1),
        'IPAM (host-local, in-process)': round(ipam, 1),
        firewall: round(fw, 1),
        'kernel + rest of the command': round(done - stdin - ipam - fw, 1),
        'exit and reaping': round(wall - done, 1),
        total: round(wall, 1),
      };
    };
    const addParts = breakdown(tw.add);
    const delParts = breakdown(tw.del);
    console.log();
    console.log(table([['twill, where the time goes (p50 ms)', 'ADD', 'DEL'], ...Object.keys(addParts).map((k) => [k, addParts[k as keyof typeof addParts], delParts[k as keyof typeof delParts]])]));
    const warmAdd = addParts['stdin + config'] + addParts['IPAM (host-local, in-process)'] + addParts.firewall + addParts['kernel + rest of the command'];
    console.log(`\nwarm path (the same work in an already-running process, no start-up): ~${round(warmAdd, 1)} ms per ADD`);

    return {
      bench: 'cni',
      iterations: opts.iterations,
      ipMasq: opts.ipMasq,
      ratio: round(percentile(ms(tw.add), 50) / percentile(ms(ref.add), 50), 2),
      ratioDel: round(percentile(ms(tw.del), 50) / percentile(ms(ref.del), 50), 2),
      addP50: { twill: p(ms(tw.add), 50), reference: p(ms(ref.add), 50) },
      addP95: { twill: p(ms(tw.add), 95), reference: p(ms(ref.add), 95) },
      delP50: { twill: p(ms(tw.del), 50), reference: p(ms(ref.del), 50) },
      delP95: { twill: p(ms(tw.del), 95), reference: p(ms(ref.del), 95) },
      startP50: Object.fromEntries(Object.entries(starts).map(([k, v]) => [k, p(v, 50)])),
      warmAddMs: round(warmAdd, 1),
    };
  } finally {
    await hosts.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
}
