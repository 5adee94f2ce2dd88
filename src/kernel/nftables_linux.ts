// nf_tables over netlink (NETLINK_NETFILTER): a table's chains and rules,
// summarised, and rules appended in one transaction. One dump instead of an
// `nft -j list table` process, one batch instead of an `nft` process: a CNI
// plugin saves a process start (and nft's own ruleset cache) per call.
// Numbers from linux/netfilter/nf_tables.h, nfnetlink.h and libnftnl's udata.h.
import { Attrs, attrList } from './nl/attr.js';
import { AttrWriter } from './nl/attr.js';
import { NETLINK_NETFILTER, RouteSocket, type Message } from './nl/socket.js';
import { NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP } from './nl/constants.js';
import { isNotFound } from './errors.js';
import type { Netns } from './netns.js';
import type { NftChainSummary, NftExpr, NftFamily, NftRuleSpec, NftRuleSummary, NftTableSummary } from './nftables.js';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_NEWRULE = 6;
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

// Expression attributes (linux/netfilter/nf_tables.h). Registers as nft uses them: 1 and 2.
const NFTA_LIST_ELEM = 1;
const NFTA_DATA_VALUE = 1;
const NFT_REG_1 = 1;
const NFT_REG_2 = 2;
const NFTA_META_DREG = 1;
const NFTA_META_KEY = 2;
const NFT_META_L4PROTO = 16;
const NFTA_CMP_SREG = 1;
const NFTA_CMP_OP = 2;
const NFTA_CMP_DATA = 3;
const NFT_CMP_EQ = 0;
const NFTA_PAYLOAD_DREG = 1;
const NFTA_PAYLOAD_BASE = 2;
const NFTA_PAYLOAD_OFFSET = 3;
const NFTA_PAYLOAD_LEN = 4;
const PAYLOAD_BASE = { network: 1, transport: 2 } as const;
const NFTA_BITWISE_SREG = 1;
const NFTA_BITWISE_DREG = 2;
const NFTA_BITWISE_LEN = 3;
const NFTA_BITWISE_MASK = 4;
const NFTA_BITWISE_XOR = 5;
const NFTA_IMMEDIATE_DREG = 1;
const NFTA_NAT_TYPE = 1;
const NFTA_NAT_FAMILY = 2;
const NFTA_NAT_REG_ADDR_MIN = 3;
const NFTA_NAT_REG_PROTO_MIN = 5;
const NFTA_NAT_FLAGS = 7;
const NFT_NAT_DNAT = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED = 0x2;

/** One expression: its name and, nested, its attributes. */
function expr(list: AttrWriter, name: string, build: (w: AttrWriter) => void): void {
  list.nested(NFTA_LIST_ELEM, (e) => e.string(NFTA_EXPR_NAME, name).nested(NFTA_EXPR_DATA, build));
}

const cmpEq = (list: AttrWriter, value: Buffer) =>
  expr(list, 'cmp', (w) => w.u32be(NFTA_CMP_SREG, NFT_REG_1).u32be(NFTA_CMP_OP, NFT_CMP_EQ).nested(NFTA_CMP_DATA, (d) => d.raw(NFTA_DATA_VALUE, value)));

function encodeExpr(list: AttrWriter, x: NftExpr): void {
  switch (x.kind) {
    case 'l4proto':
      expr(list, 'meta', (w) => w.u32be(NFTA_META_DREG, NFT_REG_1).u32be(NFTA_META_KEY, NFT_META_L4PROTO));
      cmpEq(list, Buffer.from([x.proto]));
      return;
    case 'payload':
      expr(list, 'payload', (w) =>
        w.u32be(NFTA_PAYLOAD_DREG, NFT_REG_1).u32be(NFTA_PAYLOAD_BASE, PAYLOAD_BASE[x.base]).u32be(NFTA_PAYLOAD_OFFSET, x.offset).u32be(NFTA_PAYLOAD_LEN, x.value.length),
      );
      if (x.mask) {
        const mask = x.mask;
        expr(list, 'bitwise', (w) =>
          w.u32be(NFTA_BITWISE_SREG, NFT_REG_1).u32be(NFTA_BITWISE_DREG, NFT_REG_1).u32be(NFTA_BITWISE_LEN, mask.length)
            .nested(NFTA_BITWISE_MASK, (d) => d.raw(NFTA_DATA_VALUE, mask))
            .nested(NFTA_BITWISE_XOR, (d) => d.raw(NFTA_DATA_VALUE, Buffer.alloc(mask.length))),
        );
      }
      cmpEq(list, x.value);
      return;
    case 'dnat': {
      const port = Buffer.alloc(2);
      port.writeUInt16BE(x.port);
      expr(list, 'immediate', (w) => w.u32be(NFTA_IMMEDIATE_DREG, NFT_REG_1).nested(NFTA_IMMEDIATE_DATA, (d) => d.raw(NFTA_DATA_VALUE, x.addr)));
      expr(list, 'immediate', (w) => w.u32be(NFTA_IMMEDIATE_DREG, NFT_REG_2).nested(NFTA_IMMEDIATE_DATA, (d) => d.raw(NFTA_DATA_VALUE, port)));
      expr(list, 'nat', (w) =>
        w.u32be(NFTA_NAT_TYPE, NFT_NAT_DNAT).u32be(NFTA_NAT_FAMILY, NFPROTO[x.addr.length === 16 ? 'ip6' : 'ip'])
          .u32be(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1).u32be(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2).u32be(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
      );
      return;
    }
    case 'masquerade':
      expr(list, 'masq', () => undefined);
      return;
  }
}

/** The NEWRULE message's body (exported for the snapshot's warm-up). */
export function encodeNftRule(family: NftFamily, table: string, rule: NftRuleSpec): Buffer {
  const w = new AttrWriter().string(NFTA_RULE_TABLE, table).string(NFTA_RULE_CHAIN, rule.chain);
  w.nested(NFTA_RULE_EXPRESSIONS, (list) => {
    for (const x of rule.exprs) encodeExpr(list, x);
  });
  if (rule.comment !== null) {
    const text = Buffer.from(`${rule.comment}\0`, 'utf8');
    if (text.length > 255) throw new Error(`nftables comment longer than 254 bytes: ${rule.comment.slice(0, 40)}...`);
    w.raw(NFTA_RULE_USERDATA, Buffer.concat([Buffer.from([NFTNL_UDATA_RULE_COMMENT, text.length]), text]));
  }
  return request(family, w.toBuffer());
}

/**
 * Appends `rules` to their chains of table `<family> <table>` in a namespace
 * (null: the current one), in one transaction: all of them or none (the
 * kernel's error, e.g. a missing chain, as a KernelError).
 */
export async function appendNftRules(netns: Netns | null, family: NftFamily, table: string, rules: NftRuleSpec[]): Promise<void> {
  const open = () => new RouteSocket(netns?.name ?? null, { protocol: NETLINK_NETFILTER });
  const sock = netns ? netns.run(open) : open();
  try {
    const msgs = rules.map((r) => ({ type: msgType(NFT_MSG_NEWRULE), flags: NLM_F_CREATE | NLM_F_APPEND, body: encodeNftRule(family, table, r) }));
    await sock.batch(NFNL_SUBSYS_NFTABLES, msgs, { op: 'add nftables rules', subject: `table ${family} ${table}`, netns: netns?.name ?? null });
  } finally {
    sock.close();
  }
}
