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

/** A bridge's VLAN settings (IFLA_INFO_DATA of a bridge). */
export interface BridgeInfo {
  vlanFiltering: boolean;
  /**
   * The PVID new ports get; null when the kernel has no bridge VLAN support at all
   * (built without CONFIG_BRIDGE_VLAN_FILTERING, which needs 802.1Q): such a kernel
   * refuses vlan_filtering and every bridge VLAN change with EOPNOTSUPP.
   */
  vlanDefaultPvid: number | null;
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
  /** Set on a bridge. */
  bridge: BridgeInfo | null;
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
  /** 802.1Q VLAN filtering on the bridge's ports (IFLA_BR_VLAN_FILTERING); left as the kernel's default when unset. */
  vlanFiltering?: boolean;
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

/** One VLAN of a bridge port (or of the bridge itself, its "self" VLANs), as the kernel reports it. */
export interface BridgeVlan {
  vid: number;
  /** Untagged frames entering the port are put in this VLAN (one PVID per port at most). */
  pvid: boolean;
  /** Frames of this VLAN leave the port untagged. */
  untagged: boolean;
}

/** VLANs to add or delete: one VID, or the range vid..vidEnd (a range cannot be the PVID). */
export interface BridgeVlanSpec {
  vid: number;
  vidEnd?: number;
  pvid?: boolean;
  untagged?: boolean;
}

/** The VLANs of one bridge port, or of a bridge (its own, "self"), from a dump. */
export interface BridgePortVlans {
  ifindex: number;
  name: string;
  /** The bridge it is a port of; null for the bridge itself. */
  masterIndex: number | null;
  vlans: BridgeVlan[];
}

export interface VethPeer {
  ifindex: number;
  /** Namespace id as seen from the link's namespace; null = same namespace. */
  netnsId: number | null;
}

export const VXLAN_DEFAULT_PORT = 8472;
export const IFNAME_MAX = 15;
