// npm run bench -- conflist: kube-flannel's conflist as a runtime runs it. ADD
// is two processes, flannel (→ bridge → host-local) then portmap with one
// hostPort; DEL is portmap then flannel, each given the cached result. twill vs
// the reference chain (flannel's plugin + bridge/host-local/portmap v1.10.0),
// alternating, for each portmap firewall backend. twill runs twice: each call
// done in its own process, and each call handed to a server (`twill cni serve`,
// as the agent's --cni-socket serves) in the same host namespace.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestHosts, type TestHost } from '../test/support/hosts.js';
import { REFERENCE_V1_10, requireReference, startCniServe, type CniServeProcess } from '../test/support/cni.js';
import { writeSubnetEnv } from '../src/subnet/subnet-env.js';
import { call, installTwill, startUpAlone, startUpRows, type Call } from './cni.js';
import { percentile, round, table } from './stats.js';

export interface ConflistBenchOptions {
  iterations: number;
  backends: ('iptables' | 'nftables')[];
}

interface Impl {
  name: 'twill' | 'twill served' | 'reference';
  dir: string;
  /** twill: the socket plugins look for ('off': none). */
  socket?: string;
  host: TestHost;
  data: string;
  add: number[];
  del: number[];
  /** Per ADD: [flannel ms, portmap ms]. */
  parts: [number, number][];
  /** Per ADD, twill only: the flannel and portmap calls with their traces. */
  traces: [Call, Call][];
}

