// What the kernel's nf_tables holds in one table, as far as twill reads it
// without running nft: each chain with its hook and priority, and each rule's
// chain, handle, comment, jump targets and expressions' names. Enough to find
// and remove the rules someone owns (by comment), and to see whether chains
// have the shape expected of them, without a process start. And the few
// expressions twill writes itself (matches on header fields, DNAT,
// masquerade), as nft encodes them.

/** nft's family names, as in `nft list table <family> <name>`. */
export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';

export interface NftChainSummary {
  name: string;
  /** For a base chain: its type (filter, nat, route), hook and priority; null otherwise. */
  type: string | null;
  hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress' | null;
  priority: number | null;
}

export interface NftRuleSummary {
  chain: string;
  /** The rule's handle, for `delete rule <family> <table> <chain> handle N`. */
  handle: number;
  /** The rule's comment (`comment "..."`), null without one. */
  comment: string | null;
  /** Chains this rule jumps to or goes to. */
  jumps: string[];
  /** Its expressions' names, in order (`fib daddr type local jump x`: fib, cmp, immediate). */
  exprs: string[];
}

export interface NftTableSummary {
  chains: NftChainSummary[];
  rules: NftRuleSummary[];
}

/**
 * An expression twill writes over netlink, each as nft 1.0 encodes it (`nft
 * --debug=netlink`), so that nft lists the rule as if nft had added it.
 */
export type NftExpr =
  /** `tcp`/`udp`/`sctp` before a port match: meta l4proto, compared. */
  | { kind: 'l4proto'; proto: number }
  /** A header field compared to a value; with a mask, the field ANDed first (a prefix). */
  | { kind: 'payload'; base: 'network' | 'transport'; offset: number; value: Buffer; mask?: Buffer }
  /** `dnat to ADDR:PORT` (addr: 4 or 16 bytes, network order). */
  | { kind: 'dnat'; addr: Buffer; port: number }
  | { kind: 'masquerade' };

export interface NftRuleSpec {
  chain: string;
  exprs: NftExpr[];
  /** `comment "..."` (at most 255 bytes, as nft allows). */
  comment: string | null;
}
