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
