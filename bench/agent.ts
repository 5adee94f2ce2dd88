// npm run bench -- agent: the node agent against flanneld v0.28.9, on one etcd,
// in the same run.
//
// (1) convergence: a lease is written to etcd; how long until its route (the
//     last of neighbour, FDB entry and route) is in the kernel of a node running
//     twill and of a node running flanneld. Both watch the same etcd, so each
//     lease is measured on both at once. p50/p99 over --leases leases.
// (2) scale: --scale leases already in etcd; a fresh node starts the agent;
//     time until every lease is programmed, and the process's RSS then (and
//     its peak), for twill and for flanneld, one after the other.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Handle, type KernelEvent } from '../src/kernel/index.js';
import { TestHosts, type TestHost } from '../test/support/hosts.js';
import { AgentProcess, agentTemp } from '../test/support/agent.js';
import { EtcdCluster } from '../test/support/etcd.js';
import { EtcdClientProcess } from '../test/support/etcd-client.js';
import { FlanneldProcess, requireFlanneld } from '../test/support/flanneld.js';
import { percentile, round, table } from './stats.js';

const PREFIX = '/coreos.com/network';
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The n-th fake remote lease: subnet 10.(100 + n / 256).(n % 256).0/24, a public IP and a VtepMAC of its own. */
function fakeLease(n: number): { key: string; subnet: string; value: string } {
  const a = 100 + Math.floor(n / 256);
  const b = n % 256;
  const mac = `0a:58:${(a & 0xff).toString(16).padStart(2, '0')}:${b.toString(16).padStart(2, '0')}:00:01`;
  return {
    key: `${PREFIX}/subnets/10.${a}.${b}.0-24`,
    subnet: `10.${a}.${b}.0/24`,
    value: JSON.stringify({ PublicIP: `198.19.${Math.floor(n / 250)}.${(n % 250) + 1}`, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }),
  };
}

function memory(pid: number): { rssMiB: number; peakMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: round(kib('VmRSS') / 1024, 1), peakMiB: round(kib('VmHWM') / 1024, 1) };
}

/** Route arrival times in one node, for the destinations asked for. */
class RouteClock {
  private readonly handle: Handle;
  private readonly watcher;
  readonly seen = new Map<string, number>();

  constructor(host: TestHost) {
    this.handle = Handle.open(host.netns);
    this.watcher = this.handle.watch(['route']);
    this.watcher.on('event', (ev: KernelEvent) => {
      if (ev.kind === 'route' && ev.type === 'new' && !this.seen.has(ev.route.dst)) this.seen.set(ev.route.dst, now());
    });
  }

  close(): void {
    this.watcher.close();
    this.handle.close();
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 5): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

export interface AgentBenchOptions {
  leases: number;
  scale: number;
}

export async function agentBench(opts: AgentBenchOptions) {
  requireFlanneld();
  const hosts = new TestHosts();
  const tmp = agentTemp();
  let etcd: EtcdCluster | null = null;
  let client: EtcdClientProcess | null = null;
  const running: { stop(signal?: NodeJS.Signals): Promise<unknown> }[] = [];
  try {
    const { hosts: h } = await hosts.underlay({ tw: '198.18.0.1/24', fl: '198.18.0.2/24', tw2: '198.18.0.3/24', fl2: '198.18.0.4/24', etcd: '198.18.0.100/24' });
    etcd = await EtcdCluster.start({ placements: [{ netns: h.etcd!.name, ip: '198.18.0.100' }] });
    const endpoint = etcd.endpoints[0]!;
    client = new EtcdClientProcess(h.etcd!.name, etcd.endpoints);
    await client.put(`${PREFIX}/config`, JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, SubnetMin: '10.1.0.0', SubnetMax: '10.99.255.0', Backend: { Type: 'vxlan' } }));

    const startTwill = (host: TestHost) => {
      const a = new AgentProcess(host, ['--store', `etcd:${endpoint}`, '--iface', 'eth0', '--ip-masq', '--subnet-file', `${tmp.dir}/${host.name}.env`, '--data-dir', `${tmp.dir}/${host.name}`, '--log-level', 'info']);
      running.push({ stop: () => a.kill() });
      return a;
    };
    const startFlanneld = (host: TestHost) => {
      const f = new FlanneldProcess(host, [`--etcd-endpoints=${endpoint}`, '--iface=eth0', '--ip-masq', `--subnet-file=${tmp.dir}/${host.name}.env`]);
      running.push({ stop: () => f.stop('SIGKILL') });
      return f;
    };

