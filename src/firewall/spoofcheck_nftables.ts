// The bridge plugin's macspoofchk: only frames with the container's MAC as source
// enter the bridge from its veth. Laid out exactly as the reference's
// pkg/link/spoofcheck.go (containernetworking/plugins v1.0.0+, through go-nft) lays it out:
//
//   table bridge nat {
//     chain PREROUTING {
//       type filter hook prerouting priority dstnat; policy accept;     (dstnat = -300 here)
//       iifname "<host veth>" jump cni-br-iface-<id> comment "macspoofchk-<id>"
//     }
//     chain cni-br-iface-<id> {
//       jump cni-br-iface-<id>-mac comment "macspoofchk-<id>"
//     }
//     chain cni-br-iface-<id>-mac {
//       ether saddr <container MAC> return comment "macspoofchk-<id>"
//       drop comment "macspoofchk-<id>"
//     }
//   }
//
// with <id> = `<containerID>-<ifname>`. The table and PREROUTING are shared (with the
// reference, and with ebtables-nft, whose nat table this is): teardown deletes the
// attachment's PREROUTING rule and its two chains, found by name and comment, so either
// side removes what the other set up.
import type { Netns } from '../kernel/index.js';
import { Nft, type JsonValue, type NftChain, type NftCommand, type NftListing, type NftRule, retryOnNftRace } from './nftables.js';
import { FirewallError, whereText } from './types.js';

export const NFT_SPOOF_TABLE = 'nat';
export const NFT_SPOOF_BASE_CHAIN = 'PREROUTING';
/** The bridge family's NF_BR_PRI_NAT_DST_BRIDGED ("dstnat"), as the reference (and ebtables' nat table). */
export const NFT_SPOOF_PRIORITY = -300;

export interface SpoofCheck {
  containerId: string;
  /** The container's interface name (CNI_IFNAME). */
  ifname: string;
  /** The host end of the container's veth: the bridge port the frames come in by. */
  hostIface: string;
  /** The only source MAC let through. */
  mac: string;
}

/** What DEL knows: the owner (the host veth may be gone). */
export type SpoofCheckRef = Pick<SpoofCheck, 'containerId' | 'ifname'>;

/** The reference's uniqueID: `<containerID>-<ifname>`. */
export const spoofCheckId = (r: SpoofCheckRef): string => `${r.containerId}-${r.ifname}`;
export const spoofIfaceChain = (r: SpoofCheckRef): string => `cni-br-iface-${spoofCheckId(r)}`;
export const spoofMacChain = (r: SpoofCheckRef): string => `${spoofIfaceChain(r)}-mac`;
export const spoofComment = (r: SpoofCheckRef): string => `macspoofchk-${spoofCheckId(r)}`;

const T = { family: 'bridge', table: NFT_SPOOF_TABLE } as const;

const BASE_CHAIN: NftChain = { ...T, name: NFT_SPOOF_BASE_CHAIN, type: 'filter', hook: 'prerouting', prio: NFT_SPOOF_PRIORITY, policy: 'accept' };

/** The attachment's rules, chain by chain, in the form `nft -j list` prints them. */
function wantedRules(s: SpoofCheck): { chain: string; expr: JsonValue[] }[] {
  const iface = spoofIfaceChain(s);
  const mac = spoofMacChain(s);
  return [
    { chain: NFT_SPOOF_BASE_CHAIN, expr: [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: s.hostIface } }, { jump: { target: iface } }] },
    { chain: iface, expr: [{ jump: { target: mac } }] },
    { chain: mac, expr: [{ match: { op: '==', left: { payload: { protocol: 'ether', field: 'saddr' } }, right: s.mac.toLowerCase() } }, { return: null }] },
    { chain: mac, expr: [{ drop: null }] },
  ];
}

const sameExpr = (a: JsonValue[], b: JsonValue[]) => JSON.stringify(a) === JSON.stringify(b);
const rulesOf = (l: NftListing | null, chain: string): NftRule[] => l?.rules.filter((r) => r.chain === chain) ?? [];
const jumpsTo = (r: NftRule, chain: string) => r.expr.some((e) => JSON.stringify(e) === JSON.stringify({ jump: { target: chain } }));
const describe = (r: SpoofCheckRef) => `MAC spoof check of container ${JSON.stringify(r.containerId)} interface ${JSON.stringify(r.ifname)}`;

/** PREROUTING's rules of this attachment: by its comment, or jumping to its chain. */
function baseRulesOf(l: NftListing | null, r: SpoofCheckRef): NftRule[] {
  const comment = spoofComment(r);
  const iface = spoofIfaceChain(r);
  return rulesOf(l, NFT_SPOOF_BASE_CHAIN).filter((x) => x.comment === comment || jumpsTo(x, iface));
}

export class NftablesSpoofCheck {
  private readonly nft: Nft;

