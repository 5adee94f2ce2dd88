// Reads a node's network into the plain model of model.ts: links of the node's
// namespace and of every namespace its veths lead into, routes, the overlay's
// neighbour and FDB entries, subnet.env, host-local's allocations, the firewall's
// FORWARD, and the sysctls pods depend on. Reads only: nothing is sent to the
// kernel but dumps and gets.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { Handle, listAllNetns, openNetnsRef, type Addr, type Link, type Netns, type NetnsRef } from '../kernel/index.js';
import { execIn } from '../firewall/exec.js';
import { parseSave, saveCommand } from '../firewall/iptables.js';
import { FLANNEL_FWD_CHAIN } from '../firewall/cluster_names.js';
import ipaddr from 'ipaddr.js';
import { formatCidr, parseAddr } from '../ipam/addr.js';
import type { Lease } from '../subnet/lease.js';
import type { SubnetStore } from '../subnet/store.js';
import { DEFAULT_DATA_DIR } from '../ipam/store.js';
import { DEFAULT_SUBNET_FILE, missingKeys, parseSubnetEnv } from '../subnet/subnet-env.js';
import {
  EXPLAIN_SCHEMA_VERSION,
  type FdbView,
  type FirewallView,
  type IpamAllocation,
  type IpamView,
  type IptablesView,
  type LeaseView,
  type LinkView,
  type NamespaceView,
  type NeighView,
  type NftChainView,
  type NodeModel,
  type OffloadView,
  type RouteView,
  type StoreView,
  type SubnetEnvView,
  type SysctlView,
} from './model.js';

export interface ReadOptions {
  /** A namespace name under /run/netns (or an nsfs path); default: this process's namespace. */
  netns?: string;
  subnetFile?: string;
  cniDataDir?: string;
  /** Read iptables/nftables (a few processes); default true. */
  firewall?: boolean;
  /**
   * The cluster's lease store (opened by the caller, who also closes it): the
   * other nodes' leases become what the overlay must hold (findings.ts).
   */
  store?: SubnetStore;
  /** This node's name in the store (Kubernetes: its Node): the lease held by that node is its own. */
  nodeName?: string;
}

/** Tables iptables-nft keeps in nftables: their forward chains are read as iptables. */
const IPTABLES_NFT_TABLES = new Set(['filter', 'nat', 'mangle', 'raw', 'security']);

/** A namespace read: its links with addresses. */
interface NsRead {
  view: NamespaceView;
  links: Link[];
  addrs: Addr[];
}

function addressesOf(link: Link, addrs: Addr[]): string[] {
  return addrs
    .filter((a) => a.ifindex === link.ifindex)
    .sort((a, b) => a.family - b.family)
    .map((a) => `${a.address}/${a.prefixLen}`);
}

async function readNamespace(h: Handle, view: NamespaceView): Promise<NsRead> {
  const [links, addrs] = await Promise.all([h.listLinks(), h.listAddrs()]);
  return { view, links, addrs };
}

/** The name of the current namespace: its name under /run/netns if it has one. */
function currentName(key: string, all: NetnsRef[]): NetnsRef | null {
  return all.find((r) => r.key === key) ?? null;
}

/**
 * The namespaces the node's veths lead into, by the namespace id each veth
 * carries (IFLA_LINK_NETNSID), matched against every namespace on the machine
 * with RTM_GETNSID: one request each, and only the matches are opened for reading.
 */
async function peerNamespaces(node: Handle, links: Link[], candidates: NetnsRef[]): Promise<Map<number, Netns>> {
  const wanted = new Set(links.filter((l) => l.kind === 'veth' && l.linkNetnsId !== null).map((l) => l.linkNetnsId!));
  const found = new Map<number, Netns>();
  for (const ref of candidates) {
    if (found.size === wanted.size) break;
    let netns: Netns;
    try {
      netns = openNetnsRef(ref);
    } catch {
      continue; // gone meanwhile (a process exited)
    }
    const id = await node.netnsId(netns).catch(() => null);
    if (id !== null && wanted.has(id) && !found.has(id)) found.set(id, netns);
    else netns.close();
  }
  return found;
}

function readSysctlOrNull(h: Handle, key: string): string | null {
  try {
    return h.readSysctl(key);
  } catch {
    return null;
  }
}

