// What `twill explain` reads from a node: plain data, JSON as it is, no kernel
// objects. This is also the stable JSON schema (`--format json`, docs/TROUBLESHOOTING.md):
// fields are only ever added; a change in meaning bumps EXPLAIN_SCHEMA_VERSION.
import type { OperState } from '../kernel/index.js';

export const EXPLAIN_SCHEMA_VERSION = 1;

export type NamespaceRole = 'node' | 'pod' | 'other';

export interface NamespaceView {
  /** Name under /run/netns, or `pid:<lowest pid>` for a namespace only processes hold. */
  name: string;
  /**
   * node: the one explained; pod: holds the other end of a veth that is a bridge port
   * (cni0's); other: holds the other end of a veth on no bridge.
   */
  role: NamespaceRole;
  path: string | null;
  pids: number[];
}

/** The other end of a veth. netns/name are null when its namespace was not found. */
export interface PeerRef {
  netns: string | null;
  name: string | null;
  ifindex: number;
}

export interface VxlanView {
  vni: number;
  port: number;
  local: string | null;
  /** The underlay device's name (same namespace), when one is set. */
  underlay: string | null;
  learning: boolean;
}

export interface LinkView {
  netns: string;
  name: string;
  ifindex: number;
  /** rtnetlink kind: bridge, veth, vxlan, ...; "device" for physical devices and loopback. */
  kind: string;
  state: OperState;
  /** Administratively up (IFF_UP); `state` says whether it carries traffic. */
  up: boolean;
  /** IFF_LOWER_UP: carrier (a bridge without ports has none: NO-CARRIER). */
  carrier: boolean;
  mtu: number;
  mac: string | null;
  /** The bridge it is a port of (same namespace). */
  master: string | null;
  /** CIDRs, IPv4 first. */
  addresses: string[];
  /** Set on veths only. */
  peer: PeerRef | null;
  vxlan: VxlanView | null;
}

export interface RouteView {
  family: 4 | 6;
  dst: string;
  gateway: string | null;
  dev: string | null;
  onlink: boolean;
  /** RT_SCOPE_*: 0 universe, 253 link, 254 host. */
  scope: number;
  /** RTPROT_*: 2 kernel, 3 boot, 4 static; twill's own is 87. */
  protocol: number;
}

export interface NeighView {
  dev: string;
  ip: string;
  mac: string | null;
  permanent: boolean;
}

export interface FdbView {
  dev: string;
  mac: string;
  /** Remote VTEP (vxlan); null for a bridge entry. */
  dst: string | null;
  permanent: boolean;
}

export interface SubnetEnvView {
  path: string;
  found: boolean;
  /** Why it could not be read or parsed. */
  error: string | null;
  network: string[];
  subnet: string | null;
  ipv6Network: string[];
  ipv6Subnet: string | null;
  mtu: number | null;
  ipMasq: boolean | null;
  missingKeys: string[];
}

/** One host-local allocation file: <dataDir>/<network>/<ip>. */
export interface IpamAllocation {
  network: string;
  ip: string;
  containerId: string;
  ifname: string;
}

export interface IpamView {
  dataDir: string;
  found: boolean;
  error: string | null;
  allocations: IpamAllocation[];
}

/** The filter table's FORWARD of one iptables variant and family, and flannel's FLANNEL-FWD. */
export interface IptablesView {
  variant: 'legacy' | 'nft';
  family: 4 | 6;
  /** false: the tool is missing or failed (its error is in FirewallView.errors). */
  available: boolean;
  /** null when the filter table or FORWARD does not exist in this variant. */
  forwardPolicy: string | null;
  /** Each rule's arguments after `-A FORWARD`, as iptables-save prints them. */
  forwardRules: string[][];
  flannelFwdRules: string[][] | null;
}

/** A native nftables base chain on the forward hook (iptables-nft's own tables excluded). */
export interface NftChainView {
  family: string;
  table: string;
  chain: string;
  policy: string | null;
}

export interface FirewallView {
  iptables: IptablesView[];
  /** null when nft does not work here. */
  nftForwardChains: NftChainView[] | null;
  errors: string[];
}

