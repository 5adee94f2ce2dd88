// flanneld's cluster rules with nftables, as flannel v0.28.9 lays them out
// (pkg/trafficmngr/nftables/nftables.go, through knftables):
//
//   table ip flannel-ipv4 {                                   (ip6 flannel-ipv6 for IPv6)
//     comment "rules for flannel-ipv4"
//     chain forward {
//       comment "chain to accept flannel traffic"
//       type filter hook forward priority filter; policy accept;
//       ip saddr <cluster> accept
//       ip daddr <cluster> accept
//     }
//     chain postrtg {                                          (only with ipMasq)
//       comment "chain to manage traffic masquerading by flannel"
//       type nat hook postrouting priority srcnat; policy accept;
//       meta mark & 0x00004000 == 0x00004000 return
//       ip saddr <pod subnet> ip daddr <cluster> return
//       ip saddr <cluster> ip daddr <pod subnet> return
//       ip saddr != <cluster> ip daddr <pod subnet> return
//       ip saddr <cluster> ip daddr != 224.0.0.0/4 masquerade fully-random
//       ip saddr != <cluster> ip daddr <cluster> masquerade fully-random
//     }
//   }
//
// Two rules of postrtg deliberately differ from flanneld's nftables mode, which writes
// `meta mark 0x00004000 return` (the whole mark equal to 0x4000, where kube-proxy sets one
// bit) and `ip saddr != <pod subnet> ip daddr <cluster> return` (which also returns what
// flannel's iptables mode masquerades, and makes the last rule dead). twill writes the
// iptables mode's meaning in both backends: the mark bit, and `!= <cluster>`. A table left
// by flanneld is therefore rewritten once ("changed") when twill takes a node over.
//
// Written in nft's own syntax (as knftables writes it), so that the table and chain
// comments are set (nft 1.0.6 ignores them in JSON); read as JSON. One transaction for
// both families; a table that differs in anything is replaced whole inside it.
import type { Netns } from '../kernel/index.js';
import { execIn } from './exec.js';
import { Nft, nftPrefix, payloadMatch, type JsonValue, type NftChain, type NftListing, runNftScript } from './nftables.js';
import { goQuote } from './names.js';
import {
  FLANNEL_NFT_FORWARD,
  FLANNEL_NFT_FORWARD_COMMENT,
  FLANNEL_NFT_POSTRTG,
  FLANNEL_NFT_POSTRTG_COMMENT,
  FLANNEL_NFT_TABLE,
  KUBE_PROXY_MARK_BIT,
  MULTICAST,
  NFT_FILTER_PRIO,
  NFT_SRCNAT_PRIO,
  familyName,
  flannelNftTableComment,
  parseClusterCidr,
  type Cidr,
  type FamilySpec,
} from './cluster_names.js';
import { FirewallError, type Correction, type IpFamily } from './types.js';


export const nftFamilyOf = (f: IpFamily): 'ip' | 'ip6' => (f === 4 ? 'ip' : 'ip6');

/** One rule: its nft text (after `add rule <table> <chain> `) and its expression as `nft -j list` prints it. */
interface NftRuleSpec {
  text: string;
  expr: JsonValue[];
}

interface NftChainSpec {
  name: string;
  comment: string;
  type: 'filter' | 'nat';
  hook: string;
  prio: number;
  prioName: string;
  rules: NftRuleSpec[];
}

function addrMatch(c: Cidr, field: 'saddr' | 'daddr', op: '==' | '!='): NftRuleSpec {
  const p = nftFamilyOf(c.family);
  return { text: `${p} ${field} ${op === '!=' ? '!= ' : ''}${c.len === (c.family === 4 ? 32 : 128) ? c.addr : c.text}`, expr: [payloadMatch(p, field, op, nftPrefix(c.addr, c.len, c.family))] };
}

function rule(parts: NftRuleSpec[], verdict: string, verdictExpr: JsonValue): NftRuleSpec {
  return { text: [...parts.map((x) => x.text), verdict].join(' '), expr: [...parts.flatMap((x) => x.expr), verdictExpr] };
}

const MARK: NftRuleSpec = {
  text: `meta mark & 0x${KUBE_PROXY_MARK_BIT.toString(16)} == 0x${KUBE_PROXY_MARK_BIT.toString(16)}`,
  expr: [{ match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, KUBE_PROXY_MARK_BIT] }, right: KUBE_PROXY_MARK_BIT } }],
};

