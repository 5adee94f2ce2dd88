// flanneld's cluster rules with iptables, as flannel v0.28.9 lays them out
// (pkg/trafficmngr/iptables/iptables.go, masqRules / masqIP6Rules / forwardRules):
//
//   *nat
//   -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
//   -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s <pod subnet> -d <cluster> -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s <cluster> -d <pod subnet> -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG ! -s <cluster> -d <pod subnet> -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s <cluster> ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
//   -A FLANNEL-POSTRTG ! -s <cluster> -d <cluster> -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
//   *filter
//   -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
//   -A FLANNEL-FWD -s <cluster> -m comment --comment "flanneld forward" -j ACCEPT
//   -A FLANNEL-FWD -d <cluster> -m comment --comment "flanneld forward" -j ACCEPT
//
// (ff00::/8 for IPv6; `--random-fully` when the iptables is 1.6.2 or newer, as go-iptables
// decides, and not disabled.) Written in iptables-save's own form, so a node's flanneld rules
// compare equal and are kept as they are.
//
// This file plans one variant and family: the pure part (what to write, and what was wrong)
// is `planIptablesCluster`; `IptablesCluster` reads, plans and applies it as one
// `iptables-restore -w --noflush` batch (nat and filter), planned again when the batch fails
// because someone changed the tables in between.
import type { Netns } from '../kernel/index.js';
import { execIn } from './exec.js';
import { Iptables, quoteArg, renderRule, ruleTarget, sameRule, type Rule, type SavedRuleset, type SavedTable } from './iptables.js';
import {
  FLANNEL_FWD_CHAIN,
  FLANNEL_FWD_COMMENT,
  FLANNEL_MASQ_CHAIN,
  FLANNEL_MASQ_COMMENT,
  KUBE_PROXY_MARK,
  MULTICAST,
  familyName,
  overlaps,
  tryCidr,
  type Cidr,
  type FamilySpec,
} from './cluster_names.js';
import { FirewallError, type Correction, type IpFamily, type IptablesVariant } from './types.js';

const MASQ_C = ['-m', 'comment', '--comment', FLANNEL_MASQ_COMMENT];
const FWD_C = ['-m', 'comment', '--comment', FLANNEL_FWD_COMMENT];
export const MASQ_JUMP: Rule = [...MASQ_C, '-j', FLANNEL_MASQ_CHAIN];
export const FWD_JUMP: Rule = [...FWD_C, '-j', FLANNEL_FWD_CHAIN];

/** FLANNEL-POSTRTG's six rules, in flannel's order. */
export function masqRules(f: FamilySpec, randomFully: boolean): Rule[] {
  const cl = f.cluster.text;
  const pod = f.pod!.text;
  const masq = ['-j', 'MASQUERADE', ...(randomFully ? ['--random-fully'] : [])];
  return [
    ['-m', 'mark', '--mark', KUBE_PROXY_MARK, ...MASQ_C, '-j', 'RETURN'],
    ['-s', pod, '-d', cl, ...MASQ_C, '-j', 'RETURN'],
    ['-s', cl, '-d', pod, ...MASQ_C, '-j', 'RETURN'],
    ['!', '-s', cl, '-d', pod, ...MASQ_C, '-j', 'RETURN'],
    ['-s', cl, '!', '-d', MULTICAST[f.family], ...MASQ_C, ...masq],
    ['!', '-s', cl, '-d', cl, ...MASQ_C, ...masq],
  ];
}

/** FLANNEL-FWD's two accept rules. */
export function forwardRules(f: FamilySpec): Rule[] {
  return [
    ['-s', f.cluster.text, ...FWD_C, '-j', 'ACCEPT'],
    ['-d', f.cluster.text, ...FWD_C, '-j', 'ACCEPT'],
  ];
}

