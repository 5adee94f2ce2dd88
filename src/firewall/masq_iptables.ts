// The bridge plugin's ipMasq with iptables, laid out exactly as the reference's
// pkg/ip/ipmasq_iptables_linux.go lays it out (unchanged from v0.9 to v1.10):
//
//   *nat
//   -A POSTROUTING -s <ip>/32 -m comment --comment <c> -j CNI-<hash>     (one per address)
//   -A CNI-<hash> -d <subnet> -m comment --comment <c> -j ACCEPT
//   -A CNI-<hash> ! -d 224.0.0.0/4 -m comment --comment <c> -j MASQUERADE  (ff00::/8 for IPv6)
//
// with CNI-<hash> = FormatChainName(network, containerID) and <c> = FormatComment(...).
// The interface name is not part of it (the reference ignores it "for historical reasons").
import type { Netns } from '../kernel/index.js';
import { fullLen, parseContainerAddr, type ContainerAddr } from './addr.js';
import { Iptables, planChange, renderRule, ruleComment, ruleTarget, sameRule, type IptablesChange, type Rule, type SavedRuleset } from './iptables.js';
import { MASQ_CHAIN_RE, iptablesComment, masqChainName, masqComment, parseMasqComment } from './names.js';
import { FirewallError, whereText, type ContainerMasq, type ContainerMasqRef, type IpFamily, type IptablesVariant, type OwnedMasquerade } from './types.js';

const MULTICAST: Record<IpFamily, string> = { 4: '224.0.0.0/4', 6: 'ff00::/8' };
const FAMILIES: IpFamily[] = [4, 6];

interface Desired {
  chain: string;
  chainRules: Rule[];
  jumps: Rule[];
}

/** The reference appends each rule "unique", address by address: same order, no repeats. */
function desired(network: string, containerId: string, addrs: ContainerAddr[], family: IpFamily): Desired {
  const chain = masqChainName(network, containerId);
  const comment = ['-m', 'comment', '--comment', iptablesComment(masqComment(network, containerId))];
  const chainRules: Rule[] = [];
  const jumps: Rule[] = [];
  const addUnique = (list: Rule[], r: Rule) => {
    if (!list.some((x) => sameRule(x, r))) list.push(r);
  };
  for (const a of addrs.filter((x) => x.family === family)) {
    addUnique(chainRules, ['-d', `${a.network}/${a.prefixLen}`, ...comment, '-j', 'ACCEPT']);
    addUnique(chainRules, ['!', '-d', MULTICAST[family], ...comment, '-j', 'MASQUERADE']);
    addUnique(jumps, ['-s', `${a.ip}/${fullLen(family)}`, ...comment, '-j', chain]);
  }
  return { chain, chainRules, jumps };
}

function setupChange(d: Desired): IptablesChange {
  return {
    table: 'nat',
    setChains: [{ name: d.chain, rules: d.chainRules }],
    ensureRules: d.jumps.map((rule) => ({ chain: 'POSTROUTING', rule })),
    // Jumps left from an earlier address of the same container.
    removeRules: (r) => ruleTarget(r.rule) === d.chain,
  };
}

const other = (v: IptablesVariant): IptablesVariant => (v === 'nft' ? 'legacy' : 'nft');
const familyName = (f: IpFamily) => (f === 4 ? 'IPv4' : 'IPv6');
const describe = (m: ContainerMasqRef) => `masquerade of container ${JSON.stringify(m.containerId)} on network ${JSON.stringify(m.network)}`;

export class IptablesMasquerade {
  constructor(
    private readonly netns: Netns | null,
    private readonly variant: () => Promise<IptablesVariant>,
  ) {}

  private async tool(family: IpFamily): Promise<Iptables> {
    return new Iptables(await this.variant(), family, this.netns);
  }