export interface SysctlView {
  /** net.ipv4.ip_forward; null when unreadable. */
  ipForward: string | null;
  /** net.bridge.bridge-nf-call-iptables; null when missing (br_netfilter not loaded). */
  bridgeNfCallIptables: string | null;
  /** rp_filter of `all`, `default` and each bridge and vxlan device. */
  rpFilter: Record<string, string | null>;
}

export interface OffloadView {
  /** uname -r. */
  kernel: string;
  /** Whether this kernel has the VXLAN checksum fix (5.7+, 5.4.41+, 4.19.123+). */
  kernelFixed: boolean;
  /** Read (with ethtool -k) only on kernels without the fix. */
  devices: { name: string; txChecksumming: boolean | null }[];
}

/** One lease of the store (`--store`), as explain reads it: what a node's agent must program for it. */
export interface LeaseView {
  /** flannel's key: "10.244.2.0-24", "10.244.2.0-24&fd00:10:244:2::-64". */
  key: string;
  /** The node that holds it, where the store says (Kubernetes: the Node's name); null otherwise. */
  node: string | null;
  subnet: string | null;
  ipv6Subnet: string | null;
  publicIp: string | null;
  publicIpv6: string | null;
  /** vxlan, host-gw, ... as the lease says. */
  backendType: string;
  /** vxlan: BackendData.VtepMAC (lowercase); null when absent or not a MAC. */
  vtepMac: string | null;
  vtepMacV6: string | null;
  /** vxlan: BackendData.VNI (flannel's default 1 when absent). */
  vni: number | null;
  /** ISO time; null: a reservation, which never expires. */
  expiresAt: string | null;
  /** This node's own lease (its subnet is FLANNEL_SUBNET's): nothing to program for it. */
  own: boolean;
}

/** The lease store explain was given (`--store`): the truth for the overlay checks. */
export interface StoreView {
  /** "local:/var/lib/twill/leases.db", "etcd:http://10.0.0.1:2379". */
  description: string;
  /** Why it could not be read; then the overlay checks fall back to the kernel state alone. */
  error: string | null;
  /** The store revision the leases are as of. */
  revision: number | null;
  leases: LeaseView[];
  /** Keys under the subnets prefix that are not leases. */
  malformed: { key: string; error: string }[];
}

export interface NodeModel {
  schemaVersion: number;
  node: { netns: string; readAt: string };
  namespaces: NamespaceView[];
  links: LinkView[];
  /** The node's main routing table. */
  routes: RouteView[];
  /** Neighbour entries of the node's vxlan devices. */
  neighbours: NeighView[];
  /** FDB entries of the node's vxlan devices. */
  fdb: FdbView[];
  subnetEnv: SubnetEnvView;
  ipam: IpamView;
  firewall: FirewallView;
  sysctls: SysctlView;
  offload: OffloadView;
  /** The lease store, when `--store` was given; null otherwise. */
  store: StoreView | null;
}

export type Severity = 'info' | 'warning' | 'error';

export type FindingId =
  | 'docker0-unused'
  | 'bridge-address-conflict'
  | 'mtu-mismatch'
  | 'missing-fdb'
  | 'missing-neighbour'
  | 'missing-route'
  | 'stale-route'
  | 'stale-fdb'
  | 'stale-neighbour'
  | 'store-unreadable'
  | 'leaked-ip'
  | 'forward-drop'
  | 'ip-forward-off'
  | 'br-netfilter-missing'
  | 'vxlan-checksum-offload'
  | 'overlapping-cidr'
  | 'subnet-env-missing'
  | 'subnet-env-stale';

export interface Finding {
  id: FindingId;
  severity: Severity;
  /** What it is about: a link ("cni0"), a file, an address, a sysctl. */
  subject: string;
  /** What is wrong (or worth knowing), for a person. */
  message: string;
  /** What to do about it. */
  fix: string;
}

/** `twill explain --format json`: the model and what was found in it. */
export interface Explanation extends NodeModel {
  findings: Finding[];
}