/** The value of a non-negated `-s`/`-d` as a CIDR; null when absent, negated or not an address. */
function positiveAddr(rule: Rule, flag: '-s' | '-d'): Cidr | null {
  const i = rule.indexOf(flag);
  if (i < 0 || i + 1 >= rule.length || rule[i - 1] === '!') return null;
  return tryCidr(rule[i + 1]);
}

/**
 * Whether a rule of FORWARD may drop cluster traffic: its target is DROP or REJECT, and it
 * is not limited to sources and destinations that are both outside the cluster network.
 * (Negations, interfaces and other matches are taken as "may match".)
 */
export function dropsClusterTraffic(rule: Rule, cluster: Cidr): boolean {
  const target = ruleTarget(rule);
  if (target !== 'DROP' && target !== 'REJECT') return false;
  const src = positiveAddr(rule, '-s');
  const dst = positiveAddr(rule, '-d');
  const outside = (c: Cidr | null) => c !== null && c.family === cluster.family && !overlaps(c, cluster);
  return !(outside(src) && outside(dst));
}

/** What in this table's FORWARD drops cluster traffic (its policy, or its first DROP/REJECT rule); null when nothing does. */
export function forwardDrop(filter: SavedTable | undefined, cluster: Cidr): string | null {
  const fwd = filter?.get('FORWARD');
  if (!fwd) return null;
  if (fwd.policy === 'DROP') return 'FORWARD has policy DROP';
  const rule = fwd.rules.find((r) => dropsClusterTraffic(r, cluster));
  return rule ? `FORWARD has the rule "${renderRule('FORWARD', rule)}"` : null;
}

/** What one variant and family should hold; null: the chain (and every jump to it) must not exist. */
export interface IptablesClusterWant {
  variant: IptablesVariant;
  family: IpFamily;
  masq: Rule[] | null;
  fwd: Rule[] | null;
  /** The accept rules are wanted here only because of this DROP. */
  drop: string | null;
  /** The cluster network (to tell which FORWARD rules may drop its traffic); null when the family is not configured. */
  cluster: Cidr | null;
  /** Why a chain of ours is not wanted here (said in its `stale` correction). */
  unwanted?: { masq?: string; fwd?: string };
}

interface OwnedChain {
  table: 'nat' | 'filter';
  chain: string;
  hook: string;
  jump: Rule;
  rules: Rule[] | null;
  unwanted: string | undefined;
  /** Rules of the hook chain the jump must come before. */
  mustPrecede: (r: Rule) => boolean;
}

type Problem = Omit<Correction, 'firewall' | 'family' | 'problem' | 'drop'> & { text: string };

const list = (rules: Rule[], chain: string) => rules.map((r) => `"${renderRule(chain, r)}"`).join(', ');

/** What is wrong with an owned chain's rules; null when they are exactly `want`. */
function chainProblem(table: string, chain: string, have: Rule[] | undefined, want: Rule[]): Problem | null {
  const object = `${table} ${chain}`;
  if (!have) return { kind: 'missing', object, text: `chain ${chain} is missing` };
  if (have.length === want.length && have.every((r, i) => sameRule(r, want[i]))) return null;
  const missing = want.filter((w) => !have.some((h) => sameRule(h, w)));
  const extra = have.filter((h) => !want.some((w) => sameRule(h, w)));
  if (missing.length === 0 && extra.length === 0) {
    return have.length === want.length
      ? { kind: 'misordered', object, text: `the rules of ${chain} are out of order` }
      : { kind: 'changed', object, text: `${chain} holds a rule more than once` };
  }
  if (extra.length === 0) return { kind: 'missing', object, text: `${chain} lacks ${missing.length === 1 ? 'the rule' : `${missing.length} rules:`} ${list(missing, chain)}` };
  const lacks = missing.length > 0 ? `, and lacks ${list(missing, chain)}` : '';
  return { kind: 'changed', object, text: `${chain} holds ${extra.length === 1 ? 'a rule' : `${extra.length} rules`} not of flannel's: ${list(extra, chain)}${lacks}` };
}

