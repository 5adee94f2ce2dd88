import { AttrWriter, Attrs } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { Message } from './nl/socket.js';
import type { NsContext } from './context.js';
import { invalidArgument, type ErrorContext } from './errors.js';
import { familyOf, formatIp, parseCidr, parseIp, type ParsedCidr } from './ip.js';
import { resolveIndex } from './link_linux.js';
import type { Route, RouteFilter, RouteScope, RouteSpec } from './route.js';

function rtmsg(family: number, dstLen: number, table: number, protocol: number, scope: number, type: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(table < 256 ? table : 0, 4);
  b.writeUInt8(protocol, 5);
  b.writeUInt8(scope, 6);
  b.writeUInt8(type, 7);
  b.writeUInt32LE(flags, 8);
  return b;
}

export function parseRoute(msg: Message, nsKey: string): Route {
  const d = msg.data;
  const family = familyOf(d.readUInt8(0));
  const dstLen = d.readUInt8(1);
  const attrs = new Attrs(d.subarray(12));
  const dst = attrs.buffer(C.RTA_DST);
  const gw = attrs.buffer(C.RTA_GATEWAY);
  const oif = attrs.u32(C.RTA_OIF);
  const src = attrs.buffer(C.RTA_PREFSRC);
  const zero = family === 4 ? '0.0.0.0' : '::';
  return {
    nsKey,
    family,
    dst: `${dst ? formatIp(dst) : zero}/${dstLen}`,
    gateway: gw ? formatIp(gw) : null,
    ifindex: oif ?? null,
    onlink: (d.readUInt32LE(8) & C.RTNH_F_ONLINK) !== 0,
    scope: d.readUInt8(6),
    table: attrs.u32(C.RTA_TABLE) ?? d.readUInt8(4),
    metric: attrs.u32(C.RTA_PRIORITY) ?? null,
    protocol: d.readUInt8(5),
    type: d.readUInt8(7),
    prefSrc: src ? formatIp(src) : null,
  };
}

export async function listRoutes(h: NsContext, filter: RouteFilter = {}): Promise<Route[]> {
  const ctx = { op: 'list', subject: 'routes' };
  const index = filter.device ? await resolveIndex(h, filter.device, ctx) : null;
  const af = filter.family === 4 ? C.AF_INET : filter.family === 6 ? C.AF_INET6 : C.AF_UNSPEC;
  const msgs = await h.sock.request(C.RTM_GETROUTE, C.NLM_F_DUMP, rtmsg(af, 0, 0, 0, 0, 0, 0), ctx);
  // No strict checking on this kernel API (netlink@0.3.0): filter here.
  return msgs
    .filter((m) => m.type === C.RTM_NEWROUTE)
    .map((m) => parseRoute(m, h.nsKey))
    .filter(
      (r) =>
        (filter.table === undefined ? r.table === C.RT_TABLE_MAIN : r.table === filter.table) &&
        (filter.protocol === undefined || r.protocol === filter.protocol) &&
        (index === null || r.ifindex === index),
    );
}

function scopeNumber(scope: RouteScope | undefined, hasGateway: boolean): number {
  if (scope === undefined) return hasGateway ? C.RT_SCOPE_UNIVERSE : C.RT_SCOPE_LINK;
  if (typeof scope === 'number') return scope;
  return { universe: C.RT_SCOPE_UNIVERSE, link: C.RT_SCOPE_LINK, host: C.RT_SCOPE_HOST }[scope];
}

function parseDst(dst: string, ctx: ErrorContext): ParsedCidr {
  if (dst === 'default') return parseCidr('0.0.0.0/0', ctx);
  if (dst === 'default6') return parseCidr('::/0', ctx);
  const parsed = parseCidr(dst, ctx);
  // A route names a network: host bits would be silently dropped by the kernel... or refused.
  const bits = parsed.prefixLen;
  for (let i = 0; i < parsed.bytes.length * 8; i++) {
    if (i >= bits && (parsed.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0) {
      throw invalidArgument(ctx, `"${dst}" has host bits set; a route destination must be a network address`);
    }
  }
  return parsed;
}

async function encodeRoute(h: NsContext, spec: RouteSpec, ctx: ErrorContext, forDelete: boolean): Promise<Buffer> {
  const dst = parseDst(spec.dst, ctx);
  const af = dst.family === 4 ? C.AF_INET : C.AF_INET6;
  const w = new AttrWriter();
  if (dst.prefixLen > 0) w.raw(C.RTA_DST, dst.bytes);
  if (spec.gateway !== undefined) {
    const gw = parseIp(spec.gateway, ctx);
    if (gw.family !== dst.family) throw invalidArgument(ctx, `gateway ${spec.gateway} is not of the destination's family`);
    w.raw(C.RTA_GATEWAY, gw.bytes);
  }
  if (spec.device !== undefined) w.u32(C.RTA_OIF, await resolveIndex(h, spec.device, ctx));
  else if (!forDelete && spec.gateway === undefined) throw invalidArgument(ctx, 'a route needs a gateway or a device');
  if (spec.metric !== undefined) w.u32(C.RTA_PRIORITY, spec.metric);
  if (spec.prefSrc !== undefined) w.raw(C.RTA_PREFSRC, parseIp(spec.prefSrc, ctx).bytes);
  const table = spec.table ?? C.RT_TABLE_MAIN;
  w.u32(C.RTA_TABLE, table);
  const protocol = spec.protocol ?? (forDelete ? 0 : C.RTPROT_BOOT);
  const scope = forDelete && spec.scope === undefined ? C.RT_SCOPE_NOWHERE : scopeNumber(spec.scope, spec.gateway !== undefined);
  const type = forDelete ? 0 : C.RTN_UNICAST;
  const flags = spec.onlink ? C.RTNH_F_ONLINK : 0;
  return Buffer.concat([rtmsg(af, dst.prefixLen, table, protocol, scope, type, flags), w.toBuffer()]);
}

const subjectOf = (spec: RouteSpec): string =>
  `route ${spec.dst}${spec.gateway ? ` via ${spec.gateway}` : ''}${spec.device ? ` dev ${typeof spec.device === 'string' ? spec.device : spec.device.name}` : ''}`;

export async function addRoute(h: NsContext, spec: RouteSpec): Promise<void> {
  const ctx = { op: 'add', subject: subjectOf(spec) };
  await h.sock.request(C.RTM_NEWROUTE, C.NLM_F_CREATE | C.NLM_F_EXCL, await encodeRoute(h, spec, ctx, false), ctx);
}

export async function replaceRoute(h: NsContext, spec: RouteSpec): Promise<void> {
  const ctx = { op: 'replace', subject: subjectOf(spec) };
  await h.sock.request(C.RTM_NEWROUTE, C.NLM_F_CREATE | C.NLM_F_REPLACE, await encodeRoute(h, spec, ctx, false), ctx);
}

/** Deletes the route matching spec (unset fields match anything, as in `ip route del`). */
export async function deleteRoute(h: NsContext, spec: RouteSpec): Promise<void> {
  const ctx = { op: 'delete', subject: subjectOf(spec) };
  await h.sock.request(C.RTM_DELROUTE, 0, await encodeRoute(h, spec, ctx, true), ctx);
}
