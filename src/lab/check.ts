// `twill lab check`: does the cluster network do what Kubernetes asks of it?
// Every probe is real traffic between the lab's namespaces (ping, a small UDP or
// TCP peer in Node), and every expectation is stated as a row of the report.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isSea } from 'node:sea';
import { openNetns } from '../kernel/index.js';
import { execIn, mapLimit } from './exec.js';
import { DOCKER, HOST_PORT, UNDERLAY } from './layout.js';
import type { LabState, NodeState, PodState } from './state.js';
import { renderTable } from './table.js';

export interface CheckRow {
  check: string;
  from: string;
  to: string;
  ok: boolean;
  detail: string;
}

export interface CheckReport {
  rows: CheckRow[];
  failures: number;
}

/** Node for the probes' small programs (a single executable cannot run `-e` scripts). */
const nodeBinary = () => (isSea() ? 'node' : process.execPath);

async function ping(from: string, ip: string, opts: { size?: number; df?: boolean; tries?: number } = {}): Promise<{ ok: boolean; detail: string }> {
  // Until one reply, a new packet every 0.3 s for up to 2 s: the first packet of a new path may wait on ARP.
  const retry = (opts.tries ?? 2) > 1 ? ['-i', '0.3', '-w', '2'] : ['-W', '1'];
  const args = ['-n', '-c', '1', ...retry, ...(opts.df ? ['-M', 'do'] : []), ...(opts.size !== undefined ? ['-s', String(opts.size)] : []), ip];
  const r = await execIn(from, 'ping', args, { timeoutMs: 10_000 });
  if (r.code === 0) return { ok: true, detail: /time=([\d.]+ ms)/.exec(r.stdout)?.[1] ?? 'ok' };
  return { ok: false, detail: (r.stderr.trim() || r.stdout.trim().split('\n').slice(-2).join(' ')).slice(0, 120) || 'no reply' };
}

/** Starts a Node program in `netns` and resolves once it printed "ready"; `done` gives its whole stdout. */
function serve(netns: string, js: string, timeoutMs: number): Promise<{ done: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, nodeBinary(), '-e', js], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let ready = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const done = new Promise<string>((res) => child.on('close', () => {
      clearTimeout(timer);
      res(out);
    }));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!ready && out.includes('ready')) {
        ready = true;
        resolve({ done });
      }
    });
    child.on('error', reject);
    void done.then(() => {
      if (!ready) reject(new Error(`probe server in ${netns} did not start: ${err.trim() || out.trim()}`));
    });
  });
}

/** The source address the receiver sees for one UDP datagram (null when nothing arrived). */
async function sourceSeen(to: string, toIp: string, from: string, port: number, waitMs = 4000): Promise<string | null> {
  const server = await serve(to, `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>{console.log('from '+r.address);process.exit(0)});s.bind(${port},()=>console.log('ready'));setTimeout(()=>process.exit(3),${waitMs})`, waitMs + 2000);
  await execIn(from, nodeBinary(), ['-e', `require('dgram').createSocket('udp4').send('x',${port},'${toIp}',()=>process.exit(0))`]);
  const out = await server.done;
  return /from (\S+)/.exec(out)?.[1] ?? null;
}

/** A TCP connection from `from` to ip:port, answered by a server in `serverNetns` on `listenPort`: what it says. */
async function tcpReply(serverNetns: string, listenPort: number, banner: string, from: string, ip: string, port: number): Promise<string> {
  const server = await serve(serverNetns, `const s=require('net').createServer(c=>{c.end(${JSON.stringify(banner)});s.close()});s.listen(${listenPort},()=>console.log('ready'));setTimeout(()=>process.exit(3),6000).unref()`, 8000);
  const r = await execIn(from, nodeBinary(), ['-e', `const c=require('net').connect(${port},'${ip}');let d='';c.on('data',x=>d+=x);c.on('end',()=>{process.stdout.write(d);process.exit(0)});c.on('error',e=>{console.error(e.message);process.exit(1)});setTimeout(()=>{console.error('timeout');process.exit(2)},4000)`]);
  await server.done;
  return r.code === 0 ? r.stdout : `error: ${r.stderr.trim()}`;
}

interface DevCounters {
  rxPackets: number;
  txPackets: number;
}

/** A device's packet counters in a namespace, read from the kernel's /proc/net/dev of a thread inside it. */
export function deviceCounters(netns: string, dev: string): DevCounters | null {
  const ns = openNetns(netns);
  try {
    const text = ns.run(() => readFileSync('/proc/thread-self/net/dev', 'utf8'));
    const line = text.split('\n').find((l) => l.trim().startsWith(`${dev}:`));
    if (!line) return null;
    const f = line.slice(line.indexOf(':') + 1).trim().split(/\s+/).map(Number);
    return { rxPackets: f[1]!, txPackets: f[9]! };
  } finally {
    ns.close();
  }
}

