// The node agent's cluster rules (flanneld's masquerade and forward rules), on either
// backend, kept right by `ensure` (the agent calls it at start and every resync period,
// as flanneld re-checks its rules every `--iptables-resync` seconds).
//
// Where the accept rules go (an nftables `accept`, or an ACCEPT in one iptables, ends only
// its own base chain: every other base chain on the forward hook still runs, and a DROP in
// any of them drops the packet):
// - iptables backend: FLANNEL-FWD in the variant that holds the rules (detected as
//   kube-proxy's images detect it), and in the other variant too when its FORWARD drops
//   cluster traffic (policy DROP, or a DROP/REJECT rule that may match it);
// - nftables backend: table flannel-ipv4/-ipv6 chain `forward`, and FLANNEL-FWD in each
//   iptables variant (legacy, nft) whose FORWARD drops cluster traffic.
// The FORWARD jump is appended, as flanneld appends it, unless a DROP/REJECT rule that may
// match cluster traffic is in FORWARD: then it goes right before the first such rule.
// Native nftables chains with policy drop on the forward hook (firewalld's nftables
// backend, a hand-written inet filter) cannot be reached: `check` names them.
//
// Masquerade goes only where the rules live (the variant in use, or the nft table), and
// twill's/flannel's chains found in the backend or variant not in use are removed, as
// flanneld's start-up removes the other backend's rules.
import type { Netns } from '../kernel/index.js';
import { detectIptablesVariant } from './detect.js';
import { IptablesCluster, forwardDrop, forwardRules, iptablesHasRandomFully, masqRules, type IptablesClusterWant } from './cluster_iptables.js';
import { NftCluster, nftFamilyOf, nftForwardChain, nftPostrtgChain, planNftCluster, type NftClusterWant } from './cluster_nftables.js';
import { FLANNEL_NFT_TABLE, clusterPlan, familyName, type ClusterPlan } from './cluster_names.js';
import type { SavedRuleset } from './iptables.js';
import { retryOnNftRace } from './nftables.js';
import {
  FirewallError,
  type ClusterRules,
  type ClusterRulesSpec,
  type Correction,
  type FirewallBackendName,
  type IpFamily,
  type IptablesVariant,
} from './types.js';

export interface ClusterRulesOptions {
  /** The iptables variant that holds the rules (iptables backend); detected at the first use when left out. */
  iptablesVariant?: IptablesVariant;
}

const FAMILIES: IpFamily[] = [4, 6];
const VARIANTS: IptablesVariant[] = ['nft', 'legacy'];
const otherVariant = (v: IptablesVariant): IptablesVariant => (v === 'nft' ? 'legacy' : 'nft');
/** Tables iptables-nft keeps in nftables (its FORWARD is handled as iptables, not as a foreign chain). */
const IPTABLES_NFT_TABLES = new Set(['filter', 'nat', 'mangle', 'raw', 'security']);

class ClusterRulesImpl implements ClusterRules {
  private variant: Promise<IptablesVariant> | undefined;
  private readonly randomFullyIpt = new Map<string, Promise<boolean>>();
  private randomFullyNft: Promise<boolean> | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly nft: NftCluster;

  constructor(
    readonly backend: FirewallBackendName,
    private readonly netns: Netns | null,
    options: ClusterRulesOptions,
  ) {
    this.nft = new NftCluster(netns);
    if (options.iptablesVariant !== undefined) this.variant = Promise.resolve(options.iptablesVariant);
  }

  /** One operation at a time: two resyncs must not plan from the same read. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Detected once: kube-proxy decides at start too, and rules must not move between resyncs. */
  private mainVariant(): Promise<IptablesVariant> {
    this.variant ??= detectIptablesVariant(this.netns);
    return this.variant;
  }

  private iptRandomFully(variant: IptablesVariant, family: IpFamily): Promise<boolean> {
    const key = `${variant}${family}`;
    let p = this.randomFullyIpt.get(key);
    if (!p) {
      p = iptablesHasRandomFully(variant, family, this.netns);
      this.randomFullyIpt.set(key, p);
    }
    return p;
  }

  private nftRandomFully(): Promise<boolean> {
    this.randomFullyNft ??= this.nft.hasRandomFully();
    return this.randomFullyNft;
  }

  async ensure(spec: ClusterRulesSpec): Promise<Correction[]> {
    const plan = clusterPlan(spec);
    return this.serial(() => this.converge(plan, false));
  }

  async check(spec: ClusterRulesSpec): Promise<string[]> {
    const plan = clusterPlan(spec);
    return this.serial(async () => [...(await this.converge(plan, true)).map((c) => c.problem), ...(await this.unreachableDrops(plan))]);
  }

  remove(): Promise<void> {
    return this.serial(async () => {
      await this.nftPart(null, false);
      await Promise.all(VARIANTS.flatMap((v) => FAMILIES.map((f) => this.iptPart(v, f, () => ({ variant: v, family: f, masq: null, fwd: null, drop: null, cluster: null }), false, false))));
    });
  }

  private async converge(plan: ClusterPlan, dryRun: boolean): Promise<Correction[]> {
    if (this.backend === 'nftables') {
      const nft = await this.nftPart(plan, dryRun);
      return [...nft, ...(await this.iptAll(plan, null, dryRun))];
    }
    const main = await this.mainVariant();
    const ipt = await this.iptAll(plan, main, dryRun);
    return [...ipt, ...(await this.nftPart(null, dryRun))];
  }

