// What is wrong (or worth knowing) on a node, from the read model alone: pure
// functions, so every finding is unit-testable with a hand-made model. Each
// finding has a stable id (docs/TROUBLESHOOTING.md has a section per id), a
// severity, a subject, a message for a person and a fix.
import ipaddr from 'ipaddr.js';
import { ruleTarget } from '../firewall/iptables.js';
import { FLANNEL_FWD_CHAIN, tryCidr } from '../firewall/cluster_names.js';
import { dropsClusterTraffic } from '../firewall/cluster_iptables.js';
import { vxlanDeviceName } from '../backend/vxlan.js';
import { TWILL_ROUTE_PROTOCOL } from '../backend/backend.js';
import type { Finding, FindingId, LinkView, NodeModel, RouteView, Severity, StoreView, SubnetEnvView } from './model.js';

/** The bridge the CNI bridge plugin (and flannel's delegate) puts pods on. */
export const POD_BRIDGE = 'cni0';
export const DOCKER_BRIDGE = 'docker0';
/** VXLAN header overhead on an IPv4 / IPv6 underlay. */
const VXLAN_OVERHEAD = { 4: 50, 6: 70 } as const;

interface Net {
  addr: ipaddr.IPv4 | ipaddr.IPv6;
  len: number;
  text: string;
}

/** "10.244.1.1/24" → the address and prefix (host bits kept); null when it is not a CIDR. */
function cidr(text: string): Net | null {
  try {
    const [addr, len] = ipaddr.parseCIDR(text);
    return { addr, len, text };
  } catch {
    return null;
  }
}

const ipOf = (text: string): string => text.split('/')[0]!;

function sameFamily(a: Net, b: Net): boolean {
  return a.addr.kind() === b.addr.kind();
}

/** Whether the networks of a and b share an address. */
function overlaps(a: Net, b: Net): boolean {
  return sameFamily(a, b) && a.addr.match(b.addr, Math.min(a.len, b.len));
}

/** Whether address ip (plain) lies inside net. */
function contains(net: Net, ip: string): boolean {
  try {
    const addr = ipaddr.parse(ip);
    return addr.kind() === net.addr.kind() && addr.match(net.addr, net.len);
  } catch {
    return false;
  }
}

function networkAddress(net: Net): string {
  return net.addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(net.text).toString() : ipaddr.IPv6.networkAddressFromCIDR(net.text).toString();
}

const canonicalIp = (ip: string): string => {
  try {
    return ipaddr.parse(ip).toString();
  } catch {
    return ip;
  }
};

const sameCidr = (a: string, b: string): boolean => {
  const x = cidr(a);
  const y = cidr(b);
  return x !== null && y !== null && x.len === y.len && x.addr.toString() === y.addr.toString();
};

/** subnet.env when it is complete and parsed; otherwise checks that need it are skipped. */
function usableEnv(env: SubnetEnvView): SubnetEnvView | null {
  return env.found && env.error === null && env.missingKeys.length === 0 ? env : null;
}

class Findings {
  readonly list: Finding[] = [];
  add(id: FindingId, severity: Severity, subject: string, message: string, fix: string): void {
    this.list.push({ id, severity, subject, message, fix });
  }
}

function subnetEnvChecks(m: NodeModel, out: Findings): void {
  const env = m.subnetEnv;
  if (!env.found || env.error !== null) {
    out.add(
      'subnet-env-missing',
      'error',
      env.path,
      `${env.path} cannot be read (${env.error ?? 'unknown error'}). The node agent (twill agent or flanneld) writes it once it holds a subnet lease; without it the flannel CNI plugin cannot set up any pod on this node ("failed to load flannel 'subnet.env' file").`,
      'Check that the node agent runs on this node and holds a lease (its log; `kubectl -n kube-flannel get pods -o wide`). It rewrites the file at start. If it runs with --subnet-file, pass the same path to `twill explain --subnet-file`.',
    );
    return;
  }
  if (env.missingKeys.length) {
    out.add(
      'subnet-env-missing',
      'error',
      env.path,
      `${env.path} lacks ${env.missingKeys.join(', ')}: the agent has not finished writing it, or something else wrote it. The flannel CNI plugin refuses an incomplete file.`,
      'Restart the node agent so that it writes the file again (atomically); do not edit it by hand.',
    );
  }
}