export async function conflistBench(opts: ConflistBenchOptions): Promise<Record<string, unknown>> {
  const hosts = new TestHosts();
  const tmp = mkdtempSync(join(tmpdir(), 'twill-bench-conflist-'));
  const servers: CniServeProcess[] = [];
  try {
    const refDir = requireReference(REFERENCE_V1_10);
    if (!existsSync(join(refDir, 'flannel')) || !existsSync(join(refDir, 'portmap'))) throw new Error(`${refDir} lacks flannel or portmap: run "npm run peers -- cni flannel-cni"`);
    const twillDir = installTwill(join(tmp, 'twill'));
    const subnetFile = join(tmp, 'subnet.env');
    writeSubnetEnv(subnetFile, { networks: ['10.244.0.0/16'], subnet: '10.244.1.1/24', ipv6Networks: [], ipv6Subnet: null, mtu: 1450, ipMasq: true });
    const results: Record<string, unknown> = {};
    const breakdowns: (string | number)[][] = [];
    const servedBreakdowns: (string | number)[][] = [];
    const rows: (string | number)[][] = [['backend', 'call', 'twill p50', 'twill p95', 'served p50', 'served p95', 'reference p50', 'reference p95', 'ratio p50', 'served ratio p50']];
    for (const backend of opts.backends) {
      process.stderr.write(`conflist bench (${backend}): ${opts.iterations} ADD + DEL, twill, twill served and the reference, alternating\n`);
      const impls: Impl[] = [];
      for (const [name, dir, tag] of [['twill', twillDir, 'tw'], ['twill served', twillDir, 'sv'], ['reference', refDir, 'rf']] as const) {
        const data = join(tmp, `${backend}-${tag}`);
        mkdirSync(data);
        const host = await hosts.host(`cl-${backend.slice(0, 3)}-${tag}`);
        const impl: Impl = { name, dir, host, data, add: [], del: [], parts: [], traces: [] };
        if (name === 'twill') impl.socket = 'off';
        if (name === 'twill served') {
          impl.socket = join(tmp, `${backend}-cni.sock`);
          servers.push(await startCniServe(host, impl.socket, 'warn'));
        }
        impls.push(impl);
      }
      const pods: TestHost[][] = impls.map(() => []);
      for (let i = 0; i < opts.iterations; i++) for (const k of impls.keys()) pods[k]!.push(await hosts.host(`cl${backend.slice(0, 1)}${k}-${i}`, {}));
      const env = (impl: Impl, command: string, i: number) => ({
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        CNI_COMMAND: command, CNI_CONTAINERID: `conflist-${i}`, CNI_NETNS: pods[impls.indexOf(impl)]![i]!.netns.path, CNI_IFNAME: 'eth0', CNI_PATH: impl.dir,
        CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench', TWILL_NATIVE_DIR: join(tmp, 'native'),
        // One JSON line on stderr per call (a few clock reads): where twill's time goes.
        ...(impl.socket ? { TWILL_CNI_TRACE: '1', TWILL_CNI_SOCKET: impl.socket } : {}),
      });
      const flannelConf = (impl: Impl) => ({
        cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true },
        subnetFile, dataDir: join(impl.data, 'flannel'), ipam: { dataDir: join(impl.data, 'ipam') },
      });
      const portmapConf = (i: number, prevResult: unknown) => ({
        cniVersion: '0.3.1', name: 'cbr0', type: 'portmap', capabilities: { portMappings: true }, backend,
        runtimeConfig: { portMappings: [{ hostPort: 30000 + i, containerPort: 80, protocol: 'tcp' }] }, prevResult,
      });
      const cached: unknown[][] = impls.map(() => []);
      for (const command of ['ADD', 'DEL'] as const) {
        for (let i = 0; i < opts.iterations; i++) {
          // Each implementation goes first, second and last in turn.
          for (const k of [0, 1, 2].map((j) => (j + i) % 3)) {
            const impl = impls[k]!;
            const run = async (type: string, conf: object) => {
              const r = await call(impl.host.netns, join(impl.dir, type), env(impl, command, i), JSON.stringify(conf));
              if (r.code !== 0) throw new Error(`${impl.name} ${type} ${command} #${i} failed (exit ${r.code}): ${r.stdout}`);
              if (impl.name === 'twill served' && r.trace?.['server:ms'] === undefined) throw new Error(`twill served: ${type} ${command} #${i} was not served by the server`);
              return r;
            };
            if (command === 'ADD') {
              const f = await run('flannel', flannelConf(impl));
              // The runtime passes the first plugin's result to the next, as prevResult.
              const prev = JSON.parse(f.stdout) as unknown;
              cached[k]![i] = prev;
              const p = await run('portmap', portmapConf(i, prev));
              impl.add.push(f.ms + p.ms);
              impl.parts.push([f.ms, p.ms]);
              impl.traces.push([f, p]);
            } else {
              const p = await run('portmap', portmapConf(i, cached[k]![i]));
              const f = await run('flannel', flannelConf(impl));
              impl.del.push(p.ms + f.ms);
            }
          }
        }
      }
      const [tw, sv, ref] = impls as [Impl, Impl, Impl];
      const p = (xs: number[], q: number) => round(percentile(xs, q), 1);
      const ratio = (impl: Impl, cmd: 'add' | 'del') => round(percentile(impl[cmd], 50) / percentile(ref[cmd], 50), 2);
      for (const cmd of ['add', 'del'] as const) {
        rows.push([backend, cmd.toUpperCase(), p(tw[cmd], 50), p(tw[cmd], 95), p(sv[cmd], 50), p(sv[cmd], 95), p(ref[cmd], 50), p(ref[cmd], 95), ratio(tw, cmd), ratio(sv, cmd)]);
      }
      const split = (impl: Impl) => `flannel ${p(impl.parts.map((x) => x[0]), 50)} + portmap ${p(impl.parts.map((x) => x[1]), 50)}`;
      rows.push([backend, 'ADD split', split(tw), '', split(sv), '', split(ref), '', '', '']);
      breakdowns.push(...whereTheTimeGoes(backend, tw.traces));
      servedBreakdowns.push(...whereTheServedTimeGoes(backend, sv.traces));
      results[backend] = {
        ratio: ratio(tw, 'add'),
        ratioDel: ratio(tw, 'del'),
        servedRatio: ratio(sv, 'add'),
        servedRatioDel: ratio(sv, 'del'),
        addP50: { twill: p(tw.add, 50), served: p(sv.add, 50), reference: p(ref.add, 50) },
        delP50: { twill: p(tw.del, 50), served: p(sv.del, 50), reference: p(ref.del, 50) },
      };
    }
    console.log(table(rows));
    console.log();
    console.log(table([['twill ADD, where the time goes (p50 ms)', 'flannel', 'portmap'], ...breakdowns]));
    console.log();
    console.log(table([['twill served ADD, where the time goes (p50 ms)', 'flannel', 'portmap'], ...servedBreakdowns]));
    // The floor under each plugin process: what a process costs before it does anything.
    const starts = startUpAlone([{ name: 'twill', dir: twillDir }, { name: 'reference', dir: refDir }], join(tmp, 'native'), Math.max(10, opts.iterations), 'portmap');
    console.log();
    console.log(table(startUpRows(starts)));
    return { bench: 'conflist', iterations: opts.iterations, ...results };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await hosts.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The served calls' trace: the plugin process around the server's share. */
function whereTheServedTimeGoes(backend: string, traces: [Call, Call][]): (string | number)[][] {
  return medianPhases(backend, traces, [
    ['process start, runtime, bundle (to main)', (c) => mark(c, 'entry')],
    ['stdin', (c) => mark(c, 'stdin') - mark(c, 'entry')],
    ['the server\'s work', (c) => mark(c, 'server:ms')],
    ['socket round trip', (c) => mark(c, 'done') - mark(c, 'stdin') - mark(c, 'server:ms')],
    ['exit and reaping', (c) => c.ms - mark(c, 'done')],
    ['total', (c) => c.ms],
  ]);
}

/** Medians of twill's own trace (ms since its process started), per plugin process of an ADD. */
function whereTheTimeGoes(backend: string, traces: [Call, Call][]): (string | number)[][] {
  return medianPhases(backend, traces, [
    ['process start, runtime, bundle (to main)', (c) => mark(c, 'entry')],
    ['plugin modules', (c) => mark(c, 'loaded') - mark(c, 'entry')],
    ['stdin + config', (c) => mark(c, 'stdin') - mark(c, 'loaded')],
    ['IPAM (in-process)', (c) => mark(c, 'ipam:ms')],
    ['firewall (helper processes)', (c) => mark(c, 'firewall:ms')],
    ['kernel + rest', (c) => mark(c, 'done') - mark(c, 'stdin') - mark(c, 'ipam:ms') - mark(c, 'firewall:ms')],
    ['exit and reaping', (c) => c.ms - mark(c, 'done')],
    ['total', (c) => c.ms],
  ]);
}

const mark = (c: Call, k: string): number => c.trace?.[k] ?? 0;

/** One row per phase: the median over the ADDs of the flannel and of the portmap process. */
function medianPhases(backend: string, traces: [Call, Call][], phases: [string, (c: Call) => number][]): (string | number)[][] {
  const med = (calls: Call[], f: (c: Call) => number) => round(percentile(calls.map(f), 50), 1);
  const flannel = traces.map((x) => x[0]);
  const portmap = traces.map((x) => x[1]);
  return phases.map(([name, f]) => [`${backend}: ${name}`, med(flannel, f), med(portmap, f)]);
}
