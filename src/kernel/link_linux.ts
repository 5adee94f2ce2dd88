import { AttrWriter, Attrs } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { Message } from './nl/socket.js';
import type { NsContext } from './context.js';
import { invalidArgument, isNotFound, type ErrorContext } from './errors.js';
import { formatIp, formatMac, parseIp, parseMac } from './ip.js';
import type { Netns } from './netns.js';
import {
  IFNAME_MAX,
  VXLAN_DEFAULT_PORT,
  type Link,
  type LinkAttrs,
  type LinkRef,
  type LinkSpec,
  type BridgePortAttrs,
  type BridgeInfo,
  type OperState,
  type VethPeer,
  type VxlanInfo,
} from './link.js';

const OPER_STATES: OperState[] = ['unknown', 'notpresent', 'down', 'lowerlayerdown', 'testing', 'dormant', 'up'];
const RTEXT_FILTER_VF = 1;

export function ifinfomsg(index: number, flags = 0, change = 0, family = C.AF_UNSPEC): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}

/** Linux's dev_valid_name, checked before anything is sent. */
export function checkLinkName(name: string, ctx: ErrorContext): void {
  if (name.length === 0 || name.length > IFNAME_MAX || name === '.' || name === '..' || /[/:\s\0]/.test(name)) {
    throw invalidArgument(ctx, `invalid interface name "${name}": 1 to ${IFNAME_MAX} characters, without "/", ":" or spaces`);
  }
}

const refName = (ref: LinkRef): string => (typeof ref === 'string' ? ref : ref.name);

export function parseLink(msg: Message, nsKey: string): Link {
  const d = msg.data;
  const flags = d.readUInt32LE(8);
  const attrs = new Attrs(d.subarray(16));
  const info = attrs.nested(C.IFLA_LINKINFO);
  const kind = info?.string(C.IFLA_INFO_KIND) ?? 'device';
  const mac = attrs.buffer(C.IFLA_ADDRESS);
  const master = attrs.u32(C.IFLA_MASTER);
  const parent = attrs.u32(C.IFLA_LINK);
  const ifindex = d.readInt32LE(4);
  const linkNetnsId = attrs.s32(C.IFLA_LINK_NETNSID) ?? null;
  return {
    nsKey,
    ifindex,
    name: attrs.string(C.IFLA_IFNAME) ?? '',
    kind,
    slaveKind: info?.string(C.IFLA_INFO_SLAVE_KIND) ?? null,
    flags,
    up: (flags & C.IFF_UP) !== 0,
    lowerUp: (flags & C.IFF_LOWER_UP) !== 0,
    promisc: (flags & C.IFF_PROMISC) !== 0,
    operState: OPER_STATES[attrs.u8(C.IFLA_OPERSTATE) ?? 0] ?? 'unknown',
    mtu: attrs.u32(C.IFLA_MTU) ?? 0,
    mac: mac && mac.length === 6 ? formatMac(mac) : null,
    masterIndex: master ? master : null,
    // A peer in another namespace may well have the same index as this link.
    parentIndex: parent !== undefined && parent !== 0 && (linkNetnsId !== null || parent !== ifindex) ? parent : null,
    linkNetnsId,
    vxlan: kind === 'vxlan' ? parseVxlan(info?.nested(C.IFLA_INFO_DATA)) : null,
    bridge: kind === 'bridge' ? parseBridge(info?.nested(C.IFLA_INFO_DATA)) : null,
  };
}

function parseBridge(data: Attrs | undefined): BridgeInfo {
  return {
    vlanFiltering: (data?.u8(C.IFLA_BR_VLAN_FILTERING) ?? 0) !== 0,
    vlanDefaultPvid: data?.u16(C.IFLA_BR_VLAN_DEFAULT_PVID) ?? null,
  };
}