function bridgeChecks(nodeLinks: LinkView[], env: SubnetEnvView | null, out: Findings): void {
  const docker = nodeLinks.find((l) => l.name === DOCKER_BRIDGE && l.kind === 'bridge');
  if (docker && !nodeLinks.some((l) => l.master === DOCKER_BRIDGE)) {
    const v4 = docker.addresses.filter((a) => !a.includes(':'));
    out.add(
      'docker0-unused',
      'info',
      DOCKER_BRIDGE,
      `docker0${v4.length ? ` (${v4.join(', ')})` : ''} is Docker's own bridge, with no ports${docker.carrier ? '' : ' (NO-CARRIER)'}: Kubernetes pods do not use it, pods are on ${POD_BRIDGE}. ` +
        'A veth shown as `vethXXXX@ifN` is not tied to the link with index N here: N is the index of its other end (the pod\'s eth0) inside the pod\'s own namespace.',
      'Nothing to do. If Docker is not used on this node, stopping it removes docker0 (and its iptables rules, including FORWARD policy DROP).',
    );
  }
  const bridge = nodeLinks.find((l) => l.name === POD_BRIDGE && l.kind === 'bridge');
  if (!bridge || !env?.subnet) return;
  const want = env.subnet;
  const v4 = bridge.addresses.filter((a) => !a.includes(':'));
  if (v4.length > 0 && !v4.some((a) => sameCidr(a, want))) {
    out.add(
      'bridge-address-conflict',
      'error',
      POD_BRIDGE,
      `${POD_BRIDGE} has ${v4.join(', ')}, but this node's pod subnet is ${want} (FLANNEL_SUBNET in ${env.path}). ` +
        `New pods fail with: failed to set bridge addr: "${POD_BRIDGE}" already has an IP address different from ${want}. This happens when the node got another subnet lease (re-joined, or its lease expired) while ${POD_BRIDGE} kept the old one.`,
      `Drain the node, then \`ip link delete ${POD_BRIDGE}\` (the next pod recreates it with the right address), or \`ip addr replace ${want} dev ${POD_BRIDGE}\` after deleting the old address; pods still holding old addresses must be recreated.`,
    );
  }
}

function mtuChecks(m: NodeModel, nodeLinks: LinkView[], env: SubnetEnvView | null, out: Findings): void {
  const byName = new Map(nodeLinks.map((l) => [l.name, l]));
  const flannelMtu = env?.mtu ?? null;
  for (const v of nodeLinks.filter((l) => l.kind === 'vxlan')) {
    const underlay = v.vxlan?.underlay ? byName.get(v.vxlan.underlay) : undefined;
    const overhead = v.vxlan?.local?.includes(':') ? VXLAN_OVERHEAD[6] : VXLAN_OVERHEAD[4];
    if (underlay && v.mtu > underlay.mtu - overhead) {
      out.add(
        'mtu-mismatch',
        'error',
        v.name,
        `${v.name} has MTU ${v.mtu}, but its underlay ${underlay.name} (MTU ${underlay.mtu}) leaves room for ${underlay.mtu - overhead} after the ${overhead}-byte VXLAN header: full-size packets between nodes are dropped (small ones, like ping, pass).`,
        `ip link set ${v.name} mtu ${underlay.mtu - overhead}, and make FLANNEL_MTU the same (the agent's net-conf.json Backend.MTU, or the interface it picks).`,
      );
    } else if (flannelMtu !== null && v.mtu !== flannelMtu) {
      out.add(
        'mtu-mismatch',
        'warning',
        v.name,
        `${v.name} has MTU ${v.mtu}, but FLANNEL_MTU in ${m.subnetEnv.path} is ${flannelMtu}: pods get ${flannelMtu}, the overlay carries ${v.mtu}.`,
        'Restart the node agent: it sets both from the same value.',
      );
    }
  }
  if (flannelMtu === null) return;
  const bridge = byName.get(POD_BRIDGE);
  if (bridge && bridge.mtu > flannelMtu) {
    out.add('mtu-mismatch', 'warning', POD_BRIDGE, `${POD_BRIDGE} has MTU ${bridge.mtu}, more than FLANNEL_MTU ${flannelMtu}.`, `ip link set ${POD_BRIDGE} mtu ${flannelMtu}`);
  }
  for (const port of nodeLinks.filter((l) => l.kind === 'veth' && l.master === POD_BRIDGE)) {
    const pod = port.peer?.netns && port.peer.name ? m.links.find((l) => l.netns === port.peer!.netns && l.ifindex === port.peer!.ifindex) : undefined;
    if (pod && pod.mtu > flannelMtu) {
      out.add(
        'mtu-mismatch',
        'error',
        `${pod.name} in ${pod.netns}`,
        `${pod.name} in pod namespace ${pod.netns} has MTU ${pod.mtu}, more than FLANNEL_MTU ${flannelMtu}: the pod sends packets the overlay cannot carry; they are dropped (or fragmented) on the way to other nodes, so large transfers hang while ping works.`,
        `Recreate the pod (the CNI plugin sets FLANNEL_MTU), or \`ip -n ${pod.netns} link set ${pod.name} mtu ${flannelMtu}\`; check the CNI config does not set its own "mtu".`,
      );
    } else if (pod && pod.mtu !== port.mtu) {
      out.add(
        'mtu-mismatch',
        'warning',
        port.name,
        `${port.name} has MTU ${port.mtu}, its other end ${pod.name} in ${pod.netns} has ${pod.mtu}: the two ends of a veth should agree.`,
        `ip link set ${port.name} mtu ${pod.mtu}`,
      );
    }
  }
}

