// The portmap plugin's rules with iptables, laid out exactly as the reference's
// plugins/meta/portmap/portmap_iptables.go (v1.10.0) lays them out, in the nat table:
//
//   -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//   -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//   -I POSTROUTING 1 -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ   (snat)
//   -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE                                 (snat)
//   -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//   -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net\" id: \"cid\"" -m multiport --dports 8080,8081 -j CNI-DN-<hash>
//   -A CNI-DN-<hash> -s <pod subnet> -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK   (hairpin, snat)
//   -A CNI-DN-<hash> -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK  (localhost, IPv4, snat)
//   -A CNI-DN-<hash> -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80
//
// The shared chains and the jumps to them are created once and never removed (as in
// the reference); the container's chain is owned whole. Rules are written in the form
// iptables-save prints them, so that a read compares byte for byte; only the entry rules
// with `conditionsV4/V6` (arbitrary iptables arguments) are checked with `iptables -C`.
// Shared chains are created with `-N`, which fails when another ADD created them first:
// the change is then planned again from a fresh read (a `:CHAIN` line would flush them).
import type { Netns } from '../kernel/index.js';
import { fullLen, parseContainerAddr, type ContainerAddr } from './addr.js';
import { execIn } from './exec.js';
import { Iptables, parseSave, planChange, quoteArg, renderRule, ruleTarget, sameRule, type Rule, type RuleAt, type SavedRuleset, type SavedTable } from './iptables.js';
import {
  MULTIPORT_MAX,
  PM_DNAT_CHAIN,
  PM_MASQ_CHAIN,
  PM_MASQ_ENTRY_COMMENT,
  PM_SETMARK_CHAIN,
  PM_SETMARK_COMMENT,
  dnatChainName,
  dnatComment,
  markDef,
  oldSnatChainName,
} from './portmap_names.js';
import { FirewallError, whereText, type ContainerPortmap, type ContainerPortmapRef, type IpFamily, type IptablesVariant, type PortMapping } from './types.js';

const FAMILIES: IpFamily[] = [4, 6];
const VARIANTS: IptablesVariant[] = ['nft', 'legacy'];
const ATTEMPTS = 3;

interface Entry extends RuleAt {
  prepend: boolean;
}

interface Desired {
  /** Shared chains (created when missing, never flushed) and the rules each must hold. */
  shared: { name: string; rules: Rule[] }[];
  /** Jumps to the shared chains from the built-in ones. */
  entries: Entry[];
  /** The container's chain, owned whole. */
  chain: string;
  rules: Rule[];
  /** The container's entry rules in CNI-HOSTPORT-DNAT: as written (the reference's argument order) and as iptables-save prints them. */
  jumps: { written: Rule; saved: Rule | null }[];
}

/** Whether a mapping applies to this family, and the address it is restricted to ('' for any). */
function hostIpFor(m: PortMapping, family: IpFamily): { applies: boolean; dst: string } {
  if (m.hostIP === '') return { applies: true, dst: '' };
  const v6 = m.hostIP.includes(':');
  if (v6 !== (family === 6)) return { applies: false, dst: '' };
  const unspecified = m.hostIP === '0.0.0.0' || m.hostIP === '::';
  return { applies: true, dst: unspecified ? '' : m.hostIP };
}

/** fmtIPPort: IPv6 in brackets. */
export const ipPort = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

/** groupByProto + sort.Strings + splitPortList: host ports per protocol, 15 to a rule (the list is not deduplicated). */
export function multiportGroups(mappings: PortMapping[]): { protocol: string; ports: string }[] {
  const byProto = new Map<string, number[]>();
  for (const m of mappings) byProto.set(m.protocol, [...(byProto.get(m.protocol) ?? []), m.hostPort]);
  const out: { protocol: string; ports: string }[] = [];
  for (const protocol of [...byProto.keys()].sort()) {
    const ports = byProto.get(protocol)!;
    for (let i = 0; i < ports.length; i += MULTIPORT_MAX) out.push({ protocol, ports: ports.slice(i, i + MULTIPORT_MAX).join(',') });
  }
  return out;
}