const mark = (ok: boolean) => (ok ? 'ok' : 'FAIL');

export async function labCheck(state: LabState, progress: (msg: string) => void = () => undefined): Promise<CheckReport> {
  const rows: CheckRow[] = [];
  const add = (row: CheckRow) => rows.push(row);
  const pods = state.pods.filter((p): p is PodState & { ip: string } => p.ip !== null);
  const nodeOf = (p: PodState) => state.nodes.find((n) => n.name === p.node)!;
  const overlay = state.backend === 'vxlan' ? 'flannel.1' : null;
  const before = new Map<string, DevCounters | null>(overlay ? state.nodes.map((n) => [n.name, deviceCounters(n.netns, overlay)]) : []);

  progress(`pod → pod: ${pods.length * (pods.length - 1)} pings`);
  const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
  for (const [[a, b], r] of (await mapLimit(pairs, 4, ([a, b]) => ping(a.netns, b.ip))).map((r, i) => [pairs[i]!, r] as const)) {
    add({ check: a.node === b.node ? 'pod→pod (same node)' : 'pod→pod (across nodes)', from: a.name, to: `${b.name} ${b.ip}`, ok: r.ok, detail: r.detail });
  }

  progress('node → pod, pod → node');
  const nodePod = state.nodes.flatMap((n) => pods.map((p) => [n, p] as const));
  for (const [[n, p], r] of (await mapLimit(nodePod, 4, ([n, p]) => ping(n.netns, p.ip))).map((r, i) => [nodePod[i]!, r] as const)) {
    add({ check: 'node→pod', from: n.name, to: `${p.name} ${p.ip}`, ok: r.ok, detail: r.detail });
  }
  const podNode = pods.flatMap((p) => state.nodes.map((n) => [p, n] as const));
  for (const [[p, n], r] of (await mapLimit(podNode, 4, ([p, n]) => ping(p.netns, n.publicIp))).map((r, i) => [podNode[i]!, r] as const)) {
    add({ check: 'pod→node', from: p.name, to: `${n.name} ${n.publicIp}`, ok: r.ok, detail: r.detail });
  }

  progress('addresses as seen by the receiver (no NAT between pods, masquerade to outside)');
  const crossPair = pods.map((a) => [a, pods.find((b) => b.node !== a.node)] as const).find((x): x is readonly [PodState & { ip: string }, PodState & { ip: string }] => x[1] !== undefined);
  if (crossPair) {
    const [a, b] = crossPair;
    const seen = await sourceSeen(b.netns, b.ip, a.netns, 9901).catch((e: Error) => `error: ${e.message}`);
    add({ check: 'pod sees pod\'s own IP', from: a.name, to: b.name, ok: seen === a.ip, detail: `${b.name} saw ${seen ?? 'nothing'} (want ${a.ip}, no NAT)` });
  }
  const outside = `${state.namespaces.find((n) => n.endsWith('-out'))}`;
  for (const node of state.nodes) {
    const p = pods.find((x) => x.node === node.name);
    if (!p) continue;
    const r = await ping(p.netns, UNDERLAY.internetIp);
    add({ check: 'pod→outside', from: p.name, to: UNDERLAY.internetIp, ok: r.ok, detail: r.detail });
    const seen = await sourceSeen(outside, UNDERLAY.internetIp, p.netns, 9902).catch((e: Error) => `error: ${e.message}`);
    add({ check: 'outside sees node IP', from: p.name, to: 'outside', ok: seen === node.publicIp, detail: `outside saw ${seen ?? 'nothing'} (want ${node.publicIp}: masqueraded)` });
  }

  const mapped = pods.find((p) => p.portMappings.length > 0);
  if (mapped) {
    const m = mapped.portMappings[0]!;
    const node = nodeOf(mapped);
    progress(`hostPort: ${node.publicIp}:${m.hostPort} → ${mapped.name}:${m.containerPort}`);
    const banner = `twill-lab ${mapped.name}`;
    const reply = await tcpReply(mapped.netns, m.containerPort, banner, outside, node.publicIp, m.hostPort).catch((e: Error) => `error: ${e.message}`);
    add({ check: 'hostPort (portmap)', from: 'outside', to: `${node.publicIp}:${m.hostPort} → ${mapped.name}:${m.containerPort}`, ok: reply === banner, detail: reply === banner ? `answered "${reply}"` : reply });
  } else {
    add({ check: 'hostPort (portmap)', from: '-', to: '-', ok: false, detail: `no pod has a port mapping (${HOST_PORT.pod} had one at up: was it removed?)` });
  }

  if (crossPair) {
    const [a, b] = crossPair;
    const mtu = nodeOf(a).mtu ?? 1500;
    const fits = mtu - 28; // IPv4 header 20 + ICMP header 8
    progress(`path MTU ${mtu}: DF pings of ${fits} and ${fits + 1} bytes`);
    const big = await ping(a.netns, b.ip, { df: true, size: fits });
    add({ check: 'MTU: largest DF packet passes', from: a.name, to: `${b.name} ${b.ip}`, ok: big.ok, detail: `${fits} bytes + 28 = ${mtu}: ${big.detail}` });
    const tooBig = await ping(a.netns, b.ip, { df: true, size: fits + 1, tries: 1 });
    add({ check: 'MTU: one byte more fails', from: a.name, to: `${b.name} ${b.ip}`, ok: !tooBig.ok, detail: tooBig.ok ? `${fits + 1} bytes passed: the MTU is larger than ${mtu}` : `${fits + 1} bytes refused (${tooBig.detail})` });
  }

  if (overlay && state.nodes.length > 1 && crossPair) {
    for (const n of state.nodes) {
      const b = before.get(n.name) ?? null;
      const a = deviceCounters(n.netns, overlay);
      const hasPods = pods.some((p) => p.node === n.name);
      if (!hasPods) continue;
      const ok = !!(a && b && a.txPackets > b.txPackets && a.rxPackets > b.rxPackets);
      add({ check: `overlay counters (${overlay})`, from: n.name, to: '-', ok, detail: a && b ? `tx +${a.txPackets - b.txPackets}, rx +${a.rxPackets - b.rxPackets} packets during the check` : `no ${overlay} device` });
    }
  }

  if (state.scenario === 'docker') {
    const withDocker = state.nodes.filter((n): n is NodeState & { dockerNetns: string } => n.dockerNetns !== null);
    if (withDocker.length >= 2) {
      const [x, y] = withDocker as [NodeState & { dockerNetns: string }, NodeState & { dockerNetns: string }];
      progress(`docker: ${x.name}'s container → ${DOCKER.container} (${y.name}'s container has that address too)`);
      const seen = await sourceSeen(y.dockerNetns, DOCKER.container, x.dockerNetns, 9903, 1500).catch(() => null);
      add({ check: 'docker0 containers isolated', from: `${x.name} container ${DOCKER.container}`, to: `${y.name} container ${DOCKER.container}`, ok: seen === null, detail: seen === null ? `same address on both nodes: ${x.name}'s traffic to ${DOCKER.container} stays on ${x.name} (docker0 is per node, not a cluster network)` : `${y.name}'s container received it (from ${seen}): unexpected` });
    }
  }
  return { rows, failures: rows.filter((r) => !r.ok).length };
}