function overlayChecks(m: NodeModel, nodeLinks: LinkView[], env: SubnetEnvView | null, out: Findings): void {
  const clusterNets = (env?.network ?? []).concat(env?.ipv6Network ?? []).map(cidr).filter((n): n is Net => n !== null);
  const ownSubnets = [env?.subnet, env?.ipv6Subnet].flatMap((s) => (s ? [cidr(s)] : [])).filter((n): n is Net => n !== null);
  const store = m.store !== null && m.store.error === null ? m.store : null;
  if (store) leaseChecks(m, nodeLinks, env, store, out);
  for (const v of nodeLinks.filter((l) => l.kind === 'vxlan')) {
    // With the store's leases the overlay was judged against them (leaseChecks); the guesses below are for a node without.
    if (store) {
      subnetEnvStaleOnDevice(v, env, out);
      continue;
    }
    const neighs = m.neighbours.filter((n) => n.dev === v.name && n.mac !== null);
    const fdb = m.fdb.filter((f) => f.dev === v.name && f.dst !== null);
    const routes = m.routes.filter((r) => r.dev === v.name && r.gateway !== null);
    for (const r of routes) {
      const dst = cidr(r.dst);
      const inCluster = dst !== null && clusterNets.some((c) => overlaps(c, dst) && c.len <= dst.len);
      const own = dst !== null && ownSubnets.some((s) => overlaps(s, dst));
      const subject = `route ${r.dst} via ${r.gateway} dev ${v.name}`;
      if (clusterNets.length > 0 && (!inCluster || own)) {
        out.add(
          'stale-route',
          'warning',
          subject,
          own
            ? `${r.dst} is this node's own pod subnet (FLANNEL_SUBNET), yet it is routed into the overlay: left over from an earlier lease; traffic to local pods leaves the node.`
            : `${r.dst} is outside the cluster network (${clusterNets.map((c) => c.text).join(', ')}) but routed into the overlay: left over from an earlier network configuration.`,
          `ip route del ${r.dst} via ${r.gateway} dev ${v.name}`,
        );
        continue;
      }
      if (!neighs.some((n) => canonicalIp(n.ip) === canonicalIp(r.gateway!))) {
        out.add(
          'missing-neighbour',
          'error',
          subject,
          `Pods behind ${r.gateway} are routed into ${v.name}, but there is no neighbour entry for ${r.gateway} (the remote node's VTEP MAC): the kernel cannot address the frame, and traffic to ${r.dst} is dropped. If that node left the cluster, the route is what is stale.`,
          `Restart the node agent (it writes the neighbour, FDB entry and route of every lease); or \`ip neigh replace ${r.gateway} lladdr <remote VtepMAC> dev ${v.name} nud permanent\`. If the node is gone: ip route del ${r.dst} via ${r.gateway} dev ${v.name}`,
        );
      }
    }
    for (const n of neighs) {
      if (!n.permanent) continue;
      const mac = n.mac!.toLowerCase();
      if (!fdb.some((f) => f.mac.toLowerCase() === mac)) {
        out.add(
          'missing-fdb',
          'error',
          `neighbour ${n.ip} lladdr ${n.mac} dev ${v.name}`,
          `${v.name} knows ${n.ip} as MAC ${n.mac}, but has no FDB entry telling which node (VTEP IP) that MAC lives on: frames for it are not sent anywhere, so pods on that node are unreachable.`,
          `Restart the node agent; or \`bridge fdb append ${n.mac} dev ${v.name} dst <remote node IP>\`.`,
        );
      }
      if (!routes.some((r) => canonicalIp(r.gateway!) === canonicalIp(n.ip))) {
        const subnetHint = clusterNets.some((c) => contains(c, n.ip)) ? ` (${n.ip} is a remote node's subnet address)` : '';
        out.add(
          'missing-route',
          'warning',
          `neighbour ${n.ip} dev ${v.name}`,
          `${v.name} has a neighbour and FDB entry for ${n.ip}${subnetHint}, but no route uses it: pods of that node are unreachable from here (or the entries are left from a node that is gone).`,
          `Restart the node agent; or \`ip route replace <remote subnet> via ${n.ip} dev ${v.name} onlink\`. If the node is gone, delete the neighbour: ip neigh del ${n.ip} dev ${v.name}`,
        );
      }
    }
    subnetEnvStaleOnDevice(v, env, out);
  }
  if (env?.subnet) {
    const own = cidr(env.subnet);
    if (own && clusterNets.length > 0 && !clusterNets.some((c) => sameFamily(c, own) && overlaps(c, own) && c.len <= own.len)) {
      out.add(
        'subnet-env-stale',
        'error',
        env.path,
        `FLANNEL_SUBNET ${env.subnet} is not inside FLANNEL_NETWORK ${env.network.join(', ')}: the file mixes two configurations.`,
        'Restart the node agent so it rewrites the file from the current network configuration.',
      );
    }
  }
}

