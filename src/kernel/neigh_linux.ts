import { AttrWriter, Attrs } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { Message } from './nl/socket.js';
import type { NsContext } from './context.js';
import { familyOf, formatIp, formatMac, parseIp, parseMac } from './ip.js';
import { resolveIndex } from './link_linux.js';
import type { LinkRef } from './link.js';
import type { FdbEntry, Neigh } from './neigh.js';
import type { Family } from './ip.js';

function ndmsg(family: number, index: number, state: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

const linkName = (ref: LinkRef): string => (typeof ref === 'string' ? ref : ref.name);

interface RawNeigh {
  family: number;
  ifindex: number;
  state: number;
  flags: number;
  attrs: Attrs;
}

function parseRaw(msg: Message): RawNeigh {
  const d = msg.data;
  return {
    family: d.readUInt8(0),
    ifindex: d.readInt32LE(4),
    state: d.readUInt16LE(8),
    flags: d.readUInt8(10),
    attrs: new Attrs(d.subarray(12)),
  };
}

export function parseNeigh(msg: Message, nsKey: string): Neigh | null {
  const r = parseRaw(msg);
  const dst = r.attrs.buffer(C.NDA_DST);
  if (r.family === C.AF_BRIDGE || !dst) return null;
  const mac = r.attrs.buffer(C.NDA_LLADDR);
  return {
    nsKey,
    ifindex: r.ifindex,
    family: familyOf(r.family),
    ip: formatIp(dst),
    mac: mac && mac.length === 6 ? formatMac(mac) : null,
    state: r.state,
    flags: r.flags,
    permanent: (r.state & C.NUD_PERMANENT) !== 0,
  };
}

export function parseFdb(msg: Message, nsKey: string): FdbEntry | null {
  const r = parseRaw(msg);
  const mac = r.attrs.buffer(C.NDA_LLADDR);
  if (r.family !== C.AF_BRIDGE || !mac) return null;
  const dst = r.attrs.buffer(C.NDA_DST);
  const master = r.attrs.u32(C.NDA_MASTER);
  return {
    nsKey,
    ifindex: r.ifindex,
    mac: formatMac(mac),
    dst: dst ? formatIp(dst) : null,
    masterIndex: master ?? null,
    self: (r.flags & C.NTF_SELF) !== 0,
    permanent: (r.state & C.NUD_PERMANENT) !== 0,
    state: r.state,
    flags: r.flags,
  };
}

export async function listNeighs(h: NsContext, opts: { link?: LinkRef; family?: Family } = {}): Promise<Neigh[]> {
  const ctx = { op: 'list', subject: 'neighbours' };
  const index = opts.link ? await resolveIndex(h, opts.link, ctx) : 0;
  const af = opts.family === 4 ? C.AF_INET : opts.family === 6 ? C.AF_INET6 : C.AF_UNSPEC;
  const msgs = await h.sock.request(C.RTM_GETNEIGH, C.NLM_F_DUMP, ndmsg(af, 0, 0, 0), ctx);
  return msgs
    .filter((m) => m.type === C.RTM_NEWNEIGH)
    .map((m) => parseNeigh(m, h.nsKey))
    .filter((n): n is Neigh => n !== null && (index === 0 || n.ifindex === index));
}

async function changeNeigh(h: NsContext, type: number, flags: number, op: string, link: LinkRef, ip: string, mac?: string): Promise<void> {
  const ctx = { op, subject: `neighbour ${ip}${mac ? ` lladdr ${mac}` : ''} on link "${linkName(link)}"` };
  const addr = parseIp(ip, ctx);
  const w = new AttrWriter().raw(C.NDA_DST, addr.bytes);
  if (mac !== undefined) w.raw(C.NDA_LLADDR, parseMac(mac, ctx));
  const index = await resolveIndex(h, link, ctx);
  const af = addr.family === 4 ? C.AF_INET : C.AF_INET6;
  await h.sock.request(type, flags, Buffer.concat([ndmsg(af, index, C.NUD_PERMANENT, 0), w.toBuffer()]), ctx);
}

/** A permanent neighbour entry (ip → MAC); fails if one exists. */
export const addNeigh = (h: NsContext, link: LinkRef, ip: string, mac: string) =>
  changeNeigh(h, C.RTM_NEWNEIGH, C.NLM_F_CREATE | C.NLM_F_EXCL, 'add', link, ip, mac);

export const replaceNeigh = (h: NsContext, link: LinkRef, ip: string, mac: string) =>
  changeNeigh(h, C.RTM_NEWNEIGH, C.NLM_F_CREATE | C.NLM_F_REPLACE, 'replace', link, ip, mac);

export const deleteNeigh = (h: NsContext, link: LinkRef, ip: string) =>
  changeNeigh(h, C.RTM_DELNEIGH, 0, 'delete', link, ip);

export async function listFdb(h: NsContext, opts: { link?: LinkRef } = {}): Promise<FdbEntry[]> {
  const ctx = { op: 'list', subject: 'FDB entries' };
  const index = opts.link ? await resolveIndex(h, opts.link, ctx) : 0;
  const msgs = await h.sock.request(C.RTM_GETNEIGH, C.NLM_F_DUMP, ndmsg(C.AF_BRIDGE, 0, 0, 0), ctx);
  return msgs
    .filter((m) => m.type === C.RTM_NEWNEIGH)
    .map((m) => parseFdb(m, h.nsKey))
    .filter((n): n is FdbEntry => n !== null && (index === 0 || n.ifindex === index));
}

async function changeFdb(h: NsContext, type: number, flags: number, op: string, link: LinkRef, mac: string, dst?: string): Promise<void> {
  const ctx = { op, subject: `FDB entry ${mac}${dst ? ` dst ${dst}` : ''} on link "${linkName(link)}"` };
  const w = new AttrWriter().raw(C.NDA_LLADDR, parseMac(mac, ctx));
  if (dst !== undefined) w.raw(C.NDA_DST, parseIp(dst, ctx).bytes);
  const index = await resolveIndex(h, link, ctx);
  await h.sock.request(type, flags, Buffer.concat([ndmsg(C.AF_BRIDGE, index, C.NUD_PERMANENT, C.NTF_SELF), w.toBuffer()]), ctx);
}

/** Adds a destination for mac (a vxlan device may send one MAC to several VTEPs). */
export const appendFdb = (h: NsContext, link: LinkRef, mac: string, dst: string) =>
  changeFdb(h, C.RTM_NEWNEIGH, C.NLM_F_CREATE | C.NLM_F_APPEND, 'append', link, mac, dst);

export const replaceFdb = (h: NsContext, link: LinkRef, mac: string, dst: string) =>
  changeFdb(h, C.RTM_NEWNEIGH, C.NLM_F_CREATE | C.NLM_F_REPLACE, 'replace', link, mac, dst);

/** Deletes mac's entry (only the one towards dst, when given). */
export const deleteFdb = (h: NsContext, link: LinkRef, mac: string, dst?: string) =>
  changeFdb(h, C.RTM_DELNEIGH, 0, 'delete', link, mac, dst);
