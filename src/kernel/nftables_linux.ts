// nf_tables over netlink (NETLINK_NETFILTER), read-only: a table's chains and
// rules, summarised. One dump instead of an `nft -j list table` process: a CNI
// plugin that only needs handles and comments saves a process start per call.
// Numbers from linux/netfilter/nf_tables.h, nfnetlink.h and libnftnl's udata.h.
import { Attrs, attrList } from './nl/attr.js';
import { AttrWriter } from './nl/attr.js';
import { NETLINK_NETFILTER, RouteSocket, type Message } from './nl/socket.js';
import { NLM_F_DUMP } from './nl/constants.js';
import { isNotFound } from './errors.js';
import type { Netns } from './netns.js';
import type { NftChainSummary, NftFamily, NftRuleSummary, NftTableSummary } from './nftables.js';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_GETRULE = 7;
const NFT_MSG_GETGEN = 16;
const NFTA_GEN_ID = 1;
// The dump was interrupted by a change: its parts are not one consistent view (linux/netlink.h).
const NLM_F_DUMP_INTR = 0x10;
const msgType = (msg: number): number => (NFNL_SUBSYS_NFTABLES << 8) | msg;

const NFPROTO: Record<NftFamily, number> = { inet: 1, ip: 2, arp: 3, netdev: 5, bridge: 7, ip6: 10 };

const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_CHAIN_HOOK = 4;
const NFTA_CHAIN_TYPE = 7;
const NFTA_HOOK_HOOKNUM = 1;
const NFTA_HOOK_PRIORITY = 2;
// NF_INET_* (ingress shares 5 with the netdev family's NF_NETDEV_INGRESS = 0: read per family below).
const INET_HOOKS = ['prerouting', 'input', 'forward', 'output', 'postrouting', 'ingress'] as const;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_HANDLE = 3;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_RULE_USERDATA = 7;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_IMMEDIATE_DATA = 2;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;
const NFT_JUMP = -3;
const NFT_GOTO = -4;
// libnftnl's rule user data: TLVs of u8 type, u8 length; type 0 is the comment.
const NFTNL_UDATA_RULE_COMMENT = 0;

/** struct nfgenmsg (family, version 0, resource id 0), then the attributes. */
function request(family: NftFamily, attrs: Buffer): Buffer {
  return Buffer.concat([Buffer.from([NFPROTO[family], 0, 0, 0]), attrs]);
}

function commentOf(userdata: Buffer | undefined): string | null {
  if (!userdata) return null;
  for (let off = 0; off + 2 <= userdata.length; ) {
    const type = userdata.readUInt8(off);
    const len = userdata.readUInt8(off + 1);
    if (off + 2 + len > userdata.length) break;
    if (type === NFTNL_UDATA_RULE_COMMENT) {
      const value = userdata.subarray(off + 2, off + 2 + len);
      const end = value.indexOf(0);
      return value.toString('utf8', 0, end < 0 ? value.length : end);
    }
    off += 2 + len;
  }
  return null;
}

function chainOf(family: NftFamily, a: Attrs): NftChainSummary {
  const hook = a.nested(NFTA_CHAIN_HOOK);
  const num = hook?.buffer(NFTA_HOOK_HOOKNUM);
  const prio = hook?.buffer(NFTA_HOOK_PRIORITY);
  const hookNum = num && num.length >= 4 ? num.readUInt32BE(0) : null;
  return {
    name: a.string(NFTA_CHAIN_NAME) ?? '',
    type: a.string(NFTA_CHAIN_TYPE) ?? null,
    hook: hookNum === null ? null : family === 'netdev' ? 'ingress' : (INET_HOOKS[hookNum] ?? null),
    priority: prio && prio.length >= 4 ? prio.readInt32BE(0) : null,
  };
}

function exprNames(expressions: Buffer | undefined): string[] {
  return expressions ? attrList(expressions).map((elem) => new Attrs(elem.data).string(NFTA_EXPR_NAME) ?? '') : [];
}

function jumpsOf(expressions: Buffer | undefined): string[] {
  if (!expressions) return [];
  const out: string[] = [];
  for (const elem of attrList(expressions)) {
    const expr = new Attrs(elem.data);
    if (expr.string(NFTA_EXPR_NAME) !== 'immediate') continue;
    const verdict = expr.nested(NFTA_EXPR_DATA)?.nested(NFTA_IMMEDIATE_DATA)?.nested(NFTA_DATA_VERDICT);
    const code = verdict?.buffer(NFTA_VERDICT_CODE);
    const chain = verdict?.string(NFTA_VERDICT_CHAIN);
    if (code && code.length >= 4 && chain !== undefined && [NFT_JUMP, NFT_GOTO].includes(code.readInt32BE(0))) out.push(chain);
  }
  return out;
}

/** The first attribute of `type` that is a string, read without parsing the rest (for filtering dumps). */
function stringAttr(data: Buffer, offset: number, type: number): string | undefined {
  for (const a of attrList(data.subarray(offset))) if (a.type === type) return a.data.toString('utf8', 0, a.data.indexOf(0) < 0 ? a.data.length : a.data.indexOf(0));
  return undefined;
}