/** The agent puts its subnet's .0/32 on the vxlan device: if subnet.env names another subnet, one of them is old. */
function subnetEnvStaleOnDevice(v: LinkView, env: SubnetEnvView | null, out: Findings): void {
  if (!env?.subnet) return;
  const own = cidr(env.subnet);
  const v4 = v.addresses.filter((a) => !a.includes(':'));
  if (own && v4.length > 0 && !v4.some((a) => ipOf(a) === networkAddress(own))) {
    out.add(
      'subnet-env-stale',
      'warning',
      env.path,
      `${env.path} says this node's subnet is ${env.subnet}, but ${v.name} carries ${v4.join(', ')} (the agent puts its lease's subnet .0/32 there): one of them is from an earlier lease. Pods get addresses the other nodes route elsewhere.`,
      'Restart the node agent so it writes subnet.env and the device from its current lease; then recreate pods whose addresses are outside the new subnet.',
    );
  }
}

const sameIp = (a: string | null, b: string | null): boolean => a !== null && b !== null && canonicalIp(a) === canonicalIp(b);
const routeText = (r: RouteView): string => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''}${r.onlink ? ' onlink' : ''} (protocol ${r.protocol})`;

/**
 * The overlay against the store's leases: for every other node's lease, what
 * its agent's backend programs (backend/vxlan.ts, backend/hostgw.ts) must be in
 * the kernel; and what the kernel holds for a subnet, MAC or VTEP that no lease
 * has is stale.
 */
function leaseChecks(m: NodeModel, nodeLinks: LinkView[], env: SubnetEnvView | null, store: StoreView, out: Findings): void {
  const peers = store.leases.filter((l) => !l.own);
  const vxlanNames = new Set(nodeLinks.filter((l) => l.kind === 'vxlan').map((l) => l.name));
  const wantRoutes: Net[] = [];
  const wantNeigh = new Set<string>();
  const wantFdb = new Set<string>();
  const fdbKey = (dev: string, mac: string, dst: string | null) => `${dev}|${mac.toLowerCase()}|${dst === null ? '' : canonicalIp(dst)}`;
  const neighKey = (dev: string, ip: string) => `${dev}|${canonicalIp(ip)}`;
  const agentFix = 'Restart the node agent (twill agent or flanneld): it programs every lease at start and keeps it in place';

  for (const lease of peers) {
    for (const family of [4, 6] as const) {
      const subnetText = family === 4 ? lease.subnet : lease.ipv6Subnet;
      const publicIp = family === 4 ? lease.publicIp : lease.publicIpv6;
      const subnet = subnetText ? cidr(subnetText) : null;
      if (!subnet || !publicIp) continue;
      wantRoutes.push(subnet);
      const route = m.routes.find((r) => sameCidr(r.dst, subnet.text));
      const node = `${lease.node ? `node ${lease.node}` : 'the node'} at ${publicIp} (lease ${lease.key})`;
      if (lease.backendType === 'host-gw') {
        if (!route || !sameIp(route.gateway, publicIp)) {
          out.add(
            'missing-route',
            'error',
            `route ${subnet.text}`,
            `The store says ${subnet.text} belongs to ${node}, with host-gw: it must be routed via ${publicIp}, but ${route ? `the route is ${routeText(route)}` : 'there is no route for it'}. Pods on that node are unreachable from here.`,
            `${agentFix}; or \`ip route replace ${subnet.text} via ${publicIp}\`.`,
          );
        }
        continue;
      }
      // Other backends (udp, wireguard, ipsec, ...) program things explain does not model.
      if (lease.backendType !== 'vxlan') continue;
      // DirectRouting: a peer on the same link is routed via its public IP, without the overlay.
      if (route && sameIp(route.gateway, publicIp)) continue;
      const devName = vxlanDeviceName(lease.vni ?? 1, family);
      const mac = family === 4 ? lease.vtepMac : lease.vtepMacV6;
      const gw = networkAddress(subnet);
      if (!vxlanNames.has(devName)) {
        out.add(
          'missing-route',
          'error',
          `route ${subnet.text}`,
          `The store says ${subnet.text} belongs to ${node}, over VXLAN device ${devName}, but this node has no ${devName}: nothing carries traffic to that node's pods.`,
          `${agentFix}; it creates ${devName}.`,
        );
        continue;
      }
      if (mac) {
        wantNeigh.add(neighKey(devName, gw));
        wantFdb.add(fdbKey(devName, mac, publicIp));
        const n = m.neighbours.find((x) => x.dev === devName && sameIp(x.ip, gw) && x.mac !== null);
        if (!n || n.mac!.toLowerCase() !== mac || !n.permanent) {
          out.add(
            'missing-neighbour',
            'error',
            `neighbour ${gw} dev ${devName}`,
            `The store says ${node} has VTEP MAC ${mac} for ${subnet.text}, but ${devName} ${n ? `knows ${gw} as ${n.mac}${n.permanent ? '' : ' (not permanent)'}` : `has no neighbour entry for ${gw}`}: the kernel cannot address frames to that node, and traffic to ${subnet.text} is dropped.`,
            `${agentFix}; or \`ip neigh replace ${gw} lladdr ${mac} dev ${devName} nud permanent\`.`,
          );
        }
        const entries = m.fdb.filter((f) => f.dev === devName && f.mac.toLowerCase() === mac);
        if (!entries.some((f) => sameIp(f.dst, publicIp))) {
          out.add(
            'missing-fdb',
            'error',
            `fdb ${mac} dev ${devName}`,
            `The store says VTEP MAC ${mac} is ${node}, but ${devName} has ${entries.length ? `it pointing at ${entries.map((f) => f.dst ?? '(no destination)').join(', ')}` : 'no FDB entry for it'}: frames for ${subnet.text} are not sent to ${publicIp}, so pods on that node are unreachable.`,
            `${agentFix}; or \`bridge fdb replace ${mac} dev ${devName} dst ${publicIp}\`.`,
          );
        }
      }
      if (!route || !sameIp(route.gateway, gw) || route.dev !== devName) {
        out.add(
          'missing-route',
          'error',
          `route ${subnet.text}`,
          `The store says ${subnet.text} belongs to ${node}: it must be routed via ${gw} dev ${devName} onlink, but ${route ? `the route is ${routeText(route)}` : 'there is no route for it'}. Pods on that node are unreachable from here.`,
          `${agentFix}; or \`ip route replace ${subnet.text} via ${gw} dev ${devName} onlink\`.`,
        );
      }
    }
  }

  // Stale: what twill's or flannel's agent put there for a subnet, a MAC or a VTEP that no lease has now.
  const clusterNets = (env?.network ?? []).concat(env?.ipv6Network ?? []).map(cidr).filter((n): n is Net => n !== null);
  const ownNets = [env?.subnet, env?.ipv6Subnet].flatMap((s) => (s ? [cidr(s)] : [])).filter((n): n is Net => n !== null);
  for (const lease of store.leases.filter((l) => l.own)) {
    for (const s of [lease.subnet, lease.ipv6Subnet]) if (s && cidr(s)) ownNets.push(cidr(s)!);
  }
  for (const r of m.routes) {
    const dst = cidr(r.dst);
    if (!dst || dst.addr.range() === 'linkLocal') continue;
    const inCluster = clusterNets.some((c) => overlaps(c, dst) && c.len <= dst.len);
    // twill marks its routes (protocol 87); flanneld's have the default protocol (boot) with a gateway, or lead into its vxlan device.
    const agents = r.protocol === TWILL_ROUTE_PROTOCOL || (r.dev !== null && vxlanNames.has(r.dev)) || (inCluster && r.protocol === 3 && r.gateway !== null);
    if (!agents) continue;
    const own = ownNets.some((o) => overlaps(o, dst));
    if (!own && wantRoutes.some((w) => w.len === dst.len && overlaps(w, dst))) continue;
    out.add(
      'stale-route',
      'warning',
      `route ${routeText(r)}`,
      own
        ? `${r.dst} is this node's own pod subnet, yet a node agent's route sends it elsewhere: left over from an earlier lease; traffic to local pods leaves the node.`
        : `No lease in ${store.description} owns ${r.dst}, yet a node agent's route for it is here: left over from a node that left (or from an earlier network configuration). Traffic to those addresses goes to a node that no longer has them.`,
      `ip route del ${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''} (a running twill agent removes its own, protocol ${TWILL_ROUTE_PROTOCOL}, by itself)`,
    );
  }
  for (const f of m.fdb) {
    if (f.dst === null || !f.permanent || !vxlanNames.has(f.dev) || f.mac === '00:00:00:00:00:00') continue;
    if (wantFdb.has(fdbKey(f.dev, f.mac, f.dst))) continue;
    const sameMac = peers.find((l) => l.vtepMac === f.mac.toLowerCase() || l.vtepMacV6 === f.mac.toLowerCase());
    out.add(
      'stale-fdb',
      'warning',
      `fdb ${f.mac} dst ${f.dst} dev ${f.dev}`,
      sameMac
        ? `${f.dev} sends MAC ${f.mac} to ${f.dst}, but the store says that VTEP is at ${sameMac.publicIp ?? sameMac.publicIpv6 ?? '(no public IP)'} (lease ${sameMac.key}): left from before that node changed its address.`
        : `${f.dev} sends MAC ${f.mac} to ${f.dst}, but no lease in ${store.description} has that VTEP MAC: left by a node that left, or that came back with a new VtepMAC (its device was recreated).`,
      `bridge fdb del ${f.mac} dev ${f.dev} dst ${f.dst} (a running twill agent removes it by itself)`,
    );
  }
  for (const n of m.neighbours) {
    if (!n.permanent || n.mac === null || !vxlanNames.has(n.dev)) continue;
    if (wantNeigh.has(neighKey(n.dev, n.ip))) continue;
    out.add(
      'stale-neighbour',
      'warning',
      `neighbour ${n.ip} lladdr ${n.mac} dev ${n.dev}`,
      `${n.dev} has a permanent neighbour ${n.ip} (MAC ${n.mac}), but no lease in ${store.description} has ${n.ip} as its subnet's VTEP address: left by a node that left.`,
      `ip neigh del ${n.ip} dev ${n.dev} (a running twill agent removes it by itself)`,
    );
  }
}

