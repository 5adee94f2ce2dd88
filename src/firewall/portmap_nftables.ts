// The portmap plugin's rules with nftables, laid out exactly as the reference's
// plugins/meta/portmap/portmap_nftables.go (v1.10.0, through knftables) lays them out,
// one table per family:
//
//   table ip cni_hostport {
//     comment "CNI portmap plugin"
//     chain hostports { tcp dport 8080 dnat to 10.244.1.5:80 comment "<containerID>"  (one per mapping)
//                       ip daddr 198.18.0.1 tcp dport 8081 dnat to 10.244.1.5:81 comment "<containerID>" }
//     chain hostip_hostports { }                          (no longer used; kept for upgrades)
//     chain hostports_all { jump hostip_hostports; jump hostports }
//     chain prerouting { type nat hook prerouting priority dstnat; <conditions> fib daddr type local jump hostports_all }
//     chain output { type nat hook output priority -100; <conditions> fib daddr type local jump hostports_all }
//     chain masquerading { type nat hook postrouting priority srcnat;                 (snat)
//                          ip saddr 10.244.1.5 ip daddr 10.244.1.5 masquerade comment "<containerID>"
//                          ip saddr 127.0.0.1 ip daddr 10.244.1.5 masquerade comment "<containerID>" }
//   }
//
// A container's rules are the ones whose comment is its ID. The reference rewrites the
// shared chains at every ADD (the last ADD's conditions win); twill does too, except for
// a container seen for the first time when the shared chains are as an ADD without
// conditions writes them (judged from the kernel's own view over netlink: hooks, jumps
// and the expressions' names): that ADD adds only its own rules. Rewriting a chain makes
// the kernel's commit 10-20 ms slower, on every pod with a hostPort.
//
// A new container's own rules (the common ADD) go over netlink in one transaction
// (kernel/nftables_linux.ts, encoded as nft encodes them, so nft lists them alike): no
// nft process. Everything else is written in nft's own syntax, as knftables writes it,
// not JSON: `conditionsV4/V6` are nft text by definition, and the text syntax also sets
// the table's comment, which nft 1.0.6 ignores in JSON. The script goes as an argument
// (a file when long), never stdin. Reading: over netlink for handles, comments and the
// shape of the shared chains; `nft -j list table` where expressions are compared (a
// repeated ADD, CHECK).
import { appendNftRules, encodeNftRule, parseIp, readNftTable, type Netns, type NftChainSummary, type NftExpr, type NftRuleSpec, type NftTableSummary } from '../kernel/index.js';
import { parseContainerAddr, type ContainerAddr } from './addr.js';
import { goQuote } from './names.js';
import { Nft, isNftNotFound, payloadMatch, type JsonValue, type NftListing, type NftRule, retryOnNftRace, runNftScript } from './nftables.js';
import { ipPort } from './portmap_iptables.js';
import {
  NFT_DSTNAT,
  NFT_PM_HOSTIP_HOSTPORTS,
  NFT_PM_HOSTPORTS,
  NFT_PM_HOSTPORTS_ALL,
  NFT_PM_MASQUERADING,
  NFT_PM_OUTPUT,
  NFT_PM_PREROUTING,
  NFT_PM_TABLE,
  NFT_PM_TABLE_COMMENT,
  NFT_SRCNAT,
  nftFamily,
} from './portmap_names.js';
import { FirewallError, whereText, type ContainerPortmap, type ContainerPortmapRef, type IpFamily, type PortMapping } from './types.js';

/** Chains that hold per-container rules (found by their comment). */
const OWNED_RULE_CHAINS = [NFT_PM_HOSTPORTS, NFT_PM_HOSTIP_HOSTPORTS, NFT_PM_MASQUERADING];

interface Mapped {
  /** nft text after `add rule <fam> cni_hostport <chain> `, without the comment. */
  text: string;
  /** The expression as `nft -j list` prints it (for CHECK). */
  expr: JsonValue[];
  /** The same, as netlink carries it (a new container's rules are added without nft). */
  wire: NftExpr[];
}

const L4PROTO: Record<PortMapping['protocol'], number> = { tcp: 6, udp: 17, sctp: 132 };
// Offsets in the IP header: source and destination address.
const SADDR = { 4: 12, 6: 8 } as const;
const DADDR = { 4: 16, 6: 24 } as const;
const addrBytes = (ip: string): Buffer => parseIp(ip, { op: 'add nftables rule', subject: ip }).bytes;
const portBytes = (port: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(port);
  return b;
};