function desired(pm: ContainerPortmap, a: ContainerAddr): Desired {
  const family = a.family;
  const mark = markDef(pm.markMasqBit);
  const setMark = pm.externalSetMarkChain ?? PM_SETMARK_CHAIN;
  const shared: Desired['shared'] = [];
  const entries: Entry[] = [];
  if (pm.snat && pm.externalSetMarkChain === null) {
    shared.push({ name: PM_SETMARK_CHAIN, rules: [['-m', 'comment', '--comment', PM_SETMARK_COMMENT, '-j', 'MARK', '--set-xmark', mark]] });
    shared.push({ name: PM_MASQ_CHAIN, rules: [['-m', 'mark', '--mark', mark, '-j', 'MASQUERADE']] });
    // Prepended: the bridge's and ptp's masquerade rules in POSTROUTING would otherwise come first.
    entries.push({ chain: 'POSTROUTING', rule: ['-m', 'comment', '--comment', PM_MASQ_ENTRY_COMMENT, '-j', PM_MASQ_CHAIN], prepend: true });
  }
  shared.push({ name: PM_DNAT_CHAIN, rules: [] });
  const toDnat: Rule = ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', PM_DNAT_CHAIN];
  entries.push({ chain: 'PREROUTING', rule: toDnat, prepend: false }, { chain: 'OUTPUT', rule: toDnat, prepend: false });

  const chain = dnatChainName(pm.network, pm.containerId);
  const rules: Rule[] = [];
  const addUnique = (r: Rule) => {
    if (!rules.some((x) => sameRule(x, r))) rules.push(r);
  };
  for (const m of pm.mappings) {
    const host = hostIpFor(m, family);
    if (!host.applies) continue;
    const dst = host.dst ? ['-d', `${host.dst}/${fullLen(family)}`] : [];
    const match = ['-p', m.protocol, '-m', m.protocol, '--dport', String(m.hostPort)];
    if (pm.snat) {
      // Hairpin: the reference passes the container's address with its prefix, which iptables masks to the subnet.
      // 0.0.0.0/0 (masqAll) is no match at all, and iptables-save prints none.
      const src = pm.masqAll ? [] : ['-s', `${a.network}/${a.prefixLen}`];
      addUnique([...src, ...dst, ...match, '-j', setMark]);
      if (family === 4 && !pm.masqAll) addUnique(['-s', '127.0.0.1/32', ...dst, ...match, '-j', setMark]);
    }
    addUnique([...dst, ...match, '-j', 'DNAT', '--to-destination', ipPort(a.ip, m.containerPort)]);
  }

  const comment = dnatComment(pm.network, pm.containerId);
  const jumps = multiportGroups(pm.mappings).map(({ protocol, ports }) => ({
    written: ['-m', 'comment', '--comment', comment, '-m', 'multiport', '-p', protocol, '--destination-ports', ports, ...pm.conditions, '-j', chain],
    // With conditions, the printed form is iptables' business: those are compared with `iptables -C`.
    saved: pm.conditions.length > 0 ? null : ['-p', protocol, '-m', 'comment', '--comment', comment, '-m', 'multiport', '--dports', ports, '-j', chain],
  }));
  return { shared, entries, chain, rules, jumps };
}

const rulesOf = (nat: SavedTable | undefined, chain: string): Rule[] => nat?.get(chain)?.rules ?? [];
const sameList = (a: Rule[], b: Rule[]) => a.length === b.length && a.every((r, i) => sameRule(r, b[i]));
const jumpsTo = (nat: SavedTable | undefined, chain: string): RuleAt[] =>
  [...(nat ?? new Map<string, { rules: Rule[] }>())].flatMap(([c, { rules }]) => rules.filter((r) => ruleTarget(r) === chain).map((rule) => ({ chain: c, rule })));
