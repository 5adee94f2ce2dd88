import type { Netns } from '../kernel/index.js';
import { detectIptablesVariant, supportsIptables, supportsNftables } from './detect.js';
import { IptablesMasquerade } from './masq_iptables.js';
import { NftablesMasquerade } from './masq_nftables.js';
import {
  FirewallError,
  whereText,
  type ContainerMasq,
  type ContainerMasqRef,
  type Firewall,
  type FirewallBackendName,
  type IptablesVariant,
  type OwnedMasquerade,
} from './types.js';

interface MasqBackend {
  setup(m: ContainerMasq): Promise<void>;
  teardown(m: ContainerMasqRef): Promise<void>;
  check(m: ContainerMasq): Promise<void>;
  listOwned(): Promise<OwnedMasquerade[]>;
}

class FirewallImpl implements Firewall {
  private variant: Promise<IptablesVariant> | undefined;
  private readonly ipt: MasqBackend;
  private readonly nft: MasqBackend;

  constructor(
    readonly backend: FirewallBackendName,
    private readonly netns: Netns | null,
  ) {
    this.ipt = new IptablesMasquerade(netns, () => this.iptablesVariant());
    this.nft = new NftablesMasquerade(netns);
  }

  /** Detected once per Firewall: a CNI call is short, and the answer does not change under it. */
  iptablesVariant(): Promise<IptablesVariant> {
    this.variant ??= detectIptablesVariant(this.netns);
    return this.variant;
  }

  private get active(): MasqBackend {
    return this.backend === 'iptables' ? this.ipt : this.nft;
  }

  setupContainerMasquerade(m: ContainerMasq): Promise<void> {
    return this.active.setup(m);
  }

  checkContainerMasquerade(m: ContainerMasq): Promise<void> {
    return this.active.check(m);
  }

  listContainerMasquerades(): Promise<OwnedMasquerade[]> {
    return this.active.listOwned();
  }

  /**
   * Both backends, like the reference's TeardownIPMasqForNetworks. A failure of the
   * other backend counts only where that backend works at all (as in the reference).
   */
  async teardownContainerMasquerade(m: ContainerMasqRef): Promise<void> {
    const [other, supported] = this.backend === 'iptables' ? [this.nft, supportsNftables] : [this.ipt, supportsIptables];
    const results = await Promise.allSettled([this.active.teardown(m), other.teardown(m)]);
    const errors: unknown[] = [];
    if (results[0].status === 'rejected') errors.push(results[0].reason);
    if (results[1].status === 'rejected' && (await supported(this.netns))) errors.push(results[1].reason);
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) {
      const where = this.netns?.name ?? null;
      throw new FirewallError(`tear down masquerade in ${whereText(where)} failed:\n  ${errors.map((e) => (e as Error).message).join('\n  ')}`, null, where);
    }
  }
}

/** The firewall of one namespace (null: the current one), on the given backend. Runs nothing until used. */
export function openFirewall(backend: FirewallBackendName, netns: Netns | null): Firewall {
  if (backend !== 'iptables' && backend !== 'nftables') throw new FirewallError(`unknown firewall backend ${JSON.stringify(backend)}: expected "iptables" or "nftables"`);
  return new FirewallImpl(backend, netns);
}