    // (1) convergence
    console.log(`convergence: ${opts.leases} leases written one at a time, each awaited on both nodes`);
    const twill = startTwill(h.tw!);
    const flanneld = startFlanneld(h.fl!);
    await flanneld.waitFor(/Running backend/);
    await twill.ready(30_000);
    const clocks = { twill: new RouteClock(h.tw!), flanneld: new RouteClock(h.fl!) };
    const samples = { twill: [] as number[], flanneld: [] as number[] };
    for (let i = 0; i < opts.leases; i++) {
      const l = fakeLease(i);
      const t0 = now();
      await client.put(l.key, l.value, 3600);
      await until(`${l.subnet} on both nodes`, () => clocks.twill.seen.has(l.subnet) && clocks.flanneld.seen.has(l.subnet), 10_000, 1);
      samples.twill.push(clocks.twill.seen.get(l.subnet)! - t0);
      samples.flanneld.push(clocks.flanneld.seen.get(l.subnet)! - t0);
      if ((i + 1) % 25 === 0) process.stdout.write(`  ${i + 1}/${opts.leases}\n`);
    }
    clocks.twill.close();
    clocks.flanneld.close();
    // Out of the way of the cold starts (two cores): they would program the same leases meanwhile.
    await twill.kill();
    await flanneld.stop('SIGKILL');
    const conv = (s: number[]) => ({ p50: round(percentile(s, 50), 2), p99: round(percentile(s, 99), 2) });
    const convergence = { twill: conv(samples.twill), flanneld: conv(samples.flanneld) };
    console.log(table([
      ['lease → route (ms)', 'twill', 'flanneld', 'twill / flanneld'],
      ['p50', convergence.twill.p50, convergence.flanneld.p50, round(convergence.twill.p50 / convergence.flanneld.p50, 2)],
      ['p99', convergence.twill.p99, convergence.flanneld.p99, round(convergence.twill.p99 / convergence.flanneld.p99, 2)],
    ]));

    // (2) scale: fill the store, then cold starts on fresh nodes.
    console.log(`\nscale: ${opts.scale} more leases in etcd, then a cold start on a fresh node`);
    const extra = Array.from({ length: opts.scale }, (_, i) => fakeLease(opts.leases + i));
    for (let i = 0; i < extra.length; i += 500) await client.putMany(extra.slice(i, i + 500).map(({ key, value }) => ({ key, value })), 3600);
    const total = (await client.get(`${PREFIX}/subnets/`)).kvs.length;
    const coldStart = async (who: 'twill' | 'flanneld', host: TestHost) => {
      const handle = Handle.open(host.netns);
      try {
        const t0 = now();
        const proc = who === 'twill' ? startTwill(host) : startFlanneld(host);
        // Every lease but the node's own: total, since its own is not there yet when it starts.
        const want = total;
        let programmed = 0;
        await until(`${who}: ${want} routes`, async () => {
          const dev = await handle.findLink('flannel.1');
          if (!dev) return false;
          programmed = (await handle.listRoutes({ family: 4, device: dev })).filter((r) => r.gateway !== null).length;
          return programmed >= want;
        }, 120_000, 20);
        const seconds = round((now() - t0) / 1000, 2);
        const mem = memory(proc.pid);
        if (proc instanceof AgentProcess) {
          // Where twill's start-up goes, from its own log's timestamps.
          const at = (msg: string) => {
            const line = proc.logs.find((l) => l.msg === msg);
            return line ? round(Date.parse(String(line.time)) - t0, 0) : NaN;
          };
          console.log(`  twill start-up (ms from spawn): first log ${round(Date.parse(String(proc.logs[0]?.time)) - t0, 0)}, lease acquired ${at('acquired lease')}, ready ${at('ready')}`);
        }
        return { seconds, routes: programmed, ...mem };
      } finally {
        handle.close();
      }
    };
    const cold = { twill: await coldStart('twill', h.tw2!), flanneld: await coldStart('flanneld', h.fl2!) };
    console.log(table([
      ['cold start', 'twill', 'flanneld', 'twill / flanneld'],
      ['routes programmed', cold.twill.routes, cold.flanneld.routes, ''],
      ['time to all (s)', cold.twill.seconds, cold.flanneld.seconds, round(cold.twill.seconds / cold.flanneld.seconds, 2)],
      ['RSS then (MiB)', cold.twill.rssMiB, cold.flanneld.rssMiB, round(cold.twill.rssMiB / cold.flanneld.rssMiB, 2)],
      ['peak RSS (MiB)', cold.twill.peakMiB, cold.flanneld.peakMiB, round(cold.twill.peakMiB / cold.flanneld.peakMiB, 2)],
    ]));
    console.log(`\ntargets: convergence p50 ≤ 50 ms (twill ${convergence.twill.p50}); cold start ≤ 2 s (${cold.twill.seconds}) and ≤ 100 MiB (${cold.twill.rssMiB}) with 2,000 leases`);
    return { bench: 'agent', leases: opts.leases, scale: opts.scale, storeLeases: total, convergence, coldStart: cold };
  } finally {
    for (const r of running) await r.stop('SIGKILL').catch(() => undefined);
    await client?.close();
    await etcd?.destroy();
    await hosts.cleanup();
    tmp.cleanup();
  }
}