function parseVxlan(data: Attrs | undefined): VxlanInfo | null {
  if (!data) return null;
  const local4 = data.buffer(C.IFLA_VXLAN_LOCAL);
  const local6 = data.buffer(C.IFLA_VXLAN_LOCAL6);
  const local = local4 ?? local6;
  const device = data.u32(C.IFLA_VXLAN_LINK);
  return {
    vni: data.u32(C.IFLA_VXLAN_ID) ?? 0,
    port: data.u16be(C.IFLA_VXLAN_PORT) ?? VXLAN_DEFAULT_PORT,
    local: local && local.some((b) => b !== 0) ? formatIp(local) : null,
    deviceIndex: device ? device : null,
    learning: (data.u8(C.IFLA_VXLAN_LEARNING) ?? 0) !== 0,
    gbp: data.has(C.IFLA_VXLAN_GBP),
  };
}

const describe = (ref: LinkRef): string => `link "${refName(ref)}"`;

export async function listLinks(h: NsContext): Promise<Link[]> {
  const body = Buffer.concat([ifinfomsg(0), new AttrWriter().u32(C.IFLA_EXT_MASK, RTEXT_FILTER_VF).toBuffer()]);
  const msgs = await h.sock.request(C.RTM_GETLINK, C.NLM_F_DUMP, body, { op: 'list', subject: 'links' });
  return msgs.filter((m) => m.type === C.RTM_NEWLINK).map((m) => parseLink(m, h.nsKey));
}

export async function getLinkByName(h: NsContext, name: string): Promise<Link> {
  const ctx = { op: 'get', subject: `link "${name}"` };
  checkLinkName(name, ctx);
  const body = Buffer.concat([ifinfomsg(0), new AttrWriter().string(C.IFLA_IFNAME, name).toBuffer()]);
  const [msg] = await h.sock.request(C.RTM_GETLINK, 0, body, ctx);
  return parseLink(msg!, h.nsKey);
}

/** An ifindex read from this namespace: only ever used to answer a question about it. */
export async function getLinkByIndex(h: NsContext, ifindex: number): Promise<Link> {
  const [msg] = await h.sock.request(C.RTM_GETLINK, 0, ifinfomsg(ifindex), { op: 'get', subject: `link #${ifindex}` });
  return parseLink(msg!, h.nsKey);
}

export async function findLink(h: NsContext, name: string): Promise<Link | null> {
  try {
    return await getLinkByName(h, name);
  } catch (e) {
    if (isNotFound(e)) return null;
    throw e;
  }
}

/**
 * The ifindex of a link in this namespace. A Link from another namespace is
 * refused: its index would name some other device here.
 */
export async function resolveIndex(h: NsContext, ref: LinkRef, ctx: ErrorContext): Promise<number> {
  if (typeof ref === 'string') return (await getLinkByName(h, ref)).ifindex;
  if (ref.nsKey !== h.nsKey) {
    throw invalidArgument(ctx, `link "${ref.name}" was read from another network namespace; its ifindex ${ref.ifindex} means nothing here`);
  }
  return ref.ifindex;
}

function writeCommonAttrs(w: AttrWriter, attrs: LinkAttrs, ctx: ErrorContext): void {
  if (attrs.mtu !== undefined) {
    if (!Number.isInteger(attrs.mtu) || attrs.mtu < 68 || attrs.mtu > 65535) throw invalidArgument(ctx, `MTU ${attrs.mtu} is outside 68..65535`);
    w.u32(C.IFLA_MTU, attrs.mtu);
  }
  if (attrs.mac !== undefined) w.raw(C.IFLA_ADDRESS, parseMac(attrs.mac, ctx));
}