const anyAddr = (f: IpFamily): JsonValue => ({ prefix: { addr: f === 4 ? '0.0.0.0' : '::', len: 0 } });

function hostIpFor(m: PortMapping, family: IpFamily): { applies: boolean; dst: string } {
  if (m.hostIP === '') return { applies: true, dst: '' };
  if (m.hostIP.includes(':') !== (family === 6)) return { applies: false, dst: '' };
  return { applies: true, dst: m.hostIP === '0.0.0.0' || m.hostIP === '::' ? '' : m.hostIP };
}

/** The container's rules, in the reference's order: one DNAT per mapping, then the masquerades. */
function containerRules(pm: ContainerPortmap, a: ContainerAddr): { hostports: Mapped[]; masquerading: Mapped[] } {
  const ipX = nftFamily(a.family);
  const hostports: Mapped[] = [];
  for (const m of pm.mappings) {
    const host = hostIpFor(m, a.family);
    if (!host.applies) continue;
    const daddr = host.dst ? `${ipX} daddr ${host.dst} ` : '';
    hostports.push({
      text: `${daddr}${m.protocol} dport ${m.hostPort} dnat to ${ipPort(a.ip, m.containerPort)}`,
      expr: [
        ...(host.dst ? [payloadMatch(ipX, 'daddr', '==', host.dst)] : []),
        payloadMatch(m.protocol, 'dport', '==', m.hostPort),
        { dnat: { addr: a.ip, port: m.containerPort } },
      ],
      wire: [
        ...(host.dst ? [{ kind: 'payload', base: 'network', offset: DADDR[a.family], value: addrBytes(host.dst) } as const] : []),
        { kind: 'l4proto', proto: L4PROTO[m.protocol] },
        { kind: 'payload', base: 'transport', offset: 2, value: portBytes(m.hostPort) },
        { kind: 'dnat', addr: addrBytes(a.ip), port: m.containerPort },
      ],
    });
  }
  const masquerading: Mapped[] = [];
  if (pm.snat) {
    const daddr: NftExpr = { kind: 'payload', base: 'network', offset: DADDR[a.family], value: addrBytes(a.ip) };
    const masq = (src: string, srcExpr: JsonValue, srcWire: NftExpr): Mapped => ({
      text: `${ipX} saddr ${src} ${ipX} daddr ${a.ip} masquerade`,
      expr: [payloadMatch(ipX, 'saddr', '==', srcExpr), payloadMatch(ipX, 'daddr', '==', a.ip), { masquerade: null }],
      wire: [srcWire, daddr, { kind: 'masquerade' }],
    });
    const saddr = (ip: string): NftExpr => ({ kind: 'payload', base: 'network', offset: SADDR[a.family], value: addrBytes(ip) });
    if (pm.masqAll) {
      // `ip saddr 0.0.0.0/0`: nft loads the address, masks it with zeros and compares with zeros.
      const zeros = Buffer.alloc(a.family === 4 ? 4 : 16);
      masquerading.push(masq(a.family === 4 ? '0.0.0.0/0' : '::/0', anyAddr(a.family), { kind: 'payload', base: 'network', offset: SADDR[a.family], value: zeros, mask: zeros }));
    } else masquerading.push(masq(a.ip, a.ip, saddr(a.ip)));
    if (a.family === 4 && !pm.masqAll) masquerading.push(masq('127.0.0.1', '127.0.0.1', saddr('127.0.0.1')));
  }
  return { hostports, masquerading };
}

/** A container's own rules, as netlink carries them, each with the container's ID as comment. */
const ownRuleSpecs = (mine: { hostports: Mapped[]; masquerading: Mapped[] }, containerId: string): NftRuleSpec[] => [
  ...mine.hostports.map((r) => ({ chain: NFT_PM_HOSTPORTS, exprs: r.wire, comment: containerId })),
  ...mine.masquerading.map((r) => ({ chain: NFT_PM_MASQUERADING, exprs: r.wire, comment: containerId })),
];

/** Deep equality of JSON values, key order aside. */
function sameJson(a: JsonValue, b: JsonValue): boolean {
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && sameJson(a[k], b[k]));
}

