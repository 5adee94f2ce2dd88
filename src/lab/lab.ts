// `twill lab`: a cluster of network-namespace nodes and pods on one machine.
//
//   twl-<lab>-sw        the underlay switch (bridge br0), one veth port per node
//   twl-<lab>-out       "outside": 198.18.0.254 on the underlay (the nodes' default
//                       gateway) and 203.0.113.1, an address beyond it
//   twl-<lab>-etcd      etcd, with --store etcd
//   twl-<lab>-nK        node K: eth0 on the underlay, `twill agent`, cni0, flannel.1
//   twl-<lab>-nK-pJ     pod J of node K (its eth0 made by the CNI plugins)
//   twl-<lab>-nK-docker --scenario docker: a container on the node's docker0
//
// Files live in /run/twill/lab/<lab>/ (LAB_ROOT): state.json, the store,
// net-conf.json, bin/ (the CNI plugins), and per node nodes/nK/ with the paths a
// real node has under /run/flannel, /var/lib/cni, /etc/cni/net.d and
// /var/lib/twill, passed to the agent and the plugins explicitly. Nothing is made
// in the machine's root namespace, and nothing of the machine's is read or written.
import { existsSync, mkdirSync, readFileSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isSea } from 'node:sea';
import { Handle, createNetns, deleteNetns, listNetns, netnsExists } from '../kernel/index.js';
import { packageRoot } from '../kernel/native.js';
import { formatCidr, networkOf, parseCidr } from '../ipam/addr.js';
import { PLUGIN_TYPES } from '../plugins/registry.js';
import { addPodNetwork, deletePodNetwork, portMappingsFor, resultIpv4, writeNodeConflist } from './cni.js';
import { findLabProcesses, isOurs, logSize, logTail, readLog, sleep, startDaemon, stopProcess } from './daemons.js';
import { execIn, mapLimit, mustExecIn } from './exec.js';
import { nodeView } from './nodeview.js';
import {
  CLUSTER_NETWORK, DOCKER, HOST_PORT, LAB_ROOT, LabError, MAX_NODES, UNDERLAY, checkLabName, isLabNetns, labDir, netnsName, nodeDir, podName,
} from './layout.js';
import { findNode, findPod, readState, requireState, writeState, type Backend, type LabState, type NodeState, type PodState, type StoreKind } from './state.js';

export interface UpOptions {
  name: string;
  nodes: number;
  podsPerNode: number;
  backend: Backend;
  store: StoreKind;
  scenario: 'docker' | null;
  progress: (msg: string) => void;
}

const NODE_SYSCTLS: Record<string, string> = {
  'net.ipv4.ip_forward': '1',
  // Loose or off: with strict reverse-path filtering replies that come back another way are dropped.
  'net.ipv4.conf.all.rp_filter': '0',
  'net.ipv4.conf.default.rp_filter': '0',
};

const ETCD_PORT = 2379;
const ETCD_PREFIX = '/coreos.com/network';
const etcdUrl = () => `http://${UNDERLAY.etcdIp}:${ETCD_PORT}`;

function twillCommand(): string[] {
  return isSea() ? [process.execPath] : [process.execPath, join(packageRoot(), 'bin', 'twill')];
}

function pluginTarget(): string {
  return isSea() ? process.execPath : join(packageRoot(), 'bin', 'twill');
}

async function withHandle<T>(netns: string, fn: (h: Handle) => Promise<T>): Promise<T> {
  const h = Handle.open(netns);
  try {
    return await fn(h);
  } finally {
    h.close();
  }
}

/** Creates a namespace, recorded in the state before it exists (so a crash in between still finds it), loopback up. */
async function makeNetns(state: LabState, role: string, sysctls: Record<string, string> = {}): Promise<string> {
  const name = netnsName(state.name, role);
  state.namespaces.push(name);
  writeState(state);
  createNetns(name).close();
  await withHandle(name, async (h) => {
    await h.setLinkUp('lo');
    for (const [key, value] of Object.entries(sysctls)) h.writeSysctl(key, value);
  });
  return name;
}