  async setup(m: ContainerMasq): Promise<void> {
    const addrs = m.addresses.map((a) => parseContainerAddr(a, m.containerId));
    const families = FAMILIES.filter((f) => addrs.some((a) => a.family === f));
    await Promise.all(
      families.map(async (family) => {
        const ipt = await this.tool(family);
        await ipt.apply(setupChange(desired(m.network, m.containerId, addrs, family)), `set up ${describe(m)} (${ipt.name})`);
      }),
    );
  }

  /**
   * Removes the chain and every jump to it, in both families and both variants
   * (the reference wrote with whatever `iptables` pointed to). Needs no addresses.
   * The variant not in use is best effort while reading: it may not work here at all.
   */
  async teardown(m: ContainerMasqRef): Promise<void> {
    const chain = masqChainName(m.network, m.containerId);
    const change: IptablesChange = { table: 'nat', deleteChains: [chain] };
    const main = await this.variant();
    await Promise.all(
      FAMILIES.flatMap((family) =>
        [main, other(main)].map(async (variant) => {
          const ipt = new Iptables(variant, family, this.netns);
          let saved: SavedRuleset;
          try {
            saved = await ipt.save();
          } catch (e) {
            if (variant !== main) return;
            throw e;
          }
          await ipt.restore(planChange(saved, change), `tear down ${describe(m)} (${ipt.name})`);
        }),
      ),
    );
  }

  async check(m: ContainerMasq): Promise<void> {
    const addrs = m.addresses.map((a) => parseContainerAddr(a, m.containerId));
    const problems: string[] = [];
    for (const family of FAMILIES) {
      if (!addrs.some((a) => a.family === family)) continue;
      const ipt = await this.tool(family);
      const d = desired(m.network, m.containerId, addrs, family);
      const nat = (await ipt.save()).get('nat');
      const chain = nat?.get(d.chain);
      const tag = `${familyName(family)} nat`;
      if (!chain) problems.push(`${tag}: chain ${d.chain} is missing`);
      else {
        for (const r of d.chainRules) if (!chain.rules.some((x) => sameRule(x, r))) problems.push(`${tag}: rule missing: ${renderRule(d.chain, r)}`);
        for (const x of chain.rules) if (!d.chainRules.some((r) => sameRule(x, r))) problems.push(`${tag}: unexpected rule: ${renderRule(d.chain, x)}`);
      }
      const post = nat?.get('POSTROUTING')?.rules ?? [];
      for (const j of d.jumps) if (!post.some((x) => sameRule(x, j))) problems.push(`${tag}: rule missing: ${renderRule('POSTROUTING', j)}`);
    }
    if (problems.length > 0) {
      throw new FirewallError(`${describe(m)} is incomplete (iptables-${await this.variant()}, ${whereText(this.netns?.name ?? null)}):\n  ${problems.join('\n  ')}`, null, this.netns?.name ?? null);
    }
  }

  async listOwned(): Promise<OwnedMasquerade[]> {
    const out: OwnedMasquerade[] = [];
    for (const family of FAMILIES) {
      const nat = (await (await this.tool(family)).save()).get('nat');
      if (!nat) continue;
      for (const [chain, c] of nat) {
        if (!MASQ_CHAIN_RE.test(chain)) continue;
        const comment = c.rules.map(ruleComment).find((x) => x !== null) ?? null;
        const parsed = comment === null ? null : parseMasqComment(comment);
        // Only a comment that hashes back to the chain's name tells whose it is.
        const ours = parsed !== null && masqChainName(parsed.network, parsed.containerId) === chain;
        const sources = [...nat.values()]
          .flatMap((x) => x.rules)
          .filter((r) => ruleTarget(r) === chain)
          .map((r) => (r.indexOf('-s') >= 0 ? r[r.indexOf('-s') + 1] : undefined))
          .filter((s): s is string => s !== undefined)
          .map((s) => s.replace(/\/(32|128)$/, ''));
        out.push({ backend: 'iptables', family, id: chain, network: ours ? parsed.network : null, containerId: ours ? parsed.containerId : null, ifname: null, sources });
      }
    }
    return out;
  }
}