export function nftForwardChain(f: FamilySpec): NftChainSpec {
  return {
    name: FLANNEL_NFT_FORWARD,
    comment: FLANNEL_NFT_FORWARD_COMMENT,
    type: 'filter',
    hook: 'forward',
    prio: NFT_FILTER_PRIO,
    prioName: 'filter',
    rules: [rule([addrMatch(f.cluster, 'saddr', '==')], 'accept', { accept: null }), rule([addrMatch(f.cluster, 'daddr', '==')], 'accept', { accept: null })],
  };
}

export function nftPostrtgChain(f: FamilySpec, randomFully: boolean): NftChainSpec {
  const cl = f.cluster;
  const pod = f.pod!;
  const mc = parseClusterCidr(MULTICAST[f.family], f.family, 'multicast');
  const ret = ['return', { return: null }] as const;
  const masq = [randomFully ? 'masquerade fully-random' : 'masquerade', randomFully ? { masquerade: { flags: 'fully-random' } } : { masquerade: null }] as const;
  return {
    name: FLANNEL_NFT_POSTRTG,
    comment: FLANNEL_NFT_POSTRTG_COMMENT,
    type: 'nat',
    hook: 'postrouting',
    prio: NFT_SRCNAT_PRIO,
    prioName: 'srcnat',
    rules: [
      rule([MARK], ...ret),
      rule([addrMatch(pod, 'saddr', '=='), addrMatch(cl, 'daddr', '==')], ...ret),
      rule([addrMatch(cl, 'saddr', '=='), addrMatch(pod, 'daddr', '==')], ...ret),
      rule([addrMatch(cl, 'saddr', '!='), addrMatch(pod, 'daddr', '==')], ...ret),
      rule([addrMatch(cl, 'saddr', '=='), addrMatch(mc, 'daddr', '!=')], ...masq),
      rule([addrMatch(cl, 'saddr', '!='), addrMatch(cl, 'daddr', '==')], ...masq),
    ],
  };
}

const same = (a: JsonValue, b: JsonValue) => JSON.stringify(a) === JSON.stringify(b);

type Problem = Pick<Correction, 'kind' | 'object'> & { text: string };

/** What is wrong with one chain of the table; [] when it is as wanted. */
function chainProblems(l: NftListing, t: string, want: NftChainSpec): Problem[] {
  const object = `chain ${t} ${want.name}`;
  const c = l.chains.find((x) => x.name === want.name);
  if (!c) return [{ kind: 'missing', object, text: `chain ${want.name} is missing` }];
  const problems: Problem[] = [];
  if (c.type !== want.type || c.hook !== want.hook || c.prio !== want.prio || (c.policy ?? 'accept') !== 'accept') {
    const had = c.hook === undefined ? 'a regular chain' : `type ${c.type} hook ${c.hook} priority ${c.prio} policy ${c.policy ?? 'accept'}`;
    problems.push({ kind: 'changed', object, text: `chain ${want.name} is ${had}, not type ${want.type} hook ${want.hook} priority ${want.prioName} policy accept` });
  }
  const have = l.rules.filter((r) => r.chain === want.name);
  // A rule comment of someone else's makes the rule another one.
  const haveExprs: JsonValue[] = have.map((r) => ({ expr: r.expr, comment: r.comment ?? null }));
  const wantExprs: JsonValue[] = want.rules.map((r) => ({ expr: r.expr, comment: null }));
  if (have.length === want.rules.length && haveExprs.every((e, i) => same(e, wantExprs[i]))) return problems;
  const missing = want.rules.filter((_, i) => !haveExprs.some((e) => same(e, wantExprs[i])));
  const extra = have.filter((_, i) => !wantExprs.some((e) => same(e, haveExprs[i])));
  if (missing.length === 0 && extra.length === 0) {
    problems.push(
      have.length === want.rules.length
        ? { kind: 'misordered', object, text: `the rules of chain ${want.name} are out of order` }
        : { kind: 'changed', object, text: `chain ${want.name} holds a rule more than once` },
    );
  } else if (extra.length === 0) {
    problems.push({ kind: 'missing', object, text: `chain ${want.name} lacks ${missing.map((r) => `"${r.text}"`).join(', ')}` });
  } else {
    const lacks = missing.length > 0 ? `, and lacks ${missing.map((r) => `"${r.text}"`).join(', ')}` : '';
    problems.push({ kind: 'changed', object, text: `chain ${want.name} holds ${extra.length} rule(s) not as wanted (handles ${extra.map((r) => r.handle ?? '?').join(', ')})${lacks}` });
  }
  return problems;
}

/** What one family's table should hold; null: no table. */
export interface NftClusterWant {
  family: IpFamily;
  chains: NftChainSpec[] | null;
  /** Why the table (chains null) or the postrtg chain is not wanted (said in the `stale` correction). */
  unwanted?: string;
}