export async function addLink(h: NsContext, spec: LinkSpec): Promise<Link> {
  const ctx = { op: 'add', subject: `${spec.kind} "${spec.name}"` };
  checkLinkName(spec.name, ctx);
  const w = new AttrWriter().string(C.IFLA_IFNAME, spec.name);
  writeCommonAttrs(w, spec, ctx);
  if (spec.master) w.u32(C.IFLA_MASTER, await resolveIndex(h, spec.master, ctx));
  switch (spec.kind) {
    case 'bridge': {
      const vlanFiltering = spec.vlanFiltering;
      w.nested(C.IFLA_LINKINFO, (li) => {
        li.string(C.IFLA_INFO_KIND, 'bridge');
        if (vlanFiltering !== undefined) li.nested(C.IFLA_INFO_DATA, (d) => d.u8(C.IFLA_BR_VLAN_FILTERING, vlanFiltering ? 1 : 0));
      });
      break;
    }
    case 'veth': {
      const peer = spec.peer;
      checkLinkName(peer.name, ctx);
      const pw = new AttrWriter().string(C.IFLA_IFNAME, peer.name);
      writeCommonAttrs(pw, peer, ctx);
      // The peer is born in its namespace: no ifindex ever crosses a namespace border.
      if (peer.netns) pw.u32(C.IFLA_NET_NS_FD, peer.netns.fd);
      const peerMsg = Buffer.concat([ifinfomsg(0), pw.toBuffer()]);
      w.nested(C.IFLA_LINKINFO, (li) =>
        li.string(C.IFLA_INFO_KIND, 'veth').nested(C.IFLA_INFO_DATA, (d) => d.raw(C.VETH_INFO_PEER, peerMsg)),
      );
      break;
    }
    case 'vxlan': {
      if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) throw invalidArgument(ctx, `VNI ${spec.vni} is outside 0..16777215`);
      const port = spec.port ?? VXLAN_DEFAULT_PORT;
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidArgument(ctx, `UDP port ${port} is outside 1..65535`);
      const local = spec.local !== undefined ? parseIp(spec.local, ctx) : null;
      const deviceIndex = spec.device ? await resolveIndex(h, spec.device, ctx) : null;
      w.nested(C.IFLA_LINKINFO, (li) =>
        li.string(C.IFLA_INFO_KIND, 'vxlan').nested(C.IFLA_INFO_DATA, (d) => {
          d.u32(C.IFLA_VXLAN_ID, spec.vni);
          if (local) d.raw(local.family === 4 ? C.IFLA_VXLAN_LOCAL : C.IFLA_VXLAN_LOCAL6, local.bytes);
          if (deviceIndex !== null) d.u32(C.IFLA_VXLAN_LINK, deviceIndex);
          d.u16be(C.IFLA_VXLAN_PORT, port);
          d.u8(C.IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0);
          if (spec.ttl !== undefined) d.u8(C.IFLA_VXLAN_TTL, spec.ttl);
          if (spec.gbp) d.flag(C.IFLA_VXLAN_GBP);
        }),
      );
      break;
    }
  }
  const flags = (spec.up ? C.IFF_UP : 0) | (spec.promisc ? C.IFF_PROMISC : 0);
  const body = Buffer.concat([ifinfomsg(0, flags, flags), w.toBuffer()]);
  // With ECHO the kernel (6.3+) answers with the new link itself: one round
  // trip fewer; older kernels only ACK, and the link is read back. The echo is
  // sent before the kernel applies IFLA_MASTER, so an enslaved link is read back.
  const reply = await h.sock.request(C.RTM_NEWLINK, C.NLM_F_CREATE | C.NLM_F_EXCL | C.NLM_F_ECHO, body, ctx);
  const echoed = spec.master ? undefined : reply.find((m) => m.type === C.RTM_NEWLINK);
  if (echoed) {
    const link = parseLink(echoed, h.nsKey);
    if (link.name === spec.name) return link;
  }
  return getLinkByName(h, spec.name);
}

