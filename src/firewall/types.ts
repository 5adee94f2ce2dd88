export type FirewallBackendName = 'iptables' | 'nftables';
export const FIREWALL_BACKENDS: readonly FirewallBackendName[] = ['iptables', 'nftables'];

/** Which kernel API the iptables tools talk to. */
export type IptablesVariant = 'legacy' | 'nft';

export type IpFamily = 4 | 6;

export interface ContainerMasq {
  network: string;
  containerId: string;
  ifname: string;
  /** Container addresses with prefix, e.g. ['10.244.1.5/24', 'fd00::5/64']. */
  addresses: string[];
}

/** What DEL knows: the addresses may be gone with the interface. */
export type ContainerMasqRef = Omit<ContainerMasq, 'addresses'> & { addresses?: string[] };

/** A per-container masquerade found in the ruleset (see Firewall.listContainerMasquerades). */
export interface OwnedMasquerade {
  backend: FirewallBackendName;
  family: IpFamily;
  /**
   * The object that holds it: the iptables chain (`CNI-<hash>`), or for nftables
   * the comment prefix `<network hash>-<instance hash>` of its rules.
   */
  id: string;
  /** Read back from the rule comments; null when absent or unreadable (e.g. truncated). */
  network: string | null;
  containerId: string | null;
  /** Only nftables records it; the iptables layout ignores the interface. */
  ifname: string | null;
  /** Source addresses that are masqueraded (no prefix). */
  sources: string[];
}

export interface Firewall {
  readonly backend: FirewallBackendName;
  /** Masquerade what the container sends outside its own subnets. Idempotent. */
  setupContainerMasquerade(m: ContainerMasq): Promise<void>;
  /**
   * Removes the container's masquerade from every backend (as the reference does:
   * the pod may have been set up by another version or configuration). Succeeds
   * when nothing is there.
   */
  teardownContainerMasquerade(m: ContainerMasqRef): Promise<void>;
  /** Throws an Error naming each missing (or foreign) piece. */
  checkContainerMasquerade(m: ContainerMasq): Promise<void>;
  /** Per-container masquerades present in this backend (twill's and the reference's: same layout). */
  listContainerMasquerades(): Promise<OwnedMasquerade[]>;
}

/** A firewall command failed: carries what ran, where, and what it said. */
export class FirewallError extends Error {
  constructor(
    message: string,
    readonly command: string | null = null,
    readonly netns: string | null = null,
    readonly stderr: string = '',
    readonly exitCode: number | null = null,
  ) {
    super(message);
    this.name = 'FirewallError';
  }
}

/** How a namespace is named in messages. */
export const whereText = (netns: string | null): string => (netns === null ? 'the current network namespace' : `netns "${netns}"`);

// Port mapping (the portmap plugin's hostPort → containerPort DNAT).

export type PortProtocol = 'tcp' | 'udp' | 'sctp';
export const PORT_PROTOCOLS: readonly PortProtocol[] = ['tcp', 'udp', 'sctp'];

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: PortProtocol;
  /** Canonical address text; '' for any. An unspecified address (0.0.0.0, ::) means any of its family. */
  hostIP: string;
}

/** One container's port mappings, for one of its addresses (one family). */
export interface ContainerPortmap {
  network: string;
  containerId: string;
  /** The container's address with its prefix, e.g. '10.244.1.5/24'. */
  address: string;
  /** Every mapping of the container: entries whose hostIP is of the other family are skipped per family. */
  mappings: PortMapping[];
  /** Masquerade hairpin and localhost traffic to the mapped ports. */
  snat: boolean;
  /** iptables: the mark bit that asks for masquerade (default 13: 0x2000). */
  markMasqBit: number;
  /** iptables: a chain of someone else's that sets the masquerade mark (then no CNI-HOSTPORT-SETMARK/MASQ). */
  externalSetMarkChain: string | null;
  /** Extra match conditions for this family, in the backend's own syntax (iptables arguments or nft text). */
  conditions: string[];
  /** Masquerade traffic to the mapped ports from any source, not only hairpin and localhost. */
  masqAll: boolean;
}