const renderInsert = (chain: string, rule: Rule): string => ['-I', chain, '1', ...rule].map(quoteArg).join(' ');
const describe = (pm: ContainerPortmapRef) => `port mappings of container ${JSON.stringify(pm.containerId)} on network ${JSON.stringify(pm.network)}`;

export class IptablesPortmap {
  /**
   * Plans an ADD against a node's save output, as a plugin does: run while the SEA's
   * startup snapshot is taken, so that what V8 compiles for it is in the snapshot.
   */
  static async warmUp(pm: ContainerPortmap, saveText: string): Promise<string[]> {
    const ipt = new Iptables('nft', 4, null);
    return new IptablesPortmap(null, () => Promise.resolve('nft')).plan(ipt, parseSave(saveText), desired(pm, parseContainerAddr(pm.address, pm.containerId)));
  }

  constructor(
    private readonly netns: Netns | null,
    private readonly variant: () => Promise<IptablesVariant>,
  ) {}

  private async tool(family: IpFamily): Promise<Iptables> {
    return new Iptables(await this.variant(), family, this.netns);
  }

  /** `iptables -C`: whether the rule exists, as iptables itself compares (for rules with conditions). */
  private async exists(ipt: Iptables, chain: string, rule: Rule): Promise<boolean> {
    const args = ['-w', '-t', 'nat', '-C', chain, ...rule];
    const r = await execIn(ipt.name, args, { netns: this.netns });
    if (r.code === 0) return true;
    if (r.code === 1) return false;
    throw new FirewallError(`check a port-mapping rule (${ipt.name}) in ${whereText(this.netns?.name ?? null)}: ${r.stderr.trim() || `exit status ${r.code}`}`, `${ipt.name} ${args.join(' ')}`, this.netns?.name ?? null, r.stderr, r.code);
  }

  /** Which of the container's entry rules are in place. */
  private async jumpsPresent(ipt: Iptables, nat: SavedTable | undefined, d: Desired): Promise<boolean[]> {
    const dnat = rulesOf(nat, PM_DNAT_CHAIN);
    const chainsExist = nat?.has(PM_DNAT_CHAIN) === true && nat.has(d.chain);
    return Promise.all(
      d.jumps.map(async (j) => (j.saved ? dnat.some((r) => sameRule(r, j.saved!)) : chainsExist && (await this.exists(ipt, PM_DNAT_CHAIN, j.written)))),
    );
  }

  private async plan(ipt: Iptables, saved: SavedRuleset, d: Desired): Promise<string[]> {
    const nat = saved.get('nat');
    const create: string[] = [];
    const dels: string[] = [];
    const adds: string[] = [];
    for (const s of d.shared) {
      if (!nat?.has(s.name)) create.push(`-N ${quoteArg(s.name)}`);
      for (const r of s.rules) if (!rulesOf(nat, s.name).some((x) => sameRule(x, r))) adds.push(renderRule(s.name, r));
    }
    for (const e of d.entries) {
      if (!rulesOf(nat, e.chain).some((x) => sameRule(x, e.rule))) adds.push(e.prepend ? renderInsert(e.chain, e.rule) : renderRule(e.chain, e.rule));
    }
    const have = nat?.get(d.chain);
    if (!have || !sameList(have.rules, d.rules)) {
      create.push(`${have ? '-F' : '-N'} ${quoteArg(d.chain)}`);
      adds.push(...d.rules.map((r) => renderRule(d.chain, r)));
    }
    const existing = jumpsTo(nat, d.chain);
    const present = await this.jumpsPresent(ipt, nat, d);
    const upToDate = present.every(Boolean) && existing.length === d.jumps.length && existing.every((x) => x.chain === PM_DNAT_CHAIN);
    if (!upToDate) {
      // Jumps of an earlier ADD with other ports go; with conditions (not comparable here) all are rewritten.
      const keep = (x: RuleAt) => x.chain === PM_DNAT_CHAIN && d.jumps.some((j) => j.saved !== null && sameRule(x.rule, j.saved));
      for (const x of existing) if (!keep(x)) dels.push(renderRule(x.chain, x.rule, '-D'));
      d.jumps.forEach((j, i) => {
        const stays = j.saved !== null && present[i];
        if (!stays) adds.push(renderRule(PM_DNAT_CHAIN, j.written));
      });
    }
    const lines = [...create, ...dels, ...adds];
    return lines.length === 0 ? [] : ['*nat', ...lines, 'COMMIT'];
  }

