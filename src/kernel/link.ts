import type { Netns } from './netns.js';

export type OperState = 'unknown' | 'notpresent' | 'down' | 'lowerlayerdown' | 'testing' | 'dormant' | 'up';

export interface VxlanInfo {
  vni: number;
  /** UDP destination port (8472 is the Linux default and flannel's). */
  port: number;
  local: string | null;
  /** ifindex of the underlay device, in the same namespace. */
  deviceIndex: number | null;
  learning: boolean;
  gbp: boolean;
}

export interface Link {
  /** The namespace this was read from: its ifindexes mean something only there. */
  nsKey: string;
  ifindex: number;
  name: string;
  /** rtnetlink kind ("bridge", "veth", "vxlan", ...); "device" for physical and loopback. */
  kind: string;
  /** Set on a port: "bridge" for a bridge port. */
  slaveKind: string | null;
  flags: number;
  up: boolean;
  lowerUp: boolean;
  promisc: boolean;
  operState: OperState;
  mtu: number;
  mac: string | null;
  masterIndex: number | null;
  /** IFLA_LINK: for a veth, the peer's ifindex (in linkNetnsId's namespace, when set). */
  parentIndex: number | null;
  /** Namespace id of the peer's namespace as seen from this one; null = same namespace. */
  linkNetnsId: number | null;
  vxlan: VxlanInfo | null;
}

/** A link by name, or a Link read from the same namespace (never a bare ifindex). */
export type LinkRef = string | Pick<Link, 'nsKey' | 'ifindex' | 'name'>;

export interface LinkAttrs {
  mtu?: number;
  mac?: string;
  up?: boolean;
  promisc?: boolean;
  /** A bridge to enslave the link to; null removes it from its bridge. */
  master?: LinkRef | null;
}

export interface BridgeSpec extends LinkAttrs {
  kind: 'bridge';
  name: string;
}

export interface VethPeerSpec {
  name: string;
  /** Where the peer is created; default: the same namespace. */
  netns?: Netns;
  mtu?: number;
  mac?: string;
  // No `up`: the kernel refuses to open a peer before its other end exists
  // (veth_open → ENOTCONN); bring it up afterwards, in its own namespace.
}

export interface VethSpec extends LinkAttrs {
  kind: 'veth';
  name: string;
  peer: VethPeerSpec;
}

export interface VxlanSpec extends LinkAttrs {
  kind: 'vxlan';
  name: string;
  vni: number;
  local?: string;
  /** default 8472, as flannel (0 in net-conf.json means this). */
  port?: number;
  /** Underlay device, in the same namespace. */
  device?: LinkRef;
  learning?: boolean;
  gbp?: boolean;
  ttl?: number;
}

export type LinkSpec = BridgeSpec | VethSpec | VxlanSpec;

/** Settings of a link as a port of a bridge. */
export interface BridgePortAttrs {
  /** Send frames back out of the port they came in by (a pod reaching itself through a service). */
  hairpin?: boolean;
  /** Isolated ports cannot talk to each other, only to non-isolated ones. */
  isolated?: boolean;
  learning?: boolean;
}

export interface VethPeer {
  ifindex: number;
  /** Namespace id as seen from the link's namespace; null = same namespace. */
  netnsId: number | null;
}

export const VXLAN_DEFAULT_PORT = 8472;
export const IFNAME_MAX = 15;