  constructor(private readonly netns: Netns | null) {
    this.nft = new Nft(netns);
  }

  private list(): Promise<NftListing | null> {
    return this.nft.listTable('bridge', NFT_SPOOF_TABLE);
  }


  /**
   * Table, base chain and the two chains, then the four rules, in one transaction. The
   * attachment's chains are flushed and an older PREROUTING rule of it replaced, so a
   * repeated setup leaves one copy (the reference would add a second jump).
   */
  async setup(s: SpoofCheck): Promise<void> {
    const comment = spoofComment(s);
    await retryOnNftRace(async () => {
      const stale = baseRulesOf(await this.list(), s);
      const cmds: NftCommand[] = [
        { add: { table: { family: 'bridge', name: NFT_SPOOF_TABLE } } },
        { add: { chain: BASE_CHAIN } },
        { add: { chain: { ...T, name: spoofIfaceChain(s) } } },
        { add: { chain: { ...T, name: spoofMacChain(s) } } },
        { flush: { chain: { ...T, name: spoofIfaceChain(s) } } },
        { flush: { chain: { ...T, name: spoofMacChain(s) } } },
        ...stale.map((r): NftCommand => ({ delete: { rule: { ...T, chain: NFT_SPOOF_BASE_CHAIN, handle: r.handle! } } })),
        ...wantedRules(s).map(({ chain, expr }): NftCommand => ({ add: { rule: { ...T, chain, expr, comment } } })),
      ];
      await this.nft.run(cmds, `set up ${describe(s)} (nftables)`);
    });
  }

  /** Removes the attachment's PREROUTING rule and chains; the table and PREROUTING stay, as in the reference. Succeeds when nothing is there. */
  async teardown(r: SpoofCheckRef): Promise<void> {
    await retryOnNftRace(async () => {
      const current = await this.list();
      if (!current) return;
      const chains = new Set(current.chains.map((c) => c.name));
      const cmds: NftCommand[] = baseRulesOf(current, r).map((x): NftCommand => ({ delete: { rule: { ...T, chain: NFT_SPOOF_BASE_CHAIN, handle: x.handle! } } }));
      // The interface chain first: its jump is what holds the MAC chain.
      for (const name of [spoofIfaceChain(r), spoofMacChain(r)]) {
        if (!chains.has(name)) continue;
        cmds.push({ flush: { chain: { ...T, name } } }, { delete: { chain: { ...T, name } } });
      }
      await this.nft.run(cmds, `tear down ${describe(r)} (nftables)`);
    });
  }

  /** Throws a FirewallError naming each missing or different piece. */
  async check(s: SpoofCheck): Promise<void> {
    const current = await this.list();
    const comment = spoofComment(s);
    const problems: string[] = [];
    if (!current) {
      problems.push(`table bridge ${NFT_SPOOF_TABLE} is missing`);
    } else {
      const base = current.chains.find((c) => c.name === NFT_SPOOF_BASE_CHAIN);
      if (!base) problems.push(`chain ${NFT_SPOOF_BASE_CHAIN} is missing`);
      else if (base.hook !== 'prerouting' || base.type !== 'filter') problems.push(`chain ${NFT_SPOOF_BASE_CHAIN} is not "type filter hook prerouting"`);
      for (const name of [spoofIfaceChain(s), spoofMacChain(s)]) {
        if (!current.chains.some((c) => c.name === name)) problems.push(`chain ${name} is missing`);
      }
      const wanted = wantedRules(s);
      for (const chain of [NFT_SPOOF_BASE_CHAIN, spoofIfaceChain(s), spoofMacChain(s)]) {
        const want = wanted.filter((w) => w.chain === chain);
        const have = chain === NFT_SPOOF_BASE_CHAIN ? baseRulesOf(current, s) : rulesOf(current, chain);
        const same = have.length === want.length && have.every((h, i) => h.comment === comment && sameExpr(h.expr, want[i]!.expr));
        if (!same) {
          problems.push(
            chain === NFT_SPOOF_BASE_CHAIN
              ? `chain ${chain} does not hold exactly: iifname "${s.hostIface}" jump ${spoofIfaceChain(s)} comment "${comment}"`
              : chain === spoofIfaceChain(s)
                ? `chain ${chain} does not hold exactly: jump ${spoofMacChain(s)} comment "${comment}"`
                : `chain ${chain} does not hold exactly: ether saddr ${s.mac.toLowerCase()} return, then drop (comment "${comment}")`,
          );
        }
      }
    }
    if (problems.length > 0) {
      const where = this.netns?.name ?? null;
      throw new FirewallError(`${describe(s)} is incomplete (nftables table bridge ${NFT_SPOOF_TABLE}, ${whereText(where)}):\n  ${problems.join('\n  ')}`, null, where);
    }
  }
}