  async setup(pm: ContainerPortmap): Promise<void> {
    const a = parseContainerAddr(pm.address, pm.containerId);
    const ipt = await this.tool(a.family);
    const d = desired(pm, a);
    for (let attempt = 1; ; attempt++) {
      const lines = await this.plan(ipt, await ipt.save(), d);
      try {
        await ipt.restore(lines, `set up ${describe(pm)} (${ipt.name})`);
        return;
      } catch (e) {
        // Another ADD may have created a shared chain, or removed a rule, between our read and our write.
        if (attempt >= ATTEMPTS || !(e instanceof FirewallError) || e.exitCode === null) throw e;
      }
    }
  }

  async check(pm: ContainerPortmap): Promise<void> {
    const a = parseContainerAddr(pm.address, pm.containerId);
    const ipt = await this.tool(a.family);
    const d = desired(pm, a);
    const nat = (await ipt.save()).get('nat');
    const problems: string[] = [];
    for (const s of d.shared) {
      if (!nat?.has(s.name)) problems.push(`chain ${s.name} is missing`);
      else for (const r of s.rules) if (!rulesOf(nat, s.name).some((x) => sameRule(x, r))) problems.push(`rule missing: ${renderRule(s.name, r)}`);
    }
    for (const e of d.entries) if (!rulesOf(nat, e.chain).some((x) => sameRule(x, e.rule))) problems.push(`rule missing: ${renderRule(e.chain, e.rule)}`);
    const have = nat?.get(d.chain);
    if (!have) problems.push(`chain ${d.chain} is missing`);
    else {
      for (const r of d.rules) if (!have.rules.some((x) => sameRule(x, r))) problems.push(`rule missing: ${renderRule(d.chain, r)}`);
      for (const x of have.rules) if (!d.rules.some((r) => sameRule(x, r))) problems.push(`unexpected rule: ${renderRule(d.chain, x)}`);
    }
    const present = await this.jumpsPresent(ipt, nat, d);
    d.jumps.forEach((j, i) => {
      if (!present[i]) problems.push(`rule missing: ${renderRule(PM_DNAT_CHAIN, j.written)}`);
    });
    if (problems.length > 0) {
      throw new FirewallError(`${describe(pm)} are incomplete (${ipt.name}, ${whereText(this.netns?.name ?? null)}):\n  ${problems.join('\n  ')}`, null, this.netns?.name ?? null);
    }
  }

  /**
   * Removes the container's chain (and the pre-v0.7 SNAT chain) with every jump to
   * them, in both families and both variants: needs no addresses and no mappings.
   * A variant that cannot be read here (not installed, no kernel support) holds
   * nothing to remove.
   */
  async teardown(ref: ContainerPortmapRef): Promise<void> {
    const change = { table: 'nat', deleteChains: [dnatChainName(ref.network, ref.containerId), oldSnatChainName(ref.network, ref.containerId)] };
    await Promise.all(
      FAMILIES.flatMap((family) =>
        VARIANTS.map(async (variant) => {
          const ipt = new Iptables(variant, family, this.netns);
          for (let attempt = 1; ; attempt++) {
            let saved: SavedRuleset;
            try {
              saved = await ipt.save();
            } catch {
              return;
            }
            try {
              await ipt.restore(planChange(saved, change), `tear down ${describe(ref)} (${ipt.name})`);
              return;
            } catch (e) {
              if (attempt >= ATTEMPTS || !(e instanceof FirewallError) || e.exitCode === null) throw e;
            }
          }
        }),
      ),
    );
  }
}
