// The portmap plugin's firewall: hostPort → containerPort DNAT (with hairpin and
// localhost masquerade) on iptables (legacy or nft, detected) or nftables, and the
// UDP conntrack flush that goes with it.
import type { Netns } from '../kernel/index.js';
import { detectIptablesVariant, supportsIptables, supportsNftables } from './detect.js';
import { execIn } from './exec.js';
import { IptablesPortmap } from './portmap_iptables.js';
import { NftablesPortmap } from './portmap_nftables.js';
import {
  FirewallError,
  whereText,
  type ContainerPortmap,
  type ContainerPortmapRef,
  type FirewallBackendName,
  type IpFamily,
  type IptablesVariant,
  type Portmapper,
} from './types.js';

class PortmapperImpl implements Portmapper {
  private variant: Promise<IptablesVariant> | undefined;
  private readonly ipt: IptablesPortmap;
  private readonly nft: NftablesPortmap;

  constructor(
    readonly backend: FirewallBackendName,
    private readonly netns: Netns | null,
  ) {
    this.ipt = new IptablesPortmap(netns, () => (this.variant ??= detectIptablesVariant(netns)));
    this.nft = new NftablesPortmap(netns);
  }

  setupPortmap(pm: ContainerPortmap): Promise<void> {
    return this.backend === 'iptables' ? this.ipt.setup(pm) : this.nft.setup(pm);
  }

  checkPortmap(pm: ContainerPortmap): Promise<void> {
    return this.backend === 'iptables' ? this.ipt.check(pm) : this.nft.check(pm);
  }

  /**
   * Both backends (the container may have been set up under another configuration,
   * or by the reference with another default). A backend that does not work here at
   * all holds nothing to remove: its failure counts only where it works.
   */
  async teardownPortmap(ref: ContainerPortmapRef): Promise<void> {
    const results = await Promise.allSettled([this.ipt.teardown(ref), this.nft.teardown(ref)]);
    const errors: unknown[] = [];
    if (results[0].status === 'rejected' && (await supportsIptables(this.netns))) errors.push(results[0].reason);
    if (results[1].status === 'rejected' && (await supportsNftables(this.netns))) errors.push(results[1].reason);
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) {
      const where = this.netns?.name ?? null;
      throw new FirewallError(`tear down port mappings in ${whereText(where)} failed:\n  ${errors.map((e) => (e as Error).message).join('\n  ')}`, null, where);
    }
  }

  /**
   * As the reference's DeleteConntrackEntriesForDstPort (netlink there; the conntrack
   * tool here): every UDP flow of the family whose original destination port is one
   * of these. "0 flow entries have been deleted" (exit 1) is success.
   */
  async flushUdpConntrack(ports: number[], family: IpFamily): Promise<void> {
    const where = this.netns?.name ?? null;
    for (const port of [...new Set(ports)]) {
      const args = ['-D', '-f', family === 4 ? 'ipv4' : 'ipv6', '-p', 'udp', '--orig-port-dst', String(port)];
      const r = await execIn('conntrack', args, { netns: this.netns, timeoutMs: 10_000 });
      if (r.code === 0 || (r.code === 1 && /0 flow entries/.test(r.stderr))) continue;
      throw new FirewallError(`delete UDP conntrack entries for port ${port} in ${whereText(where)}: ${r.stderr.trim() || `exit status ${r.code}`}`, `conntrack ${args.join(' ')}`, where, r.stderr, r.code);
    }
  }
}

/** Port mapping in one namespace (null: the current one), on the given backend. Runs nothing until used. */
export function openPortmapper(backend: FirewallBackendName, netns: Netns | null): Portmapper {
  if (backend !== 'iptables' && backend !== 'nftables') throw new FirewallError(`unknown firewall backend ${JSON.stringify(backend)}: expected "iptables" or "nftables"`);
  return new PortmapperImpl(backend, netns);
}