/** The report as text: the pod↔pod matrix first, then every other row. */
export function renderCheck(state: LabState, report: CheckReport): string {
  const pods = state.pods.filter((p) => p.ip !== null).map((p) => p.name);
  const cell = (check: (c: string) => boolean, from: string, to: string) => {
    const r = report.rows.find((x) => check(x.check) && x.from === from && x.to.split(' ')[0] === to);
    return r ? mark(r.ok) : '-';
  };
  const parts: string[] = [];
  if (pods.length > 0) {
    parts.push(renderTable(['pod → pod', ...pods], pods.map((a) => [a, ...pods.map((b) => (a === b ? '·' : cell((c) => c.startsWith('pod→pod'), a, b)))])));
    const nodes = state.nodes.map((n) => n.name);
    parts.push(renderTable(['node → pod', ...pods], nodes.map((n) => [n, ...pods.map((p) => cell((c) => c === 'node→pod', n, p))])));
    parts.push(renderTable(['pod → node', ...nodes], pods.map((p) => [p, ...nodes.map((n) => cell((c) => c === 'pod→node', p, n))])));
  }
  const others = report.rows.filter((r) => !['pod→pod (same node)', 'pod→pod (across nodes)', 'node→pod', 'pod→node'].includes(r.check));
  const failedPings = report.rows.filter((r) => !r.ok && !others.includes(r));
  parts.push(renderTable(['CHECK', 'FROM', 'TO', 'RESULT', 'DETAIL'], [...failedPings, ...others].map((r) => [r.check, r.from, r.to, mark(r.ok), r.detail])));
  parts.push(report.failures === 0 ? `all ${report.rows.length} checks passed` : `${report.failures} of ${report.rows.length} checks FAILED`);
  return parts.join('\n\n');
}