/** A veth from the switch's bridge to `eth0` of `netns`, with an address on eth0. */
async function plugIntoSwitch(state: LabState, port: string, netns: string, cidr: string): Promise<void> {
  const sw = netnsName(state.name, 'sw');
  const target = Handle.open(netns);
  try {
    await withHandle(sw, (h) => h.addLink({ kind: 'veth', name: port, master: 'br0', up: true, peer: { name: 'eth0', netns: target.netns! } }));
    await target.setLinkUp('eth0');
    await target.addAddr('eth0', cidr);
  } finally {
    target.close();
  }
}

/** Reads the node's subnet.env as the flannel plugin does. */
export function readSubnetEnv(node: NodeState): Record<string, string> | null {
  const path = join(node.dir, 'run/flannel/subnet.env');
  if (!existsSync(path)) return null;
  return Object.fromEntries(readFileSync(path, 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/** The node's subnet from subnet.env's FLANNEL_SUBNET (its gateway address and prefix). */
function subnetOf(env: Record<string, string>): string | null {
  const c = env.FLANNEL_SUBNET ? parseCidr(env.FLANNEL_SUBNET) : null;
  return c ? formatCidr({ ip: { family: c.ip.family, value: networkOf(c) }, prefix: c.prefix }) : null;
}

const agentLog = (node: NodeState) => join(node.dir, 'agent.log');
const agentDataDir = (node: NodeState) => join(node.dir, 'var/lib/twill');

function agentArgs(state: LabState, node: NodeState): string[] {
  return [
    ...nodeView(node.dir), ...state.twill, 'agent',
    '--store', state.storeSpec,
    ...(state.store === 'local' ? ['--net-conf', state.netConfPath] : ['--etcd-prefix', ETCD_PREFIX]),
    '--iface', 'eth0',
    // subnet.env at its default path, the node's own /run/flannel (nodeview.ts). The data dir is
    // named: it is how the lab recognises this node's agent among the machine's processes.
    '--data-dir', agentDataDir(node),
    // As kube-flannel.yml runs flanneld: pods reach outside masqueraded, and each other with their own IPs.
    '--ip-masq',
    '--node-name', `${state.name}/${node.name}`,
  ];
}

/** Starts the node's agent and waits until it says it is ready (subnet.env written, data plane and rules in place). */
async function startAgent(state: LabState, node: NodeState, timeoutMs = 30_000): Promise<void> {
  const log = agentLog(node);
  const offset = logSize(log);
  const daemon = startDaemon(node.netns, agentArgs(state, node), log);
  node.agentPid = daemon.pid;
  writeState(state);
  let exitCode: number | null | undefined;
  void daemon.exited.then((code) => (exitCode = code));
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (readLog(log, offset).split('\n').some((l) => l.includes('"msg":"ready"'))) break;
    if (exitCode !== undefined) throw new LabError(`the agent of node ${node.name} exited (code ${exitCode}) before it was ready; its log ${log} ends:\n${logTail(log, offset)}`);
    if (Date.now() > end) throw new LabError(`the agent of node ${node.name} is not ready after ${timeoutMs / 1000} s; its log ${log} ends:\n${logTail(log, offset)}`);
    await sleep(50);
  }
  const env = readSubnetEnv(node);
  if (!env) throw new LabError(`the agent of node ${node.name} says it is ready but wrote no ${join(node.dir, 'run/flannel/subnet.env')}`);
  node.subnet = subnetOf(env);
  node.mtu = Number(env.FLANNEL_MTU) || null;
  writeState(state);
}

async function stopAgent(state: LabState, node: NodeState): Promise<void> {
  if (node.agentPid !== null && isOurs(node.agentPid, agentDataDir(node))) await stopProcess(node.agentPid);
  node.agentPid = null;
  writeState(state);
}

function checkEtcdBinary(): void {
  if (!existsSync('/usr/bin/etcd')) throw new LabError('--store etcd needs etcd at /usr/bin/etcd: apt-get install etcd-server (.ci/run does)');
}

/** etcd v3's JSON gateway, called from inside the etcd namespace (the root namespace has no route to the underlay). */
async function etcdRequest(state: LabState, path: string, body: Record<string, string>): Promise<string> {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const encoded = Object.fromEntries(Object.entries(body).map(([k, v]) => [k, b64(v)]));
  return mustExecIn(netnsName(state.name, 'etcd'), 'curl', ['-sS', '--fail', '-X', 'POST', '-d', JSON.stringify(encoded), `${etcdUrl()}${path}`]);
}

async function startEtcd(state: LabState): Promise<void> {
  const dir = join(state.dir, 'etcd');
  mkdirSync(dir, { mode: 0o700 });
  const log = join(state.dir, 'etcd.log');
  const daemon = startDaemon(netnsName(state.name, 'etcd'), [
    '/usr/bin/etcd', '--name', `${state.name}-etcd`, '--data-dir', join(dir, 'data'),
    '--listen-client-urls', etcdUrl(), '--advertise-client-urls', etcdUrl(),
    '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
    '--initial-cluster', `${state.name}-etcd=http://127.0.0.1:2380`,
  ], log);
  state.etcdPid = daemon.pid;
  writeState(state);
  const end = Date.now() + 20_000;
  for (;;) {
    const r = await execIn(netnsName(state.name, 'etcd'), 'curl', ['-sS', '--fail', '-m', '1', `${etcdUrl()}/health`]);
    if (r.code === 0 && r.stdout.includes('true')) break;
    if (Date.now() > end) throw new LabError(`etcd of lab ${state.name} is not healthy after 20 s; its log ${log} ends:\n${logTail(log)}`);
    await sleep(200);
  }
  // flannel's layout: the network config lives in the store, at <prefix>/config.
  await etcdRequest(state, '/v3/kv/put', { key: `${ETCD_PREFIX}/config`, value: readFileSync(state.netConfPath, 'utf8') });
}

/** A pod: a namespace (what a pause container holds) attached by the node's CNI chain. */
async function createPod(state: LabState, node: NodeState, index: number): Promise<PodState> {
  const name = podName(node.name, index);
  if (state.pods.some((p) => p.name === name)) throw new LabError(`lab ${state.name} already has a pod ${name}`);
  const netns = await makeNetns(state, name);
  const pod: PodState = { name, node: node.name, netns, containerId: `${state.name}-${name}`, ip: null, portMappings: portMappingsFor(name, HOST_PORT), result: null };
  state.pods.push(pod);
  state.pods.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  writeState(state);
  pod.result = await addPodNetwork(state, node, pod);
  pod.ip = resultIpv4(pod.result);
  writeState(state);
  return pod;
}

async function createDockerContainer(state: LabState, node: NodeState): Promise<void> {
  const container = await makeNetns(state, `${node.name}-docker`);
  node.dockerNetns = container;
  writeState(state);
  const c = Handle.open(container);
  try {
    await withHandle(node.netns, async (h) => {
      await h.addLink({ kind: 'bridge', name: DOCKER.bridge, up: true });
      await h.addAddr(DOCKER.bridge, `${DOCKER.gateway}/${DOCKER.prefixLen}`);
      await h.addLink({ kind: 'veth', name: 'vethdocker0', master: DOCKER.bridge, up: true, peer: { name: 'eth0', netns: c.netns! } });
    });
    await c.setLinkUp('eth0');
    await c.addAddr('eth0', `${DOCKER.container}/${DOCKER.prefixLen}`);
    await c.addRoute({ dst: 'default', gateway: DOCKER.gateway });
  } finally {
    c.close();
  }
}

function claimLabDir(lab: string): string {
  const dir = labDir(lab);
  for (let attempt = 0; ; attempt++) {
    mkdirSync(LAB_ROOT, { recursive: true, mode: 0o755 });
    try {
      mkdirSync(dir, { mode: 0o700 });
      return dir;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new LabError(`lab ${lab} already exists (${dir}): use it, or remove it first with "twill lab down --name ${lab}"`);
      // Another lab's `down` removed the (empty) root in between.
      if (code === 'ENOENT' && attempt < 3) continue;
      throw e;
    }
  }
}

export async function labUp(opts: UpOptions): Promise<LabState> {
  const name = checkLabName(opts.name);
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_NODES) throw new LabError(`--nodes must be 1 to ${MAX_NODES}, got ${opts.nodes}`);
  if (!Number.isInteger(opts.podsPerNode) || opts.podsPerNode < 0 || opts.podsPerNode > 100) throw new LabError(`--pods-per-node must be 0 to 100, got ${opts.podsPerNode}`);
  if (existsSync(labDir(name))) throw new LabError(`lab ${name} already exists (${labDir(name)}): use it, or remove it first with "twill lab down --name ${name}"`);
  const leftover = listNetns().filter((n) => isLabNetns(name, n));
  if (leftover.length > 0) throw new LabError(`lab ${name} already has namespaces (${leftover.join(', ')}): remove them with "twill lab down --name ${name}"`);
  if (opts.store === 'etcd') {
    checkEtcdBinary();
  }
  const dir = claimLabDir(name);
  try {
    return await buildLab(name, dir, opts);
  } catch (e) {
    opts.progress(`failed: ${(e as Error).message.split('\n')[0]}; removing what was made`);
    await labDown(name, opts.progress).catch((d: Error) => opts.progress(`removing it failed too: ${d.message} (run "twill lab down --name ${name}")`));
    throw e;
  }
}

async function buildLab(name: string, dir: string, opts: UpOptions): Promise<LabState> {
  const state: LabState = {
    version: 1, name, dir, backend: opts.backend, store: opts.store,
    storeSpec: opts.store === 'local' ? `local:${join(dir, 'leases.db')}` : `etcd:${etcdUrl()}`,
    netConfPath: join(dir, 'net-conf.json'), scenario: opts.scenario, twill: twillCommand(), pluginDir: join(dir, 'bin'),
    createdAt: new Date().toISOString(), complete: false, etcdPid: null, namespaces: [], nodes: [], pods: [],
  };
  writeState(state);
  const say = opts.progress;

  writeFileSync(state.netConfPath, `${JSON.stringify({ Network: CLUSTER_NETWORK, Backend: { Type: opts.backend } })}\n`);
  mkdirSync(state.pluginDir);
  for (const t of PLUGIN_TYPES) symlinkSync(pluginTarget(), join(state.pluginDir, t));

  say(`underlay: switch ${netnsName(name, 'sw')} (198.18.0.0/24), outside ${netnsName(name, 'out')} (${UNDERLAY.outsideIp}, ${UNDERLAY.internetIp})`);
  const sw = await makeNetns(state, 'sw');
  await withHandle(sw, (h) => h.addLink({ kind: 'bridge', name: 'br0', up: true }).then(() => undefined));
  const out = await makeNetns(state, 'out');
  await plugIntoSwitch(state, 'out', out, `${UNDERLAY.outsideIp}/${UNDERLAY.prefixLen}`);
  await withHandle(out, (h) => h.addAddr('lo', `${UNDERLAY.internetIp}/32`));

  if (opts.store === 'etcd') {
    say(`etcd: ${netnsName(name, 'etcd')} at ${etcdUrl()}`);
    const etcdNs = await makeNetns(state, 'etcd');
    await plugIntoSwitch(state, 'etcd', etcdNs, `${UNDERLAY.etcdIp}/${UNDERLAY.prefixLen}`);
    await startEtcd(state);
  }

  for (let i = 1; i <= opts.nodes; i++) {
    const node: NodeState = {
      name: `n${i}`, netns: netnsName(name, `n${i}`), publicIp: UNDERLAY.nodeIp(i), switchPort: `n${i}`,
      dir: nodeDir(name, `n${i}`), agentPid: null, subnet: null, mtu: null, dockerNetns: null,
    };
    for (const sub of ['run/flannel', 'var/lib/cni/flannel', 'var/lib/cni/networks', 'etc/cni/net.d', 'var/lib/twill']) mkdirSync(join(node.dir, sub), { recursive: true });
    state.nodes.push(node);
    await makeNetns(state, node.name, NODE_SYSCTLS);
    await plugIntoSwitch(state, node.switchPort, node.netns, `${node.publicIp}/${UNDERLAY.prefixLen}`);
    // A default route, as a node has: the agent finds its interface by it, and pods reach "outside" through it.
    await withHandle(node.netns, (h) => h.addRoute({ dst: 'default', gateway: UNDERLAY.outsideIp }));
    writeNodeConflist(node);
    say(`node ${node.name}: ${node.netns}, eth0 ${node.publicIp}`);
  }

  say(`agents: starting ${opts.nodes} (${opts.backend}, ${opts.store} store)`);
  await mapLimit(state.nodes, 4, async (node) => {
    await startAgent(state, node);
    say(`node ${node.name}: agent ready (pid ${node.agentPid}), subnet ${node.subnet}, MTU ${node.mtu}`);
  });

  if (opts.scenario === 'docker') {
    for (const node of state.nodes) {
      await createDockerContainer(state, node);
      say(`node ${node.name}: docker0 ${DOCKER.gateway}/${DOCKER.prefixLen}, container ${node.dockerNetns} at ${DOCKER.container}`);
    }
  }

  const jobs = state.nodes.flatMap((node) => Array.from({ length: opts.podsPerNode }, (_, j) => ({ node, index: j + 1 })));
  // One pod at a time per node, as a kubelet's runtime mostly does; nodes in parallel.
  await mapLimit(state.nodes, 2, async (node) => {
    for (const job of jobs.filter((j) => j.node === node)) {
      const pod = await createPod(state, node, job.index);
      say(`pod ${pod.name}: ${pod.ip}${pod.portMappings.length ? ` (hostPort ${pod.portMappings[0]!.hostPort} → ${pod.portMappings[0]!.containerPort})` : ''}`);
    }
  });
  state.complete = true;
  writeState(state);
  return state;
}

export interface DownReport {
  processes: number[];
  namespaces: string[];
  dirRemoved: boolean;
}

/** Removes everything of the lab: its processes, namespaces and files, found by the state file and by name. */
export async function labDown(lab: string, progress: (msg: string) => void = () => undefined): Promise<DownReport> {
  checkLabName(lab);
  let state: LabState | null = null;
  try {
    state = readState(lab);
  } catch (e) {
    progress(`${(e as Error).message}: removing by name`);
  }
  const pids = new Set<number>(findLabProcesses(lab));
  for (const n of state?.nodes ?? []) if (n.agentPid !== null && isOurs(n.agentPid, agentDataDir(n))) pids.add(n.agentPid);
  if (state?.etcdPid && isOurs(state.etcdPid, join(state.dir, 'etcd', 'data'))) pids.add(state.etcdPid);
  if (pids.size > 0) progress(`stopping ${pids.size} process(es): ${[...pids].join(', ')}`);
  await Promise.all([...pids].map((pid) => stopProcess(pid)));

  const names = new Set<string>([...(state?.namespaces ?? []).filter((n) => isLabNetns(lab, n)), ...listNetns().filter((n) => isLabNetns(lab, n))]);
  const removed: string[] = [];
  for (const name of names) {
    if (!netnsExists(name)) continue;
    deleteNetns(name);
    removed.push(name);
  }
  if (removed.length > 0) progress(`removed ${removed.length} namespace(s): ${removed.join(' ')}`);
  const dir = labDir(lab);
  const dirRemoved = existsSync(dir);
  rmSync(dir, { recursive: true, force: true });
  for (const d of [LAB_ROOT, dirname(LAB_ROOT)]) {
    try {
      rmdirSync(d);
    } catch {
      // Another lab still lives there, or it was never ours to remove.
      break;
    }
  }
  return { processes: [...pids], namespaces: removed, dirRemoved };
}

export interface LabStatus {
  nodes: { name: string; netns: string; subnet: string | null; publicIp: string; agentPid: number | null; agentRunning: boolean }[];
  pods: { name: string; node: string; netns: string; ip: string | null }[];
}

export function labStatus(state: LabState): LabStatus {
  return {
    nodes: state.nodes.map((n) => {
      const env = readSubnetEnv(n);
      return {
        name: n.name, netns: n.netns, subnet: env ? subnetOf(env) : n.subnet, publicIp: n.publicIp,
        agentPid: n.agentPid, agentRunning: n.agentPid !== null && isOurs(n.agentPid, agentDataDir(n)),
      };
    }),
    pods: state.pods.map((p) => ({ name: p.name, node: p.node, netns: p.netns, ip: p.ip })),
  };
}

export async function labAddPod(lab: string, nodeName: string): Promise<PodState> {
  const state = requireState(lab);
  const node = findNode(state, nodeName);
  const taken = state.pods.filter((p) => p.node === node.name).map((p) => Number(p.name.slice(p.name.lastIndexOf('-p') + 2)));
  const index = Math.max(0, ...taken) + 1;
  try {
    return await createPod(state, node, index);
  } catch (e) {
    // Roll back: no half-attached pod stays behind.
    const pod = state.pods.find((p) => p.name === podName(node.name, index));
    if (pod) await removePodObjects(state, node, pod).catch(() => undefined);
    throw e;
  }
}

async function removePodObjects(state: LabState, node: NodeState, pod: PodState): Promise<void> {
  if (netnsExists(pod.netns)) {
    // DEL before the namespace goes: it releases the IP and removes the port mapping.
    await deletePodNetwork(state, node, pod);
    deleteNetns(pod.netns);
  }
  state.pods = state.pods.filter((p) => p !== pod);
  state.namespaces = state.namespaces.filter((n) => n !== pod.netns);
  writeState(state);
}

export async function labRemovePod(lab: string, podNameArg: string): Promise<void> {
  const state = requireState(lab);
  const pod = findPod(state, podNameArg);
  await removePodObjects(state, findNode(state, pod.node), pod);
}

export async function labRestartAgent(lab: string, nodeName: string): Promise<NodeState> {
  const state = requireState(lab);
  const node = findNode(state, nodeName);
  await stopAgent(state, node);
  await startAgent(state, node);
  return node;
}

/**
 * A node leaves the cluster: its agent stops, its lease is deleted from the
 * store (as `kubectl delete node` makes flannel's lease go), so that the other
 * agents remove their routes to it; then its pods and namespace go.
 */
export async function labRemoveNode(lab: string, nodeName: string): Promise<void> {
  const state = requireState(lab);
  const node = findNode(state, nodeName);
  await stopAgent(state, node);
  const subnet = readSubnetEnv(node) ? subnetOf(readSubnetEnv(node)!) : node.subnet;
  if (subnet) {
    const key = subnet.replace('/', '-');
    if (state.store === 'local') {
      const { LocalStore } = await import('../subnet/local-store.js');
      const store = new LocalStore(state.storeSpec.slice('local:'.length));
      try {
        await store.remove(key);
      } finally {
        await store.close();
      }
    } else {
      await etcdRequest(state, '/v3/kv/deleterange', { key: `${ETCD_PREFIX}/subnets/${key}` });
    }
  }
  for (const pod of state.pods.filter((p) => p.node === node.name)) {
    if (netnsExists(pod.netns)) deleteNetns(pod.netns);
    state.namespaces = state.namespaces.filter((n) => n !== pod.netns);
  }
  state.pods = state.pods.filter((p) => p.node !== node.name);
  for (const ns of [node.dockerNetns, node.netns]) {
    if (ns && netnsExists(ns)) deleteNetns(ns);
    state.namespaces = state.namespaces.filter((n) => n !== ns);
  }
  state.nodes = state.nodes.filter((n) => n !== node);
  writeState(state);
  rmSync(node.dir, { recursive: true, force: true });
}

/** The namespace a `lab exec` target names: a node (n1), a pod (n1-p1), or sw/out/etcd/nK-docker. */
export function labTargetNetns(state: LabState, target: string): string {
  const node = state.nodes.find((n) => n.name === target);
  if (node) return node.netns;
  const pod = state.pods.find((p) => p.name === target);
  if (pod) return pod.netns;
  const ns = netnsName(state.name, target);
  if (isLabNetns(state.name, ns) && netnsExists(ns)) return ns;
  throw new LabError(`lab ${state.name} has no node, pod or namespace ${JSON.stringify(target)} (nodes: ${state.nodes.map((n) => n.name).join(', ')}; pods: ${state.pods.map((p) => p.name).join(', ') || 'none'}; also sw, out)`);
}