function storeChecks(m: NodeModel, out: Findings): void {
  if (m.store?.error) {
    out.add(
      'store-unreadable',
      'error',
      m.store.description,
      `The lease store could not be read (${m.store.error}): the overlay was judged from the kernel's state alone, without knowing which nodes exist.`,
      'Check the --store argument (the path of the agents\' SQLite file; etcd\'s URLs and --etcd-prefix; for kube, --kubeconfig-file and that its user may list nodes) and that the store is reachable from here.',
    );
  }
}

function addressChecks(m: NodeModel, nodeLinks: LinkView[], env: SubnetEnvView | null, out: Findings): void {
  // leaked-ip: an allocation file whose address no interface of the node (or its pods) holds.
  const live = new Set(m.links.flatMap((l) => l.addresses.map((a) => canonicalIp(ipOf(a)))));
  for (const a of m.ipam.allocations) {
    if (live.has(canonicalIp(a.ip))) continue;
    out.add(
      'leaked-ip',
      'warning',
      `${m.ipam.dataDir}/${a.network}/${a.ip}`,
      `host-local holds ${a.ip} for container ${a.containerId || '(unknown)'}${a.ifname ? ` (${a.ifname})` : ''}, but no interface on this node or in its pods has that address: the pod is gone and its DEL never ran (or failed), so the address cannot be handed out again. Enough of these and new pods fail with "no IP addresses available in range set".`,
      `If the container is really gone (crictl pods / crictl ps -a show no ${a.containerId.slice(0, 12) || 'such container'}), remove the file: rm ${m.ipam.dataDir}/${a.network}/${a.ip}. (An ADD in progress holds its file a moment before the address is set: check twice.)`,
    );
  }
  if (!env) return;
  const clusterNets = [...env.network, ...env.ipv6Network].map(cidr).filter((n): n is Net => n !== null);
  for (const l of nodeLinks) {
    if (l.kind === 'vxlan' || l.name === POD_BRIDGE || l.master === POD_BRIDGE || l.name === 'lo') continue;
    const clashing = l.addresses.filter((a) => {
      const n = cidr(a);
      return n !== null && clusterNets.some((c) => overlaps(c, n));
    });
    if (clashing.length) {
      out.add(
        'overlapping-cidr',
        'error',
        l.name,
        `${l.name} has ${clashing.join(', ')}, which overlaps the cluster network ${clusterNets.map((c) => c.text).join(', ')}: packets for those pods may go out of ${l.name} instead of the overlay, or answers from them never come back.`,
        `Choose a cluster network that no node, Docker bridge or VPN uses (net-conf.json Network), or move ${l.name} to another range (for docker0: "bip" in /etc/docker/daemon.json).`,
      );
    }
  }
}

