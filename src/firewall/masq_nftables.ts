// The bridge plugin's ipMasq with nftables, laid out exactly as the reference's
// pkg/ip/ipmasq_nftables_linux.go (plugins v1.6.0+, via knftables) lays it out:
//
//   table inet cni_plugins_masquerade {
//     chain masq_checks {
//       ip saddr <ip> ip daddr != <subnet> masquerade comment "<net hash>-<instance hash>, net: …, if: …, id: …"
//     }
//     chain postrouting {
//       type nat hook postrouting priority srcnat; policy accept;
//       ip daddr 224.0.0.0/4 return
//       ip6 daddr ff00::/8 return
//       goto masq_checks
//     }
//   }
//
// The table is shared with the reference plugins (that is what makes a DEL from one
// undo an ADD from the other). twill changes only the rules whose comment carries
// the attachment's hash, and rewrites postrouting with what the reference writes.
import type { Netns } from '../kernel/index.js';
import { parseContainerAddr, type ContainerAddr } from './addr.js';
import { Nft, nftPrefix, payloadMatch, type JsonValue, type NftCommand, type NftListing, type NftRule, retryOnNftRace } from './nftables.js';
import {
  NFT_MASQ_CHAIN,
  NFT_MASQ_CHAIN_COMMENT,
  NFT_MASQ_TABLE,
  NFT_MASQ_TABLE_COMMENT,
  NFT_POSTROUTING_CHAIN,
  nftInstanceHash,
  nftMasqComment,
  parseNftMasqComment,
} from './names.js';
import { FirewallError, whereText, type ContainerMasq, type ContainerMasqRef, type OwnedMasquerade } from './types.js';

const T = { family: 'inet', table: NFT_MASQ_TABLE } as const;
// knftables' SNATPriority ("srcnat") is 100 in the inet family.
const SRCNAT = 100;

const proto = (a: ContainerAddr) => (a.family === 4 ? 'ip' : 'ip6');

const POSTROUTING_EXPRS: JsonValue[][] = [
  [payloadMatch('ip', 'daddr', '==', { prefix: { addr: '224.0.0.0', len: 4 } }), { return: null }],
  [payloadMatch('ip6', 'daddr', '==', { prefix: { addr: 'ff00::', len: 8 } }), { return: null }],
  [{ goto: { target: NFT_MASQ_CHAIN } }],
];

function masqExpr(a: ContainerAddr): JsonValue[] {
  return [payloadMatch(proto(a), 'saddr', '==', a.ip), payloadMatch(proto(a), 'daddr', '!=', nftPrefix(a.network, a.prefixLen, a.family)), { masquerade: null }];
}

const sameExpr = (a: JsonValue[], b: JsonValue[]) => JSON.stringify(a) === JSON.stringify(b);
const rulesOf = (l: NftListing | null, chain: string) => l?.rules.filter((r) => r.chain === chain) ?? [];
const instanceRules = (l: NftListing | null, hash: string) => rulesOf(l, NFT_MASQ_CHAIN).filter((r) => r.comment?.startsWith(hash));
const describe = (m: ContainerMasqRef) =>
  `masquerade of container ${JSON.stringify(m.containerId)} interface ${JSON.stringify(m.ifname)} on network ${JSON.stringify(m.network)}`;

/** What is wrong with the shared part (table, chains, postrouting); [] when it is as the reference makes it. */
function sharedProblems(l: NftListing | null): string[] {
  if (!l) return [`table inet ${NFT_MASQ_TABLE} is missing`];
  const problems: string[] = [];
  if (!l.chains.some((c) => c.name === NFT_MASQ_CHAIN)) problems.push(`chain ${NFT_MASQ_CHAIN} is missing`);
  const post = l.chains.find((c) => c.name === NFT_POSTROUTING_CHAIN);
  if (!post) problems.push(`chain ${NFT_POSTROUTING_CHAIN} is missing`);
  else if (post.type !== 'nat' || post.hook !== 'postrouting' || post.prio !== SRCNAT) {
    problems.push(`chain ${NFT_POSTROUTING_CHAIN} is not "type nat hook postrouting priority srcnat"`);
  }
  const rules = rulesOf(l, NFT_POSTROUTING_CHAIN);
  if (rules.length !== POSTROUTING_EXPRS.length || !rules.every((r, i) => sameExpr(r.expr, POSTROUTING_EXPRS[i]))) {
    problems.push(`chain ${NFT_POSTROUTING_CHAIN} does not hold exactly: multicast returns, then goto ${NFT_MASQ_CHAIN}`);
  }
  return problems;
}

export class NftablesMasquerade {
  private readonly nft: Nft;

  constructor(private readonly netns: Netns | null) {
    this.nft = new Nft(netns);
  }

  private list(): Promise<NftListing | null> {
    return this.nft.listTable('inet', NFT_MASQ_TABLE);
  }