function readSysctls(h: Handle, links: Link[]): SysctlView {
  const rpFilter: Record<string, string | null> = {
    all: readSysctlOrNull(h, 'net.ipv4.conf.all.rp_filter'),
    default: readSysctlOrNull(h, 'net.ipv4.conf.default.rp_filter'),
  };
  for (const l of links.filter((x) => x.kind === 'bridge' || x.kind === 'vxlan')) {
    rpFilter[l.name] = readSysctlOrNull(h, `net/ipv4/conf/${l.name}/rp_filter`);
  }
  return {
    ipForward: readSysctlOrNull(h, 'net.ipv4.ip_forward'),
    bridgeNfCallIptables: readSysctlOrNull(h, 'net.bridge.bridge-nf-call-iptables'),
    rpFilter,
  };
}

export function readSubnetEnvView(path: string): SubnetEnvView {
  const view: SubnetEnvView = { path, found: false, error: null, network: [], subnet: null, ipv6Network: [], ipv6Subnet: null, mtu: null, ipMasq: null, missingKeys: [] };
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    view.error = code === 'ENOENT' ? 'no such file' : (e as Error).message;
    return view;
  }
  view.found = true;
  try {
    const env = parseSubnetEnv(text, path);
    Object.assign(view, { network: env.networks, subnet: env.subnet, ipv6Network: env.ipv6Networks, ipv6Subnet: env.ipv6Subnet, mtu: env.mtu, ipMasq: env.ipMasq });
    view.missingKeys = missingKeys(env);
  } catch (e) {
    view.error = (e as Error).message;
  }
  return view;
}

/** host-local's files, read without its lock or its store (which would create directories). */
export function readIpamView(dataDir: string): IpamView {
  const view: IpamView = { dataDir, found: false, error: null, allocations: [] };
  let networks: string[];
  try {
    networks = readdirSync(dataDir).filter((n) => statSync(join(dataDir, n)).isDirectory());
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') view.error = (e as Error).message;
    return view;
  }
  view.found = true;
  const allocations: IpamAllocation[] = [];
  for (const network of networks.sort()) {
    let files: string[];
    try {
      files = readdirSync(join(dataDir, network));
    } catch {
      continue;
    }
    for (const file of files) {
      // IP-named files only: not lock, not last_reserved_ip.N.
      if (!parseAddr(file)) continue;
      let text: string;
      try {
        text = readFileSync(join(dataDir, network, file), 'utf8');
      } catch {
        continue; // released meanwhile
      }
      const [containerId = '', ifname = ''] = text.trim().split('\r\n');
      allocations.push({ network, ip: file, containerId: containerId.trim(), ifname });
    }
  }
  view.allocations = allocations;
  return view;
}

async function readIptables(netns: Netns | null, variant: 'legacy' | 'nft', family: 4 | 6, errors: string[]): Promise<IptablesView> {
  const view: IptablesView = { variant, family, available: false, forwardPolicy: null, forwardRules: [], flannelFwdRules: null };
  const cmd = saveCommand(variant, family);
  try {
    // No `-t`: naming a table makes the legacy variant create it, and a read changes nothing.
    const r = await execIn(cmd, [], { netns, timeoutMs: 10_000 });
    if (r.code !== 0) {
      errors.push(`${cmd} exited with ${r.code}: ${r.stderr.trim()}`);
      return view;
    }
    const filter = parseSave(r.stdout).get('filter');
    view.available = true;
    const forward = filter?.get('FORWARD');
    if (forward) {
      view.forwardPolicy = forward.policy;
      view.forwardRules = forward.rules.map((rule) => [...rule]);
    }
    const fwd = filter?.get(FLANNEL_FWD_CHAIN);
    if (fwd) view.flannelFwdRules = fwd.rules.map((rule) => [...rule]);
  } catch (e) {
    errors.push((e as Error).message);
  }
  return view;
}

async function readNftForwardChains(netns: Netns | null, errors: string[]): Promise<NftChainView[] | null> {
  try {
    const r = await execIn('nft', ['-j', 'list', 'chains'], { netns, timeoutMs: 10_000 });
    if (r.code !== 0) {
      errors.push(`nft -j list chains exited with ${r.code}: ${r.stderr.trim()}`);
      return null;
    }
    const items = (JSON.parse(r.stdout) as { nftables: { chain?: { family: string; table: string; name: string; hook?: string; policy?: string } }[] }).nftables;
    return items
      .flatMap((i) => (i.chain ? [i.chain] : []))
      .filter((c) => c.hook === 'forward' && !((c.family === 'ip' || c.family === 'ip6') && IPTABLES_NFT_TABLES.has(c.table)))
      .map((c) => ({ family: c.family, table: c.table, chain: c.name, policy: c.policy ?? null }));
  } catch (e) {
    errors.push((e as Error).message);
    return null;
  }
}