const cstring = (b: Buffer): string => {
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end < 0 ? b.length : end);
};

/**
 * A rule as dumped, read in one pass over its attributes (a node with many
 * mapped ports has hundreds; this runs in a process that has just started, so
 * it avoids per-rule maps). Expressions are decoded only when asked for.
 */
class DumpedRule implements NftRuleSummary {
  table = '';
  chain = '';
  handle = -1;
  comment: string | null = null;
  private expressions: Buffer | undefined;

  constructor(data: Buffer, offset: number) {
    while (offset + 4 <= data.length) {
      const len = data.readUInt16LE(offset);
      if (len < 4 || offset + len > data.length) break;
      const type = data.readUInt16LE(offset + 2) & 0x3fff;
      const value = data.subarray(offset + 4, offset + len);
      if (type === NFTA_RULE_TABLE) this.table = cstring(value);
      else if (type === NFTA_RULE_CHAIN) this.chain = cstring(value);
      else if (type === NFTA_RULE_HANDLE && value.length >= 8) this.handle = Number(value.readBigUInt64BE(0));
      else if (type === NFTA_RULE_USERDATA) this.comment = commentOf(value);
      else if (type === NFTA_RULE_EXPRESSIONS) this.expressions = value;
      offset += (len + 3) & ~3;
    }
  }

  get jumps(): string[] {
    return jumpsOf(this.expressions);
  }

  get exprs(): string[] {
    return exprNames(this.expressions);
  }

  toJSON(): NftRuleSummary & { table: string } {
    return { table: this.table, chain: this.chain, handle: this.handle, comment: this.comment, jumps: this.jumps, exprs: this.exprs };
  }
}

/** The table's summary from the kernel's chain and rule dumps (exported for the snapshot's warm-up). */
export function summarizeNftTable(name: string, family: NftFamily, chains: Message[], rules: Message[]): NftTableSummary {
  // Chain dumps are not filtered by table (rule dumps are): keep only ours, looked at cheaply first.
  const ours = (msgs: Message[], tableAttr: number) => msgs.filter((m) => stringAttr(m.data, 4, tableAttr) === name).map((m) => new Attrs(m.data.subarray(4)));
  return {
    chains: ours(chains, NFTA_CHAIN_TABLE).map((a) => chainOf(family, a)),
    // Rule dumps are filtered by the kernel (NFTA_RULE_TABLE in the request); checked again, cheaply.
    rules: rules.map((m) => new DumpedRule(m.data, 4)).filter((r) => r.table === name),
  };
}

const READ_ATTEMPTS = 3;
const generation = (msgs: Message[]): number | null => {
  const g = msgs[0] ? new Attrs(msgs[0].data.subarray(4)).buffer(NFTA_GEN_ID) : undefined;
  return g && g.length >= 4 ? g.readUInt32BE(0) : null;
};

/**
 * The chains and rules of table `<family> <name>` in a namespace (null: the
 * current one), or null when there is no such table. One consistent view: the
 * ruleset's generation is the same before and after the dumps and no dump was
 * interrupted (a node's parallel ADDs change the table), else it is read again.
 */
export async function readNftTable(netns: Netns | null, family: NftFamily, name: string): Promise<NftTableSummary | null> {
  const open = () => new RouteSocket(netns?.name ?? null, { protocol: NETLINK_NETFILTER });
  const sock = netns ? netns.run(open) : open();
  const ctx = (what: string) => ({ op: `read nftables ${what}`, subject: `table ${family} ${name}`, netns: netns?.name ?? null });
  const getGen = () => sock.request(msgType(NFT_MSG_GETGEN), 0, request(family, Buffer.alloc(0)), ctx('generation'));
  try {
    for (let attempt = 1; ; attempt++) {
      const before = generation(await getGen());
      try {
        await sock.request(msgType(NFT_MSG_GETTABLE), 0, request(family, new AttrWriter().string(NFTA_TABLE_NAME, name).toBuffer()), ctx('table'));
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
      const chains = await sock.request(msgType(NFT_MSG_GETCHAIN), NLM_F_DUMP, request(family, new AttrWriter().string(NFTA_CHAIN_TABLE, name).toBuffer()), ctx('chains'));
      const rules = await sock.request(msgType(NFT_MSG_GETRULE), NLM_F_DUMP, request(family, new AttrWriter().string(NFTA_RULE_TABLE, name).toBuffer()), ctx('rules'));
      const interrupted = [...chains, ...rules].some((m) => (m.flags & NLM_F_DUMP_INTR) !== 0);
      if (!interrupted && before === generation(await getGen())) return summarizeNftTable(name, family, chains, rules);
      if (attempt >= READ_ATTEMPTS) throw new Error(`read nftables table ${family} ${name}: the ruleset kept changing during ${READ_ATTEMPTS} reads`);
    }
  } finally {
    sock.close();
  }
}