function systemChecks(m: NodeModel, env: SubnetEnvView | null, out: Findings): void {
  if (m.sysctls.ipForward === '0') {
    out.add(
      'ip-forward-off',
      'error',
      'net.ipv4.ip_forward',
      'IPv4 forwarding is off: the node does not pass packets between its pods\' bridge and the overlay or the outside. Pods reach only pods on the same node (and the node itself).',
      'sysctl -w net.ipv4.ip_forward=1, and keep it in /etc/sysctl.d/ (the CNI bridge plugin turns it on at each pod start; something turned it off again).',
    );
  }
  if (m.sysctls.bridgeNfCallIptables === null || m.sysctls.bridgeNfCallIptables === '0') {
    const missing = m.sysctls.bridgeNfCallIptables === null;
    out.add(
      'br-netfilter-missing',
      'warning',
      'net.bridge.bridge-nf-call-iptables',
      missing
        ? 'br_netfilter is not loaded (net.bridge.bridge-nf-call-iptables does not exist): traffic between pods on the same bridge skips iptables, so Service addresses (kube-proxy) fail between pods of one node, and flanneld refuses to start.'
        : 'net.bridge.bridge-nf-call-iptables is 0: traffic between pods on the same bridge skips iptables, so Service addresses (kube-proxy) fail between pods of one node.',
      missing ? 'modprobe br_netfilter (and list it in /etc/modules-load.d/), then sysctl -w net.bridge.bridge-nf-call-iptables=1' : 'sysctl -w net.bridge.bridge-nf-call-iptables=1, and keep it in /etc/sysctl.d/',
    );
  }
  forwardDropChecks(m, env, out);
  if (!m.offload.kernelFixed) {
    for (const d of m.offload.devices.filter((x) => x.txChecksumming === true)) {
      out.add(
        'vxlan-checksum-offload',
        'warning',
        d.name,
        `Kernel ${m.offload.kernel} predates the VXLAN checksum fix (5.7, 5.4.41, 4.19.123) and ${d.name} has tx checksum offload on: behind NAT (kube-proxy's Service SNAT) the UDP checksum comes out wrong and packets are dropped; connections to Services hang for ~63 s (kubernetes#92035).`,
        `ethtool -K ${d.name} tx-checksum-ip-generic off (again after each restart of the agent, which recreates the device), or upgrade the kernel.`,
      );
    }
  }
}