/** What DEL knows: the owner. Rules are found by name and comment, without addresses or mappings. */
export interface ContainerPortmapRef {
  network: string;
  containerId: string;
}

export interface Portmapper {
  readonly backend: FirewallBackendName;
  /** DNAT the mapped host ports to the container's address. Idempotent. */
  setupPortmap(pm: ContainerPortmap): Promise<void>;
  /** Throws an Error naming each missing piece. */
  checkPortmap(pm: ContainerPortmap): Promise<void>;
  /** Removes the container's mappings from both backends and both families; succeeds when nothing is there. */
  teardownPortmap(ref: ContainerPortmapRef): Promise<void>;
  /** Deletes the conntrack entries of UDP flows to these host ports (stale flows would bypass a new DNAT). */
  flushUdpConntrack(ports: number[], family: IpFamily): Promise<void>;
}

// Cluster rules: the node agent's masquerade and forward rules, in flannel's layout
// (flanneld's FLANNEL-POSTRTG / FLANNEL-FWD chains, or its flannel-ipv4/-ipv6 nft tables).

/** One CIDR per family; a family left out gets no rules. */
export interface ClusterCidrs {
  ipv4?: string;
  ipv6?: string;
}

export interface ClusterRulesSpec {
  /** The cluster network (net-conf.json `Network` / `IPv6Network`). */
  clusterCidrs: ClusterCidrs;
  /** This node's pod subnet (its lease), inside the cluster network. Needed with ipMasq. */
  podSubnets: ClusterCidrs;
  /** flanneld `--ip-masq`: masquerade what pods send out of the cluster network. */
  ipMasq: boolean;
  /**
   * MASQUERADE `--random-fully` (nft `masquerade fully-random`) where the tool and the
   * kernel support it, as flanneld does. Default true; false is flanneld's
   * `--ip-masq-fully-random-disable`.
   */
  randomFully?: boolean;
  /**
   * flanneld `--iptables-forward-rules`: accept the cluster network's traffic in FORWARD
   * (FLANNEL-FWD, or the nftables forward chain). Default true; with false, twill's own
   * forward rules are removed and the host's firewall must let pod traffic through.
   */
  forwardRules?: boolean;
}

/** Which firewall held a problem. */
export type ClusterFirewallName = 'nftables' | `iptables-${IptablesVariant}`;

/**
 * What `ensure` found wrong and fixed: missing (not there), misordered (there, in
 * the wrong order or place), changed (there, but different: someone else's edit or an
 * older configuration), stale (twill's or flannel's own, no longer wanted).
 */
export interface Correction {
  kind: 'missing' | 'misordered' | 'changed' | 'stale';
  firewall: ClusterFirewallName;
  family: IpFamily;
  /** What it concerns: `nat FLANNEL-POSTRTG`, `filter FORWARD`, `table ip flannel-ipv4`, `chain ip flannel-ipv4 postrtg`. */
  object: string;
  /** One line in words, with the family and the firewall (`check` returns these). */
  problem: string;
  /**
   * Set on corrections of iptables accept rules that are there only because that
   * iptables drops forwarded traffic (policy DROP or a DROP/REJECT rule in FORWARD):
   * what the DROP is.
   */
  drop?: string;
}

export interface ClusterRules {
  readonly backend: FirewallBackendName;
  /** Creates what is missing, replaces or reorders what is wrong, removes what is stale; returns what it corrected ([] when all was in place). */
  ensure(spec: ClusterRulesSpec): Promise<Correction[]>;
  /** What `ensure` would correct, in words, plus DROPs it cannot reach (foreign nftables chains); [] when all is in place. Changes nothing. */
  check(spec: ClusterRulesSpec): Promise<string[]>;
  /** Removes flannel's / twill's cluster chains and tables, and the jumps to them, from every backend and variant; nothing else. */
  remove(): Promise<void>;
}