  async setup(m: ContainerMasq): Promise<void> {
    const addrs = m.addresses.map((a) => parseContainerAddr(a, m.containerId));
    const hash = nftInstanceHash(m.network, m.ifname, m.containerId);
    const comment = nftMasqComment(m.network, m.ifname, m.containerId);
    await retryOnNftRace(async () => {
      const current = await this.list();
      const stale = instanceRules(current, hash);
      const wanted = addrs.map(masqExpr);
      const upToDate =
        sharedProblems(current).length === 0 &&
        stale.length === wanted.length &&
        stale.every((r, i) => r.comment === comment && sameExpr(r.expr, wanted[i]));
      if (upToDate) return;
      const cmds: NftCommand[] = [
        // Comments on tables and chains: nft 1.0.6 ignores them in JSON input, newer ones set them.
        { add: { table: { family: 'inet', name: NFT_MASQ_TABLE, comment: NFT_MASQ_TABLE_COMMENT } } },
        { add: { chain: { ...T, name: NFT_MASQ_CHAIN, comment: NFT_MASQ_CHAIN_COMMENT } } },
        { add: { chain: { ...T, name: NFT_POSTROUTING_CHAIN, type: 'nat', hook: 'postrouting', prio: SRCNAT } } },
        { flush: { chain: { ...T, name: NFT_POSTROUTING_CHAIN } } },
        ...POSTROUTING_EXPRS.map((expr): NftCommand => ({ add: { rule: { ...T, chain: NFT_POSTROUTING_CHAIN, expr } } })),
        ...stale.map((r): NftCommand => ({ delete: { rule: { ...T, chain: NFT_MASQ_CHAIN, handle: r.handle! } } })),
        ...wanted.map((expr): NftCommand => ({ add: { rule: { ...T, chain: NFT_MASQ_CHAIN, expr, comment } } })),
      ];
      await this.nft.run(cmds, `set up ${describe(m)} (nftables)`);
    });
  }

  /** Deletes the attachment's rules (found by comment: no addresses needed); the shared chains stay, as in the reference. */
  async teardown(m: ContainerMasqRef): Promise<void> {
    const hash = nftInstanceHash(m.network, m.ifname, m.containerId);
    await retryOnNftRace(async () => {
      const doomed = instanceRules(await this.list(), hash);
      const cmds = doomed.map((r): NftCommand => ({ delete: { rule: { ...T, chain: NFT_MASQ_CHAIN, handle: r.handle! } } }));
      await this.nft.run(cmds, `tear down ${describe(m)} (nftables)`);
    });
  }

  async check(m: ContainerMasq): Promise<void> {
    const addrs = m.addresses.map((a) => parseContainerAddr(a, m.containerId));
    const current = await this.list();
    const hash = nftInstanceHash(m.network, m.ifname, m.containerId);
    const comment = nftMasqComment(m.network, m.ifname, m.containerId);
    const have = instanceRules(current, hash);
    const problems = sharedProblems(current);
    for (const a of addrs) {
      if (!have.some((r) => r.comment === comment && sameExpr(r.expr, masqExpr(a)))) {
        problems.push(`rule missing in chain ${NFT_MASQ_CHAIN}: ${proto(a)} saddr ${a.ip} ${proto(a)} daddr != ${a.network}/${a.prefixLen} masquerade comment "${comment}"`);
      }
    }
    for (const r of have) {
      if (!addrs.some((a) => sameExpr(r.expr, masqExpr(a)))) problems.push(`unexpected rule (handle ${r.handle ?? '?'}) in chain ${NFT_MASQ_CHAIN} with this attachment's comment`);
    }
    if (problems.length > 0) {
      const where = this.netns?.name ?? null;
      throw new FirewallError(`${describe(m)} is incomplete (nftables table inet ${NFT_MASQ_TABLE}, ${whereText(where)}):\n  ${problems.join('\n  ')}`, null, where);
    }
  }

  async listOwned(): Promise<OwnedMasquerade[]> {
    const out: OwnedMasquerade[] = [];
    for (const r of rulesOf(await this.list(), NFT_MASQ_CHAIN)) {
      const c = r.comment === undefined ? null : parseNftMasqComment(r.comment);
      if (!c) continue;
      const src = sourceOf(r);
      const existing = out.find((o) => o.id === c.id && o.family === src?.family);
      if (existing && src) existing.sources.push(src.ip);
      else if (src) out.push({ backend: 'nftables', family: src.family, id: c.id, network: c.network, containerId: c.containerId, ifname: c.ifname, sources: [src.ip] });
    }
    return out;
  }
}

/** The `saddr ==` match of a masquerade rule. */
function sourceOf(r: NftRule): { family: 4 | 6; ip: string } | null {
  for (const e of r.expr) {
    const m = (e as { match?: { op?: string; left?: { payload?: { protocol?: string; field?: string } }; right?: JsonValue } }).match;
    const p = m?.left?.payload;
    if (m?.op === '==' && p?.field === 'saddr' && typeof m.right === 'string' && (p.protocol === 'ip' || p.protocol === 'ip6')) {
      return { family: p.protocol === 'ip' ? 4 : 6, ip: m.right };
    }
  }
  return null;
}