async function readFirewall(netns: Netns | null): Promise<FirewallView> {
  const errors: string[] = [];
  const [iptables, nftForwardChains] = await Promise.all([
    Promise.all((['nft', 'legacy'] as const).flatMap((v) => ([4, 6] as const).map((f) => readIptables(netns, v, f, errors)))),
    readNftForwardChains(netns, errors),
  ]);
  return { iptables, nftForwardChains, errors };
}

/** vxlan BackendData: {VNI, VtepMAC}; anything else gives nulls (the agent refuses such a lease too). */
function vxlanData(data: unknown): { vni: number | null; mac: string | null } {
  if (typeof data !== 'object' || data === null) return { vni: null, mac: null };
  const d = data as Record<string, unknown>;
  const mac = typeof d.VtepMAC === 'string' && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(d.VtepMAC) ? d.VtepMAC.toLowerCase() : null;
  return { vni: typeof d.VNI === 'number' ? d.VNI : null, mac };
}

/** Whether FLANNEL_SUBNET-style "10.244.1.1/24" lies in the lease subnet "10.244.1.0/24" of the same size. */
function sameSubnet(envCidr: string | null, leaseCidr: string | null): boolean {
  if (!envCidr || !leaseCidr) return false;
  try {
    const [a, alen] = ipaddr.parseCIDR(envCidr);
    const [b, blen] = ipaddr.parseCIDR(leaseCidr);
    return alen === blen && a.kind() === b.kind() && a.match(b, blen);
  } catch {
    return false;
  }
}

export function leaseView(key: string, l: Lease, node?: string): LeaseView {
  const v4 = vxlanData(l.attrs.backendData);
  const v6 = vxlanData(l.attrs.backendV6Data);
  return {
    key,
    node: node ?? null,
    subnet: l.subnet ? formatCidr(l.subnet) : null,
    ipv6Subnet: l.ipv6Subnet ? formatCidr(l.ipv6Subnet) : null,
    publicIp: l.attrs.publicIp,
    publicIpv6: l.attrs.publicIpv6,
    backendType: l.attrs.backendType,
    vtepMac: v4.mac,
    vtepMacV6: v6.mac,
    vni: l.attrs.backendType === 'vxlan' ? (v4.vni ?? v6.vni ?? 1) : null,
    expiresAt: l.expiresAt === null ? null : new Date(l.expiresAt).toISOString(),
    own: false,
  };
}

/**
 * Marks this node's own lease: the one the store says this node holds (a
 * Kubernetes Node of that name: the truth, even when subnet.env is stale);
 * else the one whose subnet is subnet.env's; without a usable subnet.env, the
 * one whose public IP is an address of the node (the agent's default), else
 * the one whose subnet .0 is on the node's vxlan device.
 */
export function markOwnLease(leases: LeaseView[], env: SubnetEnvView, nodeLinks: LinkView[], nodeName?: string): void {
  let own = nodeName === undefined ? undefined : leases.find((l) => l.node === nodeName);
  own ??= leases.find((l) => sameSubnet(env.subnet, l.subnet) || sameSubnet(env.ipv6Subnet, l.ipv6Subnet));
  if (!own) {
    const addrs = new Set(nodeLinks.filter((l) => l.kind !== 'vxlan').flatMap((l) => l.addresses.map((a) => a.split('/')[0]!)));
    own = leases.find((l) => (l.publicIp !== null && addrs.has(l.publicIp)) || (l.publicIpv6 !== null && addrs.has(l.publicIpv6)));
  }
  if (!own) {
    const canon = (ip: string): string => (ipaddr.isValid(ip) ? ipaddr.parse(ip).toString() : ip);
    const vtepIps = new Set(nodeLinks.filter((l) => l.kind === 'vxlan').flatMap((l) => l.addresses.map((a) => canon(a.split('/')[0]!))));
    // A lease's subnet is written with its network address first: "10.244.1.0/24".
    own = leases.find((l) => [l.subnet, l.ipv6Subnet].some((c) => c !== null && vtepIps.has(canon(c.split('/')[0]!))));
  }
  if (own) own.own = true;
}