  /** Every iptables variant and family, at once; corrections in a fixed order (main variant first, IPv4 first). */
  private async iptAll(plan: ClusterPlan, main: IptablesVariant | null, dryRun: boolean): Promise<Correction[]> {
    const variants = main === null ? VARIANTS : [main, otherVariant(main)];
    const jobs = variants.flatMap((variant) =>
      FAMILIES.map(async (family) => {
        const fam = plan.families.find((f) => f.family === family);
        const isMain = variant === main;
        const masq = isMain && fam !== undefined && plan.ipMasq ? masqRules(fam, plan.randomFully && (await this.iptRandomFully(variant, family))) : null;
        const notHere = main === null ? 'the nftables backend is in use' : `the rules live in iptables-${main}`;
        const unwanted = {
          masq: fam === undefined ? `${familyName(family)} is not configured` : !plan.ipMasq ? 'ipMasq is off' : notHere,
          fwd:
            fam === undefined
              ? `${familyName(family)} is not configured`
              : !plan.forwardRules
                ? 'forward rules are off (--iptables-forward-rules=false)'
                : `${notHere}, and this FORWARD drops nothing of the cluster's`,
        };
        const wantOf = (saved: SavedRuleset): IptablesClusterWant => {
          const drop = fam ? forwardDrop(saved.get('filter'), fam.cluster) : null;
          return {
            variant,
            family,
            masq,
            fwd: fam !== undefined && plan.forwardRules && (isMain || drop !== null) ? forwardRules(fam) : null,
            drop: isMain ? null : drop,
            cluster: fam?.cluster ?? null,
            unwanted,
          };
        };
        return this.iptPart(variant, family, wantOf, isMain && fam !== undefined, dryRun);
      }),
    );
    return (await Promise.all(jobs)).flat();
  }

  private iptPart(variant: IptablesVariant, family: IpFamily, wantOf: (saved: SavedRuleset) => IptablesClusterWant, required: boolean, dryRun: boolean): Promise<Correction[]> {
    return new IptablesCluster(variant, family, this.netns).apply(wantOf, 'set the cluster rules', required, dryRun);
  }

  /** The flannel tables: as `plan` wants them, or (null) none at all. One transaction. */
  private async nftPart(plan: ClusterPlan | null, dryRun: boolean): Promise<Correction[]> {
    let corrections: Correction[] = [];
    await retryOnNftRace(async () => {
      const lines: string[] = [];
      corrections = [];
      if (plan === null) {
        const present = await this.nft.flannelTables();
        for (const family of present ?? []) {
          const p = planNftCluster({ chains: [], rules: [] }, { family, chains: null, unwanted: 'the iptables backend is in use' });
          lines.push(...p.lines);
          corrections.push(...p.corrections);
        }
      } else {
        const randomFully = plan.randomFully && (plan.ipMasq ? await this.nftRandomFully() : false);
        for (const family of FAMILIES) {
          const fam = plan.families.find((f) => f.family === family);
          const chains = fam ? [...(plan.forwardRules ? [nftForwardChain(fam)] : []), ...(plan.ipMasq ? [nftPostrtgChain(fam, randomFully)] : [])] : [];
          const off = [...(plan.ipMasq ? [] : ['ipMasq is off']), ...(plan.forwardRules ? [] : ['forward rules are off (--iptables-forward-rules=false)'])];
          const want: NftClusterWant = {
            family,
            // Nothing wanted in this family: no table at all.
            chains: chains.length > 0 ? chains : null,
            unwanted: fam ? off.join(', and ') : `${familyName(family)} is not configured`,
          };
          const p = planNftCluster(await this.nft.nft.listTable(nftFamilyOf(family), FLANNEL_NFT_TABLE[family]), want);
          lines.push(...p.lines);
          corrections.push(...p.corrections);
        }
      }
      if (!dryRun) await this.nft.run(lines, plan === null ? 'remove the flannel nftables tables' : 'set the cluster rules (nftables)');
    });
    return corrections;
  }

  /** Native nftables chains on the forward hook with policy drop: no accept of ours reaches past them. */
  private async unreachableDrops(plan: ClusterPlan): Promise<string[]> {
    const chains = (await this.nft.chains()) ?? [];
    const out: string[] = [];
    for (const c of chains) {
      if (c.hook !== 'forward' || c.policy !== 'drop') continue;
      if ((c.family === 'ip' || c.family === 'ip6') && IPTABLES_NFT_TABLES.has(c.table)) continue;
      const families = c.family === 'ip' ? [4] : c.family === 'ip6' ? [6] : c.family === 'inet' ? [4, 6] : [];
      for (const f of plan.families.filter((x) => families.includes(x.family))) {
        out.push(
          `${familyName(f.family)} nftables: chain ${c.family} ${c.table} ${c.name} (hook forward, policy drop) drops forwarded traffic, and neither twill's nftables accept nor an iptables ACCEPT overrides it: it needs its own accept rules for ${f.cluster.text}`,
        );
      }
    }
    return out;
  }
}

/** The cluster rules of one namespace (null: the current one), on the given backend. Runs nothing until used. */
export function openClusterRules(backend: FirewallBackendName, netns: Netns | null, options: ClusterRulesOptions = {}): ClusterRules {
  if (backend !== 'iptables' && backend !== 'nftables') throw new FirewallError(`unknown firewall backend ${JSON.stringify(backend)}: expected "iptables" or "nftables"`);
  return new ClusterRulesImpl(backend, netns, options);
}