/** The restore lines (inside `*table` … `COMMIT`) that make one owned chain and its jump right. */
function planOwned(table: SavedTable | undefined, o: OwnedChain): { lines: string[]; problems: Problem[] } {
  const lines: string[] = [];
  const problems: Problem[] = [];
  const have = table?.get(o.chain);
  const hookRules = table?.get(o.hook)?.rules ?? [];

  if (o.rules === null) {
    if (!have) return { lines, problems };
    // Every jump to it, wherever it is, or the chain cannot go.
    for (const [name, c] of table!) {
      if (name === o.chain) continue;
      for (const r of c.rules) if (ruleTarget(r) === o.chain) lines.push(renderRule(name, r, '-D'));
    }
    lines.push(`-F ${quoteArg(o.chain)}`, `-X ${quoteArg(o.chain)}`);
    problems.push({ kind: 'stale', object: `${o.table} ${o.chain}`, text: `chain ${o.chain} is not wanted here${o.unwanted ? ` (${o.unwanted})` : ''}` });
    return { lines, problems };
  }

  const jumps = hookRules.filter((r) => ruleTarget(r) === o.chain);
  const exact = jumps.filter((r) => sameRule(r, o.jump));
  const other = jumps.filter((r) => !sameRule(r, o.jump));
  const hookObject = `${o.table} ${o.hook}`;
  // Deleted by their spec (never by number: a rule inserted meanwhile would shift the numbers).
  const doomed = new Set<Rule>(other);
  for (const r of other) problems.push({ kind: 'changed', object: hookObject, text: `${o.hook} jumps to ${o.chain} with another rule: "${renderRule(o.hook, r)}"` });
  if (exact.length > 1) {
    exact.forEach((r) => doomed.add(r));
    problems.push({ kind: 'changed', object: hookObject, text: `${o.hook} jumps to ${o.chain} ${exact.length} times` });
  }
  const remaining = hookRules.filter((r) => !doomed.has(r));
  const kept = exact.length === 1 ? remaining.indexOf(exact[0]) : -1;
  const block = remaining.findIndex(o.mustPrecede);
  let insertAt: number | null = null; // 0-based index before which the jump goes; remaining.length: append
  if (kept >= 0 && block >= 0 && kept > block) {
    doomed.add(exact[0]);
    insertAt = block;
    problems.push({ kind: 'misordered', object: hookObject, text: `the jump from ${o.hook} to ${o.chain} comes after "${renderRule(o.hook, remaining[block])}", which drops its traffic first` });
  } else if (kept < 0) {
    insertAt = block >= 0 ? block : remaining.length;
    if (jumps.length === 0) problems.push({ kind: 'missing', object: hookObject, text: `the jump from ${o.hook} to ${o.chain} is missing` });
  }
  for (const r of hookRules) if (doomed.has(r)) lines.push(renderRule(o.hook, r, '-D'));

  const bad = chainProblem(o.table, o.chain, have?.rules, o.rules);
  if (bad) {
    problems.push(bad);
    // Declaring a user chain under --noflush creates it, or empties it when it exists.
    lines.push(`:${quoteArg(o.chain)} - [0:0]`, ...o.rules.map((r) => renderRule(o.chain, r)));
  }
  if (insertAt !== null) {
    // Appended (as flanneld does) unless a DROP/REJECT rule would come first.
    lines.push(insertAt >= remaining.length ? renderRule(o.hook, o.jump) : ['-I', o.hook, String(insertAt + 1), ...o.jump].map(quoteArg).join(' '));
  }
  return { lines, problems };
}

/**
 * The iptables-restore input (nat and filter, one batch) that makes one variant and
 * family hold what `want` says, and the corrections that makes; no lines when all is right.
 */