/** Lists the store; its failure is kept in the view (the node is still explained, without the lease checks). */
export async function readStoreView(store: SubnetStore, env: SubnetEnvView, nodeLinks: LinkView[], nodeName?: string): Promise<StoreView> {
  const view: StoreView = { description: store.description, error: null, revision: null, leases: [], malformed: [] };
  try {
    const r = await store.list();
    view.revision = r.revision;
    view.leases = r.leases.map((s) => leaseView(s.key, s.lease, s.node));
    view.malformed = r.malformed.map((x) => ({ key: x.key, error: x.error }));
    markOwnLease(view.leases, env, nodeLinks, nodeName);
  } catch (e) {
    view.error = `${store.description}: ${(e as Error).message}`;
  }
  return view;
}

/**
 * Whether a kernel release has the VXLAN checksum fix (commit ea64d8d6, kubernetes#92035):
 * 5.7 and later, and the stable backports 5.4.41+ and 4.19.123+.
 */
export function kernelHasVxlanChecksumFix(kernel: string): boolean {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(kernel);
  if (!m) return true; // unknown form: do not cry wolf
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (major !== 5 && major !== 4) return major > 5;
  if (major === 5) return minor >= 7 || (minor === 4 && patch >= 41);
  return minor === 19 && patch >= 123;
}

async function readOffload(netns: Netns | null, vxlanNames: string[]): Promise<OffloadView> {
  const kernel = release();
  const kernelFixed = kernelHasVxlanChecksumFix(kernel);
  const devices: OffloadView['devices'] = [];
  if (!kernelFixed) {
    for (const name of vxlanNames) {
      let txChecksumming: boolean | null = null;
      try {
        const r = await execIn('ethtool', ['-k', name], { netns, timeoutMs: 10_000 });
        const m = /^tx-checksumming:\s*(on|off)/m.exec(r.stdout);
        if (r.code === 0 && m) txChecksumming = m[1] === 'on';
      } catch {
        // ethtool missing: unknown.
      }
      devices.push({ name, txChecksumming });
    }
  }
  return { kernel, kernelFixed, devices };
}