/** The nft script lines for one family, and what they correct; no lines when the table is right. */
export function planNftCluster(l: NftListing | null, want: NftClusterWant): { lines: string[]; corrections: Correction[] } {
  const name = FLANNEL_NFT_TABLE[want.family];
  const t = `${nftFamilyOf(want.family)} ${name}`;
  const problems: Problem[] = [];
  if (want.chains === null) {
    if (l) problems.push({ kind: 'stale', object: `table ${t}`, text: `table ${t} is not wanted here${want.unwanted ? ` (${want.unwanted})` : ''}` });
  } else if (!l) {
    problems.push({ kind: 'missing', object: `table ${t}`, text: `table ${t} is missing` });
  } else {
    for (const c of want.chains) problems.push(...chainProblems(l, t, c));
    for (const c of l.chains as NftChain[]) {
      if (want.chains.some((w) => w.name === c.name)) continue;
      const why = (c.name === FLANNEL_NFT_POSTRTG || c.name === FLANNEL_NFT_FORWARD) && want.unwanted ? ` (${want.unwanted})` : '';
      problems.push({ kind: 'stale', object: `chain ${t} ${c.name}`, text: `chain ${c.name} is not wanted here${why}` });
    }
  }
  const corrections = problems.map(
    (p): Correction => ({ kind: p.kind, firewall: 'nftables', family: want.family, object: p.object, problem: `${familyName(want.family)} nftables: ${p.text.startsWith('table') ? p.text : `table ${t}: ${p.text}`}` }),
  );
  if (problems.length === 0) return { lines: [], corrections };
  // `add` first: `delete` fails on a table that is not there.
  const lines = [`add table ${t}`, `delete table ${t}`];
  if (want.chains !== null) {
    lines.push(`add table ${t} { comment ${goQuote(flannelNftTableComment(want.family))} ; }`);
    for (const c of want.chains) {
      lines.push(`add chain ${t} ${c.name} { type ${c.type} hook ${c.hook} priority ${c.prioName} ; comment ${goQuote(c.comment)} ; }`);
      for (const r of c.rules) lines.push(`add rule ${t} ${c.name} ${r.text}`);
    }
  }
  return { lines, corrections };
}

/** nft through its own syntax, and the listings it needs. */
export class NftCluster {
  readonly nft: Nft;

  constructor(private readonly netns: Netns | null) {
    this.nft = new Nft(netns);
  }

  /** One transaction in nft's own syntax (see runNftScript). */
  run(lines: string[], what: string): Promise<void> {
    return runNftScript(this.netns, lines, what);
  }

  /** Every chain of the ruleset (`nft -j list chains`); null when nft does not work here. */
  async chains(): Promise<NftChain[] | null> {
    let out: string;
    try {
      const r = await execIn('nft', ['-j', 'list', 'chains'], { netns: this.netns, timeoutMs: 30_000 });
      if (r.code !== 0) return null;
      out = r.stdout;
    } catch (e) {
      if (e instanceof FirewallError) return null;
      throw e;
    }
    const items = (JSON.parse(out) as { nftables: Record<string, JsonValue>[] }).nftables;
    return items.filter((i) => 'chain' in i).map((i) => i.chain as unknown as NftChain);
  }

  /** The families whose flannel table exists (also an empty one); null when nft does not work here. */
  async flannelTables(): Promise<IpFamily[] | null> {
    let out: string;
    try {
      const r = await execIn('nft', ['-j', 'list', 'tables'], { netns: this.netns, timeoutMs: 30_000 });
      if (r.code !== 0) return null;
      out = r.stdout;
    } catch (e) {
      if (e instanceof FirewallError) return null;
      throw e;
    }
    const tables = (JSON.parse(out) as { nftables: Record<string, { family?: string; name?: string }>[] }).nftables.flatMap((i) => (i.table ? [i.table] : []));
    return ([4, 6] as const).filter((f) => tables.some((t) => t.family === nftFamilyOf(f) && t.name === FLANNEL_NFT_TABLE[f]));
  }

  /** Whether the kernel takes `masquerade fully-random` (flannel's checkRandomfully: a checked, never committed, transaction). */
  async hasRandomFully(): Promise<boolean> {
    const t = 'ip twill-random-fully-check';
    const script = [`add table ${t}`, `add chain ${t} c { type nat hook postrouting priority srcnat ; }`, `add rule ${t} c ip saddr != 127.0.0.1 masquerade fully-random`].join('\n');
    try {
      return (await execIn('nft', ['--check', script], { netns: this.netns, timeoutMs: 10_000 })).code === 0;
    } catch {
      return false;
    }
  }
}