export function planIptablesCluster(saved: SavedRuleset, want: IptablesClusterWant): { lines: string[]; corrections: Correction[] } {
  const firewall = `iptables-${want.variant}` as const;
  const tool = `${want.family === 4 ? 'iptables' : 'ip6tables'}-${want.variant}`;
  const cluster = want.cluster;
  const blocks = (r: Rule) => cluster !== null && dropsClusterTraffic(r, cluster);
  const owned: OwnedChain[] = [
    { table: 'nat', chain: FLANNEL_MASQ_CHAIN, hook: 'POSTROUTING', jump: MASQ_JUMP, rules: want.masq, unwanted: want.unwanted?.masq, mustPrecede: () => false },
    { table: 'filter', chain: FLANNEL_FWD_CHAIN, hook: 'FORWARD', jump: FWD_JUMP, rules: want.fwd, unwanted: want.unwanted?.fwd, mustPrecede: blocks },
  ];
  const lines: string[] = [];
  const corrections: Correction[] = [];
  for (const o of owned) {
    const p = planOwned(saved.get(o.table), o);
    if (p.lines.length > 0) lines.push(`*${o.table}`, ...p.lines, 'COMMIT');
    for (const x of p.problems) {
      const drop = o.table === 'filter' && want.fwd !== null && want.drop !== null ? want.drop : undefined;
      const why = drop === undefined ? '' : ` (accept rules needed here: ${drop}, and an nftables accept or another iptables' ACCEPT does not override a DROP)`;
      corrections.push({
        kind: x.kind,
        firewall,
        family: want.family,
        object: x.object,
        problem: `${familyName(want.family)} ${tool}: ${x.object.split(' ')[0]}: ${x.text}${why}`,
        ...(drop === undefined ? {} : { drop }),
      });
    }
  }
  return { lines, corrections };
}

/** go-iptables' HasRandomFully: the iptables tool is 1.6.2 or newer. */
export async function iptablesHasRandomFully(variant: IptablesVariant, family: IpFamily, netns: Netns | null): Promise<boolean> {
  try {
    const r = await execIn(`${family === 4 ? 'iptables' : 'ip6tables'}-${variant}`, ['--version'], { netns, timeoutMs: 10_000 });
    const m = /v(\d+)\.(\d+)\.(\d+)/.exec(r.stdout);
    if (r.code !== 0 || !m) return false;
    const [a, b, c] = m.slice(1).map(Number);
    return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
  } catch {
    return false;
  }
}

/** One variant and family in one namespace: read, plan, apply, again when someone changed the tables in between. */
export class IptablesCluster {
  readonly ipt: Iptables;

  constructor(variant: IptablesVariant, family: IpFamily, netns: Netns | null) {
    this.ipt = new Iptables(variant, family, netns);
  }

  /** The tables; null when this iptables cannot be read here (not installed, or not working). */
  async read(): Promise<SavedRuleset | null> {
    try {
      return await this.ipt.save();
    } catch (e) {
      if (e instanceof FirewallError) return null;
      throw e;
    }
  }

  /**
   * Applies `wantOf(saved)` and returns the corrections of the batch that went in.
   * `required`: a failure to read is an error (else this variant is skipped: it may not work here).
   */
  async apply(wantOf: (saved: SavedRuleset) => IptablesClusterWant, what: string, required: boolean, dryRun = false): Promise<Correction[]> {
    for (let attempt = 1; ; attempt++) {
      const saved = required ? await this.ipt.save() : await this.read();
      if (saved === null) return [];
      const plan = planIptablesCluster(saved, wantOf(saved));
      if (dryRun || plan.lines.length === 0) return plan.corrections;
      try {
        await this.ipt.restore(plan.lines, `${what} (${this.ipt.name})`);
        return plan.corrections;
      } catch (e) {
        // A batch is all or nothing: plan again from what is there now.
        if (attempt >= 3 || !(e instanceof FirewallError)) throw e;
      }
    }
  }
}