/** Reads the node (and its pods' namespaces) into the model. */
export async function readNode(opts: ReadOptions = {}): Promise<NodeModel> {
  const node = Handle.open(opts.netns);
  const opened: Netns[] = [];
  try {
    const all = listAllNetns();
    const self = currentName(node.nsKey, all);
    const nodeName = opts.netns ?? self?.name ?? 'current';
    const nodeView: NamespaceView = { name: nodeName, role: 'node', path: node.netns?.path ?? self?.path ?? null, pids: self?.pids ?? [] };
    const nodeRead = await readNamespace(node, nodeView);

    const candidates = all.filter((r) => r.key !== node.nsKey);
    const peers = await peerNamespaces(node, nodeRead.links, candidates);
    opened.push(...peers.values());
    const podReads = new Map<number, NsRead>();
    await Promise.all(
      [...peers].map(async ([id, netns]) => {
        const ref = candidates.find((c) => c.name === netns.name)!;
        const h = Handle.open(netns);
        try {
          // A pod's veth is a bridge port; a veth on no bridge (an underlay, a lab's cable) leads elsewhere.
          const role = nodeRead.links.some((l) => l.linkNetnsId === id && l.masterIndex !== null) ? 'pod' : 'other';
          podReads.set(id, await readNamespace(h, { name: netns.name, role, path: netns.path, pids: ref.pids }));
        } finally {
          h.close();
        }
      }),
    );
    const pods = [...podReads.values()].sort((a, b) => a.view.name.localeCompare(b.view.name));

    const nodeLinks = nodeRead.links;
    const nameOf = (ifindex: number | null): string | null => (ifindex === null ? null : (nodeLinks.find((l) => l.ifindex === ifindex)?.name ?? null));

    const links: LinkView[] = [];
    const toView = (ns: NsRead, l: Link, peer: LinkView['peer']): LinkView => ({
      netns: ns.view.name,
      name: l.name,
      ifindex: l.ifindex,
      kind: l.kind,
      state: l.operState,
      up: l.up,
      carrier: l.lowerUp,
      mtu: l.mtu,
      mac: l.mac,
      master: l.masterIndex === null ? null : (ns.links.find((m) => m.ifindex === l.masterIndex)?.name ?? null),
      addresses: addressesOf(l, ns.addrs),
      peer,
      vxlan: l.vxlan
        ? { vni: l.vxlan.vni, port: l.vxlan.port, local: l.vxlan.local, underlay: ns === nodeRead ? nameOf(l.vxlan.deviceIndex) : null, learning: l.vxlan.learning }
        : null,
    });
    const sortIndex = (a: Link, b: Link) => a.ifindex - b.ifindex;
    for (const l of [...nodeLinks].sort(sortIndex)) {
      let peer: LinkView['peer'] = null;
      if (l.kind === 'veth' && l.parentIndex !== null) {
        if (l.linkNetnsId === null) {
          peer = { netns: nodeName, name: nameOf(l.parentIndex), ifindex: l.parentIndex };
        } else {
          const pod = podReads.get(l.linkNetnsId);
          const p = pod?.links.find((x) => x.ifindex === l.parentIndex);
          peer = { netns: pod?.view.name ?? null, name: p?.name ?? null, ifindex: l.parentIndex };
        }
      }
      links.push(toView(nodeRead, l, peer));
    }
    for (const pod of pods) {
      for (const l of [...pod.links].sort(sortIndex)) {
        // The pod end's peer is the node's veth (its IFLA_LINK is an index in the node's namespace).
        const back = l.kind === 'veth' ? links.find((n) => n.peer?.netns === pod.view.name && n.peer.ifindex === l.ifindex) : undefined;
        links.push(toView(pod, l, back ? { netns: nodeName, name: back.name, ifindex: back.ifindex } : l.kind === 'veth' && l.parentIndex !== null ? { netns: null, name: null, ifindex: l.parentIndex } : null));
      }
    }

    const vxlans = nodeLinks.filter((l) => l.kind === 'vxlan');
    const [routes, neighs, fdb] = await Promise.all([
      node.listRoutes(),
      vxlans.length ? node.listNeighs() : Promise.resolve([]),
      vxlans.length ? node.listFdb() : Promise.resolve([]),
    ]);
    const vxlanIndexes = new Set(vxlans.map((v) => v.ifindex));
    const routeViews: RouteView[] = routes.map((r) => ({ family: r.family, dst: r.dst, gateway: r.gateway, dev: nameOf(r.ifindex), onlink: r.onlink, scope: r.scope, protocol: r.protocol }));
    const neighViews: NeighView[] = neighs.filter((n) => vxlanIndexes.has(n.ifindex)).map((n) => ({ dev: nameOf(n.ifindex)!, ip: n.ip, mac: n.mac, permanent: n.permanent }));
    const fdbViews: FdbView[] = fdb.filter((f) => vxlanIndexes.has(f.ifindex)).map((f) => ({ dev: nameOf(f.ifindex)!, mac: f.mac, dst: f.dst, permanent: f.permanent }));

    const [firewall, offload] = await Promise.all([
      opts.firewall === false ? Promise.resolve<FirewallView>({ iptables: [], nftForwardChains: null, errors: [] }) : readFirewall(node.netns),
      readOffload(node.netns, vxlans.map((v) => v.name)),
    ]);

    const subnetEnv = readSubnetEnvView(opts.subnetFile ?? DEFAULT_SUBNET_FILE);
    const nodeLinkViews = links.filter((l) => l.netns === nodeName);
    const store = opts.store ? await readStoreView(opts.store, subnetEnv, nodeLinkViews, opts.nodeName) : null;

    return {
      schemaVersion: EXPLAIN_SCHEMA_VERSION,
      node: { netns: nodeName, readAt: new Date().toISOString() },
      namespaces: [nodeView, ...pods.map((p) => p.view)],
      links,
      routes: routeViews,
      neighbours: neighViews,
      fdb: fdbViews,
      subnetEnv,
      ipam: readIpamView(opts.cniDataDir ?? DEFAULT_DATA_DIR),
      firewall,
      sysctls: readSysctls(node, nodeLinks),
      offload,
      store,
    };
  } finally {
    for (const n of opened) n.close();
    node.close();
  }
}
