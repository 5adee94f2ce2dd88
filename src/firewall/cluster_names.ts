// flanneld's own names for its cluster rules (flannel v0.28.9, pkg/trafficmngr/iptables/iptables.go,
// pkg/trafficmngr/nftables/nftables.go and pkg/trafficmngr/trafficmngr.go), and the spec twill
// writes them from. Same names, comments, hooks and priorities, so that a node moving from
// flanneld to twill finds flannel's rules where twill keeps its own and takes them over.
import ipaddr from 'ipaddr.js';
import { FirewallError, type ClusterRulesSpec, type IpFamily } from './types.js';

// iptables (both variants): nat POSTROUTING → FLANNEL-POSTRTG, filter FORWARD → FLANNEL-FWD.
export const FLANNEL_MASQ_CHAIN = 'FLANNEL-POSTRTG';
export const FLANNEL_FWD_CHAIN = 'FLANNEL-FWD';
export const FLANNEL_MASQ_COMMENT = 'flanneld masq';
export const FLANNEL_FWD_COMMENT = 'flanneld forward';
/** trafficmngr.KubeProxyMark: kube-proxy's masquerade mark (it masquerades those itself). */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
export const KUBE_PROXY_MARK_BIT = 0x4000;

// nftables: one table per family, chains `forward` (filter, forward hook, priority filter)
// and `postrtg` (nat, postrouting hook, priority srcnat), with knftables' comments.
export const FLANNEL_NFT_TABLE: Record<IpFamily, string> = { 4: 'flannel-ipv4', 6: 'flannel-ipv6' };
export const FLANNEL_NFT_FORWARD = 'forward';
export const FLANNEL_NFT_POSTRTG = 'postrtg';
export const flannelNftTableComment = (family: IpFamily): string => `rules for ${FLANNEL_NFT_TABLE[family]}`;
export const FLANNEL_NFT_FORWARD_COMMENT = 'chain to accept flannel traffic';
export const FLANNEL_NFT_POSTRTG_COMMENT = 'chain to manage traffic masquerading by flannel';
/** knftables' FilterPriority and SNATPriority ("filter", "srcnat") in the ip/ip6 families. */
export const NFT_FILTER_PRIO = 0;
export const NFT_SRCNAT_PRIO = 100;

export const MULTICAST: Record<IpFamily, string> = { 4: '224.0.0.0/4', 6: 'ff00::/8' };

/** A CIDR in canonical form (network address, shortest text). */
export interface Cidr {
  family: IpFamily;
  addr: string;
  len: number;
  /** "10.244.0.0/16" */
  text: string;
}

/** One family's part of a spec. */
export interface FamilySpec {
  family: IpFamily;
  cluster: Cidr;
  /** null only when ipMasq is off and no pod subnet was given. */
  pod: Cidr | null;
}

export interface ClusterPlan {
  families: FamilySpec[];
  ipMasq: boolean;
  randomFully: boolean;
  forwardRules: boolean;
}

export const familyName = (f: IpFamily): string => (f === 4 ? 'IPv4' : 'IPv6');

/** Parses a CIDR of the given family; host bits are cleared (as iptables and nft do). */
export function parseClusterCidr(value: unknown, family: IpFamily, what: string): Cidr {
  const bad = (why: string) => new FirewallError(`cluster rules: ${what} ${JSON.stringify(value)} ${why}`);
  if (typeof value !== 'string' || !value.includes('/')) throw bad(`is not a CIDR (address/prefix length)`);
  const [addrText, lenText] = value.split('/', 2);
  if (!/^\d{1,3}$/.test(lenText)) throw bad('has a bad prefix length');
  if (family === 4 && !ipaddr.IPv4.isValidFourPartDecimal(addrText)) {
    throw bad(ipaddr.IPv6.isValid(addrText) ? 'is an IPv6 CIDR where an IPv4 one belongs' : 'is not a valid IPv4 CIDR');
  }
  if (family === 6 && !ipaddr.IPv6.isValid(addrText)) {
    throw bad(ipaddr.IPv4.isValid(addrText) ? 'is an IPv4 CIDR where an IPv6 one belongs' : 'is not a valid IPv6 CIDR');
  }
  const len = Number(lenText);
  if (len > (family === 4 ? 32 : 128)) throw bad('has a prefix length too long for its family');
  const net = family === 4 ? ipaddr.IPv4.networkAddressFromCIDR(value) : ipaddr.IPv6.networkAddressFromCIDR(value);
  const addr = net.toString();
  return { family, addr, len, text: `${addr}/${len}` };
}

/** Whether two CIDRs of one family share an address. */
export function overlaps(a: Cidr, b: Cidr): boolean {
  const pa = ipaddr.parse(a.addr);
  const pb = ipaddr.parse(b.addr);
  return pa.match(pb, Math.min(a.len, b.len));
}

/** A CIDR or plain address as iptables prints it (`-s 10.0.0.1/32`), or null when it is not one. */
export function tryCidr(text: string): Cidr | null {
  const family: IpFamily = text.includes(':') ? 6 : 4;
  try {
    return parseClusterCidr(text.includes('/') ? text : `${text}/${family === 4 ? 32 : 128}`, family, 'address');
  } catch {
    return null;
  }
}

/** Validates and normalises a spec; a bad one is a FirewallError that names the field. */
export function clusterPlan(spec: ClusterRulesSpec): ClusterPlan {
  if (typeof spec !== 'object' || spec === null || typeof spec.clusterCidrs !== 'object' || spec.clusterCidrs === null) {
    throw new FirewallError('cluster rules: the spec needs clusterCidrs ({ipv4?, ipv6?})');
  }
  if (typeof spec.ipMasq !== 'boolean') throw new FirewallError('cluster rules: ipMasq must be true or false');
  if (spec.forwardRules !== undefined && typeof spec.forwardRules !== 'boolean') throw new FirewallError('cluster rules: forwardRules must be true or false');
  const pods = spec.podSubnets ?? {};
  const families: FamilySpec[] = [];
  for (const [family, key] of [[4, 'ipv4'], [6, 'ipv6']] as const) {
    const clusterText = spec.clusterCidrs[key];
    const podText = pods[key];
    if (clusterText === undefined) {
      if (podText !== undefined) throw new FirewallError(`cluster rules: podSubnets.${key} is set but clusterCidrs.${key} is not`);
      continue;
    }
    const cluster = parseClusterCidr(clusterText, family, `clusterCidrs.${key}`);
    const pod = podText === undefined ? null : parseClusterCidr(podText, family, `podSubnets.${key}`);
    if (pod && (pod.len < cluster.len || !overlaps(pod, cluster))) {
      throw new FirewallError(`cluster rules: podSubnets.${key} ${pod.text} is not inside clusterCidrs.${key} ${cluster.text}`);
    }
    if (spec.ipMasq && !pod) throw new FirewallError(`cluster rules: ipMasq needs this node's ${familyName(family)} pod subnet (podSubnets.${key})`);
    families.push({ family, cluster, pod });
  }
  if (families.length === 0) throw new FirewallError('cluster rules: clusterCidrs has neither ipv4 nor ipv6');
  return { families, ipMasq: spec.ipMasq, randomFully: spec.randomFully !== false, forwardRules: spec.forwardRules !== false };
}