/** Changes MTU, MAC, up/down and master of an existing link, in one request. */
export async function setLink(h: NsContext, ref: LinkRef, attrs: LinkAttrs & { name?: string }): Promise<void> {
  const ctx = { op: 'set', subject: describe(ref) };
  const w = new AttrWriter();
  writeCommonAttrs(w, attrs, ctx);
  if (attrs.master !== undefined) w.u32(C.IFLA_MASTER, attrs.master === null ? 0 : await resolveIndex(h, attrs.master, ctx));
  let index = 0;
  if (attrs.name !== undefined) {
    // A rename names the new name in IFLA_IFNAME, so the link goes by index.
    checkLinkName(attrs.name, ctx);
    index = await resolveIndex(h, ref, ctx);
    w.string(C.IFLA_IFNAME, attrs.name);
  } else if (typeof ref === 'string') {
    checkLinkName(ref, ctx);
    w.string(C.IFLA_IFNAME, ref);
  } else {
    index = await resolveIndex(h, ref, ctx);
  }
  const change = (attrs.up === undefined ? 0 : C.IFF_UP) | (attrs.promisc === undefined ? 0 : C.IFF_PROMISC);
  const flags = (attrs.up ? C.IFF_UP : 0) | (attrs.promisc ? C.IFF_PROMISC : 0);
  await h.sock.request(C.RTM_SETLINK, 0, Buffer.concat([ifinfomsg(index, flags, change), w.toBuffer()]), ctx);
}

/** Sets a bridge port's hairpin, isolation and learning (the link must be enslaved to a bridge). */
export async function setBridgePort(h: NsContext, ref: LinkRef, attrs: BridgePortAttrs): Promise<void> {
  const ctx = { op: 'set bridge port', subject: describe(ref) };
  const index = await resolveIndex(h, ref, ctx);
  const w = new AttrWriter().nested(C.IFLA_PROTINFO, (p) => {
    if (attrs.hairpin !== undefined) p.u8(C.IFLA_BRPORT_MODE, attrs.hairpin ? 1 : 0);
    if (attrs.learning !== undefined) p.u8(C.IFLA_BRPORT_LEARNING, attrs.learning ? 1 : 0);
    if (attrs.isolated !== undefined) p.u8(C.IFLA_BRPORT_ISOLATED, attrs.isolated ? 1 : 0);
  });
  await h.sock.request(C.RTM_SETLINK, 0, Buffer.concat([ifinfomsg(index, 0, 0, C.AF_BRIDGE), w.toBuffer()]), ctx);
}

/** Moves a link of this namespace into another (by fd: never IFLA_TARGET_NETNSID). */
export async function moveLink(h: NsContext, ref: LinkRef, target: Netns, newName?: string): Promise<void> {
  const ctx = { op: 'move', subject: `${describe(ref)} to netns "${target.name}"` };
  const index = await resolveIndex(h, ref, ctx);
  const w = new AttrWriter().u32(C.IFLA_NET_NS_FD, target.fd);
  if (newName !== undefined) {
    checkLinkName(newName, ctx);
    w.string(C.IFLA_IFNAME, newName);
  }
  await h.sock.request(C.RTM_SETLINK, 0, Buffer.concat([ifinfomsg(index), w.toBuffer()]), ctx);
}

export async function deleteLink(h: NsContext, ref: LinkRef): Promise<void> {
  const ctx = { op: 'delete', subject: describe(ref) };
  if (typeof ref === 'string') {
    checkLinkName(ref, ctx);
    const body = Buffer.concat([ifinfomsg(0), new AttrWriter().string(C.IFLA_IFNAME, ref).toBuffer()]);
    await h.sock.request(C.RTM_DELLINK, 0, body, ctx);
  } else {
    await h.sock.request(C.RTM_DELLINK, 0, ifinfomsg(await resolveIndex(h, ref, ctx)), ctx);
  }
}

/** Where the other end of a veth is: its ifindex, and in which namespace (by id). */
export function vethPeer(link: Link): VethPeer | null {
  if (link.kind !== 'veth' || link.parentIndex === null) return null;
  return { ifindex: link.parentIndex, netnsId: link.linkNetnsId };
}
