import { AttrWriter, Attrs } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { Message } from './nl/socket.js';
import type { NsContext } from './context.js';
import { familyOf, formatIp, parseCidr, parseIp } from './ip.js';
import { resolveIndex } from './link_linux.js';
import type { Addr, AddrOptions } from './addr.js';
import type { LinkRef } from './link.js';
import type { Family } from './ip.js';

function ifaddrmsg(family: number, prefixLen: number, flags: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLen, 1);
  b.writeUInt8(flags & 0xff, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

export function parseAddr(msg: Message, nsKey: string): Addr {
  const d = msg.data;
  const attrs = new Attrs(d.subarray(8));
  const address = attrs.buffer(C.IFA_ADDRESS);
  const local = attrs.buffer(C.IFA_LOCAL);
  const own = local ?? address!;
  const bcast = attrs.buffer(C.IFA_BROADCAST);
  return {
    nsKey,
    family: familyOf(d.readUInt8(0)),
    prefixLen: d.readUInt8(1),
    scope: d.readUInt8(3),
    ifindex: d.readUInt32LE(4),
    address: formatIp(own),
    peer: local && address && !local.equals(address) ? formatIp(address) : null,
    broadcast: bcast ? formatIp(bcast) : null,
    label: attrs.string(C.IFA_LABEL) ?? null,
    flags: attrs.u32(C.IFA_FLAGS) ?? d.readUInt8(2),
  };
}

export async function listAddrs(h: NsContext, opts: { link?: LinkRef; family?: Family } = {}): Promise<Addr[]> {
  const ctx = { op: 'list', subject: 'addresses' };
  const index = opts.link ? await resolveIndex(h, opts.link, ctx) : 0;
  const af = opts.family === 4 ? C.AF_INET : opts.family === 6 ? C.AF_INET6 : C.AF_UNSPEC;
  const msgs = await h.sock.request(C.RTM_GETADDR, C.NLM_F_DUMP, ifaddrmsg(af, 0, 0, 0, 0), ctx);
  return msgs
    .filter((m) => m.type === C.RTM_NEWADDR)
    .map((m) => parseAddr(m, h.nsKey))
    .filter((a) => index === 0 || a.ifindex === index);
}

async function changeAddr(
  h: NsContext,
  type: number,
  flags: number,
  op: string,
  link: LinkRef,
  cidr: string,
  opts: AddrOptions,
): Promise<void> {
  const ctx = { op, subject: `address ${cidr} on link "${typeof link === 'string' ? link : link.name}"` };
  const ip = parseCidr(cidr, ctx);
  const index = await resolveIndex(h, link, ctx);
  const af = ip.family === 4 ? C.AF_INET : C.AF_INET6;
  const ifaFlags = opts.noDad ? C.IFA_F_NODAD : 0;
  const w = new AttrWriter().raw(C.IFA_LOCAL, ip.bytes).raw(C.IFA_ADDRESS, ip.bytes);
  if (opts.broadcast) w.raw(C.IFA_BROADCAST, parseIp(opts.broadcast, ctx).bytes);
  if (opts.label) w.string(C.IFA_LABEL, opts.label);
  if (ifaFlags) w.u32(C.IFA_FLAGS, ifaFlags);
  const body = Buffer.concat([ifaddrmsg(af, ip.prefixLen, ifaFlags, C.RT_SCOPE_UNIVERSE, index), w.toBuffer()]);
  await h.sock.request(type, flags, body, ctx);
}

export const addAddr = (h: NsContext, link: LinkRef, cidr: string, opts: AddrOptions = {}) =>
  changeAddr(h, C.RTM_NEWADDR, C.NLM_F_CREATE | C.NLM_F_EXCL, 'add', link, cidr, opts);

export const replaceAddr = (h: NsContext, link: LinkRef, cidr: string, opts: AddrOptions = {}) =>
  changeAddr(h, C.RTM_NEWADDR, C.NLM_F_CREATE | C.NLM_F_REPLACE, 'replace', link, cidr, opts);

export const deleteAddr = (h: NsContext, link: LinkRef, cidr: string) =>
  changeAddr(h, C.RTM_DELADDR, 0, 'delete', link, cidr, {});