/** The rules, in chain order, hold exactly these expressions. */
const sameExprs = (rules: NftRule[], want: Mapped[]): boolean => rules.length === want.length && rules.every((r, i) => sameJson(r.expr, want[i]!.expr));

const LOCAL_JUMP: JsonValue[] = [{ match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' } }, { jump: { target: NFT_PM_HOSTPORTS_ALL } }];

/** The shared chains as an ADD without conditions writes them. */
function sharedUpToDate(l: NftListing | null, snat: boolean): boolean {
  if (!l) return false;
  const chain = (name: string) => l.chains.find((c) => c.name === name);
  const rules = (name: string) => l.rules.filter((r) => r.chain === name).map((r) => r.expr);
  const base = (name: string, hook: string, prio: number) => {
    const c = chain(name);
    return !!c && c.type === 'nat' && c.hook === hook && c.prio === prio;
  };
  const exactly = (name: string, want: JsonValue[][]) => sameJson(rules(name), want);
  return (
    !!chain(NFT_PM_HOSTPORTS) &&
    !!chain(NFT_PM_HOSTIP_HOSTPORTS) &&
    exactly(NFT_PM_HOSTPORTS_ALL, [[{ jump: { target: NFT_PM_HOSTIP_HOSTPORTS } }], [{ jump: { target: NFT_PM_HOSTPORTS } }]]) &&
    base(NFT_PM_PREROUTING, 'prerouting', NFT_DSTNAT) &&
    exactly(NFT_PM_PREROUTING, [LOCAL_JUMP]) &&
    base(NFT_PM_OUTPUT, 'output', NFT_DSTNAT) &&
    exactly(NFT_PM_OUTPUT, [LOCAL_JUMP]) &&
    (!snat || base(NFT_PM_MASQUERADING, 'postrouting', NFT_SRCNAT))
  );
}

/**
 * sharedUpToDate, judged from the netlink summary: the chains with their hooks, and
 * each shared rule's jump and expressions (`fib daddr type local jump hostports_all`
 * is fib, cmp, immediate; conditions would add expressions). Lets a new container's
 * ADD add only its own rules: rewriting a chain costs the kernel's commit ~10 ms more.
 */
function sharedIntact(t: NftTableSummary | null, snat: boolean): boolean {
  if (!t) return false;
  const chain = (name: string) => t.chains.find((c) => c.name === name);
  const base = (name: string, hook: NftChainSummary['hook'], prio: number) => {
    const c = chain(name);
    return !!c && c.type === 'nat' && c.hook === hook && c.priority === prio;
  };
  const exactly = (name: string, want: { jump: string; exprs: string[] }[]) => {
    const rules = t.rules.filter((r) => r.chain === name);
    return rules.length === want.length && rules.every((r, i) => r.jumps.join() === want[i]!.jump && r.exprs.join() === want[i]!.exprs.join());
  };
  const localJump = [{ jump: NFT_PM_HOSTPORTS_ALL, exprs: ['fib', 'cmp', 'immediate'] }];
  return (
    !!chain(NFT_PM_HOSTPORTS) &&
    !!chain(NFT_PM_HOSTIP_HOSTPORTS) &&
    exactly(NFT_PM_HOSTPORTS_ALL, [{ jump: NFT_PM_HOSTIP_HOSTPORTS, exprs: ['immediate'] }, { jump: NFT_PM_HOSTPORTS, exprs: ['immediate'] }]) &&
    base(NFT_PM_PREROUTING, 'prerouting', NFT_DSTNAT) &&
    exactly(NFT_PM_PREROUTING, localJump) &&
    base(NFT_PM_OUTPUT, 'output', NFT_DSTNAT) &&
    exactly(NFT_PM_OUTPUT, localJump) &&
    (!snat || base(NFT_PM_MASQUERADING, 'postrouting', NFT_SRCNAT))
  );
}

const ownRules = (l: NftListing | null, containerId: string): NftRule[] =>
  l?.rules.filter((r) => OWNED_RULE_CHAINS.includes(r.chain) && r.comment === containerId && r.handle !== undefined) ?? [];
const describe = (pm: ContainerPortmapRef) => `port mappings of container ${JSON.stringify(pm.containerId)} on network ${JSON.stringify(pm.network)}`;

export class NftablesPortmap {
  private readonly nft: Nft;

  /** The rules an ADD writes for `pm`, computed as setup() does (for the SEA's startup snapshot). */
  static warmUp(pm: ContainerPortmap, shared: NftTableSummary): string[] {
    const a = parseContainerAddr(pm.address, pm.containerId);
    const mine = containerRules(pm, a);
    if (!sharedIntact(shared, pm.snat)) return [];
    // The netlink messages of the fast path, encoded and dropped: their code compiled ahead.
    for (const rule of ownRuleSpecs(mine, pm.containerId)) encodeNftRule(nftFamily(a.family), NFT_PM_TABLE, rule);
    return [...mine.hostports, ...mine.masquerading].map((r) => `${r.text} comment ${goQuote(pm.containerId)}`);
  }

  constructor(private readonly netns: Netns | null) {
    this.nft = new Nft(netns);
  }

  private list(family: IpFamily): Promise<NftListing | null> {
    return this.nft.listTable(nftFamily(family), NFT_PM_TABLE);
  }

  /** One transaction in nft's own syntax (see runNftScript). */
  private run(lines: string[], what: string): Promise<void> {
    return runNftScript(this.netns, lines, what);
  }

  async setup(pm: ContainerPortmap): Promise<void> {
    const a = parseContainerAddr(pm.address, pm.containerId);
    const t = `${nftFamily(a.family)} ${NFT_PM_TABLE}`;
    const comment = ` comment ${goQuote(pm.containerId)}`;
    const cond = pm.conditions.length > 0 ? `${pm.conditions.join(' ')} ` : '';
    const mine = containerRules(pm, a);
    await retryOnNftRace(async () => {
      // The common case, a container seen for the first time, is decided from a netlink
      // read (no rule of its own: nothing to compare); only a repeated ADD runs `nft -j list`.
      const summary = await readNftTable(this.netns, nftFamily(a.family), NFT_PM_TABLE);
      const fresh = !summary?.rules.some((r) => OWNED_RULE_CHAINS.includes(r.chain) && r.comment === pm.containerId);
      if (fresh && pm.conditions.length === 0 && sharedIntact(summary, pm.snat)) {
        // Over netlink, in one transaction: no nft process (nor its read of the whole ruleset).
        // A chain deleted since the read above is not found (ENOENT): retried as nft's error is.
        await appendNftRules(this.netns, nftFamily(a.family), NFT_PM_TABLE, ownRuleSpecs(mine, pm.containerId)).catch((e: unknown) => {
          if (isNftNotFound(e)) throw e;
          throw new FirewallError(`set up ${describe(pm)} (nftables, ${whereText(this.netns?.name ?? null)}): ${(e as Error).message}`, null, this.netns?.name ?? null);
        });
        return;
      }
      const current = fresh ? null : await this.list(a.family);
      const own = ownRules(current, pm.containerId);
      // A repeated ADD changes nothing when all is in place; else the container's rules are
      // replaced (not added twice, as the reference would) and the shared chains rewritten.
      const ownUpToDate =
        !own.some((r) => r.chain === NFT_PM_HOSTIP_HOSTPORTS) &&
        sameExprs(own.filter((r) => r.chain === NFT_PM_HOSTPORTS), mine.hostports) &&
        sameExprs(own.filter((r) => r.chain === NFT_PM_MASQUERADING), mine.masquerading);
      if (ownUpToDate && pm.conditions.length === 0 && sharedUpToDate(current, pm.snat)) return;
      const lines = [
        `add table ${t} { comment ${goQuote(NFT_PM_TABLE_COMMENT)} ; }`,
        `add chain ${t} ${NFT_PM_HOSTPORTS}`,
        `add chain ${t} ${NFT_PM_HOSTIP_HOSTPORTS}`,
        `add chain ${t} ${NFT_PM_HOSTPORTS_ALL}`,
        `flush chain ${t} ${NFT_PM_HOSTPORTS_ALL}`,
        `add rule ${t} ${NFT_PM_HOSTPORTS_ALL} jump ${NFT_PM_HOSTIP_HOSTPORTS}`,
        `add rule ${t} ${NFT_PM_HOSTPORTS_ALL} jump ${NFT_PM_HOSTPORTS}`,
        `add chain ${t} ${NFT_PM_PREROUTING} { type nat hook prerouting priority ${NFT_DSTNAT} ; }`,
        `flush chain ${t} ${NFT_PM_PREROUTING}`,
        `add rule ${t} ${NFT_PM_PREROUTING} ${cond}fib daddr type local jump ${NFT_PM_HOSTPORTS_ALL}`,
        `add chain ${t} ${NFT_PM_OUTPUT} { type nat hook output priority ${NFT_DSTNAT} ; }`,
        `flush chain ${t} ${NFT_PM_OUTPUT}`,
        `add rule ${t} ${NFT_PM_OUTPUT} ${cond}fib daddr type local jump ${NFT_PM_HOSTPORTS_ALL}`,
        ...(pm.snat ? [`add chain ${t} ${NFT_PM_MASQUERADING} { type nat hook postrouting priority ${NFT_SRCNAT} ; }`] : []),
        ...(ownUpToDate
          ? []
          : [
              ...own.map((r) => `delete rule ${t} ${r.chain} handle ${r.handle}`),
              ...mine.hostports.map((r) => `add rule ${t} ${NFT_PM_HOSTPORTS} ${r.text}${comment}`),
              ...mine.masquerading.map((r) => `add rule ${t} ${NFT_PM_MASQUERADING} ${r.text}${comment}`),
            ]),
      ];
      await this.run(lines, `set up ${describe(pm)} (nftables)`);
    });
  }

  async check(pm: ContainerPortmap): Promise<void> {
    const a = parseContainerAddr(pm.address, pm.containerId);
    const l = await this.list(a.family);
    const t = `${nftFamily(a.family)} ${NFT_PM_TABLE}`;
    const problems: string[] = [];
    if (!l) problems.push(`table ${t} is missing`);
    else {
      const chains = new Set(l.chains.map((c) => c.name));
      const mine = containerRules(pm, a);
      const needed = [NFT_PM_HOSTPORTS, NFT_PM_HOSTPORTS_ALL, NFT_PM_PREROUTING, NFT_PM_OUTPUT, ...(pm.snat ? [NFT_PM_MASQUERADING] : [])];
      for (const c of needed) if (!chains.has(c)) problems.push(`chain ${c} is missing`);
      for (const hook of [NFT_PM_PREROUTING, NFT_PM_OUTPUT]) {
        const jumps = l.rules.some((r) => r.chain === hook && sameJson(r.expr[r.expr.length - 1] ?? null, { jump: { target: NFT_PM_HOSTPORTS_ALL } }));
        if (chains.has(hook) && !jumps) problems.push(`chain ${hook} does not jump to ${NFT_PM_HOSTPORTS_ALL}`);
      }
      const all = l.rules.filter((r) => r.chain === NFT_PM_HOSTPORTS_ALL).map((r) => r.expr);
      if (chains.has(NFT_PM_HOSTPORTS_ALL) && !all.some((e) => sameJson(e, [{ jump: { target: NFT_PM_HOSTPORTS } }]))) {
        problems.push(`chain ${NFT_PM_HOSTPORTS_ALL} does not jump to ${NFT_PM_HOSTPORTS}`);
      }
      const own = ownRules(l, pm.containerId);
      for (const [chain, rules] of [[NFT_PM_HOSTPORTS, mine.hostports], [NFT_PM_MASQUERADING, mine.masquerading]] as const) {
        for (const r of rules) {
          if (!own.some((x) => x.chain === chain && sameJson(x.expr, r.expr))) problems.push(`rule missing in chain ${chain}: ${r.text} comment ${goQuote(pm.containerId)}`);
        }
      }
    }
    if (problems.length > 0) {
      throw new FirewallError(`${describe(pm)} are incomplete (nftables, ${whereText(this.netns?.name ?? null)}):\n  ${problems.join('\n  ')}`, null, this.netns?.name ?? null);
    }
  }

  /** Deletes the rules carrying the container's ID, in both families; the shared chains stay, as in the reference. */
  async teardown(ref: ContainerPortmapRef): Promise<void> {
    await retryOnNftRace(async () => {
      const lines: string[] = [];
      for (const family of [4, 6] as const) {
        const t = `${nftFamily(family)} ${NFT_PM_TABLE}`;
        const summary = await readNftTable(this.netns, nftFamily(family), NFT_PM_TABLE);
        for (const r of summary?.rules ?? []) {
          if (OWNED_RULE_CHAINS.includes(r.chain) && r.comment === ref.containerId) lines.push(`delete rule ${t} ${r.chain} handle ${r.handle}`);
        }
      }
      await this.run(lines, `tear down ${describe(ref)} (nftables)`);
    });
  }
}