function forwardDropChecks(m: NodeModel, env: SubnetEnvView | null, out: Findings): void {
  for (const t of m.firewall.iptables) {
    if (!t.available || t.forwardPolicy === null) continue;
    const clusterText = t.family === 4 ? env?.network[0] : env?.ipv6Network[0];
    // A family the cluster does not use (IPv6 FORWARD on an IPv4-only cluster) carries no pod traffic.
    if (env && !clusterText) continue;
    const cluster = clusterText ? tryCidr(clusterText) : null;
    // Without subnet.env only the policy can be judged; with it, DROP rules that may match the cluster's traffic count too.
    const dropAt = cluster ? t.forwardRules.findIndex((r) => dropsClusterTraffic(r, cluster)) : -1;
    if (t.forwardPolicy !== 'DROP' && dropAt < 0) continue;
    const jumpAt = t.forwardRules.findIndex((r) => ruleTarget(r) === FLANNEL_FWD_CHAIN);
    const accepts = (flag: '-s' | '-d') =>
      (t.flannelFwdRules ?? []).some((r) => ruleTarget(r) === 'ACCEPT' && (cluster === null || r.some((arg, i) => arg === flag && r[i - 1] !== '!' && r[i + 1] !== undefined && tryCidr(r[i + 1]!)?.text === cluster.text)));
    const before = jumpAt >= 0 && (dropAt < 0 || jumpAt < dropAt);
    if (before && accepts('-s') && accepts('-d')) continue;
    const tool = `${t.family === 4 ? 'iptables' : 'ip6tables'}-${t.variant}`;
    const what = dropAt >= 0 ? `the rule "-A FORWARD ${t.forwardRules[dropAt]!.join(' ')}"` : 'policy DROP';
    out.add(
      'forward-drop',
      'error',
      `${tool} FORWARD`,
      `${tool}'s FORWARD chain has ${what} (Docker ≥ 1.13, firewalld and ufw set it) and nothing accepts the cluster's traffic before it: packets between pods of different nodes, and from pods to the outside, are dropped.`,
      `Let the node agent add its FLANNEL-FWD accept rules (twill agent / flanneld do at start and every resync); by hand: ${tool.replace('-nft', '').replace('-legacy', '')} -I FORWARD -s ${cluster?.text ?? '<cluster network>'} -j ACCEPT; ... -I FORWARD -d ${cluster?.text ?? '<cluster network>'} -j ACCEPT.`,
    );
  }
  for (const c of m.firewall.nftForwardChains ?? []) {
    if (c.policy !== 'drop') continue;
    out.add(
      'forward-drop',
      'error',
      `nft chain ${c.family} ${c.table} ${c.chain}`,
      `nftables chain ${c.family} ${c.table} ${c.chain} hooks forward with policy drop: an accept anywhere else (an iptables ACCEPT, the flannel table) does not override it, so forwarded pod traffic dies here.`,
      `Add accept rules for the cluster network to that chain itself (e.g. nft add rule ${c.family} ${c.table} ${c.chain} ip saddr <cluster> accept; and daddr), or allow it in the tool that owns the chain (firewalld: a trusted zone for ${POD_BRIDGE} and the overlay).`,
    );
  }
}

const SEVERITY_ORDER: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** Everything found on the node, errors first, in a stable order. */
export function diagnose(m: NodeModel): Finding[] {
  const out = new Findings();
  const env = usableEnv(m.subnetEnv);
  const nodeLinks = m.links.filter((l) => l.netns === m.node.netns);
  subnetEnvChecks(m, out);
  bridgeChecks(nodeLinks, env, out);
  mtuChecks(m, nodeLinks, env, out);
  storeChecks(m, out);
  overlayChecks(m, nodeLinks, env, out);
  addressChecks(m, nodeLinks, env, out);
  systemChecks(m, env, out);
  return out.list.map((f, i) => ({ f, i })).sort((a, b) => SEVERITY_ORDER[a.f.severity] - SEVERITY_ORDER[b.f.severity] || a.i - b.i).map((x) => x.f);
}
